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
