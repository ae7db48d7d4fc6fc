"""The Unlearn & compare page's looking-inside views: where the forgotten images go, the embedding,
layer similarity, weight change, replay and the membership audit.

Each view computes once per set of runs (kept with the results, like the membership details) and only
when its tab is open; the work itself lives in core/classification (compare.py, audit.py, metrics.py).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.classification.metrics import METRIC_DEFINITIONS


def _cache(exp, key, models):
    """A per-experiment memo for views over several models, keyed by the model objects themselves (a
    second SalUn run with other settings has the same label but another model)."""
    memo = exp.__dict__.setdefault("_app_views", {})
    if len(memo) > 64:  # results come and go; keep the memo small
        memo.clear()
    return memo, (key, tuple((label, id(model)) for label, model in models.items()))


def _models(exp, results, after_label: str | None) -> dict:
    """Before, one chosen unlearned run and Retrain (when it was run): the trio the views compare."""
    models = {"Before": exp.original}
    for label, r in results:
        if r.method != "retrain" and (after_label is None or label == after_label):
            models[label] = r.model
            break
    retrain = next((r for _, r in results if r.method == "retrain"), None)
    if retrain is not None:
        models["Retrain"] = retrain.model
    return models


def _pick_run(results, key: str) -> str | None:
    labels = [label for label, r in results if r.method != "retrain"]
    if len(labels) > 1:
        return st.selectbox("Unlearned run", labels, key=key)
    return labels[0] if labels else None


def forget_labels_view(exp, results) -> None:
    from core.classification.metrics import forget_label_distribution, js_divergence
    from core.classification.plots import label_distribution_figure

    models = {"Before": exp.original, **{label: r.model for label, r in results}}
    memo, key = _cache(exp, "labels", models)
    if key not in memo:
        memo[key] = {label: forget_label_distribution(m, exp.dataset, exp.split) for label, m in models.items()}
    distributions = memo[key]
    retrain_label = next((label for label, r in results if r.method == "retrain"), None)
    js = ({label: js_divergence(d, distributions[retrain_label]) for label, d in distributions.items()
           if label != retrain_label} if retrain_label else None)
    forget_class = exp.split.target.value if exp.split.classwise else None
    st.plotly_chart(label_distribution_figure(distributions, exp.dataset.class_names, forget_class, js),
                    key="labels_fig")
    if js:
        cols = st.columns(len(js))
        for col, (label, value) in zip(cols, js.items()):
            col.metric(f"JS to Retrain · {label}", f"{value:.3f}", help=METRIC_DEFINITIONS["js_to_retrain"])
        st.caption("Jensen–Shannon divergence in bits: 0 = the forget images get the same labels as from "
                   "Retrain, 1 = entirely different labels. A model that never saw a class sends its images to "
                   "the most similar classes; random-label unlearning spreads them evenly — an observer could "
                   "tell the two apart even when UA matches.")
    else:
        st.caption("Add Retrain to the methods to measure how far these labels are from exact unlearning's.")


def embedding_view(exp, results, seed: int) -> None:
    from core.classification.compare import embedding
    from core.classification.plots import embedding_figure

    try:
        import umap  # noqa: F401

        projections = ["pca", "umap"]
    except ImportError:
        projections = ["pca"]
    col_run, col_map = st.columns([3, 2])
    with col_run:
        after = _pick_run(results, "emb_run")
    method = col_map.radio("Projection", projections, format_func=str.upper, horizontal=True, key="emb_map",
                           help="PCA is exact and fast; UMAP (pip install umap-learn) keeps neighbourhoods, not distances.")
    models = _models(exp, results, after)
    memo, key = _cache(exp, ("embedding", method, seed), models)
    if key not in memo:
        with st.spinner("Projecting penultimate features…"):
            memo[key] = embedding(models, exp.dataset, exp.split, per_group=200, method=method, seed=seed)
    st.plotly_chart(embedding_figure(memo[key], exp.dataset.class_names), key="emb_fig")
    st.caption("The same 200 forget, retain and test images through each model's last hidden layer, projected with "
               "one map fitted on all panels together. Before: the forget images (×) sit inside their class's "
               "cluster. After forgetting they should leave it as they do under Retrain. Retrain is a separately "
               "trained network, so compare its layout (clusters, where the × fall), not exact positions.")


def layer_similarity_view(exp, results, seed: int) -> None:
    from core.classification.compare import layer_similarity, sample_images
    from core.classification.plots import layer_similarity_figure

    after = _pick_run(results, "cka_run")
    models = _models(exp, results, after)
    group = st.radio("Images", ["forget", "retain", "test"], horizontal=True, key="cka_group",
                     help="The same images go through every model.")
    memo, key = _cache(exp, ("cka", group, seed), models)
    if key not in memo:
        with st.spinner("Comparing the layers' representations…"):
            images = sample_images(exp.dataset, exp.split, per_group=200, seed=seed)
            memo[key] = layer_similarity(models, images["x"][images["groups"] == group])
    st.plotly_chart(layer_similarity_figure(memo[key]), key="cka_fig")
    st.caption("Linear CKA between two models' outputs of the same layer on the same images: 1 = the same "
               "representation up to rotation and scale. Where Before vs the unlearned model drops is where "
               "unlearning changed the model; on the forget images it should drop near the output, on retained "
               "images it should stay near 1.")


def weight_change_view(exp, results) -> None:
    from core.classification.compare import weight_change
    from core.classification.plots import weight_change_figure

    runs = [(label, r) for label, r in results if r.method != "retrain"]
    if not runs:
        st.info("Retrain trains new weights from scratch, so every weight changes; run an unlearning method to "
                "see how far it moved the original's weights.")
        return
    changes, summary = {}, []
    for label, r in runs:
        if "weight_change" not in r.extra:
            mask = r.mask if r.mask is not None else exp.mask(r.config.sparsity)
            r.extra["weight_change"] = weight_change(exp.original, r.model, mask)
        rows = r.extra["weight_change"]
        changes[label] = rows
        outside = sum(row["numel"] * (1 - row["salient_fraction"]) for row in rows)
        moved_outside = max(row["max_change_outside"] for row in rows)
        summary.append({"Run": label, "Uses the mask": "yes" if r.mask is not None else "no",
                        "Weights outside the mask": f"{outside:,.0f}",
                        "Largest |Δw| outside": f"{moved_outside:.2e}" if moved_outside else "0 (untouched)"})
    st.plotly_chart(weight_change_figure(changes), key="weights_fig")
    st.dataframe(pd.DataFrame(summary), hide_index=True, key="weights_table")
    st.caption("Mean |Δw| per parameter tensor, split by the saliency mask (for a run without a mask, SalUn's "
               "mask at that run's sparsity). SalUn's bars outside the mask are zero: those weights are "
               "bit-identical to the original. RL and FT move every weight.")


def replay_view(exp, results) -> None:
    from core.classification.compare import replay
    from core.classification.plots import replay_figure

    labels = [label for label, _ in results]
    chosen = st.multiselect("Runs to replay", labels, default=[l for l, r in results if r.method != "retrain"][:1],
                            key="replay_runs", help="Replaying Retrain trains it again: it takes as long as the run did.")
    missing = [label for label in chosen if "replay" not in dict(results)[label].extra]
    if missing and st.button(f"Replay {', '.join(missing)}", key="replay_go", icon=":material/replay:"):
        bar = st.progress(0.0, text="Replaying…")
        for i, label in enumerate(missing):
            result = dict(results)[label]

            def progress(done, total, loss, i=i, label=label):
                bar.progress(min(1.0, (i + done / max(total, 1)) / len(missing)), text=f"Replaying {label}: step {done}/{total}")

            result.extra["replay"] = replay(exp, result.config, progress=progress)
        bar.empty()
    traces = {label: dict(results)[label].extra["replay"] for label in chosen if "replay" in dict(results)[label].extra}
    if traces:
        st.plotly_chart(replay_figure(traces), key="replay_fig")
    st.caption("The run is repeated with the same settings and seed (so it ends at the same model) and the forget "
               "and retained accuracy measured on up to 500 images each every few steps. Forget accuracy falling "
               "while retained accuracy holds is unlearning; both falling is damage.")


def audit_view(exp, results, seed: int) -> None:
    from core.classification.audit import SIGNAL_LABELS, SIGNALS, audit_models
    from core.classification.plots import audit_figure

    models = {"Before": exp.original, **{label: r.model for label, r in results}}
    memo, key = _cache(exp, "audit", models)
    if key not in memo:
        with st.spinner("Attacking every model…"):
            memo[key] = audit_models(models, exp.dataset, exp.split)
    report = memo[key]
    signal = st.radio("Signal", SIGNALS, format_func=SIGNAL_LABELS.get, horizontal=True, index=2, key="audit_signal")
    st.plotly_chart(audit_figure(report, signal), key="audit_fig")
    rows = [{"Model": label, "Signal": SIGNAL_LABELS[s], "AUC": values["auc"], "TPR at 1% FPR (%)": values["tpr_at_1pct_fpr"]}
            for label, signals in report.results.items() for s, values in signals.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="audit_table",
                 column_config={"AUC": st.column_config.NumberColumn(format="%.3f"),
                                "TPR at 1% FPR (%)": st.column_config.NumberColumn(format="%.1f")})
    st.caption(f"Each model attacked on its {report.members:,} forget images (members of the original's training "
               f"set) against {report.nonmembers:,} test images of the same classes, never trained on. AUC 0.5 = "
               "the attacker cannot tell them apart; below 0.5 the forget images look *less* familiar than unseen "
               "ones. Judge the unlearned model by closeness to Retrain. A shadow-model attack (stronger, minutes "
               "of training): `python -m core.cli audit RUN_FOLDER --shadows 4`.")
