"""The app's pages, driven as a visitor would with Streamlit's AppTest.

Runs use the tiny digits model from conftest (8x8 images), except the guided home page, which is
fixed to the shipped mnist5k model.
"""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / name), default_timeout=TIMEOUT)


def settle(at: AppTest, timeout: float = TIMEOUT) -> AppTest:
    """Let the server's jobs finish, then run the page again. A page follows its jobs with a timed
    fragment and reruns itself when they are done; AppTest runs a page once and ticks no timer, so the
    test does that rerun."""
    import time

    from pages.ui import job_runner

    deadline = time.monotonic() + timeout
    while any(job_runner().stats()[k] for k in ("running", "waiting")):
        assert time.monotonic() < deadline, "the jobs did not finish"
        time.sleep(0.05)
    return at.run()


def no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def choose_digits(at: AppTest, checkpoint: Path, forget_class: int = 2) -> AppTest:
    at.selectbox(key="pick_dataset").set_value("digits")
    at.text_input(key="pick_checkpoint").set_value(str(checkpoint))
    at.run()
    at.radio(key="pick_class").set_value(forget_class)
    return at.run()


def tile(at: AppTest, label_start: str) -> float:
    for metric in at.metric:
        if metric.label.startswith(label_start):
            return float(metric.value.split(" ± ")[0].rstrip("%"))  # MIA-Efficacy shows "mean ± std"
    raise AssertionError(f"no metric labelled {label_start!r}; shown: {[m.label for m in at.metric]}")


def test_home_forgets_the_chosen_digit():
    from core.classification.experiment import Experiment, RunConfig

    at = page("app.py").run()
    no_traceback(at)
    assert at.title[0].value.startswith("SalUn Lab")
    at.radio(key="pick_class").set_value(1).run()
    settle(at.button(key="home_run").click().run())
    no_traceback(at)
    assert not at.error, [e.value for e in at.error]
    assert any("Digit 1 is forgotten" in s.value for s in at.subheader)

    original = Experiment.from_config(RunConfig(forget="class:1")).original_metrics(0)
    shown = tile(at, "Test images of 1 recognised")
    assert shown < original["forget_test_accuracy"] - 50  # the digit is no longer recognised
    assert tile(at, "Other digits recognised") > 85  # the others still are


def test_unlearn_page_shows_core_metrics_caches_and_explains_bad_input(digits_checkpoint):
    from core.classification.experiment import Experiment, RunConfig

    at = choose_digits(page("pages/unlearn.py").run(), digits_checkpoint)
    no_traceback(at)
    at.multiselect(key="un_methods").set_value(["salun"]).run()
    settle(at.button(key="un_run").click().run())
    no_traceback(at)
    assert not at.error, [e.value for e in at.error]

    # the numbers on screen are the ones core/ computes for the same config and seed
    experiment = Experiment.from_config(RunConfig(dataset="digits", forget="class:2",
                                                  checkpoint=str(digits_checkpoint)), device="cpu")
    expected = experiment.unlearn("salun", seed=0, sparsity=0.5).metrics
    before = experiment.original_metrics(0)
    for key, label in [("ua", "UA"), ("ra", "RA"), ("ta", "TA"), ("mia_efficacy", "MIA-Efficacy"),
                       ("forget_test_accuracy", "Forgotten class test acc.")]:
        assert tile(at, f"{label} · SalUn") == pytest.approx(round(expected[key], 1), abs=0.051), key
    assert expected["forget_test_accuracy"] < before["forget_test_accuracy"] - 50
    table = at.dataframe[0].value
    assert list(table["Metric"][:4]) == ["UA", "RA", "TA", "MIA-Efficacy"]
    assert table["What it means"].str.len().min() > 20  # every metric is defined where it is shown
    assert "python -m core.cli unlearn --dataset digits --forget class:2 --method salun" in at.code[0].value

    # the same config again is served from the store: the very same result, no new run
    first = at.session_state["un_shown"]["results"][0][1]
    at.button(key="un_run").click().run()
    assert at.session_state["un_shown"]["results"][0][1] is first

    # bad input is explained in place; the earlier comparison stays
    at.radio(key="pick_kind").set_value("indices").run()
    at.text_area(key="pick_indices_text").set_value("4, 8, x15").run()
    no_traceback(at)
    assert any("'x15' is not an integer index" in e.value for e in at.error)
    assert at.dataframe and at.dataframe[0].value.equals(table)
    at.text_input(key="pick_checkpoint").set_value("/nonexistent/model.safetensors").run()
    no_traceback(at)
    assert at.error and at.dataframe


