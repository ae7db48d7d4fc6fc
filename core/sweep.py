"""Grids of unlearning runs: every forget target x method x sparsity x seed, each with its Retrain
reference, run in worker processes on this machine or as tasks on a Ray cluster.

    grid = Grid(dataset="digits", forgets=["class:0", "class:1"], methods=["salun", "rl"],
                sparsities=[0.3, 0.5], seeds=[0, 1], compare_retrain=True)
    sweep = Sweep(grid, LocalBackend(workers=2))        # or RayBackend(address="auto")
    for outcome in sweep.run():                         # one per grid point, as they finish
        outcome.row                                     # `unlearn --json`'s keys plus sparsity (or an error)
    sweep.summary()

Every distinct run is one task, so what several grid points share is computed once: the Retrain
reference of a forget set and seed serves every method and sparsity on it, and a method without a
saliency mask (RL, FT, ...) runs once per forget set and seed whatever the sparsities (its row says
sparsity null). Runs already in the run store (same config, seed and model files) are not recomputed,
and every run computed here is added to it.

Same config and seed, same bits, on every backend: a run's random streams are private (core.steps),
and torch's thread count, which changes the order of floating-point reductions (measured: Retrain's
losses differ between 1 and 2 threads), is pinned to `threads_per_run` in every worker and in the
in-process runner alike.

A task that raises is reported and submitted once more; if it fails again, its grid points are
reported as failed and the others carry on. A SalunError (a user error, e.g. a diverged run) is not
retried: it would fail the same way. Interrupting the sweep (Ctrl-C, or a progress callback that
raises, as a cancelled app job's does) cancels the tasks still outstanding.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import multiprocessing
import os
import sys
import threading
import types
import time
from collections import OrderedDict
from concurrent import futures
from dataclasses import dataclass, field
from typing import Callable, Iterator

from core.errors import SalunError, check_fraction

DEFAULT_THREADS_PER_RUN = 1
RAY_INSTALL_HINT = ('the Ray backend needs Ray, an optional extra: pip install -e ".[ray]" in the project '
                    '(or pip install "ray[default]>=2.40")')


# --- the grid ------------------------------------------------------------------------------------

@dataclass
class Grid:
    """What to run: the cross product of forget targets, methods, sparsities and seeds."""

    dataset: str = "mnist5k"
    forgets: list[str] = field(default_factory=lambda: ["class:3"])
    methods: list[str] = field(default_factory=lambda: ["salun"])
    sparsities: list[float] = field(default_factory=lambda: [0.5])
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int | None = None
    lr: float | None = None
    alpha: float | None = None
    compare_retrain: bool = False
    checkpoint: str | None = None
    data_root: str | None = None

    def points(self) -> list:
        """One RunConfig per distinct run of the grid, in grid order (forget, method, sparsity, seed);
        a SalunError naming the first bad value otherwise."""
        from core.classification.experiment import RunConfig
        from core.data import parse_forget
        from core.methods import get_method
        from core.saliency import DEFAULT_SPARSITY

        check_model(self.dataset, self.checkpoint)  # before any worker starts: one line, not N failed runs
        for name, values in (("forget target", self.forgets), ("method", self.methods),
                             ("sparsity", self.sparsities), ("seed", self.seeds)):
            if not values:
                raise SalunError(f"a sweep needs at least one {name}")
        kinds = {forget: parse_forget(forget).kind for forget in self.forgets}
        sparsities = [check_fraction("sparsity", s) for s in self.sparsities]
        seeds = [check_seed(s) for s in self.seeds]
        specs = [get_method(m) for m in self.methods]
        settings = {"epochs": self.epochs, "lr": self.lr, "alpha": self.alpha}
        for spec in specs:  # a bad setting fails here, before anything runs
            for kind in set(kinds.values()):
                spec.resolve(0, self.dataset, kind, **_declared(spec, settings))
        if self.alpha is not None and not any("alpha" in s.param_names for s in specs):
            raise SalunError(f"--alpha applies to none of the methods {', '.join(s.name for s in specs)}")

        configs, seen = [], set()
        for forget in self.forgets:
            for spec in specs:
                for sparsity in (sparsities if spec.uses_mask() else [DEFAULT_SPARSITY]):
                    for seed in seeds:
                        config = RunConfig(dataset=self.dataset, forget=forget, method=spec.name, sparsity=sparsity,
                                           seed=seed, checkpoint=self.checkpoint, data_root=self.data_root,
                                           **{"epochs": None, "lr": None, "alpha": None,
                                              **_declared(spec, settings)})
                        key = config_key(config)
                        if key not in seen:
                            seen.add(key)
                            configs.append(config)
        return configs


def check_model(dataset: str, checkpoint: str | None) -> None:
    """The dataset is known and the model to unlearn is there with its sidecar (as Experiment would
    find it), without loading its weights."""
    from core.checkpoint import read_meta
    from core.classification.experiment import default_checkpoint
    from core.errors import CheckpointError

    path = default_checkpoint(dataset) if checkpoint is None else checkpoint
    if checkpoint is None and not path.is_file():
        raise CheckpointError(f"no trained model for {dataset!r} at {str(path)!r}; train one with "
                              f"`python -m core.cli train --dataset {dataset} --save {path}` or pass --checkpoint")
    read_meta(path)


def _declared(spec, settings: dict) -> dict:
    """Only the settings this method declares: --alpha is SalUn's retain weight but FT has none."""
    return {k: v for k, v in settings.items() if v is not None and k in spec.param_names}


