"""Pictures for the generation page: image grids with the forgotten row marked, and Plotly figures.

Per-class accuracy of generated images is drawn by core.classification.plots.per_class_accuracy_figure,
the same figure as for classifiers.
"""

from __future__ import annotations

import numpy as np
import torch

FORGOTTEN_COLOUR = (220, 40, 40)


def grid_image(images: torch.Tensor, per_row: int, marked_row: int | None = None, pad: int = 2,
               scale: int = 2) -> np.ndarray:
    """An RGB uint8 array with `per_row` images per row (one class per row); the marked row is framed in red."""
    n, c, h, w = images.shape
    rows = (n + per_row - 1) // per_row
    cell_h, cell_w = h + 2 * pad, w + 2 * pad
    out = np.full((rows * cell_h, per_row * cell_w, 3), 255, dtype=np.uint8)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if c == 1:
        pixels = np.repeat(pixels, 3, axis=1)
    for i in range(n):
        r, col = divmod(i, per_row)
        out[r * cell_h + pad:r * cell_h + pad + h, col * cell_w + pad:col * cell_w + pad + w] = pixels[i].transpose(1, 2, 0)
    if marked_row is not None and 0 <= marked_row < rows:
        top, bottom = marked_row * cell_h, (marked_row + 1) * cell_h
        band = max(1, pad)
        out[top:top + band, :] = FORGOTTEN_COLOUR
        out[bottom - band:bottom, :] = FORGOTTEN_COLOUR
        out[top:bottom, :band] = FORGOTTEN_COLOUR
        out[top:bottom, -band:] = FORGOTTEN_COLOUR
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def group_layer_rows(rows: list[dict], max_bars: int = 40) -> list[dict]:
    """Layer statistics summed into blocks (the longest name prefix that gives at most `max_bars` bars),
    so a UNet's ~100 tensors read as ~20-40 labelled bars. Each block's salient fraction is weighted by size."""
    for depth in range(8, 0, -1):
        keys = list(dict.fromkeys(".".join(r["layer"].split(".")[:depth]) for r in rows))
        if len(keys) <= max_bars:
            break
    if len(keys) == len(rows):
        return rows
    grouped = {k: {"layer": k, "numel": 0, "salient": 0, "tensors": 0, "grad_median": 0.0, "grad_q99": 0.0} for k in keys}
    for r in rows:
        g = grouped[".".join(r["layer"].split(".")[:depth])]
        g["numel"] += r["numel"]
        g["salient"] += r.get("salient", round(r["salient_fraction"] * r["numel"]))
        g["tensors"] += 1
        g["grad_median"] = max(g["grad_median"], r["grad_median"])  # the block's largest tensor median
        g["grad_q99"] = max(g["grad_q99"], r["grad_q99"])
    for g in grouped.values():
        g["salient_fraction"] = g["salient"] / max(g["numel"], 1)
    return list(grouped.values())


def layer_saliency_figure(rows: list[dict]):
    """Salient share per block of parameter tensors (rows from core.saliency.layer_statistics, grouped
    by group_layer_rows so every bar keeps its label)."""
    import plotly.graph_objects as go

    rows = group_layer_rows(rows)
    fig = go.Figure(go.Bar(
        x=[r["salient_fraction"] * 100 for r in rows], y=[r["layer"] for r in rows], orientation="h",
        customdata=[[r["numel"], r["grad_median"], r["grad_q99"]] for r in rows],
        hovertemplate="%{y}<br>salient %{x:.1f}% of %{customdata[0]} weights<br>"
                      "median |g| %{customdata[1]:.2e}, q99 |g| %{customdata[2]:.2e}<extra></extra>"))
    fig.update_layout(xaxis_title="weights in the saliency mask (%)", xaxis_range=[0, 100],
                      height=max(300, 22 * len(rows) + 60), margin=dict(t=20, l=10), yaxis_autorange="reversed")
    fig.update_yaxes(tickmode="array", tickvals=[r["layer"] for r in rows], automargin=True)
    return fig
