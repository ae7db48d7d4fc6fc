"""Classification unlearning metrics, exactly as defined in the paper (all in percent, 0-100).

- UA  (unlearning accuracy) = 100 - accuracy on the forget set Df.
- RA  (retain accuracy)     = accuracy on the retain set Dr.
- TA  (test accuracy)       = accuracy on the test set; for class-wise forgetting the forgotten class
                              is left out, and its own test accuracy is reported as `forget_test_accuracy`.
- MIA-Efficacy              = share of Df that a membership attacker calls "non-member". The attacker is
                              an SVC (RBF, C=3, gamma='auto') trained on one feature, the softmax
                              probability of the true label, with members = a sample of Dr as large as
                              the test set and non-members = the test set. Judged by closeness to Retrain.
- RTE                       = wall time of the unlearning run, in seconds.
- Avg. Gap                  = mean |metric - Retrain's metric| over UA, RA, TA and MIA-Efficacy.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.svm import SVC

from core.data import ForgetSplit, ImageDataset
from core.classification.training import predict

METRIC_DEFINITIONS = {
    "ua": "Unlearning accuracy: 100 − accuracy on the forget set. Higher means more forgotten.",
    "ra": "Retain accuracy: accuracy on the training data that was kept.",
    "ta": "Test accuracy: accuracy on held-out test images (without the forgotten class, for class-wise forgetting).",
    "mia_efficacy": "Share of forget-set images that a membership-inference attacker (SVC on the model's confidence) "
                    "calls 'not in the training set'. Judged by closeness to Retrain, not by size.",
    "forget_test_accuracy": "Accuracy on test images of the forgotten class (class-wise forgetting only).",
    "rte_seconds": "Run-time efficiency: wall time of the unlearning run, in seconds.",
    "avg_gap": "Mean absolute difference from Retrain over UA, RA, TA and MIA-Efficacy. Lower is better.",
}
METRIC_LABELS = {"ua": "UA", "ra": "RA", "ta": "TA", "mia_efficacy": "MIA-Efficacy",
                 "forget_test_accuracy": "Forgotten class test acc.", "rte_seconds": "RTE (s)", "avg_gap": "Avg. Gap"}
GAP_METRICS = ("ua", "ra", "ta", "mia_efficacy")


def true_label_confidence(probabilities: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return probabilities.gather(1, labels.view(-1, 1)).squeeze(1).numpy()


def membership_attack(member_conf: np.ndarray, nonmember_conf: np.ndarray) -> SVC:
    features = np.concatenate([member_conf, nonmember_conf]).reshape(-1, 1)
    labels = np.concatenate([np.ones(len(member_conf)), np.zeros(len(nonmember_conf))])
    return SVC(C=3, gamma="auto", kernel="rbf").fit(features, labels)


def _accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((probabilities.argmax(1) == labels).float().mean() * 100)


def evaluate(model, dataset: ImageDataset, split: ForgetSplit, seed: int = 0, details: bool = False) -> dict:
    """UA, RA, TA, MIA-Efficacy (and the forgotten class's test accuracy) of `model`.

    With `details`, also returns the per-sample confidences and the attacker's decisions that the app's
    membership-inference view draws.
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
    rng = np.random.default_rng(seed)
    members = rng.choice(len(conf_retain), size=min(len(conf_test), len(conf_retain)), replace=False)
    attacker = membership_attack(conf_retain[members], conf_test)
    forget_called_member = attacker.predict(conf_forget.reshape(-1, 1))

    result = {
        "ua": 100.0 - _accuracy(p_forget, y_forget),
        "ra": _accuracy(p_retain, y_retain),
        "ta": _accuracy(p_test, y_test),
        "mia_efficacy": float((forget_called_member == 0).mean() * 100),
    }
    if split.classwise:
        fidx = torch.as_tensor(split.forget_test_idx)
        result["forget_test_accuracy"] = _accuracy(predict(model, dataset.test_x[fidx]), dataset.test_y[fidx])
    if details:
        result["details"] = {
            "confidence": {"forget": conf_forget, "retain": conf_retain, "test": conf_test},
            "attacker": attacker,
            "test_predictions": p_test.argmax(1).numpy(),
            "test_labels": y_test.numpy(),
        }
    return result


def per_class_accuracy(model, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    predicted = predict(model, x).argmax(1)
    return [float((predicted[y == c] == c).float().mean() * 100) if (y == c).any() else float("nan")
            for c in range(num_classes)]


def confusion_matrix(model, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    predicted = predict(model, x).argmax(1)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y.numpy(), predicted.numpy()), 1)
    return matrix


def avg_gap(metrics: dict, retrain_metrics: dict) -> float:
    return float(np.mean([abs(metrics[k] - retrain_metrics[k]) for k in GAP_METRICS]))
