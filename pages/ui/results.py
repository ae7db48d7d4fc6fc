"""Finished runs shared by every visitor: core.store.ResultStore, an in-memory cache in front of the
MLflow run store ($SALUN_HOME), so a result survives a restart and has a run id (`?run=RUN_ID`).
core.store imports no MLflow until a run is written, so this stays off the first page's path."""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from core.store import ResultStore  # noqa: F401  (pages use ui.ResultStore.key)


@st.cache_resource
def result_store() -> ResultStore:
    return ResultStore()


def cached_note(results, cached_labels=()) -> None:
    """Label the shown results that were not computed for this request ("cached"): read back from the
    run store (which run, when, by what), or kept in memory from an earlier visit (`cached_labels`)."""
    parts = []
    for label, result in results:
        info = getattr(result, "served_from_store", None)
        if info:
            when = datetime.fromtimestamp(info["stored_at"] / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            by = {"warm": "the warm store (`python -m core.cli warm`)", "app": "an earlier visit",
                  "cli": "the command line", "sweep": "a sweep"}.get(info.get("source"), "an earlier run")
            parts.append(f"{label} (run `{info['run_id'][:8]}`, computed {when} by {by})")
        elif label in cached_labels:
            parts.append(f"{label} (computed earlier on this server)")
    if parts:
        st.caption(":material/bolt: **cached** — " + "; ".join(parts) + ". Served from the run store because its "
                   "config, seed, model files, code and method defaults are those of this request: the numbers a "
                   "fresh run gives, without the wait.")
