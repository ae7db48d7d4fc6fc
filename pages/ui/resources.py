"""Process-wide objects behind st.cache_resource: shared by every visitor and every page."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[2]


@st.cache_resource
def limits():
    from core.limits import load_limits

    return load_limits()


def hosted() -> bool:
    """Hosted mode (SALUN_HOSTED=1 or `hosted = true` in the limits file): no field takes a server path."""
    return limits().hosted


def public(exc) -> str:
    """The one line a visitor sees for a user error: without server paths in hosted mode."""
    from core.errors import public_message

    return public_message(exc, limits().hosted)


@st.cache_resource
def job_runner():
    """One runner for the whole server: a job outlives the page run, the page and the browser tab
    that started it, so a reload or another page can follow it again."""
    from core.jobs import JobRunner

    return JobRunner(max_concurrent=limits().max_concurrent_jobs)


@st.cache_resource(max_entries=8, show_spinner="Loading the dataset and the trained model…")
def experiment(dataset: str, forget: str, checkpoint: str | None, data_root: str | None, split_seed: int):
    from core.classification.experiment import Experiment, RunConfig

    return Experiment.from_config(RunConfig(dataset=dataset, forget=forget, checkpoint=checkpoint,
                                            data_root=data_root, seed=split_seed))


@st.cache_resource(max_entries=4, show_spinner="Loading example images…")
def example_images(dataset: str, data_root: str | None):
    """(examples, class names, training-set size): kept on disk for the built-in datasets (core.warm)."""
    from core.warm import example_images as examples

    return examples(dataset, data_root)


@st.cache_resource
def _chart_code_files() -> list[str]:
    """File names of the browser code Streamlit loads on a page's first Plotly chart (~4.7 MB of JS)."""
    folder = Path(st.__file__).resolve().parent / "static" / "static" / "js"
    return sorted(p.name for p in folder.glob("PlotlyChart.*.js"))


def prefetch_chart_code() -> None:
    """Load the browser's chart code while the visitor reads, not after their first click: Streamlit
    fetches and runs Plotly's bundle only when a page first shows a Plotly chart, and in a headless
    2-core browser that took ~2 s of the Start here click. The module is imported from the same address
    Streamlit imports it from, so the browser evaluates it once. Nothing shows; without the file (another
    Streamlit build), nothing happens."""
    files = _chart_code_files()
    if not files:
        return
    imports = "".join(f"import(new URL({name!r}, base).href).catch(() => {{}});" for name in files)
    st.html("<script>(() => { const main = document.querySelector('script[src*=\"/static/js/index.\"]');"
            " if (!main || window.__salunChartCode) return; window.__salunChartCode = true;"
            f" const base = main.src; setTimeout(() => {{ {imports} }}, 300); }})();</script>",
            unsafe_allow_javascript=True)
