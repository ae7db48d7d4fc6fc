"""Unlearning methods for classifiers, all with one signature.

    method.run(model, data, params, mask=None, progress=None) -> list of step losses

`model` is a private copy that the method changes in place (`unlearn` below makes that copy, so the
original is never touched). `data` holds the forget and retain sets. `params` is a plain dict whose
keys are the method's `defaults`. A `mask` (parameter name -> bool tensor) is a hard constraint: every
weight outside it ends bit-identical to where it started, whatever the optimizer does.

Methods: SalUn (random labels under the saliency mask), Retrain (from scratch on Dr, the gold
standard), FT (fine-tune on Dr), GA (gradient ascent on Df), RL (random labels, no mask), ℓ1-sparse (FT
with a decaying ℓ1 penalty) and SSD (selective synaptic dampening, no training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from core.errors import SalunError, check_positive
from core.saliency import Mask, MaskConstraint
from core.classification.training import TrainConfig, batches, fit
from core.steps import MaskedSteps, Progress, make_generator, seeded_global_rng


@dataclass
class UnlearnData:
    forget_x: torch.Tensor
    forget_y: torch.Tensor
    retain_x: torch.Tensor
    retain_y: torch.Tensor
    num_classes: int
    original_training: TrainConfig = field(default_factory=TrainConfig)  # recipe Retrain repeats


@dataclass(frozen=True)
class UnlearningMethod:
    name: str
    label: str
    summary: str
    run: Callable
    defaults: dict
    mask: str  # "required" (SalUn), "optional", or "none" (Retrain trains a new model)
    random_defaults: dict = field(default_factory=dict)  # changes when forgetting a random share or a list

    def params_for(self, forget_kind: str) -> dict:
        return {**self.defaults, **(self.random_defaults if forget_kind != "class" else {})}


def _sgd(model: nn.Module, params: dict) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"],
                           weight_decay=params["weight_decay"])


def _random_other_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label y' != y for every sample, uniform over the other classes (the paper's y' ≠ y)."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y + shift) % num_classes


def _device(model):
    return next(model.parameters()).device


def _relabel_run(model, data: UnlearnData, params: dict, mask, progress, what: str) -> list[float]:
    """Random labels on Df plus α × cross-entropy on Dr; one epoch = one pass over Df, each forget batch
    paired with a random retain batch. Used by SalUn (with its mask) and RL (without)."""
    device, generator = _device(model), make_generator(params["seed"])
    constraint = MaskConstraint(model, mask) if mask is not None else None
    bs, n_f, n_r = params["batch_size"], len(data.forget_y), len(data.retain_y)
    step = MaskedSteps(model, _sgd(model, params), constraint, params["epochs"] * math.ceil(n_f / bs), progress, what)
    loss_fn = nn.CrossEntropyLoss()
    # One random label per forget image for the whole run, as upstream: labels redrawn every step
    # cannot be fitted, and their never-ending gradient noise erodes the retained classes.
    random_labels = _random_other_labels(data.forget_y, data.num_classes, generator)
    model.train()
    for _ in range(params["epochs"]):
        for idx in batches(n_f, bs, generator):
            xf = data.forget_x[idx].to(device)
            yf = random_labels[idx].to(device)
            r = torch.randint(0, n_r, (params["retain_batch_size"],), generator=generator)
            xr, yr = data.retain_x[r].to(device), data.retain_y[r].to(device)
            logits = model(torch.cat([xf, xr]))  # one forward pass for both: faster than two small ones
            step(loss_fn(logits[:len(idx)], yf) + params["alpha"] * loss_fn(logits[len(idx):], yr))
    model.eval()
    return step.losses


def run_salun(model, data, params, mask=None, progress=None):
    if mask is None:
        raise SalunError("SalUn needs a saliency mask; compute one with core.saliency.saliency_mask")
    return _relabel_run(model, data, params, mask, progress, "SalUn")


def run_rl(model, data, params, mask=None, progress=None):
    return _relabel_run(model, data, params, mask, progress, "RL")


def _retain_run(model, data, params, mask, progress, what, l1: float = 0.0) -> list[float]:
    """Fine-tuning on Dr, optionally with an ℓ1 penalty that decays linearly to zero (ℓ1-sparse)."""
    device, generator = _device(model), make_generator(params["seed"])
    constraint = MaskConstraint(model, mask) if mask is not None else None
    bs, n_r = params["batch_size"], len(data.retain_y)
    total = params["epochs"] * math.ceil(n_r / bs)
    step = MaskedSteps(model, _sgd(model, params), constraint, total, progress, what)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(params["epochs"]):
        for idx in batches(n_r, bs, generator):
            loss = loss_fn(model(data.retain_x[idx].to(device)), data.retain_y[idx].to(device))
            if l1:
                weight = l1 * (1 - len(step.losses) / total)
                loss = loss + weight * sum(p.abs().sum() for p in model.parameters())
            step(loss)
    model.eval()
    return step.losses


def run_ft(model, data, params, mask=None, progress=None):
    return _retain_run(model, data, params, mask, progress, "FT")


def run_l1_sparse(model, data, params, mask=None, progress=None):
    return _retain_run(model, data, params, mask, progress, "l1-sparse", l1=params["alpha"])


def run_ga(model, data, params, mask=None, progress=None):
    """Gradient ascent: maximise cross-entropy on Df."""
    device, generator = _device(model), make_generator(params["seed"])
    constraint = MaskConstraint(model, mask) if mask is not None else None
    bs, n_f = params["batch_size"], len(data.forget_y)
    step = MaskedSteps(model, _sgd(model, params), constraint, params["epochs"] * math.ceil(n_f / bs), progress, "GA")
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(params["epochs"]):
        for idx in batches(n_f, bs, generator):
            step(-loss_fn(model(data.forget_x[idx].to(device)), data.forget_y[idx].to(device)))
    model.eval()
    return step.losses


def _fisher_diagonal(model, x, y, batch_size, progress, done, total) -> tuple[dict, int]:
    device = _device(model)
    loss_fn = nn.CrossEntropyLoss()
    importance = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    model.eval()
    n_batches = 0
    for start in range(0, len(y), batch_size):
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[start:start + batch_size].to(device)), y[start:start + batch_size].to(device))
        loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                importance[n] += p.grad.detach() ** 2
        n_batches += 1
        done += 1
        if progress:
            progress(done, total, float(loss))
    model.zero_grad(set_to_none=True)
    return {n: v / max(n_batches, 1) for n, v in importance.items()}, done


def run_ssd(model, data, params, mask=None, progress=None):
    """Selective Synaptic Dampening: no training. Weights far more important to Df than to the whole
    training set (Fisher diagonal ratio above α) are scaled down by min(λ·I_D / I_f, 1)."""
    bs = params["batch_size"]
    full_x = torch.cat([data.forget_x, data.retain_x])
    full_y = torch.cat([data.forget_y, data.retain_y])
    total = math.ceil(len(full_y) / bs) + math.ceil(len(data.forget_y) / bs)
    importance_full, done = _fisher_diagonal(model, full_x, full_y, bs, progress, 0, total)
    importance_forget, _ = _fisher_diagonal(model, data.forget_x, data.forget_y, bs, progress, done, total)
    with torch.no_grad():
        for name, p in model.named_parameters():
            i_f, i_d = importance_forget[name], importance_full[name]
            selected = i_f > params["alpha"] * i_d
            if mask is not None:
                selected &= mask[name].to(selected.device)
            factor = torch.clamp(params["dampening"] * i_d / i_f.clamp_min(1e-30), max=1.0)
            p.copy_(torch.where(selected, p * factor, p))
    return []


def run_retrain(model, data, params, mask=None, progress=None):
    """Exact unlearning: a new model trained from scratch on Dr with the original's recipe."""
    if mask is not None:
        raise SalunError("Retrain trains a new model from scratch; it takes no mask")
    generator = make_generator(params["seed"])
    with seeded_global_rng(params["seed"]), torch.no_grad():  # fresh weights in place: `model` stays the caller's
        for module in model.modules():
            if hasattr(module, "reset_parameters") and module is not model:
                module.reset_parameters()
    return fit(model, data.retain_x, data.retain_y, params["epochs"], params["lr"], params["batch_size"],
               generator, _device(model), progress, "Retrain")


