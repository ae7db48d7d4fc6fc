"""Training an original classifier (and the same recipe for Retrain), with a progress callback.

A progress callback is called as `progress(done, total, loss)` after every step. It may raise
`core.errors.CancelledError` to stop a run; nothing is saved then.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.data import ImageDataset
from core.classification.models import build_model, default_device
from core.steps import Progress, check_finite, make_generator, seeded_global_rng


@dataclass
class TrainConfig:
    architecture: str = "small_cnn"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0


def batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
        generator: torch.Generator, device, progress: Progress | None = None, what: str = "training") -> list[float]:
    """Plain supervised training with Adam; returns the loss of every step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = math.ceil(len(y) / batch_size)
    total, losses = epochs * steps_per_epoch, []
    model.train()
    for _ in range(epochs):
        for idx in batches(len(y), batch_size, generator):
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(check_finite(loss, what))
            if progress:
                progress(len(losses), total, losses[-1])
    model.eval()
    return losses


def train_from_scratch(dataset: ImageDataset, indices, config: TrainConfig, device=None,
                       progress: Progress | None = None, what: str = "training") -> nn.Module:
    """A fresh model of `config.architecture` trained on the training rows `indices`."""
    device = device or default_device()
    generator = make_generator(config.seed)
    channels, height, _ = dataset.image_shape
    with seeded_global_rng(config.seed):
        model = build_model(config.architecture, channels, dataset.num_classes, height)
    model.to(device)
    idx = torch.as_tensor(indices, dtype=torch.long)
    fit(model, dataset.train_x[idx], dataset.train_y[idx], config.epochs, config.lr, config.batch_size,
        generator, device, progress, what)
    return model


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, device=None) -> torch.Tensor:
    """Softmax probabilities, shape (N, classes), on the CPU."""
    device = device or next(model.parameters()).device
    model.eval()
    out = [torch.softmax(model(x[i:i + batch_size].to(device)), dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy in percent (0-100); NaN for an empty set."""
    if len(y) == 0:
        return float("nan")
    return float((predict(model, x).argmax(1) == y).float().mean() * 100)


def per_class_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    """For each class, the % of its images `model` assigns to it (NaN for a class with none). The one
    per-class accuracy: test images for a classifier, generated images for a generator (the labels
    are then the classes asked for)."""
    predicted = predict(model, x).argmax(1)
    return [float((predicted[y == c] == c).float().mean() * 100) if (y == c).any() else float("nan")
            for c in range(num_classes)]


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy that shares nothing with the original, so a run can never modify it."""
    return copy.deepcopy(model)


def train_meta(dataset: ImageDataset, config: TrainConfig, test_accuracy: float) -> dict:
    return {
        "architecture": config.architecture,
        "dataset": dataset.name,
        "class_names": dataset.class_names,
        "image_shape": list(dataset.image_shape),
        "training": asdict(config),
        "seed": config.seed,
        "test_accuracy": round(test_accuracy, 3),
    }
