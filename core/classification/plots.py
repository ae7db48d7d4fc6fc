"""Plotly figures for classification unlearning: saliency, overlaps, runs, comparisons, sweeps.

Every function takes plain data (tensors, arrays, dicts of metrics) and returns a `plotly` Figure; no
function here trains or evaluates anything, so the app can cache the data and redraw cheaply.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots

from core.classification.metrics import METRIC_LABELS

# One colour per role, used the same way in every figure.
COLORS = {"before": "#7f7f7f", "after": "#d62728", "retrain": "#1f77b4",
          "forget": "#d62728", "retain": "#2ca02c", "test": "#1f77b4"}
METHOD_COLORS = ["#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def role_colors(labels: list[str]) -> dict[str, str]:
    """Before grey, Retrain blue, and the unlearning methods in order from red on."""
    out, methods = {}, 0
    for label in labels:
        if label.lower().startswith("before"):
            out[label] = COLORS["before"]
        elif label.lower().startswith("retrain"):
            out[label] = COLORS["retrain"]
        else:
            out[label] = [c for c in METHOD_COLORS if c != COLORS["retrain"]][methods % (len(METHOD_COLORS) - 1)]
            methods += 1
    return out


def _frame(title: str, height: int) -> dict:
    """The title, height and margins every figure here shares."""
    return dict(title=dict(text=title, x=0, font=dict(size=15)), height=height, margin=dict(l=10, r=10, t=50, b=10))


def _layout(fig: go.Figure, title: str, height: int = 320, **kwargs) -> go.Figure:
    fig.update_layout(**_frame(title, height), **kwargs)
    return fig


def _figure(traces: list, title: str, height: int = 320, **layout) -> go.Figure:
    """The figure `_layout` gives, built in one go: plotly checks a layout handed to the constructor about
    5x faster than one changed afterwards (update_layout, update_xaxes, add_vline), which is what a
    slider that redraws ten figures per move notices. Axes, shapes and annotations come as plain dicts."""
    return go.Figure(traces, layout=dict(**_frame(title, height), **layout))


def _vline(x: float, text: str, dash: str, color: str) -> tuple[dict, dict]:
    """(shape, annotation) of a vertical line across the plot with its label on top, as add_vline draws it."""
    return (dict(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain", line=dict(dash=dash, color=color)),
            dict(text=text, x=x, xref="x", y=1, yref="y domain", showarrow=False, yanchor="bottom"))


# --- saliency ------------------------------------------------------------------------------------

def weight_grid(tensor: torch.Tensor, max_rows: int = 64, max_cols: int = 384) -> np.ndarray:
    """A weight tensor laid out in 2-D as output x (input·kernel), block-averaged to fit the screen.

    A 1-D tensor (a bias) becomes one column. Block averages keep a mask's meaning: each cell is the
    salient fraction of the weights it stands for.
    """
    t = tensor.detach().float().cpu()
    grid = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)
    rows, cols = grid.shape
    if rows > max_rows or cols > max_cols:
        grid = F.adaptive_avg_pool2d(grid[None, None], (min(rows, max_rows), min(cols, max_cols)))[0, 0]
    return grid.numpy()


def gradient_heatmap(name: str, gradient: torch.Tensor, mask: torch.Tensor | None = None,
                     view: str = "overlay") -> go.Figure:
    """|gradient| of one weight tensor (log scale); `view` is "gradient", "mask" or "overlay" (weights
    outside the mask darkened).

    The browser receives log10 |g| as float32 and the mask as whole percents (uint8): a cell that stands
    for a block of weights holds the block's salient share. For a 64×384 layer that is 164 kB of JSON instead
    of 240 kB with two float64 arrays, the same picture; the redraw after a slider move waits on those bytes."""
    shape = tuple(gradient.shape)
    grid = weight_grid(gradient)
    log_grad = np.log10(np.maximum(grid, 1e-12)).astype(np.float32)
    rows, cols = grid.shape
    reduced = (rows, cols) != (shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1)
    percent = None if mask is None else np.rint(weight_grid(mask) * 100).astype(np.uint8)
    if view == "mask" and percent is not None:
        traces = [go.Heatmap(z=percent, zmin=0, zmax=100, colorscale=[[0, "#f0f0f0"], [1, "#d62728"]],
                             colorbar=dict(title=dict(text="% salient")),
                             hovertemplate="out %{y}, in %{x}: %{z}% salient<extra></extra>")]
    else:
        # weights with no gradient at all (dead units) would stretch the scale to 1e-12: start it at
        # the 1st percentile of the others so the differences that matter stay visible
        nonzero = log_grad[grid > 0]
        zmin = float(np.percentile(nonzero, 1)) if nonzero.size else None
        traces = [go.Heatmap(z=log_grad, zmin=zmin, zmax=float(log_grad.max()), colorscale="Viridis",
                             colorbar=dict(title=dict(text="log10 |g|")),
                             hovertemplate="out %{y}, in %{x}: log10 |g| = %{z:.2f}<extra></extra>")]
        if view == "overlay" and percent is not None:
            traces.append(go.Heatmap(z=100 - percent, zmin=0, zmax=100, showscale=False, hoverinfo="skip",
                                     colorscale=[[0, "rgba(0,0,0,0)"], [1, "rgba(20,20,20,0.8)"]]))
    salient = f", {float(mask.float().mean()) * 100:.1f}% salient" if mask is not None else ""
    note = f" (shown {rows}×{cols}, block-averaged)" if reduced else ""
    return _figure(traces, f"{name} {shape}{salient}{note}", height=260 if rows > 8 else 200,
                   yaxis=dict(autorange="reversed", title=dict(text="output")),
                   xaxis=dict(title=dict(text="input · kernel")))


def salient_fraction_figure(layer_rows: list[dict], sparsity: float) -> go.Figure:
    """Salient fraction per parameter tensor (from core.saliency.layer_statistics), with the global share."""
    names = [r["layer"] for r in layer_rows]
    fractions = [r["salient_fraction"] * 100 for r in layer_rows]
    bar = go.Bar(x=fractions, y=names, orientation="h", marker_color=COLORS["forget"],
                 text=[f"{f:.1f}% of {r['numel']:,}" for f, r in zip(fractions, layer_rows)], textposition="auto",
                 hovertemplate="%{y}: %{x:.1f}% salient<extra></extra>")
    line, label = _vline(sparsity * 100, f"global {sparsity * 100:.0f}%", "dash", "black")
    return _figure([bar], "Salient fraction per layer", height=80 + 28 * len(names), shapes=[line], annotations=[label],
                   yaxis=dict(autorange="reversed"),
                   xaxis=dict(title=dict(text="salient weights in the layer (%)"), range=[0, 100]))


def iou_matrix_figure(matrix: np.ndarray, class_names: list[str], sparsity: float,
                      highlight: int | None = None) -> go.Figure:
    labels = [str(c) for c in class_names]
    heat = go.Heatmap(z=matrix, x=labels, y=labels, zmin=0, zmax=1, colorscale="Blues", text=np.round(matrix, 2),
                      texttemplate="%{text}", colorbar=dict(title=dict(text="IoU")),
                      hovertemplate="classes %{y} and %{x}: IoU %{z:.3f}<extra></extra>")
    shapes = [] if highlight is None else [
        dict(type="rect", x0=-0.5, x1=len(labels) - 0.5, y0=highlight - 0.5, y1=highlight + 0.5,
             line=dict(color=COLORS["forget"], width=2))]
    chance = sparsity / (2 - sparsity)
    return _figure([heat], f"Mask overlap (IoU) between classes, each mask at {sparsity * 100:.0f}% "
                           f"(two random masks: {chance:.2f})", height=420, shapes=shapes,
                   yaxis=dict(autorange="reversed", title=dict(text="class"), type="category"),
                   xaxis=dict(title=dict(text="class"), type="category"))


def layer_overlap_figure(per_layer: dict[str, dict[str, float]], sparsity: float | None = None) -> go.Figure:
    """Grouped bars: IoU per layer for each named pair of masks ({pair label: {layer: iou}}); with the
    masks' `sparsity`, a line at what two random masks of that share give, s / (2 − s)."""
    bars = [go.Bar(name=label, x=list(values.values()), y=list(values.keys()), orientation="h",
                   marker_color=METHOD_COLORS[i % len(METHOD_COLORS)],
                   hovertemplate="%{y}: IoU %{x:.3f}<extra>" + label + "</extra>")
            for i, (label, values) in enumerate(per_layer.items())]
    layers = len(next(iter(per_layer.values()), {}))
    shapes, annotations = [], []
    if sparsity is not None:
        chance = sparsity / (2 - sparsity)
        line, label = _vline(chance, f"random masks: {chance:.2f}", "dot", "#555")
        shapes, annotations = [line], [label]
    return _figure(bars, "Overlap per layer", height=100 + 30 * layers * max(1, len(per_layer)),
                   barmode="group", legend=dict(orientation="h", y=-0.15), shapes=shapes, annotations=annotations,
                   yaxis=dict(autorange="reversed"), xaxis=dict(title=dict(text="IoU"), range=[0, 1]))


