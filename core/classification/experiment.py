"""One unlearning run, described by a small serialisable config, producing one result.

    config = RunConfig(dataset="mnist5k", forget="class:3", method="salun", seed=0)
    result = run(config)            # metrics, timings, the unlearned model, its mask
    result.metrics["ua"]

`Experiment` holds what several runs on the same original model and forget set share (the dataset,
the original model, the split, the forget-set gradients), which the app and the benchmarks reuse.
Same config and seed, same result.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from core.config import config_from_dict
from core.checkpoint import ASSETS, load_checkpoint, save_checkpoint, save_mask
from core.data import DATASETS, ForgetSplit, ImageDataset, load_dataset, make_split, parse_forget
from core.errors import CheckpointError, SalunError, check_finite_metrics, check_fraction
from core.classification.metrics import avg_gap, avg_gap_std, evaluate, forget_label_distribution, js_divergence
from core.classification.models import default_device
from core.saliency import DEFAULT_SPARSITY, Mask, classifier_gradients, saliency_mask
from core.classification.training import TrainConfig, copy_model
from core.steps import Progress, load_optimizer_machinery
from core.classification.methods import UnlearnData
from core.methods import Method, get_method


def default_checkpoint(dataset: str) -> Path:
    if dataset not in DATASETS:
        raise SalunError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    return ASSETS / f"{dataset}_{DATASETS[dataset].default_model}.safetensors"


@dataclass
class RunConfig:
    dataset: str = "mnist5k"
    forget: str = "class:3"
    method: str = "salun"
    sparsity: float = DEFAULT_SPARSITY
    seed: int = 0
    epochs: int | None = None
    lr: float | None = None
    alpha: float | None = None
    masked: bool = False  # give the saliency mask to a baseline too (SalUn always uses it)
    options: dict = field(default_factory=dict)  # any other method setting, e.g. {"retain_batch_size": 128}
    checkpoint: str | None = None  # default: the shipped model for the dataset
    data_root: str | None = None
    download: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        return config_from_dict(cls, values)

    def overrides(self) -> dict:
        return {**self.options, "epochs": self.epochs, "lr": self.lr, "alpha": self.alpha}


@dataclass
class RunResult:
    config: RunConfig
    method: str
    metrics: dict  # ua, ra, ta, mia_efficacy (+ forget_test_accuracy), rte_seconds
    params: dict
    losses: list[float]
    model: nn.Module
    mask: Mask | None = None
    mask_seconds: float = 0.0
    retrain: "RunResult | None" = None
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The CLI's JSON contract: method, forget, seed, metrics in percent, rte_seconds (+ retrain, avg_gap)."""
        out = {"method": self.method, "forget": self.config.forget, "seed": self.config.seed,
               **{k: round(v, 4) for k, v in self.metrics.items()}}
        if self.retrain is not None:
            out["retrain"] = self.retrain.summary()
            out["avg_gap"] = round(avg_gap(self.metrics, self.retrain.metrics), 4)
            out["avg_gap_std"] = round(avg_gap_std(self.metrics, self.retrain.metrics), 4)
        return out


class Experiment:
    """The dataset, original model and forget split shared by every run on them."""

    def __init__(self, dataset: ImageDataset, original: nn.Module, meta: dict, split: ForgetSplit,
                 device: torch.device | None = None):
        self.dataset, self.original, self.meta, self.split = dataset, original, meta, split
        self.device = device or default_device()
        self.original.to(self.device).eval()
        for p in self.original.parameters():  # shared, read-only: every run works on a copy
            p.requires_grad_(True)
        x, y = dataset.train_x, dataset.train_y
        f, r = torch.as_tensor(split.forget_idx), torch.as_tensor(split.retain_idx)
        training = meta.get("training", {})
        self.data = UnlearnData(
            x[f], y[f], x[r], y[r], dataset.num_classes,
            TrainConfig(architecture=meta["architecture"],
                        epochs=int(training.get("epochs", 20)), lr=float(training.get("lr", 1e-3)),
                        batch_size=int(training.get("batch_size", 128))),
        )
        self._gradients: dict[str, torch.Tensor] | None = None
        self._original_metrics: dict[int, dict] = {}

    @classmethod
    def from_config(cls, config: RunConfig, device=None) -> "Experiment":
        dataset = load_dataset(config.dataset, config.data_root, config.download)
        original, meta = load_original(config.dataset, config.checkpoint, device)
        check_compatible(meta, dataset)
        split = make_split(dataset, parse_forget(config.forget), seed=config.seed)
        return cls(dataset, original, meta, split, device)

    def forget_gradients(self) -> dict[str, torch.Tensor]:
        """|∇θ CE| at the original weights over the whole forget set (computed once, then cached)."""
        if self._gradients is None:
            self._gradients = classifier_gradients(self.original, self.data.forget_x, self.data.forget_y,
                                                   device=self.device)
        return self._gradients

    def mask(self, sparsity: float = DEFAULT_SPARSITY) -> Mask:
        return saliency_mask(self.forget_gradients(), sparsity)

    def evaluate(self, model: nn.Module, seed: int = 0, details: bool = False) -> dict:
        return evaluate(model, self.dataset, self.split, seed=seed, details=details)

    def js_to_retrain(self, model: nn.Module, retrain_model: nn.Module) -> float:
        """Jensen-Shannon divergence (bits) between where `model` and Retrain send the forget images."""
        return js_divergence(forget_label_distribution(model, self.dataset, self.split),
                             forget_label_distribution(retrain_model, self.dataset, self.split))

    def original_metrics(self, seed: int = 0) -> dict:
        if seed not in self._original_metrics:
            self._original_metrics[seed] = self.evaluate(self.original, seed)
        return self._original_metrics[seed]

    def unlearn(self, method: str, seed: int = 0, sparsity: float = DEFAULT_SPARSITY, masked: bool = False,
                progress: Progress | None = None, config: RunConfig | None = None,
                watch: Callable[[nn.Module, int, int], None] | None = None, **overrides) -> RunResult:
        """Run `method` on a copy of the original. `watch(model, done, total)`, if given, sees the model
        after every step (core.classification.compare.replay evaluates it there)."""
        spec = get_method(method)
        params = spec.resolve(seed, self.dataset.name, self.split.target.kind, base=self._recipe_defaults(spec),
                              **overrides)
        sparsity = check_fraction("sparsity", sparsity)
        # torch's one-off import, outside every run's RTE; here rather than when the experiment is made, so
        # a page that only shows stored runs never pays for it (seconds on a 2-core machine)
        load_optimizer_machinery()
        start = time.perf_counter()
        mask = None
        if spec.uses_mask(masked):
            mask = self.mask(sparsity)
        mask_seconds = time.perf_counter() - start
        model = copy_model(self.original)
        if watch is not None:
            progress = _watched(progress, watch, model)
        losses = spec.run(model, self.data, params, mask=mask, progress=progress)
        rte = time.perf_counter() - start
        metrics = {**self.evaluate(model, seed), "rte_seconds": rte}
        if config is None:
            named = {k: overrides.get(k) for k in ("epochs", "lr", "alpha")}
            options = {k: v for k, v in overrides.items() if k not in named and v is not None}
            config = RunConfig(dataset=self.dataset.name, forget=str(self.split.target), method=spec.name,
                               sparsity=sparsity, seed=seed, masked=masked, options=options, **named)
        return RunResult(config, spec.name, metrics, params, losses, model, mask, mask_seconds,
                         extra={"meta": dict(self.meta)})  # so a saved model names its architecture

    def method_defaults(self, method: str) -> dict:
        """The settings `method` runs with here unless told otherwise: its declared defaults for this
        dataset and kind of forget target (Retrain: the original model's own recipe)."""
        spec = get_method(method)
        return {**spec.defaults(self.dataset.name, self.split.target.kind), **self._recipe_defaults(spec)}

    def _recipe_defaults(self, method: Method) -> dict:
        """Retrain repeats the original model's own training recipe."""
        if method.name != "retrain":
            return {}
        t = self.data.original_training
        return {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size}


