"""Sweeps: how a grid expands, bad grids refused in one line, the same numbers from the in-process
runner, the process pool and Ray, shared Retrain references, and a failing run that does not take
the others down."""

import json
import sys
from pathlib import Path

import pytest

from core.cli.commands import main
from core.sweep import Grid, LocalBackend, Sweep, class_targets, parse_list, run_task

TESTS = Path(__file__).resolve().parent


def digits_grid(checkpoint, **changes) -> Grid:
    values = dict(dataset="digits", forgets=["class:1", "class:2"], methods=["salun"], sparsities=[0.5], seeds=[0],
                  epochs=1, checkpoint=str(checkpoint))
    return Grid(**{**values, **changes})


def start_sweep_on_page(checkpoint, forget_class: int, sparsities: list[float]):
    """The Sweep page, as a visitor sets it: the test digits model, one class, one seed, a 1-epoch
    Retrain reference; "Run sweep" clicked. Returns the AppTest."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(TESTS.parent / "pages" / "sweep.py"), default_timeout=180).run()
    at.selectbox(key="pick_dataset").set_value("digits")
    at.text_input(key="pick_checkpoint").set_value(str(checkpoint))
    at.run()
    at.radio(key="pick_class").set_value(forget_class)
    at.run()
    at.multiselect(key="sw_sparsities").set_value(sparsities)
    at.number_input(key="sw_seeds").set_value(1)
    at.run()
    next(n for n in at.number_input if n.key.startswith("sw_retrain") and n.key.endswith("epochs")).set_value(1)
    return at.button(key="sw_run").click().run()


def without_timings(row: dict) -> dict:
    """A run's numbers without its wall-clock time (the one thing that differs from run to run)."""
    return {k: (without_timings(v) if isinstance(v, dict) else v) for k, v in row.items() if k != "rte_seconds"}


def rows(outcomes) -> dict:
    return {(o.config.forget, o.config.method, o.sparsity, o.config.seed): without_timings(o.row) for o in outcomes}


class FailingTask:
    """Runs like the real task, but fails for one forget target always and for another once (the
    first attempt leaves a marker file, so the retry, in whichever process, succeeds)."""

    def __init__(self, always: str, once: str, marker: Path):
        self.always, self.once, self.marker = always, once, str(marker)

    def __call__(self, config, threads, device):
        if config["forget"] == self.always:
            raise RuntimeError("injected failure")
        if config["forget"] == self.once and not Path(self.marker).exists():
            Path(self.marker).write_text("failed once")
            raise RuntimeError("injected transient failure")
        return run_task(config, threads, device)


# --- the grid --------------------------------------------------------------------------------------

def test_grid_expands_classes_targets_lists_and_runs_maskless_methods_once(digits_checkpoint):
    forgets = ["random:0.1", "class:0"] + class_targets("all", "digits", str(digits_checkpoint))
    assert forgets[2:] == [f"class:{c}" for c in range(10)]
    assert class_targets("3, 1,3", "digits", str(digits_checkpoint)) == ["class:3", "class:1"]
    grid = Grid(dataset="digits", forgets=list(dict.fromkeys(forgets)), methods=parse_list("salun,rl", "--method", str),
                sparsities=parse_list("0.3,0.5,0.7", "--sparsity", float), seeds=parse_list("0,1", "--seeds", int),
                checkpoint=str(digits_checkpoint))
    points = grid.points()
    # 11 forget sets x 2 seeds x (SalUn at 3 sparsities + RL, which has no mask, once)
    assert len(points) == 11 * 2 * (3 + 1)
    assert {(p.forget, p.sparsity) for p in points if p.method == "salun" and p.seed == 1} >= {("random:0.1", 0.7)}
    assert len({(p.forget, p.seed) for p in points if p.method == "rl"}) == len([p for p in points if p.method == "rl"])