# --- runs ----------------------------------------------------------------------------------------

def loss_curve_figure(losses: dict[str, list[float]], title: str = "Loss per step") -> go.Figure:
    fig = go.Figure()
    for i, (label, values) in enumerate(losses.items()):
        if values:
            fig.add_trace(go.Scatter(y=values, x=list(range(1, len(values) + 1)), mode="lines", name=label,
                                     line=dict(color=METHOD_COLORS[i % len(METHOD_COLORS)])))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss")
    return _layout(fig, title, height=280, legend=dict(orientation="h", y=-0.25))


def metrics_figure(columns: dict[str, dict], keys=("ua", "ra", "ta", "mia_efficacy")) -> go.Figure:
    """Grouped bars of the paper's metrics for each column (Before, a method, Retrain, ...)."""
    fig = go.Figure()
    colors = role_colors(list(columns))
    for label, metrics in columns.items():
        spread = [metrics.get(f"{k}_std") or 0.0 for k in keys]
        fig.add_trace(go.Bar(name=label, x=[METRIC_LABELS[k] for k in keys], y=[metrics.get(k) for k in keys],
                             marker_color=colors[label], customdata=spread,
                             error_y=dict(type="data", array=spread, visible=any(spread), color="#333", thickness=1.2),
                             hovertemplate="%{x}: %{y:.2f} ± %{customdata:.2f}<extra>" + label + "</extra>"))
    fig.update_yaxes(title_text="%", range=[0, 105])
    title = "Metrics (%)" + (" · error bars: MIA-Efficacy's std over member samples"
                             if any(m.get("mia_efficacy_std") for m in columns.values()) else "")
    return _layout(fig, title, height=300, barmode="group", legend=dict(orientation="h", y=-0.2))


