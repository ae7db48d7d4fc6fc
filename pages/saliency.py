"""Saliency explorer: which weights the forget set's gradient picks, layer by layer, and how the masks
of different classes (and of the retain set) overlap.

Runs inside the app's navigation or on its own: `streamlit run pages/saliency.py`.
"""

from __future__ import annotations

import time

import streamlit as st

from core.errors import SalunError
from core.saliency import DEFAULT_SPARSITY, layer_statistics, mask_iou
from pages import ui

KEPT = ui.kept("sal_sparsity", "sal_view", "sal_tab")  # choices that outlive a visit to another page
TABS = ("Layer by layer", "Overlap between masks")
VIEWS = {"overlay": "Gradient, non-salient weights darkened", "gradient": "Gradient only", "mask": "Mask only"}


@st.cache_resource(show_spinner="Computing each class's gradient (once per model)…", max_entries=4)
def class_gradients(dataset: str, checkpoint: str | None, data_root: str | None, _exp):
    from core.classification.analysis import class_gradients as gradients

    return gradients(_exp.original, _exp.dataset, device=_exp.device)


@st.cache_resource(show_spinner=False, max_entries=4)
def class_ranks(dataset: str, checkpoint: str | None, data_root: str | None, _grads):
    """Every class's ranking of the weights: computed once per model, any sparsity's masks read off it."""
    from core.classification.analysis import mask_ranks

    return {c: mask_ranks(g) for c, g in _grads.items()}


@st.cache_data(show_spinner="Comparing the masks of all classes…", max_entries=32)
def class_iou(dataset: str, checkpoint: str | None, data_root: str | None, sparsity: float, _grads):
    from core.classification.analysis import class_iou_matrix

    return class_iou_matrix(_grads, sparsity, class_ranks(dataset, checkpoint, data_root, _grads))


@st.cache_resource(show_spinner="Computing the retain set's gradient…", max_entries=8)
def retain_gradients(dataset: str, forget: str, checkpoint: str | None, data_root: str | None, seed: int, _exp):
    from core.classification.analysis import retain_gradients as gradients

    return gradients(_exp)


@st.cache_resource(show_spinner=False, max_entries=16)
def ranks_of(key: tuple, _grads):
    """The ranking of one gradient's weights (`key` names it): any sparsity's mask is read off it."""
    from core.classification.analysis import mask_ranks

    return mask_ranks(_grads)


def mask_at(key: tuple, grads, sparsity: float):
    """saliency_mask(grads, sparsity), the same mask, from the cached ranking: a slider move costs
    milliseconds here instead of a threshold search over all weights per mask."""
    from core.classification.analysis import mask_from_ranks

    return mask_from_ranks(ranks_of(key, grads), grads, sparsity)


@st.cache_data(show_spinner=False, max_entries=64)
def overlap_curve(key: tuple, _grads_a, _grads_b) -> list:
    """IoU of two masks at sparsities 5..100%: independent of the slider, so computed once per pair (80
    global thresholds, seconds) and not on every move of it. `key` names the pair."""
    from core.classification.analysis import overlap_across_sparsity

    return overlap_across_sparsity(_grads_a, _grads_b, [s / 100 for s in range(5, 101, 5)])


def main() -> None:
    ui.ensure_navigation(__file__)
    st.title("Saliency explorer")
    st.caption("SalUn ranks every weight by how strongly the forget set's loss pulls on it (|gradient|) and lets "
               "only the top share change. Here you see that ranking per layer and the mask it gives.")
    target = ui.target_picker()
    if target is None:
        return
    exp = target.experiment()
    with st.spinner("Computing the forget set's gradient…"):
        grads = exp.forget_gradients()

    sparsity = st.slider("Sparsity: share of all weights in the mask (%)", 1, 100,
                         None if "sal_sparsity" in st.session_state else int(DEFAULT_SPARSITY * 100),
                         key="sal_sparsity",  # kept in Session State: no default then (Streamlit warns)
                         help="One global threshold over all weights, so each layer gets its own share.") / 100
    model = (target.dataset, target.checkpoint, target.data_root)
    start = time.perf_counter()
    mask = mask_at((*model, "forget", target.forget, target.seed), grads, sparsity)
    rows = layer_statistics(grads, mask)
    redraw_ms = (time.perf_counter() - start) * 1000
    st.caption(f"Mask redrawn from the cached gradients in {redraw_ms:.0f} ms · "
               f"{len(exp.split.forget_idx):,} forget images · {sum(r['numel'] for r in rows):,} weights.")

    # Only the open tab runs (and is redrawn in the browser): a slider move redraws five charts, not nine.
    layers_tab, overlap_tab = st.tabs(list(TABS), key="sal_tab", on_change="rerun")
    with layers_tab:
        if layers_tab.open:
            layers_section(grads, mask, rows, sparsity)
    with overlap_tab:
        if overlap_tab.open:
            overlap_section(target, model, exp, grads, mask, sparsity)