def test_saliency_page_redraws_the_mask_and_overlaps(digits_checkpoint):
    from core.classification.analysis import retain_gradients
    from core.classification.experiment import Experiment, RunConfig
    from core.saliency import mask_iou, saliency_mask

    experiment = Experiment.from_config(RunConfig(dataset="digits", forget="class:2",
                                                  checkpoint=str(digits_checkpoint)), device="cpu")
    weight_tensors = sum(p.dim() > 1 for p in experiment.original.parameters())
    at = choose_digits(page("pages/saliency.py").run(), digits_checkpoint)
    no_traceback(at)
    at.slider(key="sal_sparsity").set_value(20).run()
    no_traceback(at)
    assert any("redrawn from the cached gradients" in c.value for c in at.caption)
    # the first tab: salient fractions and one heatmap per weight tensor; the overlaps are not computed
    assert [t.label for t in at.tabs] == ["Layer by layer", "Overlap between masks"]
    assert len(at.get("plotly_chart")) == 1 + weight_tensors and not at.metric
    at.radio(key="sal_view").set_value("mask").run()
    no_traceback(at)
    assert len(at.get("plotly_chart")) == 1 + weight_tensors

    at.session_state["sal_tab"] = "Overlap between masks"  # what a click on the tab sends
    at.run()
    no_traceback(at)
    forget_mask = experiment.mask(0.2)
    expected, _ = mask_iou(forget_mask, saliency_mask(retain_gradients(experiment), 0.2))
    assert tile(at, "IoU of the forget-set mask and the retain-set mask") == pytest.approx(expected, abs=5e-4)
    at.slider(key="sal_sparsity").set_value(80).run()
    assert tile(at, "IoU of the forget-set mask and the retain-set mask") > expected  # larger masks overlap more
    assert len(at.get("plotly_chart")) == 4  # class IoU matrix, overlap per layer, two curves; no heatmap
    assert at.session_state["sal_tab"] == "Overlap between masks"


def test_export_command_reproduces_the_run_config():
    import shlex

    from core.classification.analysis import cli_command
    from core.cli import build_parser
    from core.classification.experiment import RunConfig

    config = RunConfig(dataset="digits", forget="indices:runs/uploads/my list.txt", method="ga", sparsity=0.3,
                       seed=4, epochs=2, lr=0.005, alpha=None, masked=True, checkpoint="/tmp/m.safetensors")
    words = shlex.split(cli_command(config, save="runs/out"))
    assert words[:4] == ["python", "-m", "core.cli", "unlearn"]
    args = build_parser().parse_args(words[3:])
    again = RunConfig(dataset=args.dataset, forget=args.forget, method=args.method, sparsity=args.sparsity,
                      seed=args.seed, epochs=args.epochs, lr=args.lr, alpha=args.alpha, masked=args.masked,
                      checkpoint=args.checkpoint)
    assert again == config and args.save == "runs/out"


def test_sweep_page_runs_salun_over_sparsities_with_retrain(digits_checkpoint):
    at = choose_digits(page("pages/sweep.py").run(), digits_checkpoint)
    at.multiselect(key="sw_sparsities").set_value([0.2, 0.6])
    at.number_input(key="sw_seeds").set_value(1)
    at.run()
    retrain_epochs = next(n for n in at.number_input if n.key.startswith("sw_retrain") and n.key.endswith("epochs"))
    retrain_epochs.set_value(1)
    settle(at.button(key="sw_run").click().run())
    no_traceback(at)
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert sorted(table["Sparsity (%)"]) == pytest.approx([20, 60])  # shown in percent, like the comparison table
    assert (table["UA"] > 50).all()  # class 2 forgotten at both sparsities
    assert len(at.session_state["sw_result"]["retrain"]) == 1

    # the address names the sweep's runs: a reload, a shared link or a restarted server shows the same sweep
    run_ids = at.query_params["run"]
    assert len(run_ids) == 3  # two SalUn runs and the Retrain reference
    from pages import ui

    ui.result_store.clear()  # what a restart forgets: only the run store remains
    again = page("pages/sweep.py")
    again.query_params["run"] = run_ids
    again.run()
    no_traceback(again)
    assert again.dataframe[0].value.equals(table)
    assert again.radio(key="pick_class").value == 2


def test_a_sweep_opened_by_its_job_address_reattaches(digits_checkpoint):
    at = choose_digits(page("pages/sweep.py").run(), digits_checkpoint)
    at.multiselect(key="sw_sparsities").set_value([0.3])
    at.number_input(key="sw_seeds").set_value(1)
    at.checkbox(key="sw_retrain").uncheck()
    at.button(key="sw_run").click().run()
    job = at.query_params["job"]
    assert isinstance(job, str)  # while it runs, the address follows the one job

    other_tab = page("pages/sweep.py")
    other_tab.query_params["job"] = job
    settle(other_tab.run())
    no_traceback(other_tab)
    assert list(other_tab.dataframe[0].value["Sparsity (%)"]) == [30]
    assert "job" not in other_tab.query_params and isinstance(other_tab.query_params["run"], str)  # one run


def test_sweep_page_refuses_more_runs_than_the_limit(digits_checkpoint, monkeypatch):
    monkeypatch.setenv("SALUN_MAX_SWEEP_RUNS", "2")
    from pages import ui

    ui.limits.clear()
    try:
        at = choose_digits(page("pages/sweep.py").run(), digits_checkpoint)
        at.multiselect(key="sw_sparsities").set_value([0.2, 0.4, 0.6]).run()
        at.button(key="sw_run").click().run()
        no_traceback(at)
        assert any("exceeds this server's limit of 2" in e.value for e in at.error)
        assert "sw_job" not in at.session_state
    finally:
        ui.limits.clear()


def test_the_server_does_not_collect_all_garbage_after_every_script_run():
    """Streamlit's default runs gc.collect() after every script run, a running job's progress box
    included (every second). With torch, pandas and plotly loaded that holds the GIL long enough to make
    a diffusion run 3-5x slower inside the server than outside it (measured: 243 s against 50 s for the
    Diffusion page's default run), so the app's config turns it off."""
    import tomllib

    from streamlit import config

    settings = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert settings["runner"]["postScriptGC"] is False
    assert config.get_option("runner.postScriptGC") in (True, False)  # the option still exists under that name