@pytest.mark.parametrize("flags, says", [
    (["--sparsity", "0.3,x"], "'x' is not a valid value"),
    (["--sparsity", "0.3,1.5"], "sparsity"),
    (["--seeds", "0,,1"], "--seeds"),
    (["--seeds", "-1"], "seed"),
    (["--classes", "0,12"], "class 12 does not exist"),
    (["--method", "salun,nope"], "unknown method 'nope'"),
    (["--forget", "class"], "class:K"),
    (["--epochs", "0"], "epochs"),
    (["--address", "auto"], "--address is for --backend ray"),
    (["--checkpoint", "/nonexistent/model.safetensors"], "does not exist"),
])
def test_bad_grid_is_one_clear_line_and_exit_2(digits_checkpoint, capsys, flags, says):
    code = main(["sweep", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--no-store", "--quiet", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:") and says in err


def test_operator_limit_on_sweep_runs_applies(digits_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("SALUN_MAX_SWEEP_RUNS", "3")
    code = main(["sweep", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--classes", "0,1",
                 "--sparsity", "0.3,0.5", "--no-store", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: sweep runs 4 exceeds this server's limit of 3 (set SALUN_MAX_SWEEP_RUNS to change it)"


def test_ray_backend_without_ray_says_how_to_install(digits_checkpoint, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    code = main(["sweep", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--backend", "ray", "--no-store"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'pip install -e ".[ray]"' in err and 'pip install "ray[default]>=2.40"' in err


# --- running it ------------------------------------------------------------------------------------

def test_cli_json_lines_then_summary_and_the_store_serves_a_repeat(digits_checkpoint, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SALUN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ["sweep", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--classes", "1",
            "--method", "salun,rl", "--sparsity", "0.3,0.5", "--epochs", "1", "--workers", "1", "--json", "--quiet"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    *runs, summary = lines
    assert sorted((r["method"], r["sparsity"]) for r in runs) == [("rl", None), ("salun", 0.3), ("salun", 0.5)]
    assert all({"ua", "ra", "ta", "mia_efficacy", "rte_seconds", "forget", "seed"} <= set(r) for r in runs)
    assert summary["runs"] == 3 and summary["ok"] == 3 and summary["computed_tasks"] == 3 and summary["reused"] == 0

    assert main(argv) == 0  # the same grid again: every run comes from the run store
    *again, summary = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert summary["computed_tasks"] == 0 and summary["reused"] == 3
    assert sorted(map(json.dumps, map(without_timings, again))) == sorted(map(json.dumps, map(without_timings, runs)))


def test_process_pool_gives_the_in_process_numbers(digits_checkpoint, fresh_store):
    grid = digits_grid(digits_checkpoint, sparsities=[0.3, 0.5])
    in_process = Sweep(grid, LocalBackend(workers=1))
    pool = Sweep(grid, LocalBackend(workers=2))
    assert rows(in_process.run()) == rows(pool.run())
    assert pool.summary()["ok"] == 4


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    # PYTHONPATH: Ray's workers import FailingTask from this test module
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    yield ray
    ray.shutdown()


def test_ray_gives_the_local_numbers_and_shares_retrain(ray_instance, digits_checkpoint):
    from core.sweep import RayBackend

    grid = digits_grid(digits_checkpoint, forgets=["class:1"], sparsities=[0.3, 0.5], compare_retrain=True)
    local = Sweep(grid, LocalBackend(workers=1))
    on_ray = Sweep(grid, RayBackend())
    ray_rows = rows(on_ray.run())
    assert ray_rows == rows(local.run())
    assert all(r["retrain"]["method"] == "retrain" and "avg_gap" in r for r in ray_rows.values())
    # two SalUn runs and one Retrain shared by both
    assert on_ray.summary()["computed_tasks"] == 3 and on_ray.summary()["backend"] == "ray"


def test_ray_failed_task_is_reported_retried_once_and_the_others_finish(ray_instance, digits_checkpoint, tmp_path):
    from core.sweep import RayBackend

    notices = []
    task = FailingTask(always="class:2", once="class:1", marker=tmp_path / "failed-once")
    sweep = Sweep(digits_grid(digits_checkpoint, forgets=["class:1", "class:2", "class:3"]), RayBackend(),
                  task=task, notify=notices.append)
    outcomes = {o.config.forget: o for o in sweep.run()}
    assert outcomes["class:2"].error == "RuntimeError: injected failure"
    assert outcomes["class:2"].row["error"] == "RuntimeError: injected failure"
    assert outcomes["class:1"].error is None and outcomes["class:3"].error is None
    assert outcomes["class:1"].result.metrics["ra"] > 50
    summary = sweep.summary()
    assert (summary["ok"], summary["failed"], summary["retries"]) == (2, 1, 2)
    assert any("class:2" in n and "retrying once" in n for n in notices)
    assert any("class:2" in n and n.endswith("failed: RuntimeError: injected failure") for n in notices)


# --- the app's job runner on Ray -------------------------------------------------------------------

def sleepy(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return f"slept {seconds}"


def test_job_runner_runs_here_unless_salun_ray_address_is_set(monkeypatch):
    from core.jobs import JobRunner
    from core.sweep import ray_address_from_env

    monkeypatch.delenv("SALUN_RAY_ADDRESS", raising=False)
    runner = JobRunner(max_concurrent=1)
    assert runner.remote is None
    job = runner.submit(lambda progress: "ran here", remote=(sleepy, (60,)))  # remote is ignored without a cluster
    assert job.wait(30) and job.result == "ran here"
    assert ray_address_from_env({"SALUN_RAY_ADDRESS": " ray://head:10001 "}) == "ray://head:10001"
    assert ray_address_from_env({"SALUN_RAY_ADDRESS": ""}) is None


def quick_steps(n: int, progress=None) -> int:
    for i in range(1, n + 1):
        progress(i, n, 0.5)
    return n


def test_a_ray_task_that_ends_at_once_still_delivers_its_last_steps(ray_instance):
    # The driver sees the task done and then empties the progress box: the task's last batch of steps
    # must be in it by then (before it was, 23 quick tasks in 40 lost their last steps).
    from core.sweep import RayJobs

    jobs = RayJobs("auto")
    for _ in range(15):
        got = []
        assert jobs.run(quick_steps, (50,), lambda: False, cpus=1, progress=lambda *step: got.append(step)) == 50
        assert [done for done, _, _ in got] == list(range(1, 51))


def test_job_runner_on_ray_gives_the_local_result_keeps_queue_positions_and_cancels(ray_instance, digits_checkpoint):
    from core.classification.experiment import RunConfig
    from core.jobs import CANCELLED, DONE, JobRunner
    from core.sweep import RayJobs

    runner = JobRunner(max_concurrent=1, threads_per_job=2, remote=RayJobs("auto"))
    slow = runner.submit(lambda progress: pytest.fail("ran locally"), label="slow", remote=(sleepy, (120,)))
    config = RunConfig(dataset="digits", forget="class:1", epochs=1, checkpoint=str(digits_checkpoint)).to_dict()
    kept = []
    run = runner.submit(lambda progress: pytest.fail("ran locally"), label="SalUn",
                        remote=(run_task, (config, 1, "cpu"), lambda result: kept.append(result) or result))
    assert run.queue_position() == 1
    slow.cancel()
    assert slow.wait(30) and slow.status == CANCELLED
    assert run.wait(120) and run.status == DONE, run.message
    assert kept == [run.result]  # `after` ran here, on the result
    done, total, loss = run.progress  # the steps on the cluster were reported here, as a local run's are
    assert total > 0 and done == total and len(run.losses) == total and loss == loss
    import torch

    threads = torch.get_num_threads()
    try:
        here = run_task(config, 1, "cpu")  # pins torch's threads, as every sweep run does
    finally:
        torch.set_num_threads(threads)
    assert {k: v for k, v in run.result.metrics.items() if k != "rte_seconds"} == \
           {k: v for k, v in here.metrics.items() if k != "rte_seconds"}


def test_sweep_page_runs_its_grid_on_the_ray_cluster(ray_instance, digits_checkpoint, monkeypatch, fresh_store):
    import time

    from pages import ui

    monkeypatch.setenv("SALUN_RAY_ADDRESS", "auto")  # joins the Ray this test module started
    ui.job_runner.clear()
    ui.result_store.clear()  # the app page's store, on this test's own run store: its runs are computed here
    try:
        at = start_sweep_on_page(digits_checkpoint, forget_class=2, sparsities=[0.2, 0.6])
        assert ui.job_runner().remote is not None
        deadline = time.monotonic() + 180
        while any(ui.job_runner().stats()[k] for k in ("running", "waiting")):
            assert time.monotonic() < deadline, "the sweep did not finish"
            time.sleep(0.1)
        at.run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        shown = at.session_state["sw_result"]
        assert sorted(r["sparsity"] for r in shown["rows"]) == [0.2, 0.6] and len(shown["retrain"]) == 1
        assert shown["cluster"]["backend"] == "ray" and shown["cluster"]["computed_tasks"] == 3  # 2 SalUn + 1 Retrain
        assert any("Ran on the Ray cluster" in c.value for c in at.caption)
    finally:
        ui.job_runner.clear()
        ui.result_store.clear()


def test_workers_start_under_a_streamlit_page(digits_checkpoint, fresh_store, tmp_path, monkeypatch):
    """Streamlit runs each page as `__main__`; workers must not re-run it (they died, BrokenProcessPool)."""
    import sys
    import types

    page = tmp_path / "page.py"
    page.write_text("raise RuntimeError('a worker ran the page')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    sweep = Sweep(digits_grid(digits_checkpoint, forgets=["class:1"], sparsities=[0.3, 0.5]), LocalBackend(workers=2))
    outcomes = list(sweep.run())
    assert [o.row.get("error") for o in outcomes] == [None, None]
    assert sweep.summary()["ok"] == 2
    assert sys.modules["__main__"] is fake_main


def test_a_point_compared_with_retrain_carries_its_js_to_retrain(digits_checkpoint, fresh_store):
    from core.classification.experiment import RunConfig, run

    grid = digits_grid(digits_checkpoint, forgets=["class:1"], compare_retrain=True)
    (outcome,) = Sweep(grid, LocalBackend(workers=1)).run()
    row = outcome.row
    # the number `unlearn --compare-retrain --json` gives for the same run
    single = run(RunConfig(dataset="digits", forget="class:1", method="salun", sparsity=0.5, seed=0, epochs=1,
                           checkpoint=str(digits_checkpoint)), compare_retrain=True).summary()
    assert row["retrain"]["method"] == "retrain"
    assert row["js_to_retrain"] == pytest.approx(single["js_to_retrain"], abs=1e-4) and 0 <= row["js_to_retrain"] <= 1


def test_sweep_page_shows_js_to_retrain_for_every_run(digits_checkpoint, fresh_store):
    from core.classification.metrics import METRIC_LABELS
    from pages import ui

    ui.result_store.clear()
    at = start_sweep_on_page(digits_checkpoint, forget_class=1, sparsities=[0.5])
    import time

    deadline = time.monotonic() + 180
    while any(ui.job_runner().stats()[k] for k in ("running", "waiting")):
        assert time.monotonic() < deadline, "the sweep did not finish"
        time.sleep(0.05)
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    (row,) = at.session_state["sw_result"]["rows"]
    assert 0 <= row["js_to_retrain"] <= 1
    assert list(at.dataframe[0].value[METRIC_LABELS["js_to_retrain"]]) == pytest.approx([row["js_to_retrain"]])
    assert any("JS to Retrain" in c.value for c in at.caption)  # its definition under the table
