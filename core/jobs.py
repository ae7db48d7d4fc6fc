"""A bounded job runner: long work runs in background threads, a few at a time, the rest queued.

    runner = JobRunner(max_concurrent=1)
    job = runner.submit(lambda progress: experiment.unlearn("salun", progress=progress), label="SalUn")
    job.status, job.queue_position(), job.progress, job.losses   # poll from the UI
    job.seconds_left                                               # from the measured step time
    job.cancel()                                                   # stops at the next step
    job.wait(); job.result or job.error
    runner.get(job.key)                                            # find it again (a reloaded page)

The work function receives a `progress(done, total, loss)` callback, the same one the core's methods
take; cancelling makes that callback raise `CancelledError`, so a run stops at its next step and
nothing half-done is kept. Because jobs live outside any one page run, a Streamlit rerun (a click on
"Cancel", another widget) never kills them.

Torch's intra-op thread pool is process-wide, so threads per job are set once for the process:
cores // max_concurrent, at least 1. Two jobs each using all cores only slow each other down.

On a Ray cluster: with SALUN_RAY_ADDRESS set (auto, ray://HOST:PORT), a job submitted with
`remote=(task, args)` (a picklable function computing the same result anywhere) runs as a Ray task
there instead of in this process; its thread here only waits, so queue positions, limits and cancel
work as before (cancelling cancels the task). `remote=(task, args, after)`: `after(result)` then runs
here (e.g. to store the result). Jobs without `remote` still run here.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import threading
import time
import traceback
from collections import OrderedDict, deque
from typing import Any, Callable

from core.errors import CancelledError, SalunError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class Job:
    _ids = itertools.count(1)

    def __init__(self, runner: "JobRunner", fn: Callable[[Callable], Any], label: str, info: dict | None = None):
        self.id = next(self._ids)
        self.key = secrets.token_urlsafe(8)  # names the job in a URL; not guessable, unlike the id
        self.label = label
        self.info = dict(info or {})  # whatever the submitter needs to show the job again (config, page)
        self.status = QUEUED
        self.progress: tuple[int, int, float] = (0, 0, math.nan)
        self.losses: list[float] = []
        self.result: Any = None
        self.error: BaseException | None = None
        self.error_traceback = ""
        self.submitted_at = time.time()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._runner, self._fn = runner, fn
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._phase_start: tuple[float, int, int] | None = None  # (time, done, total) when this count began

    # -- called by the work function -------------------------------------------------------------
    def report(self, done: int, total: int, loss: float) -> None:
        if self._cancel.is_set():
            raise CancelledError(f"{self.label} was cancelled")
        now = time.monotonic()
        start = self._phase_start
        if start is None or total != start[2] or done < start[1]:  # a new count (a job may run several)
            self._phase_start = (now, done, total)
        self.progress = (done, total, loss)
        self.losses.append(loss)

    # -- called by the UI ------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()
        self._runner._drop_if_waiting(self)

    def queue_position(self) -> int:
        """0 while running or finished; 1 for the next job to start, and so on."""
        return self._runner._position(self)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def cancelling(self) -> bool:
        return self._cancel.is_set() and not self.finished

    @property
    def seconds_left(self) -> float | None:
        """Time left in the current count of steps, from the mean step time measured so far; None
        until two steps of it have been seen."""
        if self.finished or self._phase_start is None:
            return None
        started, first_done, total = self._phase_start
        done = self.progress[0]
        if done <= first_done or total <= 0:
            return None
        return (time.monotonic() - started) / (done - first_done) * max(0, total - done)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def message(self) -> str:
        """What to tell the user about how the job ended."""
        if self.status == CANCELLED:
            return f"{self.label} was cancelled; earlier results are kept."
        if self.status == FAILED:
            if isinstance(self.error, SalunError):
                return str(self.error)
            return f"{self.label} failed unexpectedly ({type(self.error).__name__}: {self.error}); earlier results are kept."
        return ""

    @property
    def fraction_done(self) -> float:
        done, total, _ = self.progress
        return min(1.0, done / total) if total else 0.0


class JobRunner:
    def __init__(self, max_concurrent: int = 1, threads_per_job: int | None = None, remote="env"):
        if int(max_concurrent) < 1:
            raise SalunError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.max_concurrent = int(max_concurrent)
        self.threads_per_job = threads_per_job or max(1, (os.cpu_count() or 1) // self.max_concurrent)
        import torch

        torch.set_num_threads(self.threads_per_job)
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()
        self._running: set[Job] = set()
        self._recent: OrderedDict[str, Job] = OrderedDict()  # key -> job, the last RECENT submitted
        self.remote = _remote_from_env() if remote == "env" else remote  # core.sweep.RayJobs or None

    RECENT = 256

    def submit(self, fn: Callable[[Callable], Any], label: str = "job", info: dict | None = None,
               remote: tuple | None = None) -> Job:
        """Queue `fn(progress)`; `info` travels with the job (see Job.info). `remote=(task, args)`: what
        runs instead on the Ray cluster when there is one (see the module docstring)."""
        job = Job(self, fn, label, info)
        job.remote = remote if self.remote is not None else None
        with self._lock:
            self._waiting.append(job)
            self._recent[job.key] = job
            while len(self._recent) > self.RECENT:
                self._recent.popitem(last=False)
        self._dispatch()
        return job

    def get(self, key: str) -> Job | None:
        """A recently submitted job by its key, or None (unknown, or forgotten since)."""
        with self._lock:
            return self._recent.get(str(key))

    def stats(self) -> dict:
        with self._lock:
            return {"running": len(self._running), "waiting": len(self._waiting),
                    "max_concurrent": self.max_concurrent, "threads_per_job": self.threads_per_job}

    def _position(self, job: Job) -> int:
        with self._lock:
            try:
                return list(self._waiting).index(job) + 1
            except ValueError:
                return 0

    def _drop_if_waiting(self, job: Job) -> None:
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
                job.status = CANCELLED
                job.finished_at = time.time()
                job._done.set()

    def _dispatch(self) -> None:
        with self._lock:
            while self._waiting and len(self._running) < self.max_concurrent:
                job = self._waiting.popleft()
                self._running.add(job)
                job.status = RUNNING
                job.started_at = time.time()
                threading.Thread(target=self._run, args=(job,), name=f"salun-job-{job.id}", daemon=True).start()

    def _run(self, job: Job) -> None:
        try:
            if job.remote is not None:
                task, args, *after = job.remote
                result = self.remote.run(task, args, cancelled=job._cancel.is_set, progress=job.report)
                job.result = after[0](result) if after else result
            else:
                job.result = job._fn(job.report)
            job.status = DONE
        except CancelledError as exc:
            job.error, job.status = exc, CANCELLED
        except Exception as exc:  # a failed job must never take the runner (or the app) down with it
            job.error, job.status = exc, FAILED
            job.error_traceback = traceback.format_exc()
        finally:
            job.finished_at = time.time()
            with self._lock:
                self._running.discard(job)
            job._done.set()
            self._dispatch()


def _remote_from_env():
    from core.sweep import RayJobs, ray_address_from_env

    address = ray_address_from_env()
    return RayJobs(address) if address else None
