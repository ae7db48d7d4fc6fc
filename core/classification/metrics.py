"""Classification unlearning metrics, exactly as defined in the paper (all in percent, 0-100).

- UA  (unlearning accuracy) = 100 - accuracy on the forget set Df.
- RA  (retain accuracy)     = accuracy on the retain set Dr.
- TA  (test accuracy)       = accuracy on the test set; for class-wise forgetting the forgotten class
                              is left out, and its own test accuracy is reported as `forget_test_accuracy`.
- MIA-Efficacy              = share of Df that a membership attacker calls "non-member". The attacker is
                              an SVC (RBF, C=3, gamma='auto') trained on one feature, the softmax
                              probability of the true label, with members = a sample of Dr as large as
                              the test set and non-members = the test set. Judged by closeness to Retrain.
                              Which retained images are the members can swing the number by tens of points
                              on a model that is ~99.5% confident everywhere, so the attacker is fitted
                              over `MIA_SAMPLES` member samples and the mean is reported with its spread
                              (`mia_efficacy_std`, the standard deviation over the samples; `mia_samples` = K).
- RTE                       = wall time of the unlearning run, in seconds.
- Avg. Gap                  = mean |metric - Retrain's metric| over UA, RA, TA and MIA-Efficacy;
                              `avg_gap_std` carries the MIA's sampling spread into it.
- js_to_retrain             = Jensen-Shannon divergence (base 2, 0-1) between the predicted-label
                              distributions of the unlearned model and Retrain on the forget set: where
                              the forgotten images go, compared with where a model that never saw them
                              sends them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from core.data import ForgetSplit, ImageDataset
from core.classification.training import per_class_accuracy, predict  # noqa: F401  (per_class_accuracy: re-exported)

if TYPE_CHECKING:  # scikit-learn takes ~2 s to import: only evaluations with an attacker load it
    from sklearn.svm import SVC

METRIC_DEFINITIONS = {
    "ua": "Unlearning accuracy: 100 − accuracy on the forget set. Higher means more forgotten.",
    "ra": "Retain accuracy: accuracy on the training data that was kept.",
    "ta": "Test accuracy: accuracy on held-out test images (without the forgotten class, for class-wise forgetting).",
    "mia_efficacy": "Share of forget-set images that a membership-inference attacker (SVC on the model's confidence) "
                    "calls 'not in the training set'; mean ± std over several samples of retained images as the "
                    "attacker's members. Judged by closeness to Retrain, not by size.",
    "forget_test_accuracy": "Accuracy on test images of the forgotten class (class-wise forgetting only).",
    "rte_seconds": "Run-time efficiency: wall time of the unlearning run, in seconds.",
    "avg_gap": "Mean absolute difference from Retrain over UA, RA, TA and MIA-Efficacy. Lower is better.",
    "mia_efficacy_std": "Spread of MIA-Efficacy: its standard deviation over the attacker's member samples. "
                        "Differences smaller than this are noise.",
    "mia_samples": "How many samples of retained images the attacker was fitted on (one SVC each).",
    "avg_gap_std": "Spread Avg. Gap inherits from the two models' MIA-Efficacy spreads.",
    "js_to_retrain": "Jensen–Shannon divergence (0–1) between the labels this model and Retrain predict for the "
                     "forget images: 0 = the forgotten images go where a model that never saw them sends them.",
}
METRIC_LABELS = {"ua": "UA", "ra": "RA", "ta": "TA", "mia_efficacy": "MIA-Efficacy",
                 "forget_test_accuracy": "Forgotten class test acc.", "rte_seconds": "RTE (s)", "avg_gap": "Avg. Gap",
                 "js_to_retrain": "JS to Retrain", "mia_efficacy_std": "MIA-Efficacy ± (std)",
                 "mia_samples": "MIA member samples", "avg_gap_std": "Avg. Gap ± (std)"}
GAP_METRICS = ("ua", "ra", "ta", "mia_efficacy")
MIA_SAMPLES = 10  # member samples the attacker is fitted on; one SVC on one feature each


def true_label_confidence(probabilities: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return probabilities.gather(1, labels.view(-1, 1)).squeeze(1).numpy()


def membership_attack(member_conf: np.ndarray, nonmember_conf: np.ndarray) -> SVC:
    features = np.concatenate([member_conf, nonmember_conf]).reshape(-1, 1)
    labels = np.concatenate([np.ones(len(member_conf)), np.zeros(len(nonmember_conf))])
    from sklearn.svm import SVC

    return SVC(C=3, gamma="auto", kernel="rbf").fit(features, labels)


def mia_efficacy_samples(conf_forget: np.ndarray, conf_retain: np.ndarray, conf_test: np.ndarray,
                         seed: int = 0, samples: int = MIA_SAMPLES) -> tuple[np.ndarray, list[SVC]]:
    """MIA-Efficacy (%) once per member sample, and the attacker of each.

    Every sample draws as many retained images as there are test images, from one seeded stream, so
    sample 0 is the single sample this project used before and the same seed gives the same numbers.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    rng = np.random.default_rng(seed)
    size = min(len(conf_test), len(conf_retain))
    values, attackers = [], []
    for _ in range(samples):
        members = rng.choice(len(conf_retain), size=size, replace=False)
        attacker = membership_attack(conf_retain[members], conf_test)
        values.append(float((attacker.predict(conf_forget.reshape(-1, 1)) == 0).mean() * 100))
        attackers.append(attacker)
    return np.array(values), attackers


