"""Classifier architectures by name, and the device to run on."""

from __future__ import annotations

import torch
from torch import nn

from core.errors import SalunError


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SmallCNN(nn.Module):
    """conv 32 -> conv 64 -> FC 64 -> classes. ~220 k parameters on 28x28 inputs; ~1 s/epoch on 4,000 images.
    `width` multiplies every layer's width (`wide_cnn`: 4, ~3.3 M parameters, for the mask ablation)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 1):
        super().__init__()
        c1, c2, fc = 32 * width, 64 * width, 64 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.penultimate = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, fc), nn.ReLU())
        self.classifier = nn.Linear(fc, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (used for the Fréchet distance of generated images)."""
        return self.penultimate(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def resnet18_cifar(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: 3x3 first convolution, no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def wide_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """SmallCNN four times as wide (128 -> 256 -> FC 256): the larger classifier of the mask ablation."""
    return SmallCNN(in_channels, num_classes, image_size, width=4)


ARCHITECTURES = {
    "small_cnn": SmallCNN,
    "wide_cnn": wide_cnn,
    "resnet18": resnet18_cifar,
}


def build_model(architecture: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    if architecture not in ARCHITECTURES:
        raise SalunError(f"unknown model {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if architecture in ("small_cnn", "wide_cnn") and image_size % 4:
        raise SalunError(f"{architecture} needs an image side divisible by 4, got {image_size}")
    return ARCHITECTURES[architecture](in_channels=in_channels, num_classes=num_classes, image_size=image_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