_SGD = {"momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}
# Tuned on the shipped mnist5k model (bench/bench_classification.py): class-wise forgetting needs a
# longer, gentler run; a random share needs a heavier retain term so the kept data is not disturbed.
_RELABEL = {"epochs": 5, "lr": 1e-3, "alpha": 16.0, "retain_batch_size": 128, **_SGD}
_RELABEL_RANDOM = {"epochs": 2, "alpha": 8.0, "retain_batch_size": 256}

METHODS: dict[str, UnlearningMethod] = {m.name: m for m in [
    UnlearningMethod("salun", "SalUn", "Random labels on the forget set plus retain loss, moving only salient weights.",
                     run_salun, _RELABEL, "required", _RELABEL_RANDOM),
    UnlearningMethod("retrain", "Retrain", "Train from scratch without the forget set: the gold standard.",
                     run_retrain, {"epochs": 20, "lr": 1e-3, "batch_size": 128}, "none"),
    UnlearningMethod("ft", "FT", "Fine-tune on the retain set only.",
                     run_ft, {"epochs": 2, "lr": 0.02, **_SGD}, "optional"),
    UnlearningMethod("ga", "GA", "Gradient ascent on the forget set.",
                     run_ga, {"epochs": 3, "lr": 1e-3, **_SGD}, "optional"),
    UnlearningMethod("rl", "RL", "Random labels on the forget set plus retain loss, all weights free.",
                     run_rl, _RELABEL, "optional", _RELABEL_RANDOM),
    UnlearningMethod("l1_sparse", "ℓ1-sparse", "Fine-tune on the retain set with a decaying ℓ1 penalty.",
                     run_l1_sparse, {"epochs": 2, "lr": 0.02, "alpha": 5e-5, **_SGD}, "optional"),
    UnlearningMethod("ssd", "SSD", "Dampen weights far more important to the forget set than to all data; no training.",
                     run_ssd, {"alpha": 10.0, "dampening": 1.0, "batch_size": 128}, "optional"),
]}


def get_method(name: str) -> UnlearningMethod:
    key = str(name).lower().replace("-", "_")
    if key not in METHODS:
        raise SalunError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[key]


def method_params(method: UnlearningMethod, seed: int = 0, forget_kind: str = "class", **overrides) -> dict:
    """The method's defaults for this kind of forget target, with `overrides` applied (None: keep), validated."""
    params = dict(method.params_for(forget_kind), seed=int(seed))
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in params:
            raise SalunError(f"{method.label} has no setting {key!r}; it takes: {', '.join(sorted(params))}")
        params[key] = value
    for key in ("epochs", "batch_size"):
        if key in params:
            params[key] = check_positive(key, params[key], integer=True)
    for key in ("lr", "dampening"):
        if key in params:
            params[key] = check_positive(key, params[key])
    if "alpha" in params:
        if not (isinstance(params["alpha"], (int, float)) and params["alpha"] >= 0 and math.isfinite(params["alpha"])):
            raise SalunError(f"alpha must be a finite number >= 0, got {params['alpha']!r}")
    return params