def check_seed(value) -> int:
    try:
        seed = int(value)
    except (TypeError, ValueError):
        raise SalunError(f"seed must be a whole number, got {value!r}") from None
    if not 0 <= seed < 2**32:
        raise SalunError(f"seed must be between 0 and {2**32 - 1}, got {seed}")
    return seed


def parse_list(text: str, what: str, convert: Callable) -> list:
    """`0.3,0.5,0.7` -> [0.3, 0.5, 0.7]; a value that does not convert is one clear line."""
    items = [part.strip() for part in str(text).split(",")]
    if not any(items) or not all(items):
        raise SalunError(f"{what}: expected a comma-separated list such as 1,2,3, got {text!r}")
    out = []
    for item in items:
        try:
            out.append(convert(item))
        except (TypeError, ValueError):
            raise SalunError(f"{what}: {item!r} is not a valid value") from None
    return out


def class_targets(spec: str, dataset: str, checkpoint: str | None = None) -> list[str]:
    """`all` or `0,1,2` -> ["class:0", ...]; the classes are the model's (read from its sidecar)."""
    from core.checkpoint import read_meta
    from core.classification.experiment import default_checkpoint

    path = checkpoint or default_checkpoint(dataset)
    num_classes = len(read_meta(path)["class_names"])
    if str(spec).strip().lower() == "all":
        return [f"class:{c}" for c in range(num_classes)]
    classes = parse_list(spec, "--classes", int)
    for c in classes:
        if not 0 <= c < num_classes:
            raise SalunError(f"--classes: class {c} does not exist; the model has classes 0-{num_classes - 1}")
    return [f"class:{c}" for c in dict.fromkeys(classes)]


