"""Submitting runs to the process-wide job runner (core/jobs.py) and following them live."""

from __future__ import annotations

import streamlit as st

from core.errors import SalunError
from pages.ui.resources import job_runner, limits, public
from pages.ui.results import result_store
from pages.ui.settings import run_config


def cancel_entries(batch: dict | None, keep: list[dict] = ()) -> None:
    """Stop the jobs of a batch the visitor has replaced with a new one, except those the new one
    shares (the same run asked for again while it runs)."""
    kept = {id(e["job"]) for e in keep if e.get("job") is not None}
    for e in (batch or {}).get("entries", []):
        if e.get("job") is not None and not e["job"].finished and id(e["job"]) not in kept:
            e["job"].cancel()


def check_queue(new_jobs: int) -> None:
    waiting = job_runner().stats()["waiting"]
    if waiting + new_jobs > limits().max_queue:
        raise SalunError(f"the server is busy: {waiting} runs are already waiting (limit {limits().max_queue}); "
                         "try again in a minute")


def submit_runs(exp, configs: list, labels: list[str]) -> list[dict]:
    """Queue every config that has no stored result; return one entry per config."""
    store, runner, entries = result_store(), job_runner(), []
    stored = [store.get(config, on_damaged=lambda reason="its weights changed after it was stored", label=label:
                        st.warning(f"The stored result of {label} failed its integrity check ({reason}), so it "
                                   "is being computed again.")) for config, label in zip(configs, labels)]
    check_queue(sum(s is None for s in stored))
    for config, label, cached in zip(configs, labels, stored):
        job = None
        if cached is None:
            def work(progress, c=config):
                result = run_config(exp, c, progress)
                store.put(result)  # kept even if the visitor has left
                return result

            job = store.job_for(config, lambda work=work, label=label, config=config:
                                runner.submit(work, label=label, info={"config": config}, remote=remote_run(config, store)))
        entries.append({"label": label, "config": config, "job": job, "cached": cached is not None})
    return entries


def remote_run(config, store):
    """The job's run as a task for a Ray cluster (used only when SALUN_RAY_ADDRESS is set): the same
    RunResult, stored here afterwards. A model file of this server's own (an upload) stays here."""
    from core.sweep import DEFAULT_THREADS_PER_RUN, run_task

    if config.checkpoint is not None:
        return None

    def keep(result):
        store.put(result)  # kept even if the visitor has left
        return result

    return run_task, (config.to_dict(), DEFAULT_THREADS_PER_RUN, "cpu"), keep


def describe(job, label: str) -> str:
    """One line on where a job stands: queue position, step, loss, time left."""
    done, total, loss = job.progress
    if job.status == "queued":
        return f"{label}: waiting (position {job.queue_position()} in the queue)"
    if job.finished:
        return f"{label}: {job.status}"
    if job.cancelling:
        return f"{label}: cancelling at the next step…"
    if total == 0:
        return f"{label}: " + ("running on the Ray cluster…" if getattr(job, "remote", None) else "starting…")
    text = f"{label}: step {done}/{total}" + (f", loss {loss:.3f}" if loss == loss else "")
    if done >= total and loss == loss:  # the training steps are over (a mask's pass counts with a NaN loss):
        # measuring the result, which on Fashion-MNIST's 70,000 images takes minutes
        return text + " · steps done, evaluating the result…"
    left = job.seconds_left
    if left is not None:
        text += f" · about {format_seconds(left)} left"
    return text


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def follow_jobs(entries: list[dict], key: str, title: str = "Running", live=None, every: float = 1.0) -> None:
    """Progress of the unfinished jobs in `entries`, redrawn every `every` seconds by a fragment while
    the rest of the page stays as it is: queue position, step, loss, time left, a live loss curve,
    and a Cancel button. When the last job has finished the whole page reruns, so it can show the
    results. `live(jobs)`, if given, draws more inside the box (a preview image).

    The jobs run in the process-wide runner, not in this page: a reload, another page or a closed tab
    leaves them running, and a page that finds them again (ui.links) follows them the same way."""
    jobs = [e["job"] for e in entries if e.get("job") is not None]

    @st.fragment(run_every=every)
    def progress_box():
        if all(job.finished for job in jobs):
            st.rerun(scope="app")
        if st.button("Cancel", key=f"{key}_cancel", type="secondary", icon=":material/cancel:",
                     disabled=any(job.cancelling for job in jobs)):
            for job in jobs:
                job.cancel()  # a run stops at its next step; this box says so until it has
        # not `with st.status(...)`: leaving that block marks the box complete while the jobs still run
        with st.status(title, expanded=True, state="running").container():
            for e in entries:
                if e.get("job") is not None:
                    job = e["job"]
                    st.progress(1.0 if job.finished else job.fraction_done, text=describe(job, e["label"]))
            if live is not None:
                live(jobs)
            elif any(job.losses for job in jobs):
                from core.classification.plots import loss_curve_figure

                st.plotly_chart(loss_curve_figure({e["label"]: list(e["job"].losses) for e in entries
                                                   if e.get("job") is not None}), key=f"{key}_loss")

    progress_box()


def unfinished(entries: list[dict]) -> bool:
    return any(e.get("job") is not None and not e["job"].finished for e in entries)


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
        (st.info if status == "cancelled" else st.error)(public(message))
