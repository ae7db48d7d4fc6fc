"""The Unlearn & compare page's looking-inside views, driven as a visitor would (tiny digits model)."""

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from test_app import page, settle  # the app tests' own helpers (pytest puts tests/ on the path)

TIMEOUT = 240


def no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def open_tab(at: AppTest, name: str) -> AppTest:
    at.session_state["un_tabs"] = name
    at.run()
    no_traceback(at)
    return at


@pytest.fixture(scope="module")
def compared(digits_checkpoint):
    """SalUn and Retrain run on the page for digit 2, comparison on screen."""
    at = page("pages/unlearn.py")
    at.default_timeout = TIMEOUT
    at.run()
    at.selectbox(key="pick_dataset").set_value("digits")
    at.text_input(key="pick_checkpoint").set_value(str(digits_checkpoint))
    at.run()
    at.radio(key="pick_class").set_value(2).run()
    at.multiselect(key="un_methods").set_value(["salun", "retrain"]).run()
    at.button(key="un_run").click().run()
    settle(at, TIMEOUT)
    no_traceback(at)
    return at


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def test_new_views_render_only_when_their_tab_is_open_and_report_core_numbers(compared, digits_checkpoint):
    from core.classification.experiment import Experiment, RunConfig

    at = compared
    before = charts(at)
    # where the forgotten images go: the JS tile is the number core computes for the same runs
    open_tab(at, "Where the forgotten go")
    assert charts(at) == before + 1
    shown = next(m for m in at.metric if m.label.startswith("JS to Retrain · SalUn"))
    exp = Experiment.from_config(RunConfig(dataset="digits", forget="class:2", checkpoint=str(digits_checkpoint)),
                                 device="cpu")
    salun, retrain = exp.unlearn("salun", seed=0), exp.unlearn("retrain", seed=0)
    assert float(shown.value) == pytest.approx(exp.js_to_retrain(salun.model, retrain.model), abs=0.0006)
    # and in the comparison table, whose definitions are all shown in full under the grid
    from core.classification.metrics import METRIC_DEFINITIONS

    table = at.dataframe[0].value.set_index("Metric")
    assert table.loc["JS to Retrain", "SalUn"] == pytest.approx(float(shown.value), abs=0.0006)
    assert pd.isna(table.loc["JS to Retrain", "Before (original)"])
    definitions = " ".join(c.value for c in at.caption)
    assert all(METRIC_DEFINITIONS[key] in definitions for key in ("mia_efficacy", "js_to_retrain", "avg_gap"))

    # weight change: SalUn left every weight outside its mask untouched
    open_tab(at, "Weight change")
    table = at.dataframe[-1].value
    assert table.set_index("Run").loc["SalUn", "Largest |Δw| outside"] == "0 (untouched)"

    # the audit: AUC for every model and signal, in [0, 1]
    open_tab(at, "Audit")
    audit = at.dataframe[-1].value
    assert set(audit["Model"]) == {"Before", "SalUn", "Retrain"}
    assert audit["AUC"].between(0, 1).all()

    for name in ("Embedding", "Layer similarity", "Per class", "Attributions", "Membership inference"):
        open_tab(at, name)
        assert charts(at) == before + 1, name
    open_tab(at, "Confusion matrices")
    assert charts(at) == before + 3  # Before, SalUn, Retrain
    open_tab(at, "Metrics")
    assert charts(at) == before  # back to the comparison alone: nothing behind a closed tab is drawn


def test_replay_ends_at_the_run_s_own_forget_accuracy(compared):
    at = open_tab(compared, "Replay")
    before = charts(at)
    at.button(key="replay_go").click().run()
    no_traceback(at)
    assert charts(at) == before + 1
    ua = next(m for m in at.metric if m.label.startswith("UA · SalUn"))
    # the replay's last point is the finished model: its forget accuracy is 100 − the UA shown
    trace = at.session_state["un_shown"]["results"][0][1].extra["replay"]
    assert trace["forget_accuracy"][-1] == pytest.approx(100 - float(ua.value.split()[0]), abs=0.051)


def _page_inside_the_app(path: str) -> None:
    """The page as app.py runs it: kept choices re-assigned through Session State first."""
    import runpy

    from pages import ui

    ui.keep_choices()
    runpy.run_path(path, run_name="__main__")


@pytest.mark.parametrize("name, key, value", [("pages/unlearn.py", "un_sparsity", 30),
                                              ("pages/saliency.py", "sal_sparsity", 30)])
def test_a_kept_choice_is_shown_without_streamlit_s_default_and_session_state_warning(name, key, value):
    """app.py re-assigns kept choices through Session State on every run; a widget that also passed a
    default made Streamlit log a warning each time (the server log filled with them)."""
    import logging
    from pathlib import Path

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("streamlit.elements.lib.policies")
    logger.addHandler(handler)
    try:
        at = AppTest.from_function(_page_inside_the_app, args=(str(Path(__file__).resolve().parent.parent / name),),
                                   default_timeout=TIMEOUT)
        at.run()
        at.slider(key=key).set_value(value).run()
        at.run()  # the choice is now re-assigned before the widget is drawn
        assert not at.exception, [e.value for e in at.exception]
        assert at.slider(key=key).value == value
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if key in r.getMessage()]
