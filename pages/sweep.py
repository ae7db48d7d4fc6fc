"""Sweep: SalUn at several sparsities and seeds, against Retrain.

Runs inside the app's navigation or on its own: `streamlit run pages/sweep.py`.
"""

from __future__ import annotations


import pandas as pd
import streamlit as st

from core.errors import SalunError
from core.classification.metrics import METRIC_DEFINITIONS, METRIC_LABELS
from pages import ui

SPARSITIES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def sweep_work(exp, target, sparsities, seeds, settings, with_retrain, retrain_settings):
    """The job: every SalUn run (reusing stored ones), then Retrain once per seed."""
    from core.classification.analysis import sparsity_sweep

    store = ui.result_store()
    base = ui.make_config(target, "salun", seeds[0], sparsities[0], **settings)
    if ui.job_runner().remote is not None:
        return cluster_sweep_work(target, sparsities, seeds, settings, with_retrain, retrain_settings, store)

    def work(progress):
        run_ids = []  # every run the sweep shows, for its address
        results = []  # each row's run, in row order: its model is compared with its seed's Retrain

        def keep(result):
            run_ids.append(store.put(result))
            results.append(result)

        rows = sparsity_sweep(exp, sparsities, seeds, base_config=base, progress=progress,
                              lookup=store.get, on_result=keep)
        retrain = []
        if with_retrain:
            retrain_models = {}
            for seed in seeds:
                config = ui.make_config(target, "retrain", seed, 0.5, **retrain_settings)
                result = store.get(config)
                if result is None:
                    result = ui.run_config(exp, config, progress)
                run_ids.append(store.put(result))
                retrain.append(result.metrics)
                retrain_models[seed] = result.model
            for row, result in zip(rows, results):  # as `unlearn --compare-retrain` and the CLI sweep have it
                row["js_to_retrain"] = exp.js_to_retrain(result.model, retrain_models[row["seed"]])
        return {"rows": rows, "retrain": retrain, "run_ids": [r for r in run_ids if r]}

    return work


class _CachedStore:
    """The app's result cache as a sweep's run store."""

    def __init__(self, store):
        self.store = store

    def find(self, config, on_damaged=None):
        return self.store.get(config, on_damaged=on_damaged)

    def log(self, result, source="sweep"):
        self.store.put(result)


def cluster_sweep_work(target, sparsities, seeds, settings, with_retrain, retrain_settings, store):
    """The same sweep with every run a task on the Ray cluster (SALUN_RAY_ADDRESS), all at once;
    Retrain once per seed, shared by every sparsity. Cancelling the job cancels the tasks."""
    from core.sweep import RayBackend, Sweep

    configs = [ui.make_config(target, "salun", seed, sparsity, **settings) for sparsity in sparsities for seed in seeds]
    reference = ((lambda c: ui.make_config(target, "retrain", c.seed, 0.5, **retrain_settings))
                 if with_retrain else None)

    def work(progress):
        ui.job_runner().remote.connect()  # joined once; the sweep then never shuts the app's Ray down
        sweep = Sweep(configs, RayBackend(ui.job_runner().remote.address), store=_CachedStore(store),
                      reference=reference)
        outcomes = list(sweep.run(progress=lambda done, total, failed: progress(done, total, float("nan"))))
        failed = [o for o in outcomes if o.error is not None]
        if failed:
            raise SalunError(f"{len(failed)} of {len(outcomes)} sweep runs failed on the cluster; first: {failed[0].error}")
        rows = [{"sparsity": o.config.sparsity, "seed": o.config.seed,
                 **o.result.metrics} for o in outcomes]
        retrain = {o.config.seed: o.result.retrain for o in outcomes if o.result.retrain is not None}
        run_ids = [getattr(r, "run_id", None) for r in [o.result for o in outcomes] + list(retrain.values())]
        return {"rows": sorted(rows, key=lambda r: (r["sparsity"], r["seed"])),
                "retrain": [r.metrics for r in retrain.values()], "cluster": sweep.summary(),
                "run_ids": [r for r in run_ids if r]}

    return work