def per_class_accuracy_figure(per_class: dict[str, list[float]], class_names: list[str],
                              forget_class: int | None = None, title: str = "Test accuracy per class",
                              axis_title: str = "test accuracy (%)") -> go.Figure:
    """Grouped bars per class, one group member per model (Before, a method, Retrain, ...), the
    forgotten class shaded. The one per-class figure: classifiers on test images, generators on their
    generated images (core.classification.training.per_class_accuracy computes both)."""
    fig = go.Figure()
    names = [str(c) for c in class_names]
    colors = role_colors(list(per_class))
    for label, values in per_class.items():
        fig.add_trace(go.Bar(name=label, x=names, y=values, marker_color=colors[label],
                             hovertemplate="class %{x}: %{y:.1f}%<extra>" + label + "</extra>"))
    if forget_class is not None:
        fig.add_vrect(x0=forget_class - 0.5, x1=forget_class + 0.5, fillcolor=COLORS["forget"], opacity=0.08,
                      line_width=0, annotation_text="forgotten", annotation_position="top")
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text=axis_title, range=[0, 105])
    return _layout(fig, title, height=320, barmode="group", legend=dict(orientation="h", y=-0.25))


def confusion_matrix_figure(matrix: np.ndarray, class_names: list[str], title: str) -> go.Figure:
    names = [str(c) for c in class_names]
    fig = go.Figure(go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", showscale=False,
                               text=matrix, texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="true class", type="category")
    fig.update_xaxes(title_text="predicted class", type="category")
    return _layout(fig, title, height=360)


