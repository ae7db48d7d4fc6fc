"""Unlearn: pick what to forget and the methods, run them, compare with the original and Retrain, export.

Runs inside the app's navigation or on its own: `streamlit run pages/unlearn.py`.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import SalunError
from core.classification.metrics import (METRIC_DEFINITIONS, METRIC_LABELS, avg_gap, avg_gap_std, confusion_matrix,
                                         per_class_accuracy)
from core.saliency import DEFAULT_SPARSITY
from pages import ui
from pages.ui import views

METHODS = ui.methods("classification")  # the built-in methods and those of $SALUN_PLUGINS

KEPT = ui.kept("un_methods", "un_sparsity", "un_masked")  # choices that outlive a visit to another page
SHOWN_METRICS = ("ua", "ra", "ta", "mia_efficacy", "forget_test_accuracy", "rte_seconds")


def method_label(name: str) -> str:
    return METHODS[name].label


def details(exp, result_or_none, seed: int) -> dict:
    """evaluate(..., details=True) once per model, kept with the result (or the experiment, for Before)."""
    holder = result_or_none.extra if result_or_none is not None else exp.__dict__.setdefault("_app_details", {})
    key = ("details", seed)
    if key not in holder:
        model = result_or_none.model if result_or_none is not None else exp.original
        holder[key] = exp.evaluate(model, seed, details=True)["details"]
    return holder[key]


@st.cache_data(show_spinner=False, max_entries=64)
def _export_files(run_key: str, _result) -> dict[str, bytes]:
    from core.classification.experiment import save_run

    with tempfile.TemporaryDirectory() as folder:
        save_run(_result, Path(folder))
        files = {p.name: p.read_bytes() for p in Path(folder).iterdir()}
    summary = _result.summary()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["method", "forget", "seed", "metric", "value"])
    for key in SHOWN_METRICS + ("avg_gap",):
        if key in summary:
            writer.writerow([summary["method"], summary["forget"], summary["seed"], key, summary[key]])
    files["metrics.csv"] = out.getvalue().encode()
    return files


def metrics_table(columns: dict[str, dict], retrain: dict | None) -> pd.DataFrame:
    """A row per metric shown: its label, one column per model, and its definition ("What it means",
    shown in full under the grid, whose cells hold one line)."""
    rows = []
    keys = SHOWN_METRICS[:4] + ("mia_efficacy_std",) + SHOWN_METRICS[4:]
    for key in keys + (("avg_gap", "avg_gap_std", "js_to_retrain") if retrain else ()):
        row = {"Metric": METRIC_LABELS[key]}
        for label, metrics in columns.items():
            if key in ("avg_gap", "avg_gap_std"):
                gap = avg_gap if key == "avg_gap" else avg_gap_std
                row[label] = None if label.startswith("Before") else gap(metrics, retrain)
            else:
                row[label] = metrics.get(key)
        row["What it means"] = METRIC_DEFINITIONS[key]
        if any(row[label] is not None for label in columns):
            rows.append(row)
    return pd.DataFrame(rows)


def forget_phrase(exp) -> str:
    """What was forgotten, in words: "class 4", "a random 10% of the training images"."""
    target = exp.split.target
    if target.kind == "class":
        return f"class {exp.dataset.class_names[int(target.value)]}"
    if target.kind == "random":
        return f"a random {float(target.value) * 100:g}% of the training images"
    return "the training images listed in the index file"


def show_comparison(exp, results: list[tuple[str, object]], seed: int) -> None:
    from core.classification.attribution import attribution_examples, integrated_gradients, predicted_labels
    from core.classification.plots import (attribution_figure, confusion_matrix_figure, membership_figure, metrics_figure,
                            per_class_accuracy_figure)

    class_names = exp.dataset.class_names
    forget_class = exp.split.target.value if exp.split.classwise else None
    before = exp.original_metrics(seed)
    retrain = next((r for label, r in results if r.method == "retrain"), None)
    columns = {"Before (original)": before, **{label: r.metrics for label, r in results}}
    if retrain is not None:  # where each model sends the forget images, against Retrain (a forward pass each)
        columns.update({label: {**r.metrics, "js_to_retrain": exp.js_to_retrain(r.model, retrain.model)}
                        for label, r in results if r is not retrain})
    main_label, main = next(((l, r) for l, r in results if r.method != "retrain"), results[0])

    st.subheader("Before / after")
    st.caption(f"Forgetting {forget_phrase(exp)}: {len(exp.split.forget_idx):,} training images forgotten, "
               f"{len(exp.split.retain_idx):,} kept. Hover the :material/help: beside a metric for its definition.")
    tiles = st.columns(5)
    keys = ["ua", "ra", "ta", "mia_efficacy"] + (["forget_test_accuracy"] if exp.split.classwise else [])
    for tile, key in zip(tiles, keys):
        spread = main.metrics.get(f"{key}_std")  # MIA-Efficacy: std over the attacker's member samples
        tile.metric(f"{METRIC_LABELS[key]} · {main_label}",
                    f"{main.metrics[key]:.1f}" + (f" ± {spread:.1f}" if spread is not None else ""),
                    delta=f"{main.metrics[key] - before[key]:+.1f} vs before", delta_color="off",
                    help=METRIC_DEFINITIONS[key])
    if retrain is not None and main is not retrain:
        st.metric(f"Avg. Gap to Retrain · {main_label}",
                  f"{avg_gap(main.metrics, retrain.metrics):.2f} ± {avg_gap_std(main.metrics, retrain.metrics):.2f}",
                  help=METRIC_DEFINITIONS["avg_gap"])
    table = metrics_table(columns, retrain.metrics if retrain else None)
    # the definitions go under the grid, in full: a grid cell holds one line and cut the long ones
    st.dataframe(table, hide_index=True, key="compare_table", placeholder="—",
                 column_order=["Metric", *columns],
                 column_config={"Metric": st.column_config.TextColumn(width="medium", pinned=True),
                                **{label: st.column_config.NumberColumn(format="%.2f", width="small") for label in columns}})
    st.caption("\n".join(f"- **{row['Metric']}**: {row['What it means']}" for _, row in table.iterrows()))

    # keyed: the open tab survives reruns (a download no longer sends the page back to Metrics), and
    # the looking-inside views compute only while their tab is open
    (tab_metrics, tab_class, tab_confusion, tab_attr, tab_mia, tab_audit, tab_labels, tab_emb, tab_cka, tab_weights,
     tab_replay, tab_export) = st.tabs(
        ["Metrics", "Per class", "Confusion matrices", "Attributions", "Membership inference", "Audit",
         "Where the forgotten go", "Embedding", "Layer similarity", "Weight change", "Replay", "Export"],
        key="un_tabs", on_change="rerun")
    test_x, test_y = exp.dataset.test_x, exp.dataset.test_y
    models = {"Before": exp.original, **{label: r.model for label, r in results}}
    with tab_metrics:
        st.plotly_chart(metrics_figure(columns), key="metrics_fig")
        st.caption(" · ".join(f"**{METRIC_LABELS[k]}**: {METRIC_DEFINITIONS[k]}" for k in ("ua", "ra", "ta", "mia_efficacy")))
    # only the open tab computes (integrated gradients, confusion matrices and the membership attackers
    # take seconds): the comparison itself is on screen as soon as its numbers are
    if tab_class.open:
        with tab_class:
            per_class = {label: per_class_accuracy(m, test_x, test_y, exp.dataset.num_classes)
                         for label, m in models.items()}
            st.plotly_chart(per_class_accuracy_figure(per_class, class_names, forget_class), key="per_class_fig")
    if tab_confusion.open:
        with tab_confusion:
            cols = st.columns(min(3, len(models)))
            for i, (label, model) in enumerate(models.items()):
                with cols[i % len(cols)]:
                    st.plotly_chart(confusion_matrix_figure(confusion_matrix(model, test_x, test_y, exp.dataset.num_classes),
                                                            class_names, label), key=f"confusion_{i}")
    if tab_attr.open:
        with tab_attr:
            images, labels = attribution_examples(exp.dataset, exp.split, count=4)
            chosen = st.selectbox("After", [label for label, _ in results], key="attr_after")
            model_after = dict(results)[chosen].model
            before_ig = integrated_gradients(exp.original, images, labels)
            after_ig = integrated_gradients(model_after, images, labels)
            names = [str(class_names[int(c)]) for c in labels]
            st.plotly_chart(attribution_figure(images.numpy(), names, before_ig, after_ig,
                                               [str(class_names[c]) for c in predicted_labels(exp.original, images)],
                                               [str(class_names[c]) for c in predicted_labels(model_after, images)],
                                               after_label=chosen), key="attr_fig")
            st.caption("Integrated Gradients (captum) on the same test images, toward their true label, from a black "
                       "baseline. The first rows are images of what was forgotten.")
    if tab_mia.open:
        with tab_mia:
            panels = {"Before": details(exp, None, seed), **{label: details(exp, r, seed) for label, r in results}}
            st.plotly_chart(membership_figure(panels), key="mia_fig")
            st.caption(METRIC_DEFINITIONS["mia_efficacy"] + " The attacker is fitted anew for each model on retain "
                       "(members) and test (non-members) confidences; the shaded range is where it says 'member'.")
    for tab, view in ((tab_audit, lambda: views.audit_view(exp, results, seed)),
                      (tab_labels, lambda: views.forget_labels_view(exp, results)),
                      (tab_emb, lambda: views.embedding_view(exp, results, seed)),
                      (tab_cka, lambda: views.layer_similarity_view(exp, results, seed)),
                      (tab_weights, lambda: views.weight_change_view(exp, results)),
                      (tab_replay, lambda: views.replay_view(exp, results))):
        if tab.open:
            with tab:
                view()
    with tab_export:
        export_section(results)


def export_section(results) -> None:
    from core.classification.analysis import cli_command

    chosen = st.selectbox("Run to export", [label for label, _ in results], key="export_choice")
    result = dict(results)[chosen]
    run_key = ui.ResultStore.key(result.config)
    try:
        files = _export_files(run_key, result)
    except OSError as exc:  # a full or read-only temporary folder: say so, keep the comparison on screen
        st.error(f"Could not prepare the files to download ({ui.public(exc)}). The results above are unaffected; "
                 "try again once the server has free disk space.")
        return
    stem = f"{result.method}_{result.config.forget.replace(':', '-').replace('/', '_')}_seed{result.config.seed}"
    cols = st.columns(5)
    downloads = [("model.safetensors", "Model (safetensors)", "application/octet-stream"),
                 ("mask.safetensors", "Mask (safetensors)", "application/octet-stream"),
                 ("metrics.csv", "Metrics (CSV)", "text/csv"),
                 ("metrics.json", "Metrics (JSON)", "application/json"),
                 ("config.json", "Run config (JSON)", "application/json")]
    for col, (name, label, mime) in zip(cols, downloads):
        if name in files:
            col.download_button(label, files[name], file_name=f"{stem}_{name}", mime=mime, key=f"dl_{name}",
                                on_click="ignore")  # no rerun: the page stays as it is
        else:
            col.caption(f"{label}: none — {result.method} uses no mask")
    try:
        st.markdown("Reproduce this run with the command line:")
        command = cli_command(result.config, save=f"runs/{stem}")
        if ui.hosted():  # an operator's or uploaded model's server path is not shown to a visitor
            from core.errors import strip_paths

            command = strip_paths(command)
        st.code(command, language="bash")
    except SalunError as exc:
        st.info(str(exc))


def show_scaling_benchmark() -> None:
    """bench/bench_scaling.py's measured figure: how Retrain's and SalUn's cost grow with the data."""
    path = ui.ROOT / "bench" / "results" / "scaling.csv"
    if not path.is_file():
        return
    from core.classification.plots import scaling_figure

    with st.expander("How the cost of forgetting grows with the data (measured on Fashion-MNIST)"):
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        st.plotly_chart(scaling_figure(rows), width="stretch")
        st.caption("One clothing class forgotten from small CNNs trained on nested subsets of Fashion-MNIST's "
                   "60,000 training images (`bench/bench_scaling.py`). Retrain trains a new model on everything "
                   "kept, so its cost grows with the data; SalUn works on the forgotten images (about a tenth "
                   "here) and a mask, so its cost grows only with what is forgotten.")


