"""Input attributions (captum's Integrated Gradients): which pixels a classifier's answer rests on.

    images, labels = attribution_examples(experiment.dataset, experiment.split, count=4)
    before = integrated_gradients(experiment.original, images, labels)
    after = integrated_gradients(result.model, images, labels)

Both models are attributed toward the same target (the true label), from the same black baseline, so
the two maps are directly comparable: after forgetting a class, its images should lose the evidence
for their label.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.data import ForgetSplit, ImageDataset
from core.errors import SalunError


def attribution_examples(dataset: ImageDataset, split: ForgetSplit, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images to attribute: half of the forgotten class (class-wise) and half of the other classes.
    For a random share or an index list, the first forget-set training images and test images."""
    if count < 1:
        raise SalunError(f"count must be at least 1, got {count}")
    half = max(1, count // 2)
    if split.classwise and len(split.forget_test_idx):
        first = dataset.test_x[split.forget_test_idx[:half]], dataset.test_y[split.forget_test_idx[:half]]
    else:
        first = dataset.train_x[split.forget_idx[:half]], dataset.train_y[split.forget_idx[:half]]
    rest = split.test_idx[:: max(1, len(split.test_idx) // max(1, count - half))][: count - half]
    images = torch.cat([first[0], dataset.test_x[rest]])
    labels = torch.cat([first[1], dataset.test_y[rest]])
    return images, labels


def integrated_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int = 32) -> np.ndarray:
    """Integrated Gradients of each image toward its target class, summed over colour channels: (N, H, W)."""
    from captum.attr import IntegratedGradients

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = images.to(device).clone().requires_grad_(True)
        attributions = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=targets.to(device), n_steps=steps)
    finally:
        model.train(was_training)
    return attributions.detach().sum(1).cpu().numpy()


def predicted_labels(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    from core.classification.training import predict

    return predict(model, images).argmax(1).numpy()