def attribution_figure(images: np.ndarray, labels: list[str], before: np.ndarray, after: np.ndarray,
                       predicted_before: list[str], predicted_after: list[str], after_label: str = "after") -> go.Figure:
    """One row per image: the image, its Integrated Gradients before, and after (same colour scale per row)."""
    n = len(images)
    titles = []
    for i in range(n):
        titles += [f"label {labels[i]}", f"before: predicts {predicted_before[i]}",
                   f"{after_label}: predicts {predicted_after[i]}"]
    fig = make_subplots(rows=n, cols=3, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.06)
    for i in range(n):
        image = images[i]
        if image.ndim == 3:  # C, H, W -> grey for display
            image = image.mean(0)
        scale = float(max(np.abs(before[i]).max(), np.abs(after[i]).max(), 1e-12))
        fig.add_trace(go.Heatmap(z=image, colorscale="Greys", reversescale=True, showscale=False,
                                 hoverinfo="skip"), row=i + 1, col=1)
        for col, attribution in ((2, before[i]), (3, after[i])):
            fig.add_trace(go.Heatmap(z=attribution, zmin=-scale, zmax=scale, colorscale="RdBu_r",
                                     showscale=(i == 0 and col == 3), colorbar=dict(title="IG", len=0.3, y=1, yanchor="top"),
                                     hovertemplate="%{z:.3f}<extra></extra>"), row=i + 1, col=col)
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False)
    for i in range(1, 3 * n + 1):
        fig.layout[f"yaxis{'' if i == 1 else i}"].scaleanchor = f"x{'' if i == 1 else i}"
    return _layout(fig, "Integrated Gradients toward the true label (red: evidence for it, blue: against)",
                   height=60 + 190 * n)


def _attacker_member_regions(attacker, resolution: int = 400) -> list[tuple[float, float]]:
    grid = np.linspace(0, 1, resolution)
    member = attacker.predict(grid.reshape(-1, 1)) == 1
    regions, start = [], None
    for x, m in zip(grid, member):
        if m and start is None:
            start = x
        if not m and start is not None:
            regions.append((start, x))
            start = None
    if start is not None:
        regions.append((start, 1.0))
    return regions


def membership_figure(panels: dict[str, dict]) -> go.Figure:
    """Histograms of the true-label confidence of forget, retain and test data, one panel per model
    ({title: evaluate(..., details=True)["details"]}), with the attacker's "member" regions shaded."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), shared_yaxes=True)
    bins = dict(start=0, end=1.0001, size=0.025)
    for col, (title, details) in enumerate(panels.items(), start=1):
        for group in ("retain", "test", "forget"):
            values = details["confidence"][group]
            fig.add_trace(go.Histogram(x=values, xbins=bins, histnorm="percent", name=group,
                                       marker_color=COLORS[group], opacity=0.55, showlegend=(col == 1),
                                       legendgroup=group,
                                       hovertemplate=group + ": %{y:.1f}% at confidence %{x}<extra></extra>"),
                          row=1, col=col)
        for x0, x1 in _attacker_member_regions(details["attacker"]):
            fig.add_vrect(x0=x0, x1=x1, fillcolor="#ffbf00", opacity=0.15, line_width=0, row=1, col=col)
        forget = details["confidence"]["forget"]
        called_non_member = float((details["attacker"].predict(forget.reshape(-1, 1)) == 0).mean() * 100)
        fig.add_annotation(text=f"forget called non-member: {called_non_member:.1f}%", showarrow=False,
                           xref=f"x{'' if col == 1 else col} domain", yref="paper", x=0.02, y=0.98,
                           xanchor="left", bgcolor="rgba(255,255,255,0.8)")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="confidence in the true label", range=[0, 1.01])
    # one labelled tick per power of ten: 0.1, 1, 10, 100 (% of the group)
    fig.update_yaxes(type="log", dtick=1, tickvals=[0.1, 1, 10, 100], ticktext=["0.1", "1", "10", "100"],
                     minor=dict(showgrid=False, ticks=""))
    fig.update_yaxes(title_text="% of the group (log)", row=1, col=1)
    return _layout(fig, "Membership inference: shaded = confidences the attacker calls 'member'",
                   height=340, legend=dict(orientation="h", y=-0.25))


# --- sweeps --------------------------------------------------------------------------------------

def sweep_figure(summary: list[dict], retrain: dict | None = None,
                 keys=("ua", "ra", "ta", "mia_efficacy")) -> go.Figure:
    """Mean ± std over seeds of each metric against sparsity (core.classification.analysis.summarize_sweep rows),
    with Retrain's values as dashed reference lines."""
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[METRIC_LABELS[k] for k in keys])
    x = [r["sparsity"] * 100 for r in summary]
    for col, key in enumerate(keys, start=1):
        fig.add_trace(go.Scatter(x=x, y=[r[key] for r in summary], mode="lines+markers", name="SalUn",
                                 showlegend=(col == 1), legendgroup="salun", line=dict(color=COLORS["after"]),
                                 error_y=dict(type="data", array=[r.get(f"{key}_std", 0.0) for r in summary]),
                                 hovertemplate="sparsity %{x:.0f}%: %{y:.2f}<extra></extra>"), row=1, col=col)
        if retrain and key in retrain and not math.isnan(retrain[key]):
            fig.add_hline(y=retrain[key], line_dash="dash", line_color=COLORS["retrain"], row=1, col=col)
            if col == 1:
                fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="Retrain",
                                         line=dict(color=COLORS["retrain"], dash="dash")), row=1, col=col)
        fig.update_xaxes(title_text="sparsity (%)", row=1, col=col)
    # fixed ranges: one sparsity must not draw an axis from 69 to 71, nor error bars push a % past 100
    fig.update_xaxes(range=[0, 102], dtick=20)
    fig.update_yaxes(range=[-2, 102], dtick=20)
    return _layout(fig, "SalUn against the mask's sparsity (mean ± std over seeds and, for MIA-Efficacy, "
                        "member samples)", height=340, legend=dict(orientation="h", y=-0.3))


