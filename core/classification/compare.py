"""Looking inside: how an unlearned model differs from the original and from Retrain.

    emb = embedding(models, dataset, split)              # penultimate features, one shared 2-D projection
    cka = layer_similarity(models, images)               # linear CKA per layer for every pair of models
    rows = weight_change(original, unlearned, mask)      # per layer |Δw| inside and outside the mask
    trace = replay(experiment, config)                   # forget / retain accuracy during the run

Everything here is computed on a few hundred images so the app can show it in a second or two.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch
from torch import nn

from core.data import ForgetSplit, ImageDataset
from core.saliency import Mask

GROUPS = ("forget", "retain", "test")


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer to read penultimate features from")
    return linears[-1]


@torch.no_grad()
def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The input of the model's last linear layer (what the classifier separates), one row per image."""
    captured = []
    hook = _last_linear(model).register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].cpu()))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size].to(device))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured).flatten(1).numpy()


def sample_images(dataset: ImageDataset, split: ForgetSplit, per_group: int = 200, seed: int = 0) -> dict:
    """Up to `per_group` forget, retain and test images (seeded), the same for every model compared."""
    rng = np.random.default_rng(seed)
    pools = {"forget": (dataset.train_x, dataset.train_y, split.forget_idx),
             "retain": (dataset.train_x, dataset.train_y, split.retain_idx),
             "test": (dataset.test_x, dataset.test_y,
                      np.concatenate([split.test_idx, split.forget_test_idx]).astype(np.int64))}
    xs, ys, groups = [], [], []
    for group, (x, y, idx) in pools.items():
        chosen = np.sort(rng.choice(idx, size=min(per_group, len(idx)), replace=False)) if len(idx) else idx
        rows = torch.as_tensor(chosen, dtype=torch.long)
        xs.append(x[rows])
        ys.append(y[rows].numpy())
        groups += [group] * len(chosen)
    return {"x": torch.cat(xs), "labels": np.concatenate(ys), "groups": np.array(groups)}


def project_2d(features: dict[str, np.ndarray], method: str = "pca", seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """One projection fitted on all models' features together and applied to each, so the panels share
    their axes. "umap" uses umap-learn when installed and falls back to PCA otherwise."""
    stacked = np.concatenate(list(features.values()))
    sizes = np.cumsum([len(f) for f in features.values()])[:-1]
    if method == "umap":
        try:
            import umap

            points = umap.UMAP(n_components=2, random_state=seed).fit_transform(stacked)
            return dict(zip(features, np.split(points, sizes))), "UMAP"
        except ImportError:
            pass
    centred = stacked - stacked.mean(0)
    # PCA by SVD; the sign of each axis is fixed so the same data always draws the same way
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2] * np.sign(vt[:2, :1] + 1e-12)
    points = centred @ axes.T
    return dict(zip(features, np.split(points, sizes))), "PCA"


def embedding(models: dict[str, nn.Module], dataset: ImageDataset, split: ForgetSplit, per_group: int = 200,
              method: str = "pca", seed: int = 0) -> dict:
    """Penultimate features of the same forget, retain and test images under every model, projected
    with one shared 2-D map. Returns points per model, the images' groups and labels, the map's name."""
    images = sample_images(dataset, split, per_group, seed)
    features = {label: penultimate_features(model, images["x"]) for label, model in models.items()}
    points, name = project_2d(features, method, seed)
    return {"points": points, "groups": images["groups"], "labels": images["labels"], "method": name}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same n images (rows): 1 for the
    same representation up to rotation and scale, near 0 for unrelated ones. Computed on n x n Gram
    matrices, so wide convolution outputs cost n² per feature, not features²."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("linear_cka needs the same number (at least 2) of images in both representations")
    x, y = x - x.mean(0), y - y.mean(0)
    k, l = x @ x.T, y @ y.T
    denominator = np.sqrt((k * k).sum() * (l * l).sum())
    return float((k * l).sum() / denominator) if denominator > 0 else float("nan")


