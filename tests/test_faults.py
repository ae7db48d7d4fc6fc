"""Faults during a visit: the page explains what happened, keeps earlier results, and the cached
original model is unchanged. Driven through the Unlearn page with Streamlit's AppTest."""

import dataclasses
import threading
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.checkpoint import state_checksum
from core.methods import get_method, registry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def page(digits_checkpoint, fresh_store):
    """The Unlearn page on the digits model, with a first, good FT run already shown."""
    st.cache_resource.clear()  # no results or export files from other tests: everything here is computed
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "pages" / "unlearn.py"), default_timeout=180).run()
    at.selectbox(key="pick_dataset").set_value("digits")
    at.text_input(key="pick_checkpoint").set_value(str(digits_checkpoint))
    at.run()
    at.radio(key="pick_class").set_value(2).run()
    at.multiselect(key="un_methods").set_value(["ft"]).run()
    settle(at.button(key="un_run").click().run())
    assert not at.exception and not at.error
    assert "FT" in shown_columns(at)
    return at


def shown_columns(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value.columns) if at.dataframe else []


def original_checksum(at: AppTest) -> str:
    """Checksum of the cached original model the page itself works with."""
    return state_checksum(at.session_state["un_shown"]["target"].experiment().original)


def settle(at: AppTest) -> AppTest:
    """Let the server's jobs finish, then run the page again, as its progress fragment would once
    they are done (AppTest ticks no timed fragment)."""
    import time

    from pages.ui import job_runner

    deadline = time.monotonic() + 180
    while any(job_runner().stats()[k] for k in ("running", "waiting")):
        assert time.monotonic() < deadline, "the jobs did not finish"
        time.sleep(0.05)
    return at.run()


def run_salun(at: AppTest) -> AppTest:
    at.multiselect(key="un_methods").set_value(["salun"]).run()
    return settle(at.button(key="un_run").click().run())


def replace_salun(monkeypatch, run):
    monkeypatch.setitem(registry._REGISTRY, ("classification", "salun"), dataclasses.replace(get_method("salun"), run=run))


def assert_recovered(at: AppTest):
    assert not at.exception, [e.value for e in at.exception]
    assert "FT" in shown_columns(at)  # the earlier comparison is still on screen
    assert at.button(key="un_run")  # and the visitor can run again


def test_an_exception_injected_mid_run_is_explained(page, monkeypatch):
    def crashes_at_step_3(model, data, params, mask=None, progress=None):
        for step in range(1, 6):
            if step == 3:
                raise RuntimeError("injected fault")
            progress(step, 5, 1.0)

    replace_salun(monkeypatch, crashes_at_step_3)
    run_salun(page)
    assert any("SalUn failed unexpectedly (RuntimeError: injected fault); earlier results are kept" in e.value
               for e in page.error)
    assert_recovered(page)


def test_cancel_mid_run_stops_it_and_keeps_earlier_results(page, monkeypatch):
    reached = []

    def long_run(model, data, params, mask=None, progress=None):
        job = progress.__self__  # the visitor presses Cancel from another thread while this runs
        for step in range(1, 1001):
            if step == 5:
                threading.Thread(target=job.cancel).start()
            progress(step, 1000, 1.0)
            reached.append(step)
            threading.Event().wait(0.01)

    replace_salun(monkeypatch, long_run)
    run_salun(page)
    assert any("SalUn was cancelled; earlier results are kept." in i.value for i in page.info)
    assert not page.error
    assert max(reached) < 100
    assert_recovered(page)


def test_a_diverging_loss_is_explained_and_the_original_is_unchanged(page, monkeypatch):
    from core.classification.methods import run_ga

    def runaway_gradient_ascent(model, data, params, mask=None, progress=None):
        # the real GA loop with a learning rate no form allows: its loss runs off to infinity
        return run_ga(model, data, {**get_method("ga").defaults(), "seed": 0, "lr": 1e6, "epochs": 5}, mask, progress)

    before = original_checksum(page)
    replace_salun(monkeypatch, runaway_gradient_ascent)
    run_salun(page)
    assert any("GA: the loss became" in e.value and "lower the learning rate" in e.value for e in page.error), \
        [e.value for e in page.error]
    assert_recovered(page)
    assert original_checksum(page) == before


def test_a_failed_save_is_explained_and_the_comparison_stays(page, monkeypatch):
    import core.classification.experiment

    def disk_full(result, directory):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core.classification.experiment, "save_run", disk_full)
    run_salun(page)  # a new run, so its export files are prepared anew
    assert any("Could not prepare the files to download" in e.value and "No space left on device" in e.value
               for e in page.error), [e.value for e in page.error]
    assert not page.exception
    assert "SalUn" in shown_columns(page)


def test_a_corrupt_cached_result_is_detected_and_recomputed(page):
    import torch

    from pages import ui

    run_salun(page)
    first = dict(zip(page.dataframe[0].value["Metric"], page.dataframe[0].value["SalUn"]))
    store = ui.result_store()
    (result, _checksum), = [v for v in store._items.values() if v[0].method == "salun"]
    with torch.no_grad():  # something scribbles over the shared, cached model
        next(result.model.parameters()).add_(1.0)
    page.button(key="un_run").click().run()  # the same run again: the visitor is told as it is redone
    assert any("failed its integrity check" in w.value for w in page.warning)
    settle(page)
    assert not page.exception and not page.error
    again = dict(zip(page.dataframe[0].value["Metric"], page.dataframe[0].value["SalUn"]))
    assert {k: v for k, v in again.items() if not k.startswith("RTE")} == \
        {k: v for k, v in first.items() if not k.startswith("RTE")}