# --- looking inside (core.classification.compare, core.classification.audit) ---------------------

GROUP_SYMBOLS = {"forget": "x", "retain": "circle", "test": "circle-open"}


def embedding_figure(emb: dict, class_names: list[str]) -> go.Figure:
    """One panel per model of core.classification.compare.embedding: points coloured by class, forget
    images drawn as crosses on top; the panels share one projection and one pair of axes."""
    panels = list(emb["points"])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, shared_xaxes=True, shared_yaxes=True,
                        horizontal_spacing=0.03)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    groups, labels = emb["groups"], emb["labels"]
    for col, panel in enumerate(panels, start=1):
        points = emb["points"][panel]
        for group in ("retain", "test", "forget"):
            rows = np.flatnonzero(groups == group)
            if not len(rows):
                continue
            fig.add_trace(go.Scattergl(
                x=points[rows, 0], y=points[rows, 1], mode="markers", name=group, legendgroup=group,
                showlegend=(col == 1),
                marker=dict(symbol=GROUP_SYMBOLS[group], size=7 if group == "forget" else 4,
                            color=[palette[int(c) % len(palette)] for c in labels[rows]],
                            line=dict(width=1.5 if group == "forget" else 0.6, color="black" if group == "forget" else None),
                            opacity=1.0 if group == "forget" else 0.5),
                customdata=[str(class_names[int(c)]) for c in labels[rows]],
                hovertemplate=group + " image of class %{customdata}<extra>" + panel + "</extra>"), row=1, col=col)
    fig.update_xaxes(showticklabels=False, title_text=f"{emb['method']} 1")
    fig.update_yaxes(showticklabels=False)
    fig.update_yaxes(title_text=f"{emb['method']} 2", row=1, col=1)
    return _layout(fig, f"Penultimate features, one shared {emb['method']} for all panels "
                        "(colour = true class; × = forget images)", height=400, legend=dict(orientation="h", y=-0.12))


def layer_similarity_figure(similarity: dict[str, dict[str, float]]) -> go.Figure:
    """Linear CKA per layer (core.classification.compare.layer_similarity), one line per pair of models."""
    fig = go.Figure()
    for i, (pair, values) in enumerate(similarity.items()):
        fig.add_trace(go.Scatter(x=list(values), y=list(values.values()), mode="lines+markers", name=pair,
                                 line=dict(color=METHOD_COLORS[i % len(METHOD_COLORS)]),
                                 hovertemplate="%{x}: CKA %{y:.3f}<extra>" + pair + "</extra>"))
    fig.update_yaxes(title_text="linear CKA (1 = same representation)", range=[0, 1.02])
    fig.update_xaxes(title_text="layer (input → output)", type="category")
    return _layout(fig, "Layer similarity on the same images", height=340, legend=dict(orientation="h", y=-0.3))


