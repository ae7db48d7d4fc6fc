"""Comparing saliency masks across classes, against the retain set, and sweeping SalUn's sparsity.

    grads = class_gradients(experiment.original, experiment.dataset)     # one |∇θ CE| per class, once
    iou = class_iou_matrix(grads, sparsity=0.5)                          # K x K, each mask at 50 %
    retain = retain_gradients(experiment)                                # |∇θ CE| over the retain set
    rows = sparsity_sweep(experiment, [0.1, 0.3, 0.5], seeds=[0, 1])     # SalUn metrics per run

Gradients are the expensive part (one pass over the data); masks at any sparsity are cheap to redraw
from them, so callers keep the gradients and recompute masks and overlaps on demand.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from core.data import ImageDataset
from core.errors import SalunError, check_fraction
from core.saliency import Mask, classifier_gradients, saliency_mask


def example_images(dataset: ImageDataset, per_class: int = 1) -> dict[int, np.ndarray]:
    """The first `per_class` training images of each class, as (n, H, W) or (n, H, W, C) arrays in [0, 1]."""
    out = {}
    labels = dataset.train_y.numpy()
    for c in range(dataset.num_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        images = dataset.train_x[idx].numpy()
        out[c] = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    return out


def class_gradients(model: nn.Module, dataset: ImageDataset, device=None,
                    progress: Callable[[int, int], None] | None = None) -> dict[int, dict[str, torch.Tensor]]:
    """|∇θ CE| at the model's weights over each class's training images: the forget gradient of every
    class-wise target. One pass over the training set in all."""
    device = device or next(model.parameters()).device
    out = {}
    for c in range(dataset.num_classes):
        rows = dataset.train_y == c
        if not bool(rows.any()):
            raise SalunError(f"class {c} ({dataset.class_names[c]}) has no training images")
        out[c] = classifier_gradients(model, dataset.train_x[rows], dataset.train_y[rows], device=device)
        if progress:
            progress(c + 1, dataset.num_classes)
    return out


def retain_gradients(experiment) -> dict[str, torch.Tensor]:
    """|∇θ CE| at the original weights over the retain set: what the kept data relies on."""
    return classifier_gradients(experiment.original, experiment.data.retain_x, experiment.data.retain_y,
                                device=experiment.device)


def class_masks(gradients: dict[int, dict[str, torch.Tensor]], sparsity: float) -> dict[int, Mask]:
    return {c: saliency_mask(g, sparsity) for c, g in gradients.items()}


def class_iou_matrix(gradients: dict[int, dict[str, torch.Tensor]], sparsity: float,
                     ranks: dict[int, torch.Tensor] | None = None) -> np.ndarray:
    """IoU (0-1) of every pair of class masks, each selecting `sparsity` of all weights. Pass `ranks`
    (from mask_ranks, per class) to skip ranking again: the slider's every move then costs milliseconds."""
    sparsity = check_fraction("sparsity", sparsity)
    ranks = ranks if ranks is not None else {c: mask_ranks(g) for c, g in gradients.items()}
    classes = sorted(ranks)
    # every pair's intersection in one product of the stacked masks (counts are exact in float64)
    stacked = torch.stack([_top(ranks[c], sparsity) for c in classes]).to(torch.float64)
    inter = (stacked @ stacked.T).numpy()
    sizes = np.diag(inter)
    union = sizes[:, None] + sizes[None, :] - inter
    matrix = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    np.fill_diagonal(matrix, 1.0)
    return matrix