def config_key(config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


def reference_config(config):
    """The Retrain run a grid point is compared with (the point itself when it is Retrain)."""
    from core.classification.experiment import retrain_config

    return config if config.method == "retrain" else retrain_config(config)


# --- one task: runs in a worker process, a Ray worker, or in-process ------------------------------

_EXPERIMENTS: OrderedDict = OrderedDict()  # per process: dataset, model and forget gradients, reused
_EXPERIMENTS_LOCK = threading.Lock()  # the app may drive two sweeps from two job threads


def run_task(config: dict, threads: int, device: str = "cpu", progress: Callable | None = None):
    """Run one config; returns its RunResult with the model on the CPU (it travels to the driver).
    Consecutive tasks on the same forget set and seed share the loaded data, model and gradients.
    `progress(done, total, loss)`: each step, as the methods report it."""
    import torch

    from core.classification.experiment import RunConfig

    torch.set_num_threads(int(threads))
    config = RunConfig.from_dict(config)
    experiment = experiment_for(config, device)
    result = experiment.unlearn(config.method, seed=config.seed, sparsity=config.sparsity, masked=config.masked,
                                config=config, progress=progress, **config.overrides())
    result.model = result.model.cpu()
    if result.mask is not None:
        result.mask = {name: m.cpu() for name, m in result.mask.items()}
    return result


def experiment_for(config, device: str = "cpu", capacity: int = 4):
    from core.classification.experiment import Experiment

    key = (config.dataset, str(config.forget), config.seed, config.checkpoint, config.data_root, device)
    with _EXPERIMENTS_LOCK:
        if key in _EXPERIMENTS:
            _EXPERIMENTS.move_to_end(key)
        else:
            _EXPERIMENTS[key] = Experiment.from_config(config, device=device)
            while len(_EXPERIMENTS) > capacity:
                _EXPERIMENTS.popitem(last=False)
        return _EXPERIMENTS[key]


@contextlib.contextmanager
def _neutral_main():
    """Start worker processes with a `__main__` they need not re-import.

    A spawned or forkserver worker re-runs the parent's `__main__` from its file. Under Streamlit
    (the server, and AppTest in the tests) `__main__` is the page being run, so every worker would
    run the page, which stops at its first Streamlit call outside a session and kills the worker
    (BrokenProcessPool). Sweep tasks are core functions, imported by name, so workers need no
    `__main__` at all; a script run as `python script.py` keeps its own."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(main, "__spec__", None) is not None or \
            os.path.abspath(path) == os.path.abspath(sys.argv[0] if sys.argv else ""):
        yield
        return
    neutral = sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if sys.modules.get("__main__") is neutral:  # unless a script run has installed its own since
            sys.modules["__main__"] = main


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))


# --- backends ------------------------------------------------------------------------------------

class LocalBackend:
    """Worker processes on this machine (one run each at a time), or the in-process runner for one
    worker. Workers start by forkserver (spawn where there is none): a fresh interpreter rather than a
    fork of a process that may hold threads (the app's) or torch's thread pool."""

    name = "local"

    def __init__(self, workers: int | None = None):
        if workers is not None and int(workers) < 1:
            raise SalunError(f"--workers must be at least 1, got {workers}")
        self.workers = None if workers is None else int(workers)
        self._pool, self._threads = None, DEFAULT_THREADS_PER_RUN

    def size_for(self, threads: int) -> None:
        """Unless told, one worker per `threads` cores: the runs share the machine without oversubscribing it."""
        if self.workers is None:
            self.workers = max(1, (os.cpu_count() or 1) // threads)

    def start(self, threads: int, gpus: float) -> None:
        self._threads = threads

    def _executor(self):
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if context.get_start_method() == "forkserver":
                context.set_forkserver_preload(["core.sweep", "core.classification.experiment"])
            self._pool = futures.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                                     initargs=(self._threads,))
        return self._pool

    def submit(self, task: Callable, config: dict, threads: int, device: str):
        if self.workers == 1:
            future = futures.Future()
            future.work = (task, config, threads, device)  # run by wait(), in this process
            return future
        with _neutral_main():  # submit() starts the workers
            try:
                return self._executor().submit(task, config, threads, device)
            except futures.process.BrokenProcessPool:  # a worker died (e.g. killed): start a fresh pool
                self._pool = None
                return self._executor().submit(task, config, threads, device)

    def wait(self, handles: list, timeout: float | None = None) -> list:
        if self.workers == 1:
            future = handles[0]
            task, *args = future.work
            try:
                future.set_result(task(*args))
            except Exception as exc:
                future.set_exception(exc)
            return [future]
        done, _ = futures.wait(handles, timeout=timeout, return_when=futures.FIRST_COMPLETED)
        return list(done)

    @staticmethod
    def result(handle):
        return handle.result()

    def cancel(self, handles: list) -> None:
        for handle in handles:
            handle.cancel()
        if self._pool is not None and any(not h.done() for h in handles):
            # ProcessPoolExecutor cannot stop a running task; end its workers (Python 3.14 has
            # terminate_workers() for this), and the next sweep starts a fresh pool.
            processes = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def describe(self) -> dict:
        return {"backend": self.name, "workers": self.workers}


def import_ray():
    """Ray, or one line saying how to install it (it is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise SalunError(RAY_INSTALL_HINT) from None
    return ray


def _ray_call(task: Callable, config: dict, threads: int, device: str):
    return task(config, threads, device)


class RayBackend:
    """Each run is a Ray task asking for `threads` CPUs (and `gpus` GPUs); the driver collects results as
    they finish. `address`: None starts a local Ray instance for the sweep (shut down after it),
    "auto" joins the cluster `ray start` runs here, "ray://HOST:PORT" a remote cluster through Ray
    Client. A Ray already initialised in this process (a test's, the app's) is used as it is."""

    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address
        self.ray = import_ray()
        self._owns, self._remote, self._resources = False, None, {}

    def start(self, threads: int, gpus: float) -> None:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level="WARNING",
                         log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local instance"
                raise SalunError(f"cannot start or reach Ray at {where}: {str(exc).splitlines()[0]}") from None
            self._owns = True
        self._resources = {"CPU": ray.cluster_resources().get("CPU", 0), "GPU": ray.cluster_resources().get("GPU", 0)}
        if gpus > self._resources["GPU"]:
            raise SalunError(f"each run asks for {gpus:g} GPU but the Ray cluster has {self._resources['GPU']:g}")
        # max_retries=0: the driver retries a failed task itself (once), so that it can say so.
        self._remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(_ray_call)

    def submit(self, task: Callable, config: dict, threads: int, device: str):
        return self._remote.remote(task, config, threads, device)

    def wait(self, handles: list, timeout: float | None = None) -> list:
        ready, rest = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def result(self, handle):
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None

    def cancel(self, handles: list) -> None:
        for handle in handles:
            try:
                self.ray.cancel(handle, force=True)
            except Exception:  # already finished or gone: nothing left to cancel
                pass

    def close(self) -> None:
        if self._owns:
            self.ray.shutdown()
            self._owns = False

    def describe(self) -> dict:
        return {"backend": self.name, "address": self.address or "local",
                "cluster_cpus": self._resources.get("CPU"), "cluster_gpus": self._resources.get("GPU")}


def make_backend(name: str = "local", address: str | None = None, workers: int | None = None):
    if name == "local":
        if address:
            raise SalunError("--address is for --backend ray; the local backend runs on this machine")
        return LocalBackend(workers)
    if name == "ray":
        if workers is not None:
            raise SalunError("--workers is for --backend local; on Ray each run asks for --threads-per-run CPUs")
        return RayBackend(address)
    raise SalunError(f"unknown backend {name!r}; choose local or ray")


# --- the driver ----------------------------------------------------------------------------------

@dataclass
class _Task:
    config: object
    key: str
    attempts: int = 0
    result: object = None
    error: str | None = None
    reused: bool = False
    users: int = 0  # grid points still waiting for this result
    finished: bool = False


@dataclass
class Outcome:
    """One grid point: its config, its result (with `.retrain` when compared) or why it failed."""

    config: object
    result: object = None
    error: str | None = None
    reused: bool = False

    @property
    def sparsity(self) -> float | None:
        from core.methods import get_method

        return self.config.sparsity if get_method(self.config.method).uses_mask(self.config.masked) else None

    @property
    def row(self) -> dict:
        """`unlearn --json`'s object plus `sparsity`; a failed run: its identity and `error`."""
        if self.error is not None:
            return {"method": self.config.method, "forget": self.config.forget, "seed": self.config.seed,
                    "sparsity": self.sparsity, "error": self.error}
        return {**self.result.summary(), "sparsity": self.sparsity}


class Sweep:
    """Runs a Grid on a backend. `store` (core.store.RunStore or anything with find(config) and
    log(result, source)) serves runs already done and records new ones; None: neither.

    `grid` may also be a list of RunConfigs (the app builds its own), with `reference(config)` giving
    each one's Retrain reference (None: no comparison); for a Grid, `reference_config` when it
    compares with Retrain."""

    def __init__(self, grid, backend=None, threads_per_run: int = DEFAULT_THREADS_PER_RUN,
                 gpus_per_run: float = 0, store=None, task: Callable = run_task,
                 notify: Callable[[str], None] | None = None, reference: Callable | None = None):
        if int(threads_per_run) < 1:
            raise SalunError(f"--threads-per-run must be at least 1, got {threads_per_run}")
        if gpus_per_run < 0:
            raise SalunError(f"--gpus-per-run must be 0 or more, got {gpus_per_run}")
        self.grid, self.backend = grid, backend or LocalBackend()
        self.threads, self.gpus, self.store, self.task = int(threads_per_run), float(gpus_per_run), store, task
        self.device = "cuda" if self.gpus > 0 else "cpu"
        if isinstance(self.backend, LocalBackend):
            self.backend.size_for(self.threads)
        self.notify = notify or (lambda message: None)
        if isinstance(grid, Grid):
            self.points = grid.points()
            reference = reference or (reference_config if grid.compare_retrain else None)
        else:
            self.points = list(grid)
        self.reference = reference
        self.outcomes: list[Outcome] = []
        self.retries = 0
        self.computed = 0
        self.seconds = 0.0

    def run(self, progress: Callable[[int, int, int], None] | None = None) -> Iterator[Outcome]:
        """Yield one Outcome per grid point as soon as its run (and its Retrain reference) is done.
        `progress(finished_tasks, total_tasks, failed_tasks)` after each task; raising from it (or
        Ctrl-C) cancels the outstanding tasks."""
        import torch

        if self.device == "cuda" and isinstance(self.backend, LocalBackend) and not torch.cuda.is_available():
            raise SalunError("--gpus-per-run needs a GPU, and this machine has none visible to torch")
        start = time.perf_counter()
        tasks: dict[str, _Task] = {}
        plan = []
        for config in self.points:
            key = config_key(config)
            tasks.setdefault(key, _Task(config, key)).users += 1
            reference_key = None
            if self.reference is not None:
                reference = self.reference(config)
                reference_key = config_key(reference)
                if reference_key != key:
                    tasks.setdefault(reference_key, _Task(reference, reference_key)).users += 1
            plan.append((config, key, reference_key))

        if self.store is not None:
            for task in tasks.values():
                found = self.store.find(task.config, on_damaged=self.notify)
                if found is not None:
                    task.result, task.reused, task.finished = found, True, True

        driver_threads = torch.get_num_threads()
        if getattr(self.backend, "workers", None) == 1:  # the in-process runner: pinned like a worker
            torch.set_num_threads(self.threads)
        pending: dict = {}
        try:
            if not all(t.finished for t in tasks.values()):  # all from the store: no Ray to start
                self.backend.start(self.threads, self.gpus)
            for task in tasks.values():
                if not task.finished:
                    pending[self._submit(task)] = task
            failed = 0
            finished = sum(t.finished for t in tasks.values())
            if progress:
                progress(finished, len(tasks), failed)
            waiting = list(plan)
            while waiting:
                waiting, ready = self._split_ready(waiting, tasks)
                for config, key, reference_key in ready:
                    outcome = self._compose(config, tasks[key], tasks.get(reference_key) if reference_key else None)
                    self.outcomes.append(outcome)
                    yield outcome
                if not waiting:
                    break
                for handle in self.backend.wait(list(pending), timeout=0.5):
                    task = pending.pop(handle)
                    try:
                        task.result = self.backend.result(handle)
                    except Exception as exc:
                        message = one_line(exc)
                        if task.attempts < 2 and not isinstance(exc, SalunError):
                            self.retries += 1
                            self.notify(f"{describe(task.config)} failed ({message}); retrying once")
                            pending[self._submit(task)] = task
                            continue
                        task.error, task.finished = message, True
                        failed += 1
                        self.notify(f"{describe(task.config)} failed: {message}")
                    else:
                        task.finished = True
                        self.computed += 1
                        self._record(task)
                    finished += 1
                    if progress:
                        progress(finished, len(tasks), failed)
        finally:
            if pending:
                self.backend.cancel(list(pending))
            self.backend.close()
            torch.set_num_threads(driver_threads)
            self.seconds = time.perf_counter() - start

    def _submit(self, task: _Task):
        task.attempts += 1
        return self.backend.submit(self.task, task.config.to_dict(), self.threads, self.device)

    def _record(self, task: _Task) -> None:
        if self.store is None:
            return
        try:
            self.store.log(task.result, source="sweep")
        except SalunError as exc:  # the run is done; losing its record must not lose the sweep
            self.notify(f"{describe(task.config)} could not be added to the run store: {exc}")

    @staticmethod
    def _split_ready(waiting: list, tasks: dict) -> tuple[list, list]:
        still, ready = [], []
        for entry in waiting:
            _, key, reference_key = entry
            done = tasks[key].finished and (reference_key is None or tasks[reference_key].finished)
            (ready if done else still).append(entry)
        return still, ready

    def _compose(self, config, task: _Task, reference: _Task | None) -> Outcome:
        """The grid point's result, compared with its Retrain reference the way `unlearn
        --compare-retrain` does; a task's result is let go once no point waits for it."""
        outcome = Outcome(config, reused=task.reused)
        if task.error is not None:
            outcome.error = task.error
        elif reference is not None and reference.error is not None:
            outcome.error = f"its Retrain reference failed: {reference.error}"
        else:
            result = copy.copy(task.result)
            result.metrics = dict(result.metrics)
            if self.reference is not None:
                if reference is task:  # the point is its own Retrain reference: compared with itself
                    result.retrain = task.result
                else:
                    result.retrain = reference.result
                    result.metrics["js_to_retrain"] = experiment_for(config).js_to_retrain(
                        result.model, reference.result.model)
            outcome.result = result
        for t in {id(task): task, id(reference): reference}.values():
            if t is not None:
                t.users -= 1
                if t.users == 0:
                    t.result = None
        return outcome

    def summary(self) -> dict:
        failed = sum(o.error is not None for o in self.outcomes)
        return {"runs": len(self.points), "ok": len(self.outcomes) - failed, "failed": failed,
                "reused": sum(o.reused for o in self.outcomes), "computed_tasks": self.computed,
                "retries": self.retries, **self.backend.describe(), "threads_per_run": self.threads,
                "gpus_per_run": self.gpus, "seconds": round(self.seconds, 2)}


def describe(config) -> str:
    text = f"{config.method} on {config.forget} seed {config.seed}"
    from core.methods import get_method

    if get_method(config.method).uses_mask(config.masked):
        text += f" sparsity {config.sparsity:g}"
    return text


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# --- the app's job runner on a Ray cluster (SALUN_RAY_ADDRESS) -----------------------------------

class RayJobs:
    """Runs a job's work as one Ray task on the cluster at `address` (core.jobs.JobRunner uses this when
    SALUN_RAY_ADDRESS is set). The job's own thread waits for the task, so the runner's queue
    positions and limits stay as they are; cancelling the job cancels the task."""

    def __init__(self, address: str):
        self.address = address
        self._lock = threading.Lock()

    def connect(self):
        """Ray, connected to the cluster (once per process; never shut down by the app)."""
        ray = import_ray()
        with self._lock:
            if not ray.is_initialized():
                ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        return ray

    def run(self, task: Callable, args: tuple, cancelled: Callable[[], bool], cpus: int = DEFAULT_THREADS_PER_RUN,
            progress: Callable | None = None):
        """`task(*args)` on the cluster; polls `cancelled()` while it runs and cancels the task if so
        (then raises core.errors.CancelledError). A task that takes `progress=` reports its steps
        through a small actor, which this thread polls and passes on to `progress(done, total, loss)`."""
        from core.errors import CancelledError

        ray = self.connect()
        box = None
        if progress is not None and "progress" in inspect.signature(task).parameters:
            box = ray.remote(num_cpus=0)(_ProgressBox).remote()
            ref = ray.remote(num_cpus=cpus, max_retries=0)(_ray_apply_reporting).remote(task, args, box)
        else:
            ref = ray.remote(num_cpus=cpus, max_retries=0)(_ray_apply).remote(task, args)
        try:
            while True:
                ready, _ = ray.wait([ref], num_returns=1, timeout=0.5)
                try:
                    for step in ray.get(box.take.remote()) if box is not None else ():
                        progress(*step)
                except CancelledError:
                    pass  # the job's own progress refuses once it is cancelled: stopped below
                if ready:
                    try:
                        return ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        raise (cause if isinstance(cause, Exception) else exc) from None
                if cancelled():
                    ray.cancel(ref, force=True)
                    raise CancelledError("cancelled; the run on the Ray cluster was stopped")
        finally:
            if box is not None:
                ray.kill(box)


class _ProgressBox:
    """Made a Ray actor by RayJobs.run: the steps a task has reported since the driver last looked."""

    def __init__(self):
        self.steps = []

    def put(self, steps: list) -> None:
        self.steps.extend(steps)

    def take(self) -> list:
        steps, self.steps = self.steps, []
        return steps


def _ray_apply(task: Callable, args: tuple):
    return task(*args)


def _ray_apply_reporting(task: Callable, args: tuple, box, every: float = 0.25):
    """`task(*args, progress=...)`, its steps sent to `box` in batches at most every `every` seconds."""
    pending, last = [], [time.monotonic()]

    def flush():
        if pending:
            box.put.remote(list(pending))
            pending.clear()
        last[0] = time.monotonic()

    def progress(done, total, loss):
        pending.append((int(done), int(total), float(loss)))
        if time.monotonic() - last[0] >= every or done >= total:
            flush()

    try:
        return task(*args, progress=progress)
    finally:  # the last batch is waited for: an actor runs one caller's calls in order, so every step is in the
        import ray  # box before the task returns, and a driver that sees it done and then looks finds them all

        ray.get(box.put.remote(list(pending)))


def ray_address_from_env(environ=None) -> str | None:
    """SALUN_RAY_ADDRESS: where the app sends its runs (auto, ray://HOST:PORT); unset: run them here."""
    return ((environ if environ is not None else os.environ).get("SALUN_RAY_ADDRESS") or "").strip() or None