def weight_change_figure(changes: dict[str, list[dict]]) -> go.Figure:
    """Mean |Δw| per layer inside and outside the saliency mask, one panel per run
    ({label: core.classification.compare.weight_change rows}); log scale, zero drawn at the floor."""
    labels = list(changes)
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels, shared_yaxes=True, horizontal_spacing=0.04)
    all_values = [v for rows in changes.values() for r in rows
                  for v in (r["mean_change_inside"], r["mean_change_outside"]) if v == v and v > 0]
    floor = min(all_values) / 10 if all_values else 1e-8
    for col, label in enumerate(labels, start=1):
        rows = changes[label]
        layers = [r["layer"] for r in rows]
        for side, color in (("inside", COLORS["forget"]), ("outside", COLORS["before"])):
            values = [r[f"mean_change_{side}"] for r in rows]
            shown = [max(v, floor) if v == v else None for v in values]
            fig.add_trace(go.Bar(x=shown, y=layers, orientation="h", name=f"{side} the mask", legendgroup=side,
                                 showlegend=(col == 1), marker_color=color, customdata=values,
                                 hovertemplate="%{y}: mean |Δw| = %{customdata:.2e}<extra>" + side + "</extra>"),
                          row=1, col=col)
    fig.update_xaxes(type="log", title_text="mean |Δw| (log)", exponentformat="power")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "How far the weights moved, inside vs outside the saliency mask (a bar at the left edge = 0)",
                   height=120 + 26 * max(len(r) for r in changes.values()), barmode="group",
                   legend=dict(orientation="h", y=-0.12))