def main() -> None:
    ui.ensure_navigation(__file__)
    st.title("Unlearn & compare")
    st.caption("Choose what to forget and how, run it, and compare the model before and after with Retrain — "
               "the model trained from scratch without the forgotten data, which unlearning tries to match.")
    ui.links.restore_batch("un", method_label)  # a reload or a shared link: the runs its address names
    target = ui.target_picker()

    if target is not None:
        exp = target.experiment()
        with st.container(border=True):
            st.markdown("**Methods**")
            methods = st.multiselect(
                "Methods to run", list(METHODS), key="un_methods",
                # a kept or linked choice is already in Session State: a default as well makes Streamlit warn
                default=None if "un_methods" in st.session_state else ["salun", "retrain"],
                format_func=method_label, help="; ".join(f"{m.label}: {m.summary}" for m in METHODS.values()))
            col_sparsity, col_masked = st.columns([3, 2])
            sparsity = col_sparsity.slider(
                "Sparsity: share of weights SalUn may change (%)", 5, 100,
                # kept (ui.kept) in Session State: a default as well makes Streamlit warn
                None if "un_sparsity" in st.session_state else int(DEFAULT_SPARSITY * 100), step=5,
                key="un_sparsity", help="The saliency mask keeps this share of all weights, those with the largest "
                                        "forget-set gradient. The paper's default is 50%.") / 100
            masked = col_masked.checkbox("Give baselines the saliency mask too", key="un_masked",
                                         help="FT, GA, RL, ℓ1-sparse and SSD then move only salient weights.")
            settings = {}
            for method in methods:
                with st.expander(f"{METHODS[method].label} settings — {METHODS[method].summary}"):
                    settings[method] = ui.method_settings(exp, method, "un")
            st.caption(f"Runs on {exp.device.type.upper()} · runs already done with the same settings and seed "
                       "are shown at once.")
            run_clicked = st.button("Run", type="primary", key="un_run", disabled=not methods,
                                    icon=":material/play_arrow:")
        if run_clicked:
            try:
                for method in methods:
                    if "epochs" in settings[method]:
                        ui.limits().check("epochs", settings[method]["epochs"])
                configs = [ui.make_config(target, m, target.seed, sparsity, masked, **settings[m]) for m in methods]
                entries = ui.submit_runs(exp, configs, [method_label(m) for m in methods])
                ui.cancel_entries(st.session_state.get("un_batch"), keep=entries)
                st.session_state["un_batch"] = {"target": target, "seed": target.seed, "entries": entries}
            except SalunError as exc:
                st.error(ui.public(exc))

    shown = ui.links.follow_batch("un", "Unlearning")
    if shown is not None:
        try:
            show_comparison(shown["target"].experiment(), shown["results"], shown["seed"])
        except SalunError as exc:
            st.error(ui.public(exc))
    elif target is not None:
        st.info("Choose the methods and press **Run**. On the shipped MNIST model SalUn took about 3 s and "
                "Retrain, which trains a new model from scratch, about 22 s on a quiet 2-core machine; longer "
                "when the server is busy.")

    show_scaling_benchmark()


main()