def _accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((probabilities.argmax(1) == labels).float().mean() * 100)


def evaluate(model, dataset: ImageDataset, split: ForgetSplit, seed: int = 0, details: bool = False,
             mia_samples: int = MIA_SAMPLES) -> dict:
    """UA, RA, TA, MIA-Efficacy (mean over `mia_samples` member samples, with its std) and the forgotten
    class's test accuracy of `model`.

    With `details`, also returns the per-sample confidences, the first sample's attacker (whose decisions
    the app's membership-inference view draws) and the MIA-Efficacy of every member sample.
    """
    x, y = dataset.train_x, dataset.train_y
    forget_idx = torch.as_tensor(split.forget_idx)
    retain_idx = torch.as_tensor(split.retain_idx)
    test_idx = torch.as_tensor(split.test_idx)

    p_forget = predict(model, x[forget_idx])
    p_retain = predict(model, x[retain_idx])
    p_test = predict(model, dataset.test_x[test_idx])
    y_forget, y_retain, y_test = y[forget_idx], y[retain_idx], dataset.test_y[test_idx]

    conf_forget = true_label_confidence(p_forget, y_forget)
    conf_retain = true_label_confidence(p_retain, y_retain)
    conf_test = true_label_confidence(p_test, y_test)
    mia, attackers = mia_efficacy_samples(conf_forget, conf_retain, conf_test, seed, mia_samples)

    result = {
        "ua": 100.0 - _accuracy(p_forget, y_forget),
        "ra": _accuracy(p_retain, y_retain),
        "ta": _accuracy(p_test, y_test),
        "mia_efficacy": float(mia.mean()),
        "mia_efficacy_std": float(mia.std(ddof=1)) if len(mia) > 1 else 0.0,
        "mia_samples": int(len(mia)),
    }
    if split.classwise:
        fidx = torch.as_tensor(split.forget_test_idx)
        result["forget_test_accuracy"] = _accuracy(predict(model, dataset.test_x[fidx]), dataset.test_y[fidx])
    if details:
        result["details"] = {
            "confidence": {"forget": conf_forget, "retain": conf_retain, "test": conf_test},
            "attacker": attackers[0],
            "mia_per_sample": mia,
            "test_predictions": p_test.argmax(1).numpy(),
            "test_labels": y_test.numpy(),
        }
    return result


def confusion_matrix(model, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

    predicted = predict(model, x).argmax(1)
    return sklearn_confusion_matrix(y.numpy(), predicted.numpy(), labels=list(range(num_classes)))


def avg_gap(metrics: dict, retrain_metrics: dict) -> float:
    return float(np.mean([abs(metrics[k] - retrain_metrics[k]) for k in GAP_METRICS]))


def avg_gap_std(metrics: dict, retrain_metrics: dict) -> float:
    """The spread Avg. Gap inherits from MIA-Efficacy, its only sampled term: the two models' MIA stds
    combined as independent errors, divided by the four metrics averaged (0 for metrics without a spread)."""
    a, b = metrics.get("mia_efficacy_std", 0.0), retrain_metrics.get("mia_efficacy_std", 0.0)
    return float(np.hypot(a, b) / len(GAP_METRICS))


def forget_label_distribution(model, dataset: ImageDataset, split: ForgetSplit) -> np.ndarray:
    """Share of the forget set's images predicted as each class (sums to 1)."""
    x = dataset.train_x[torch.as_tensor(split.forget_idx)]
    predicted = predict(model, x).argmax(1).numpy()
    return np.bincount(predicted, minlength=dataset.num_classes) / max(len(predicted), 1)


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence in bits (0 for identical distributions, 1 for disjoint ones)."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("js_divergence needs two non-empty distributions over the same classes")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a, b):
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / b[nonzero])))

    return max(0.0, (kl(p, m) + kl(q, m)) / 2)