def restore_from_url() -> None:
    """A session without a sweep of its own (a reload, a shared link, a restarted server): show the
    sweep the address names, reattached to its job while it runs, else read back from the run store."""
    if "sw_job" in st.session_state or "sw_result" in st.session_state:
        return
    if "run" not in st.query_params and "job" not in st.query_params:
        return
    results, problems = ui.links.runs_in_url()
    jobs, lost = ui.links.jobs_in_url()
    for problem in problems + lost:
        st.warning(problem)
    jobs = [job for job in jobs if "config" in job.info]
    if jobs:
        config = jobs[0].info["config"]
        ui.links.restore_picker(config)
        st.session_state.setdefault("sw_sparsities", jobs[0].info["sparsities"])
        st.session_state["sw_job"] = {"entries": [{"label": "Sweep", "job": jobs[0], "config": None}],
                                      "target": ui.links.target_of(config)}
        return
    salun = [r for r in results if r.config.method != "retrain"]
    if not salun:
        return
    config = salun[0].config
    ui.links.restore_picker(config)
    st.session_state.setdefault("sw_sparsities", sorted({r.config.sparsity for r in salun}))
    target = ui.links.target_of(config)
    retrain = {r.config.seed: r for r in results if r.config.method == "retrain"}
    salun.sort(key=lambda r: (r.config.sparsity, r.config.seed))
    rows = [{"sparsity": r.config.sparsity, "seed": r.config.seed, **r.metrics} for r in salun]
    if retrain:  # as the sweep computed it: each run against its seed's Retrain
        exp = target.experiment()
        for row, result in zip(rows, salun):
            if row["seed"] in retrain:
                row["js_to_retrain"] = exp.js_to_retrain(result.model, retrain[row["seed"]].model)
    st.session_state["sw_result"] = {"rows": rows, "retrain": [r.metrics for r in retrain.values()],
                                     "target": target, "run_ids": [r.run_id for r in results]}


def forget_words(forget: str) -> str:
    """What a sweep forgets, in words: "class 4", "a random 10% of the training images"."""
    kind, _, value = str(forget).partition(":")
    if kind == "class":
        return f"class {value}"
    if kind == "random":
        return f"a random {float(value) * 100:g}% of the training images"
    return "the listed training images"


