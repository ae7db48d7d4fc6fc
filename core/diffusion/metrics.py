"""How well a class-conditional generator generates, judged by the shipped classifier (all in percent).

- UA (generation)            = share of images generated for the forgotten class that the classifier
                               does NOT assign to that class. Higher means more forgotten.
- Retained accuracy          = share of images generated for the other classes that the classifier
                               assigns to the class they were generated for.
- Retained drop              = retained accuracy before minus after, in points, with its standard error
                               from the paired images (`retained_drop`).
- Recognised                 = the same accuracy over every class (the generator's quality bar).
- Fréchet distance (classifier features) = Fréchet distance between generated and real images of the
                               retained classes, on the classifier's 64 penultimate features
                               (`SmallCNN.embed`). Lower is closer. It is NOT Inception FID: the numbers
                               are not comparable with FIDs in papers. It is computed only from at least
                               FRECHET_FEATURE_MULTIPLE x 64 generated images (a minimum per class, in the
                               result as `frechet_min_per_class`); with fewer, the covariance estimate is
                               mostly noise (9 images in 64 dimensions gave 596 -> 937 for the same model),
                               and the result holds None and a `frechet_note` saying why.

Every figure is computed from images generated with fixed seeds, so two models are compared seed for
seed: the same starting noise for the same (class, slot).
"""

from __future__ import annotations

import torch
from torch import nn

import math

from core.diffusion.model import DEFAULT_GUIDANCE, DEFAULT_SAMPLE_STEPS, ConditionalUNet, check_class, class_grid_labels, generate
from core.errors import check_positive
from core.classification.training import per_class_accuracy, predict

GENERATION_METRIC_LABELS = {
    "ua": "UA (generation)",
    "retained_accuracy": "Retained accuracy",
    "frechet_retained": "Fréchet distance (classifier features)",
    "forget_accuracy": "Forgotten class recognised",
    "retained_drop": "Retained accuracy drop",
}

GENERATION_METRIC_DEFINITIONS = {
    "ua": "Share of images generated for the forgotten class that the classifier does not assign to it (%). "
          "Higher means more forgotten.",
    "retained_accuracy": "Share of images generated for the other classes that the classifier assigns to the "
                         "class asked for (%). Should stay where it was.",
    "frechet_retained": "Fréchet distance between generated and real images of the retained classes, on the "
                        "classifier's penultimate features (not Inception FID). Lower is closer to real data.",
    "forget_accuracy": "Share of images generated for the forgotten class that the classifier assigns to it (%).",
    "retained_drop": "Retained accuracy before minus after (points), ± its standard error: the same seeds draw each "
                     "image before and after, so the uncertainty comes only from the images whose verdict changed.",
}


FRECHET_FEATURE_MULTIPLE = 2  # generated images per classifier feature needed before a Fréchet distance is given


def frechet_min_images(num_features: int) -> int:
    return FRECHET_FEATURE_MULTIPLE * int(num_features)


def frechet_min_per_class(num_features: int, classes: int) -> int:
    """Images per class needed for a Fréchet distance over `classes` classes' generated images."""
    return math.ceil(frechet_min_images(num_features) / max(1, int(classes)))