def _watched(progress: Progress | None, watch, model: nn.Module) -> Progress:
    def report(done: int, total: int, loss: float) -> None:
        watch(model, done, total)
        if progress:
            progress(done, total, loss)
    return report


def load_original(dataset: str, checkpoint: str | None = None, device=None) -> tuple[nn.Module, dict]:
    path = Path(checkpoint) if checkpoint else default_checkpoint(dataset)
    if not checkpoint and not path.is_file():
        raise CheckpointError(
            f"no trained model for {dataset!r} at {str(path)!r}; train one with "
            f"`python -m core.cli train --dataset {dataset} --save {path}` or pass --checkpoint")
    return load_checkpoint(path, device=device or default_device())


def check_compatible(meta: dict, dataset: ImageDataset) -> None:
    if tuple(meta["image_shape"]) != dataset.image_shape or len(meta["class_names"]) != dataset.num_classes:
        raise CheckpointError(
            f"checkpoint was trained on images {tuple(meta['image_shape'])} with {len(meta['class_names'])} classes, "
            f"but {dataset.name} has {dataset.image_shape} with {dataset.num_classes}")


def run(config: RunConfig, progress: Progress | None = None, compare_retrain: bool = False,
        retrain_progress: Progress | None = None, experiment: Experiment | None = None) -> RunResult:
    """Run one unlearning method as the config says; optionally Retrain too, for Avg. Gap."""
    experiment = experiment or Experiment.from_config(config)
    result = experiment.unlearn(config.method, seed=config.seed, sparsity=config.sparsity, masked=config.masked,
                                progress=progress, config=config, **config.overrides())
    if compare_retrain:
        result.retrain = (result if result.method == "retrain" else
                          experiment.unlearn("retrain", seed=config.seed, progress=retrain_progress,
                                             config=retrain_config(config)))
        if result.retrain is not result:
            result.metrics["js_to_retrain"] = experiment.js_to_retrain(result.model, result.retrain.model)
    return result


def retrain_config(config: RunConfig) -> RunConfig:
    """The Retrain run compared with `config`: same data, model and seed, Retrain's own settings, so
    its result names the checkpoint it retrained and the run store can find it again."""
    return replace(config, method="retrain", sparsity=DEFAULT_SPARSITY, masked=False, epochs=None, lr=None,
                   alpha=None, options={})


def save_run(result: RunResult, directory: Path) -> None:
    """The run as files: unlearned weights with their sidecar, the mask, config.json and metrics.json.

    Written into a temporary folder next to `directory` and moved into place at the end: a failed save
    (no space, unwritable folder) is one SalunError line and leaves no partial folder."""
    from core.checkpoint import atomic_directory

    summary = result.summary()
    check_finite_metrics(summary)
    with atomic_directory(directory) as folder:
        save_checkpoint(result.model.cpu(), folder / "model.safetensors",
                        {**result.extra.get("meta", {}), "unlearning": result.config.to_dict()})
        if result.mask is not None:
            save_mask(result.mask, folder / "mask.safetensors")
        (folder / "config.json").write_text(json.dumps(result.config.to_dict(), indent=2))
        (folder / "metrics.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