def main() -> None:
    ui.ensure_navigation(__file__)
    restore_from_url()
    from core.classification.analysis import summarize_sweep
    from core.classification.plots import sweep_figure

    st.title("Sparsity sweep")
    st.caption("How much of the network should SalUn be allowed to change? Run it at several mask sparsities "
               "and seeds and see where it gets closest to Retrain.")
    target = ui.target_picker()
    if target is not None:
        exp = target.experiment()
        with st.container(border=True):
            c1, c2 = st.columns([3, 1])
            sparsities = c1.multiselect("Sparsities", SPARSITIES, key="sw_sparsities",
                                        default=None if "sw_sparsities" in st.session_state else [0.1, 0.3, 0.5, 0.7],
                                        format_func=lambda s: f"{s * 100:.0f}%")
            n_seeds = int(c2.number_input("Seeds per sparsity", 1, 10, 2, key="sw_seeds",
                                          help=f"Seeds {target.seed}, {target.seed + 1}, …"))
            with st.expander("SalUn settings"):
                settings = ui.method_settings(exp, "salun", "sw")
            with_retrain = st.checkbox("Retrain reference (one per seed; trains from scratch, slower)", value=True,
                                       key="sw_retrain")
            retrain_settings = {}
            if with_retrain:
                with st.expander("Retrain settings"):
                    retrain_settings = ui.method_settings(exp, "retrain", "sw")
            runs = len(sparsities) * n_seeds
            st.caption(f"{runs} SalUn run{'s' if runs != 1 else ''}" + (f" + {n_seeds} Retrain" if with_retrain else "")
                       + f" (this server allows {ui.limits().max_sweep_runs} per sweep).")
            clicked = st.button("Run sweep", type="primary", key="sw_run", disabled=not sparsities,
                                icon=":material/play_arrow:")
        if clicked:
            try:
                ui.limits().check("sweep_runs", runs)
                for values in (settings, retrain_settings):
                    if "epochs" in values:
                        ui.limits().check("epochs", values["epochs"])
                seeds = list(range(target.seed, target.seed + n_seeds))
                ui.check_queue(1)
                ui.cancel_entries(st.session_state.get("sw_job"))
                job = ui.job_runner().submit(
                    sweep_work(exp, target, sorted(sparsities), seeds, settings, with_retrain, retrain_settings),
                    label="Sweep", info={"config": ui.make_config(target, "salun", seeds[0], sorted(sparsities)[0], **settings),
                                         "sparsities": sorted(sparsities)})
                st.session_state.pop("sw_result", None)
                st.session_state["sw_job"] = {"entries": [{"label": "Sweep", "job": job, "config": None}],
                                              "target": target}
            except SalunError as exc:
                st.error(ui.public(exc))

    pending = st.session_state.get("sw_job")
    if pending is not None:
        job = pending["entries"][0]["job"]
        if not job.finished:
            ui.links.show_in_url(jobs=[job])
            ui.follow_jobs(pending["entries"], key="sw_follow", title="Sweeping")
        else:
            if job.status == "done":
                st.session_state["sw_result"] = {**job.result, "target": pending["target"]}
            else:
                ui.report_problems([(job.status, job.message)])
            st.session_state.pop("sw_job")

    shown = st.session_state.get("sw_result")
    if st.session_state.get("sw_job") is None:
        ui.links.show_in_url(runs=shown.get("run_ids", []) if shown else [])
    if shown is not None:
        summary = summarize_sweep(shown["rows"])
        retrain = None
        if shown["retrain"]:
            retrain = {k: sum(m[k] for m in shown["retrain"]) / len(shown["retrain"])
                       for k in ("ua", "ra", "ta", "mia_efficacy")}
        st.subheader(f"SalUn forgetting {forget_words(shown['target'].forget)} ({shown['target'].dataset})")
        st.plotly_chart(sweep_figure(summary, retrain), key="sw_fig")
        if shown.get("cluster"):
            ran = shown["cluster"]
            st.caption(f"Ran on the Ray cluster at {ran['address']}: {ran['computed_tasks']} runs computed there, "
                       f"{ran['reused']} taken from earlier results, in {ran['seconds']:.0f} s.")
        defined = ("ua", "ra", "ta", "mia_efficacy") + (("js_to_retrain",) if "js_to_retrain" in shown["rows"][0] else ())
        st.caption(" · ".join(f"**{METRIC_LABELS[k]}**: {METRIC_DEFINITIONS[k]}" for k in defined))
        # the same look as the comparison table: % sparsity, two decimals, metric labels as headers
        table = pd.DataFrame(shown["rows"]).drop(columns=["mia_samples"], errors="ignore")
        table["sparsity"] = table["sparsity"] * 100
        table = table.rename(columns={**METRIC_LABELS, "sparsity": "Sparsity (%)", "seed": "Seed"})
        st.dataframe(table, hide_index=True, key="sw_table", column_config={
            **{c: st.column_config.NumberColumn(format="%.2f") for c in table.columns if c not in ("Seed", "Sparsity (%)")},
            "Sparsity (%)": st.column_config.NumberColumn(format="%.0f"), "Seed": st.column_config.NumberColumn(format="%d"),
            METRIC_LABELS["js_to_retrain"]: st.column_config.NumberColumn(format="%.3f")})


main()
