"""The job runner: bounded concurrency, queue positions, cancel, failures kept inside the job."""

import threading

import pytest

from core.errors import SalunError
from core.jobs import CANCELLED, DONE, FAILED, JobRunner
from core.limits import Limits, load_limits


def gated_work(gate: threading.Event, steps: int = 3):
    def work(progress):
        for i in range(steps):
            gate.wait(5)
            progress(i + 1, steps, 1.0 / (i + 1))
        return "finished"
    return work


def test_only_max_concurrent_jobs_run_and_the_rest_wait_in_order():
    runner = JobRunner(max_concurrent=1, threads_per_job=1)
    gate = threading.Event()
    first, second, third = (runner.submit(gated_work(gate), label=f"job{i}") for i in range(3))
    assert first.status == "running"
    assert (second.status, second.queue_position()) == ("queued", 1)
    assert (third.status, third.queue_position()) == ("queued", 2)
    gate.set()
    assert third.wait(10)
    assert [j.status for j in (first, second, third)] == [DONE, DONE, DONE]
    assert first.result == "finished" and first.losses == [1.0, 0.5, 1 / 3]


def test_cancel_stops_a_running_job_at_its_next_step_and_drops_a_waiting_one():
    runner = JobRunner(max_concurrent=1, threads_per_job=1)
    gate = threading.Event()
    running = runner.submit(gated_work(gate, steps=50), label="long")
    waiting = runner.submit(gated_work(gate), label="next")
    waiting.cancel()
    assert waiting.status == CANCELLED and waiting.finished
    running.cancel()
    gate.set()
    assert running.wait(10)
    assert running.status == CANCELLED and "cancelled" in running.message
    assert running.progress[0] < 50


def test_time_left_comes_from_the_measured_step_time_and_a_job_is_found_again_by_its_key():
    runner = JobRunner(max_concurrent=1, threads_per_job=1)
    step, release = threading.Event(), threading.Event()

    def work(progress):
        progress(0, 10, 1.0)  # the count starts
        for i in range(1, 4):
            threading.Event().wait(0.05)  # each step takes ~50 ms
            progress(i, 10, 1.0)
        step.set()
        release.wait(5)
        return "ok"

    job = runner.submit(work, label="timed", info={"page": "unlearn"})
    assert step.wait(5)
    assert 7 * 0.04 < job.seconds_left < 7 * 0.2  # 7 steps left at ~50 ms each
    assert runner.get(job.key) is job and job.info == {"page": "unlearn"}
    assert runner.get("not-a-key") is None and len(job.key) >= 10  # keys are not guessable counters
    release.set()
    assert job.wait(5) and job.seconds_left is None


def test_a_job_past_its_last_step_says_it_is_evaluating_not_zero_seconds_left():
    from pages.ui.jobs import describe

    runner = JobRunner(max_concurrent=1, threads_per_job=1)
    stepping, evaluating = threading.Event(), threading.Event()
    release, finish = threading.Event(), threading.Event()

    def work(progress):
        for i in range(1, 4):
            threading.Event().wait(0.02)
            progress(i, 4, 0.5)
        stepping.set()
        release.wait(5)
        progress(4, 4, 0.25)
        evaluating.set()  # the metrics would be computed here, with no steps left to count
        finish.wait(5)
        return "ok"

    job = runner.submit(work, label="SalUn")
    assert stepping.wait(5)
    assert describe(job, "SalUn").startswith("SalUn: step 3/4, loss 0.500 · about ")
    release.set()
    assert evaluating.wait(5)
    assert describe(job, "SalUn") == "SalUn: step 4/4, loss 0.250 · steps done, evaluating the result…"
    finish.set()
    assert job.wait(5) and describe(job, "SalUn") == "SalUn: done"


def test_a_failing_job_reports_its_error_and_the_runner_keeps_going():
    runner = JobRunner(max_concurrent=1, threads_per_job=1)

    def bad(progress):
        raise SalunError("class 12 does not exist")

    def crash(progress):
        raise RuntimeError("injected fault")

    a, b = runner.submit(bad, label="bad"), runner.submit(crash, label="crash")
    c = runner.submit(lambda progress: 42, label="ok")
    assert c.wait(10)
    assert (a.status, a.message) == (FAILED, "class 12 does not exist")
    assert b.status == FAILED and "injected fault" in b.message and "RuntimeError" in b.error_traceback
    assert (c.status, c.result) == (DONE, 42)


def test_limits_come_from_environment_and_file(tmp_path):
    assert load_limits({}) == Limits()
    path = tmp_path / "limits.toml"
    path.write_text("max_epochs = 5\nmax_sweep_runs = 4\n")
    limits = load_limits({"SALUN_LIMITS_FILE": str(path), "SALUN_MAX_EPOCHS": "7"})
    assert (limits.max_epochs, limits.max_sweep_runs) == (7, 4)  # the environment wins
    with pytest.raises(SalunError, match="epochs 8 exceeds this server's limit of 7"):
        limits.check("epochs", 8)
    limits.check("epochs", 7)


@pytest.mark.parametrize("environ, message", [
    ({"SALUN_MAX_EPOCHS": "many"}, "max_epochs must be a whole number"),
    ({"SALUN_MAX_EPOCHS": "0"}, "at least 1"),
    ({"SALUN_LIMITS_FILE": "/nonexistent/limits.toml"}, "unreadable"),
])
def test_bad_limits_are_refused_with_their_name(environ, message):
    with pytest.raises(SalunError, match=message):
        load_limits(environ)