@torch.no_grad()
def layer_activations(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The output of every convolution and linear layer, flattened per image."""
    out, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: out.__setitem__(name, o.flatten(1).double().cpu().numpy())))
    was_training = model.training
    model.eval()
    try:
        model(x.to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return out


def layer_similarity(models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, dict[str, float]]:
    """Linear CKA per layer for every pair of models on the images `x`: {"A vs B": {layer: cka}}."""
    activations = {label: layer_activations(model, x) for label, model in models.items()}
    out = {}
    for a, b in combinations(models, 2):
        layers = [n for n in activations[a] if n in activations[b]]
        out[f"{a} vs {b}"] = {n: linear_cka(activations[a][n], activations[b][n]) for n in layers}
    return out


@torch.no_grad()
def weight_change(original: nn.Module, unlearned: nn.Module, mask: Mask | None = None) -> list[dict]:
    """Per parameter tensor: mean |Δw| inside and outside `mask`, the largest |Δw| outside it, and the
    share of weights that moved at all. Without a mask every weight counts as outside."""
    before = dict(original.named_parameters())
    rows = []
    for name, after in unlearned.named_parameters():
        delta = (after.detach().cpu() - before[name].detach().cpu()).abs()
        inside = mask[name].cpu().bool() if mask is not None and name in mask else torch.zeros_like(delta, dtype=torch.bool)
        outside = ~inside
        rows.append({
            "layer": name, "numel": delta.numel(), "salient_fraction": float(inside.float().mean()),
            "mean_change_inside": float(delta[inside].mean()) if inside.any() else float("nan"),
            "mean_change_outside": float(delta[outside].mean()) if outside.any() else float("nan"),
            "max_change_outside": float(delta[outside].max()) if outside.any() else 0.0,
            "moved_fraction": float((delta > 0).float().mean()),
            "mean_abs_weight": float(before[name].detach().abs().mean()),
        })
    return rows


def replay(experiment, config, every: int | None = None, sample: int = 500, progress=None) -> dict:
    """Run `config` again and measure forget and retain accuracy every `every` steps (default: about 25
    points over the run) on at most `sample` images of each. Same config and seed as the original run,
    so the trajectory ends at the same model; evaluating does not change the run."""
    rng = np.random.default_rng(config.seed)
    data = experiment.data
    forget_rows = torch.as_tensor(np.sort(rng.choice(len(data.forget_y), min(sample, len(data.forget_y)), replace=False)))
    retain_rows = torch.as_tensor(np.sort(rng.choice(len(data.retain_y), min(sample, len(data.retain_y)), replace=False)))
    xf, yf = data.forget_x[forget_rows], data.forget_y[forget_rows]
    xr, yr = data.retain_x[retain_rows], data.retain_y[retain_rows]
    trace = {"step": [], "forget_accuracy": [], "retain_accuracy": []}

    @torch.no_grad()
    def accuracy(model, x, y) -> float:
        return float((model(x.to(next(model.parameters()).device)).argmax(1).cpu() == y).float().mean() * 100)

    def measure(model, done):
        was_training = model.training
        model.eval()
        trace["step"].append(done)
        trace["forget_accuracy"].append(accuracy(model, xf, yf))
        trace["retain_accuracy"].append(accuracy(model, xr, yr))
        model.train(was_training)

    def watch(model, done, total):
        if not trace["step"]:
            measure_start(model)
        step = every or max(1, total // 25)
        if done % step == 0 or done == total:
            measure(model, done)

    def measure_start(model):
        # before the first step the copy still equals the original (Retrain: the original too, for reference)
        measure(experiment.original, 0)

    result = experiment.unlearn(config.method, seed=config.seed, sparsity=config.sparsity, masked=config.masked,
                                progress=progress, config=config, watch=watch, **config.overrides())
    trace["loss"] = result.losses
    trace["metrics"] = result.metrics
    return trace
