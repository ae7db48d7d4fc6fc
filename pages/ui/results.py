"""Finished runs shared by every visitor: core.store.ResultStore, an in-memory cache in front of the
MLflow run store ($SALUN_HOME), so a result survives a restart and has a run id (`?run=RUN_ID`).
core.store imports no MLflow until a run is written, so this stays off the first page's path."""

from __future__ import annotations

import streamlit as st

from core.store import ResultStore  # noqa: F401  (pages use ui.ResultStore.key)


@st.cache_resource
def result_store() -> ResultStore:
    return ResultStore()
