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

    def work(progress):
        rows = sparsity_sweep(exp, sparsities, seeds, base_config=base, progress=progress,
                              lookup=store.get, on_result=store.put)
        retrain = []
        if with_retrain:
            for seed in seeds:
                config = ui.make_config(target, "retrain", seed, 0.5, **retrain_settings)
                result = store.get(config)
                if result is None:
                    result = ui.run_config(exp, config, progress)
                    store.put(result)
                retrain.append(result.metrics)
        return {"rows": rows, "retrain": retrain}

    return work


def main() -> None:
    ui.ensure_navigation(__file__)
    from core.classification.analysis import summarize_sweep
    from core.classification.plots import sweep_figure

    st.title("Sweep")
    st.caption("How much of the network should SalUn be allowed to change? Run it at several mask sparsities "
               "and seeds and see where it gets closest to Retrain.")
    target = ui.target_picker()
    if target is not None:
        exp = target.experiment()
        with st.container(border=True):
            c1, c2 = st.columns([3, 1])
            sparsities = c1.multiselect("Sparsities", SPARSITIES, default=[0.1, 0.3, 0.5, 0.7], key="sw_sparsities",
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
            st.caption(f"{runs} SalUn runs" + (f" + {n_seeds} Retrain" if with_retrain else "")
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
                    label="Sweep")
                st.session_state["sw_job"] = {"entries": [{"label": "Sweep", "job": job, "config": None}],
                                              "target": target}
            except SalunError as exc:
                st.error(str(exc))

    pending = st.session_state.get("sw_job")
    if pending is not None:
        job = pending["entries"][0]["job"]
        if not job.finished:
            ui.follow_jobs(pending["entries"], key="sw_follow", title="Sweeping")
        else:
            if job.status == "done":
                st.session_state["sw_result"] = {**job.result, "target": pending["target"]}
            else:
                ui.report_problems([(job.status, job.message)])
            st.session_state.pop("sw_job")

    shown = st.session_state.get("sw_result")
    if shown is not None:
        summary = summarize_sweep(shown["rows"])
        retrain = None
        if shown["retrain"]:
            retrain = {k: sum(m[k] for m in shown["retrain"]) / len(shown["retrain"])
                       for k in ("ua", "ra", "ta", "mia_efficacy")}
        st.subheader(f"SalUn on {shown['target'].forget} ({shown['target'].dataset})")
        st.plotly_chart(sweep_figure(summary, retrain), key="sw_fig")
        st.caption(" · ".join(f"**{METRIC_LABELS[k]}**: {METRIC_DEFINITIONS[k]}" for k in ("ua", "ra", "ta", "mia_efficacy")))
        table = pd.DataFrame(shown["rows"]).rename(columns=METRIC_LABELS)
        st.dataframe(table, hide_index=True, key="sw_table")


main()
