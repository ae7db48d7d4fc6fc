"""The address carries what a page shows, so a reload or a shared link shows it again.

    ?run=RUN_ID (repeatable)   the finished runs the page compares, read back from the run store
    ?job=JOB_KEY (repeatable)  runs still in progress in the server's job runner: reattached

A page writes its state with `show_in_url` and, when its session has no state of its own (a reload,
a link opened in another tab or browser), reads it back with `runs_in_url` / `jobs_in_url`.
"""

from __future__ import annotations

import streamlit as st

from core.errors import SalunError
from pages.ui.resources import job_runner
from pages.ui.results import result_store


def show_in_url(runs=(), jobs=()) -> None:
    """Make the address say which runs (by run id) and jobs (by key) the page shows."""
    runs, jobs = [r for r in runs if r], [j.key for j in jobs if j is not None and not j.finished]
    for name, values in (("run", runs), ("job", jobs)):
        if st.query_params.get_all(name) != values:
            if values:
                st.query_params[name] = values
            elif name in st.query_params:
                del st.query_params[name]


def run_id_of(result) -> str | None:
    return getattr(result, "run_id", None)


def runs_in_url() -> tuple[list, list[str]]:
    """The stored results the address names, and what to tell the visitor about those it cannot show."""
    results, problems = [], []
    for run_id in st.query_params.get_all("run"):
        try:
            results.append(result_store().get_run(run_id))
        except SalunError as exc:
            problems.append(f"The run {run_id!r} in this address cannot be shown: {exc}")
    return results, problems


def jobs_in_url() -> tuple[list, list[str]]:
    """The jobs the address names that this server still knows, and what to say about the others
    (the server restarted since, so the run is lost: it must be started again)."""
    jobs, problems = [], []
    for key in st.query_params.get_all("job"):
        job = job_runner().get(key)
        if job is None:
            problems.append("The run this address followed is no longer on this server (it restarted, or the run "
                            "is long gone); its progress is lost. Start it again; finished runs are kept.")
        else:
            jobs.append(job)
    return jobs, problems


def restore_picker(config) -> None:
    """Set the shared picker's widgets to what a config ran on, for a session that has not chosen yet
    (a link opened fresh), so the page shows the choices that produced what it shows."""
    from pages.ui.picker import PICKER_KEYS

    if any(key in st.session_state for key in PICKER_KEYS):
        return
    kind, _, value = str(config.forget).partition(":")
    state = {"pick_dataset": config.dataset, "pick_kind": kind, "pick_seed": int(config.seed),
             "pick_checkpoint": config.checkpoint or "", "pick_data_root": config.data_root or ""}
    if kind == "class":
        state["pick_class"] = int(value)
    elif kind == "random":
        state["pick_share"] = int(round(float(value) * 100))
    elif kind == "indices":
        from pages.ui.resources import ROOT

        try:
            state["pick_indices_text"] = (ROOT / value).read_text()[:100_000]
        except OSError:
            pass
    st.session_state.update(state)


# --- a page's batch of runs: started, followed, shown, addressable ---------------------------------
# A page keeps the runs it started in session_state[f"{name}_batch"] ({"target", "seed", "entries"})
# until they finish, then what it shows in session_state[f"{name}_shown"] ({"target", "seed",
# "results": [(label, result)]}). Both are mirrored in the address.

def target_of(config):
    """The picker's Target a classifier run was made on (None for other kinds of run)."""
    from pages.ui.picker import Target

    if not hasattr(config, "checkpoint"):
        return None
    return Target(config.dataset, config.forget, config.checkpoint, config.data_root, int(config.seed))


def restore_batch(name: str, label_of, restore=restore_picker) -> None:
    """For a session that has neither a batch nor a shown result (a reload, a link opened fresh):
    take them from the address, and set the choices to match with `restore(config)` (default: the
    shared picker). Call before the choices are drawn."""
    if f"{name}_batch" in st.session_state or f"{name}_shown" in st.session_state:
        return
    if "run" not in st.query_params and "job" not in st.query_params:
        return
    results, problems = runs_in_url()
    jobs, lost = jobs_in_url()
    for problem in problems + lost:
        st.warning(problem)
    configs = [r.config for r in results] + [j.info["config"] for j in jobs if "config" in j.info]
    if not configs:
        return
    restore(configs[0])
    state = {"target": target_of(configs[0]), "seed": int(configs[0].seed)}
    if jobs:
        entries = [{"label": label_of(r.config.method), "config": r.config, "job": None, "cached": True} for r in results]
        entries += [{"label": j.label, "config": j.info.get("config"), "job": j} for j in jobs]
        st.session_state[f"{name}_batch"] = {**state, "entries": entries}
    else:
        st.session_state[f"{name}_shown"] = {**state, "results": [(label_of(r.config.method), r) for r in results]}


def follow_batch(name: str, title: str, live=None):
    """Follow the page's unfinished runs live; once all have finished, report any that failed and
    make the finished ones what the page shows. Keeps the address in step. Returns what to show."""
    from pages.ui.jobs import collect_results, follow_jobs, report_problems, unfinished

    batch = st.session_state.get(f"{name}_batch")
    if batch is not None and unfinished(batch["entries"]):
        follow_jobs(batch["entries"], key=f"{name}_follow", title=title, live=live)
    elif batch is not None:
        results, problems = collect_results(batch["entries"])
        report_problems(problems)
        if results:
            st.session_state[f"{name}_shown"] = {"target": batch["target"], "seed": batch["seed"], "results": results,
                                                 "cached": [e["label"] for e in batch["entries"] if e.get("job") is None]}
        st.session_state.pop(f"{name}_batch")
        batch = None
    shown = st.session_state.get(f"{name}_shown")
    if batch is not None:
        show_in_url(runs=[run_id_of(result_store().get(e["config"])) for e in batch["entries"]
                          if e.get("job") is None and e.get("config") is not None],
                    jobs=[e["job"] for e in batch["entries"] if e.get("job") is not None])
    else:
        show_in_url(runs=[run_id_of(r) for _, r in shown["results"]] if shown else [])
        if shown:
            from pages.ui.results import cached_note

            cached_note(shown["results"], shown.get("cached", ()))
    return shown
