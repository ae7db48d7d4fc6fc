"""Submitting runs to the process-wide job runner (core/jobs.py) and following them live."""

from __future__ import annotations

import time

import streamlit as st

from core.errors import SalunError
from pages.ui.resources import job_runner, limits
from pages.ui.results import result_store
from pages.ui.settings import run_config


def cancel_entries(batch: dict | None) -> None:
    """Stop the jobs of a batch the visitor has replaced with a new one."""
    for e in (batch or {}).get("entries", []):
        if e.get("job") is not None and not e["job"].finished:
            e["job"].cancel()


def check_queue(new_jobs: int) -> None:
    waiting = job_runner().stats()["waiting"]
    if waiting + new_jobs > limits().max_queue:
        raise SalunError(f"the server is busy: {waiting} runs are already waiting (limit {limits().max_queue}); "
                         "try again in a minute")


def submit_runs(exp, configs: list, labels: list[str]) -> list[dict]:
    """Queue every config that has no stored result; return one entry per config."""
    store, runner, entries = result_store(), job_runner(), []
    stored = [store.get(config, on_damaged=lambda label=label: st.warning(
        f"The stored result of {label} failed its integrity check (its weights changed after it was "
        "stored), so it is being computed again.")) for config, label in zip(configs, labels)]
    check_queue(sum(s is None for s in stored))
    for config, label, cached in zip(configs, labels, stored):
        job = None
        if cached is None:
            def work(progress, c=config):
                result = run_config(exp, c, progress)
                store.put(result)  # kept even if the visitor has left
                return result

            job = store.job_for(config, lambda work=work, label=label: runner.submit(work, label=label))
        entries.append({"label": label, "config": config, "job": job, "cached": cached is not None})
    return entries


def poll_jobs(entries: list[dict], cancel_key: str, title: str = "Running") -> bool:
    """Draw progress bars and a live loss curve until every job has finished; returns False if the
    visitor cancelled. The Cancel button reruns the page; the jobs keep running in their threads, and
    this rerun cancels them."""
    from core.classification.plots import loss_curve_figure

    jobs = [e["job"] for e in entries if e["job"] is not None]
    holder = st.empty()  # everything drawn here disappears once the jobs are done
    with holder.container():
        if st.button("Cancel", key=cancel_key, type="secondary", icon=":material/cancel:"):
            for job in jobs:
                job.cancel()
            for job in jobs:  # a run stops at its next step; wait for that so the page can say so at once
                job.wait(10)
            holder.empty()
            return False
        with st.status(title, expanded=True):
            bars = {id(e): st.progress(0.0, text=e["label"]) for e in entries if e["job"] is not None}
            chart = st.empty()
            last_drawn = 0.0
            while True:
                for e in entries:
                    job = e["job"]
                    if job is None:
                        continue
                    done, total, loss = job.progress
                    if job.status == "queued":
                        text = f"{e['label']}: waiting (position {job.queue_position()} in the queue)"
                    elif job.finished:
                        text = f"{e['label']}: {job.status}"
                    elif total == 0:
                        text = f"{e['label']}: starting…"
                    else:
                        text = f"{e['label']}: step {done}/{total}, loss {loss:.3f}"
                    bars[id(e)].progress(1.0 if job.finished else job.fraction_done, text=text)
                if all(j.finished for j in jobs):
                    break
                if time.monotonic() - last_drawn > 0.8:
                    chart.plotly_chart(loss_curve_figure({e["label"]: list(e["job"].losses) for e in entries
                                                          if e["job"] is not None}),
                                       key=f"{cancel_key}_loss_{time.monotonic()}")
                    last_drawn = time.monotonic()
                time.sleep(0.25)
    holder.empty()
    return True


def collect_results(entries: list[dict]) -> tuple[list[tuple[str, object]], list[str]]:
    """(label, RunResult) for each finished entry; and what to say about each that did not finish
    (shown by `report_problems`)."""
    store, results, problems = result_store(), [], []
    for e in entries:
        job = e["job"]
        if job is None:
            result = store.get(e["config"])
            if result is not None:
                results.append((e["label"], result))
            continue
        if job.status == "done":
            store.put(job.result)
            results.append((e["label"], job.result))
        else:
            problems.append((job.status, job.message or f"{e['label']} did not finish ({job.status})"))
    return results, problems


def report_problems(problems: list[tuple[str, str]]) -> None:
    """A cancelled run is the visitor's choice (a note); a failed one is explained as an error."""
    for status, message in problems:
        (st.info if status == "cancelled" else st.error)(message)