def _frechet_or_note(result: dict, key: str, classifier: nn.Module, real: torch.Tensor, generated: torch.Tensor,
                     classes: int) -> None:
    """result[key] = the Fréchet distance, or None with result["frechet_note"] when too few images."""
    features = ClassifierFeatures(classifier, tuple(real.shape[1:])).num_features
    result["frechet_min_per_class"] = frechet_min_per_class(features, classes)
    if len(generated) < frechet_min_images(features):
        result[key] = None
        result["frechet_note"] = (f"not computed: {len(generated)} generated images for {features} classifier "
                                  f"features; needs at least {result['frechet_min_per_class']} images per class")
    else:
        result[key] = frechet_distance(classifier, real, generated)


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate features, in the form torchmetrics' Fréchet metric accepts."""

    def __init__(self, classifier: nn.Module, image_shape: tuple[int, int, int]):
        super().__init__()
        self.classifier = classifier
        with torch.no_grad():
            self.num_features = int(classifier.embed(torch.zeros(1, *image_shape)).shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.embed(x)


@torch.no_grad()
def frechet_distance(classifier: nn.Module, real: torch.Tensor, generated: torch.Tensor, batch_size: int = 500) -> float:
    """Fréchet distance between two image sets on the classifier's penultimate features (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    classifier.eval()
    metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier, tuple(real.shape[1:])), normalize=True)
    for images, is_real in ((real, True), (generated, False)):
        for start in range(0, len(images), batch_size):
            metric.update(images[start:start + batch_size], real=is_real)
    return float(metric.compute())


def generate_grid(generator: ConditionalUNet, per_class: int, guidance: float = DEFAULT_GUIDANCE,
                  steps: int = DEFAULT_SAMPLE_STEPS, seed: int = 0, preview=None) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images of every class (row-major by class) and their labels."""
    per_class = int(check_positive("images per class", per_class, integer=True))
    labels = class_grid_labels(generator.num_classes, per_class)
    return generate(generator, labels, guidance=guidance, steps=steps, seed=seed, preview=preview), labels


def generation_metrics(generator: ConditionalUNet, classifier: nn.Module, forget_class: int | None,
                       real_x: torch.Tensor, real_y: torch.Tensor, per_class: int = 50,
                       guidance: float = DEFAULT_GUIDANCE, steps: int = DEFAULT_SAMPLE_STEPS, seed: int = 0,
                       images: tuple[torch.Tensor, torch.Tensor] | None = None, before: dict | None = None) -> dict:
    """All generation metrics for one model; `forget_class` None gives the quality-bar figures only.

    Pass `images` (images, labels) already generated with these settings to skip generating again, and
    `before`, the original model's result with the same settings, to add the retained classes' drop in
    recognition and its standard error (`retained_drop`, `retained_drop_se`; see retained_drop).
    Returns percentages, the Fréchet distance, per-class recognition and the images themselves.
    """
    if forget_class is not None:
        forget_class = check_class(generator, forget_class, "forgotten class")
    images, labels = images if images is not None else generate_grid(generator, per_class, guidance, steps, seed)
    per_class_acc = per_class_accuracy(classifier, images, labels, generator.num_classes)
    result = {
        "recognised": float(torch.tensor(per_class_acc).nanmean()),
        "per_class_accuracy": per_class_acc,
        "guidance": float(guidance),
        "sample_steps": int(steps),
        "per_class": int(len(labels) // generator.num_classes),
        "seed": int(seed),
        "images": images,
        "labels": labels,
    }
    if forget_class is None:
        _frechet_or_note(result, "frechet_all", classifier, real_x, images, generator.num_classes)
        return result
    keep = [k for k in range(generator.num_classes) if k != forget_class]
    result["forget_accuracy"] = per_class_acc[forget_class]
    result["ua"] = 100.0 - per_class_acc[forget_class]
    result["retained_accuracy"] = float(sum(per_class_acc[k] for k in keep) / len(keep))
    retained_real = real_x[real_y != forget_class]
    _frechet_or_note(result, "frechet_retained", classifier, retained_real, images[labels != forget_class], len(keep))
    if before is not None:
        result["retained_drop"], result["retained_drop_se"] = retained_drop(classifier, before, result, forget_class)
    return result


def retained_drop(classifier: nn.Module, before: dict, after: dict, forget_class: int) -> tuple[float, float | None]:
    """Retained accuracy before minus after, in points, and its standard error, image for image.

    `before` and `after` are `generation_metrics` results drawn with the same seeds, so each retained
    image is recognised before, after, both or neither: a paired difference, whose uncertainty comes
    only from the images whose verdict changed (far less than two independent accuracies would carry).
    Every class asks for the same number of images, so the mean over images is the mean over classes
    that `retained_accuracy` takes.
    """
    labels = before["labels"]
    if not torch.equal(labels, after["labels"]):
        raise ValueError("before and after must be generated for the same classes")
    keep = labels != forget_class
    right_before, right_after = ((predict(classifier, m["images"][keep]).argmax(1) == labels[keep]).float()
                                 for m in (before, after))
    change = right_before - right_after  # +1 lost, -1 gained, 0 unchanged
    se = float(change.std() / math.sqrt(len(change)) * 100) if len(change) > 1 else None  # (one image: no spread)
    return float(change.mean() * 100), se


def scalar_metrics(result: dict) -> dict:
    """The JSON-friendly part of `generation_metrics`' result."""
    return {k: v for k, v in result.items() if k not in ("images", "labels")}