def mask_ranks(gradients: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each weight's place (0 = most salient) in a stable descending sort of all weights' |gradient|, in
    parameter order: `ranks < floor(s × total)` is saliency_mask(gradients, s), ties included (the earliest
    weights first), flattened."""
    values = -torch.cat([g.detach().reshape(-1) for g in gradients.values()])
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order))
    return ranks


def _top(ranks: torch.Tensor, sparsity: float) -> torch.Tensor:
    """saliency_mask's selection (exactly floor(s × total) weights, at least one), flattened, from mask_ranks."""
    return ranks < max(1, int(ranks.numel() * sparsity))


def mask_from_ranks(ranks: torch.Tensor, gradients: dict[str, torch.Tensor], sparsity: float) -> Mask:
    """saliency_mask(gradients, sparsity), read off the gradients' mask_ranks: the same mask, ties
    included, in a comparison instead of a global threshold search (what a slider needs)."""
    flat = _top(ranks, check_fraction("sparsity", sparsity))
    mask, start = {}, 0
    for name, g in gradients.items():
        mask[name] = flat[start:start + g.numel()].reshape(g.shape)
        start += g.numel()
    return mask


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def chance_iou(sparsity: float) -> float:
    """IoU two independent random masks of the same share s give on average: s² / (2s − s²) = s / (2 − s).
    The yardstick for every mask overlap: 0.33 at s = 0.5 is what chance alone produces."""
    sparsity = check_fraction("sparsity", sparsity)
    return sparsity / (2 - sparsity)


def overlap_across_sparsity(gradients_a: dict[str, torch.Tensor], gradients_b: dict[str, torch.Tensor],
                            sparsities: Iterable[float]) -> list[dict]:
    """IoU of the two gradients' masks at every sparsity, beside what random masks would give.

    The masks are saliency_mask's, ties included: a weight is in the mask at sparsity s when its rank in
    a stable descending sort is below floor(s × total). Ranking once serves every sparsity (two sorts
    instead of two global thresholds per sparsity: milliseconds instead of seconds)."""
    if gradients_a.keys() != gradients_b.keys():
        raise SalunError("the two gradients belong to different models (their parameter names differ)")
    rank_a, rank_b = mask_ranks(gradients_a), mask_ranks(gradients_b)
    rows = []
    for s in sparsities:
        s = check_fraction("sparsity", s)
        rows.append({"sparsity": s, "iou": _iou(_top(rank_a, s), _top(rank_b, s)), "chance_iou": chance_iou(s)})
    return rows


def sparsity_sweep(experiment, sparsities: Iterable[float], seeds: Iterable[int], base_config=None,
                   progress: Callable[[int, int, float], None] | None = None,
                   lookup: Callable | None = None, on_result: Callable | None = None) -> list[dict]:
    """Run `base_config` (SalUn with its defaults unless given) at every sparsity x seed; one row of
    metrics per run.

    `progress(done, total, loss)` counts the runs in thousandths (raise from it to cancel the sweep);
    `lookup(config)` may return an earlier RunResult to reuse; `on_result(result)` receives each one.
    """
    from core.classification.experiment import RunConfig

    sparsities = [check_fraction("sparsity", s) for s in sparsities]
    seeds = [int(s) for s in seeds]
    if not sparsities or not seeds:
        raise SalunError("a sweep needs at least one sparsity and one seed")
    base = base_config or RunConfig(dataset=experiment.dataset.name, forget=str(experiment.split.target))
    runs = [replace(base, sparsity=s, seed=seed) for s in sparsities for seed in seeds]
    rows = []
    for i, config in enumerate(runs):
        def report(done, total, loss, i=i):
            if progress:
                progress(i * 1000 + int(1000 * done / max(total, 1)), len(runs) * 1000, loss)

        result = lookup(config) if lookup else None
        if result is None:
            result = experiment.unlearn(config.method, seed=config.seed, sparsity=config.sparsity,
                                        masked=config.masked, progress=report, config=config, **config.overrides())
        if progress:
            progress((i + 1) * 1000, len(runs) * 1000, result.losses[-1] if result.losses else float("nan"))
        if on_result:
            on_result(result)
        rows.append({"sparsity": config.sparsity, "seed": config.seed, **result.metrics})
    return rows


def summarize_sweep(rows: list[dict], metrics=("ua", "ra", "ta", "mia_efficacy")) -> list[dict]:
    """Mean and standard deviation over seeds of each metric, per sparsity (sorted).

    A metric that carries its own spread per run (MIA-Efficacy: `mia_efficacy_std` over member samples)
    gets both in its std: sqrt(variance over seeds + mean variance within a run)."""
    out = []
    for sparsity in sorted({r["sparsity"] for r in rows}):
        group = [r for r in rows if r["sparsity"] == sparsity]
        row = {"sparsity": sparsity, "runs": len(group)}
        for m in metrics:
            values = np.array([r[m] for r in group], dtype=float)
            within = np.array([r.get(f"{m}_std", 0.0) for r in group], dtype=float)
            between = values.var(ddof=1) if len(values) > 1 else 0.0
            row[m] = float(values.mean())
            row[f"{m}_std"] = float(np.sqrt(between + np.mean(within ** 2)))
        out.append(row)
    return out


def cli_command(config, save: str | None = None) -> str:
    """The `python -m core.cli unlearn ...` line that reproduces a RunConfig: every method setting has
    its flag (core.methods derives them), and a method from a plugin brings its --plugin."""
    from core.methods import get_method, plugin_source

    parts = ["python", "-m", "core.cli", "unlearn", "--dataset", config.dataset, "--forget", str(config.forget),
             "--method", config.method, "--sparsity", f"{config.sparsity:g}", "--seed", str(config.seed)]
    source = plugin_source(get_method(config.method))
    if source:
        parts += ["--plugin", source]
    settings = {"epochs": config.epochs, "lr": config.lr, "alpha": config.alpha, **(config.options or {})}
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if config.masked:
        parts.append("--masked")
    if config.checkpoint:
        parts += ["--checkpoint", str(config.checkpoint)]
    if config.data_root:
        parts += ["--data-root", str(config.data_root)]
    if save:
        parts += ["--save", save]
    return " ".join(shlex.quote(p) for p in parts)