def layers_section(grads, mask, rows, sparsity: float) -> None:
    from core.classification.plots import gradient_heatmap, salient_fraction_figure

    st.plotly_chart(salient_fraction_figure(rows, sparsity), key="sal_fraction")
    names = list(grads)
    weights = [n for n in names if grads[n].dim() > 1]
    col_layers, col_view = st.columns([3, 2])
    layers = col_layers.multiselect("Layers to draw (output × input·kernel)", names, default=weights, key="sal_layers")
    view = col_view.radio("Show", list(VIEWS), format_func=VIEWS.get, key="sal_view", horizontal=True)
    for name in layers:
        st.plotly_chart(gradient_heatmap(name, grads[name], mask[name], view=view), key=f"sal_heat_{name}")


def overlap_section(target, model: tuple, exp, grads, mask, sparsity: float) -> None:
    from core.classification.analysis import chance_iou, mask_from_ranks
    from core.classification.plots import iou_matrix_figure, layer_overlap_figure, overlap_sparsity_figure

    chance = chance_iou(sparsity)
    st.caption("Intersection over union of two masks: 1 = the same weights, 0 = none in common. "
               f"Each mask uses the sparsity above; two random masks of that share would overlap by "
               f"s / (2 − s) = {chance:.2f}, so only values well above {chance:.2f} mean the masks pick the same weights.")
    class_names = exp.dataset.class_names
    try:
        all_grads = class_gradients(target.dataset, target.checkpoint, target.data_root, exp)
        matrix = class_iou(target.dataset, target.checkpoint, target.data_root, sparsity, all_grads)
    except SalunError as exc:
        st.error(ui.public(exc))
        return
    st.plotly_chart(iou_matrix_figure(matrix, class_names, sparsity, highlight=target.forget_class), key="sal_iou")

    col_a, col_b = st.columns(2)
    a = col_a.selectbox("Class A", range(len(class_names)), index=target.forget_class or 0, key="sal_class_a",
                        format_func=lambda c: str(class_names[c]))
    b = col_b.selectbox("Class B", range(len(class_names)), index=min(1 if (target.forget_class or 0) != 1 else 2, len(class_names) - 1),
                        key="sal_class_b", format_func=lambda c: str(class_names[c]))
    ranks = class_ranks(target.dataset, target.checkpoint, target.data_root, all_grads)
    total_ab, per_layer_ab = mask_iou(mask_from_ranks(ranks[a], all_grads[a], sparsity),
                                      mask_from_ranks(ranks[b], all_grads[b], sparsity))

    retain_grads = retain_gradients(target.dataset, target.forget, target.checkpoint, target.data_root, target.seed, exp)
    retain_mask = mask_at((*model, "retain", target.forget, target.seed), retain_grads, sparsity)
    total_fr, per_layer_fr = mask_iou(mask, retain_mask)
    c1, c2 = st.columns(2)
    c1.metric(f"IoU of classes {class_names[a]} and {class_names[b]}", f"{total_ab:.3f}",
              delta=f"{total_ab - chance:+.3f} vs random masks ({chance:.2f})", delta_color="off")
    c2.metric("IoU of the forget-set mask and the retain-set mask", f"{total_fr:.3f}",
              delta=f"{total_fr - chance:+.3f} vs random masks ({chance:.2f})", delta_color="off",
              help="The retain-set mask ranks weights by the gradient of the cross-entropy on the kept data. "
                   "A low overlap means SalUn can forget without touching what the kept data relies on most.")
    st.plotly_chart(layer_overlap_figure({f"classes {class_names[a]} & {class_names[b]}": per_layer_ab,
                                          "forget set & retain set": per_layer_fr}, sparsity), key="sal_overlap_layers")
    col_ab, col_fr = st.columns(2)
    col_ab.plotly_chart(overlap_sparsity_figure(overlap_curve((*model, "classes", a, b), all_grads[a], all_grads[b]),
                                                f"classes {class_names[a]} & {class_names[b]}"), key="sal_overlap_sparsity_ab")
    col_fr.plotly_chart(overlap_sparsity_figure(overlap_curve((*model, "forget/retain", target.forget, target.seed),
                                                              grads, retain_grads),
                                                "forget set & retain set"), key="sal_overlap_sparsity_fr")
    st.caption("Overlap across sparsity: at 100% both masks hold every weight (IoU 1), so the distance above the "
               "dotted chance curve is what says two masks agree.")


main()