def replay_figure(traces: dict[str, dict]) -> go.Figure:
    """Forget and retained accuracy during each run ({label: core.classification.compare.replay(...)})."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Forget images: accuracy", "Retained images: accuracy"],
                        shared_yaxes=True, horizontal_spacing=0.05)
    colors = role_colors(list(traces))
    for label, trace in traces.items():
        for col, key in ((1, "forget_accuracy"), (2, "retain_accuracy")):
            fig.add_trace(go.Scatter(x=trace["step"], y=trace[key], mode="lines+markers", name=label, legendgroup=label,
                                     showlegend=(col == 1), line=dict(color=colors[label]), marker=dict(size=4),
                                     hovertemplate="step %{x}: %{y:.1f}%<extra>" + label + "</extra>"), row=1, col=col)
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(range=[0, 105])
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    return _layout(fig, "Replay: accuracy during the run (step 0 = the original)", height=320,
                   legend=dict(orientation="h", y=-0.25))


def label_distribution_figure(distributions: dict[str, np.ndarray], class_names: list[str],
                              forget_class: int | None = None, js: dict[str, float] | None = None) -> go.Figure:
    """Share of the forget images predicted as each class, one bar group per model, with each model's
    Jensen-Shannon divergence to Retrain in the legend."""
    names = [str(c) for c in class_names]
    colors = role_colors(list(distributions))
    fig = go.Figure()
    for label, dist in distributions.items():
        suffix = f" · JS to Retrain {js[label]:.3f}" if js and label in js else ""
        fig.add_trace(go.Bar(x=names, y=np.asarray(dist) * 100, name=label + suffix, marker_color=colors[label],
                             hovertemplate="predicted %{x}: %{y:.1f}% of the forget images<extra>" + label + "</extra>"))
    if forget_class is not None:
        fig.add_vrect(x0=forget_class - 0.5, x1=forget_class + 0.5, fillcolor=COLORS["forget"], opacity=0.08,
                      line_width=0, annotation_text="forgotten class", annotation_position="top")
    fig.update_xaxes(title_text="predicted class", type="category", tickmode="array", tickvals=names)
    fig.update_yaxes(title_text="% of the forget images", range=[0, 105])
    return _layout(fig, "Where the forgotten images go: predicted labels on the forget set", height=340,
                   barmode="group", legend=dict(orientation="h", y=-0.25))


def audit_figure(report, signal: str = "modified_entropy") -> go.Figure:
    """ROC curves of one signal of a core.classification.audit report, one per model, log FPR axis so the
    1%-FPR corner (the one that matters for privacy) is readable."""
    from core.classification.audit import FPR, SIGNAL_LABELS, roc_points

    colors = role_colors(list(report.scores))
    fig = go.Figure()
    floor = 1.0 / max(report.nonmembers, 1)
    for label, signals in report.scores.items():
        fpr, tpr = roc_points(*signals[signal])
        r = report.results[label][signal]
        fig.add_trace(go.Scatter(x=np.maximum(fpr, floor / 2), y=tpr, mode="lines", line=dict(color=colors[label]),
                                 name=f"{label}: AUC {r['auc']:.3f}, TPR@1% {r['tpr_at_1pct_fpr']:.1f}%",
                                 hovertemplate="FPR %{x:.3f}, TPR %{y:.3f}<extra>" + label + "</extra>"))
    grid = np.logspace(np.log10(floor / 2), 0, 50)
    fig.add_trace(go.Scatter(x=grid, y=grid, mode="lines", name="chance", line=dict(color="#999", dash="dot")))
    fig.add_vline(x=FPR, line_dash="dash", line_color="#555", annotation_text="1% FPR", annotation_position="top")
    fig.update_xaxes(type="log", title_text="false-positive rate: test images called 'trained on' (log)",
                     tickvals=[0.001, 0.01, 0.1, 1], ticktext=["0.1%", "1%", "10%", "100%"])
    fig.update_yaxes(title_text="true-positive rate: forget images caught", range=[0, 1.02])
    return _layout(fig, f"Audit — {SIGNAL_LABELS[signal]} attack, forget vs same-class test images", height=380,
                   legend=dict(orientation="h", y=-0.3))


def overlap_sparsity_figure(rows: list[dict], label: str) -> go.Figure:
    """IoU of two masks across sparsity (core.classification.analysis.overlap_across_sparsity) beside
    the IoU two random masks of the same share give, s / (2 − s)."""
    x = [r["sparsity"] * 100 for r in rows]
    fine = np.linspace(min(x) / 100, max(x) / 100, 60)
    traces = [go.Scatter(x=x, y=[r["iou"] for r in rows], mode="lines+markers", name=label,
                         line=dict(color=COLORS["forget"]), hovertemplate="sparsity %{x:.0f}%: IoU %{y:.3f}<extra></extra>"),
              go.Scatter(x=fine * 100, y=fine / (2 - fine), mode="lines", name="two random masks: s / (2 − s)",
                         line=dict(color="#999", dash="dot"), hoverinfo="skip")]
    return _figure(traces, "Overlap across sparsity, against chance", height=320, legend=dict(orientation="h", y=-0.3),
                   xaxis=dict(title=dict(text="sparsity: share of weights in each mask (%)")),
                   yaxis=dict(title=dict(text="IoU"), range=[0, 1.02]))


# --- cost against data size (bench/bench_scaling.py) ---------------------------------------------

def scaling_figure(rows: list[dict]) -> go.Figure:
    """Run time and Avg. Gap of SalUn and Retrain against the number of training images.

    `rows` are bench/bench_scaling.py's (its scaling.csv): n_train, salun_cpu_s, retrain_cpu_s, avg_gap.
    """
    rows = sorted(rows, key=lambda r: float(r["n_train"]))
    n = [float(r["n_train"]) for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Run time (CPU seconds, 1 thread)", "Avg. Gap to Retrain"])
    for key, name, color in (("retrain_cpu_s", "Retrain", COLORS["retrain"]), ("salun_cpu_s", "SalUn", COLORS["after"])):
        fig.add_trace(go.Scatter(x=n, y=[float(r[key]) for r in rows], mode="lines+markers", name=name,
                                 line=dict(color=color),
                                 hovertemplate="%{x:,.0f} training images: %{y:.1f} s<extra>" + name + "</extra>"),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=n, y=[float(r["avg_gap"]) for r in rows], mode="lines+markers", name="SalUn vs Retrain",
                             line=dict(color=COLORS["after"], dash="dot"), showlegend=False,
                             hovertemplate="%{x:,.0f} training images: Avg. Gap %{y:.2f}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="training images", tickformat=",d")
    fig.update_yaxes(title_text="seconds", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="points", rangemode="tozero", row=1, col=2)
    return _layout(fig, "How the cost of forgetting one class grows with the data", height=360,
                   legend=dict(orientation="h", y=-0.25))
