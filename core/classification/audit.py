"""A per-example membership audit, stronger than MIA-Efficacy's one-feature attacker.

    report = audit_models({"original": original, "unlearned": model, "retrain": retrain}, dataset, split)
    report.summary()["unlearned"]["modified_entropy"]     # {"auc": 0.53, "tpr_at_1pct_fpr": 1.2}

The question for every model: can an attacker tell the forget images (which the original was trained
on) from test images of the same classes (which no model saw)? Each signal scores every image so that
a higher score means "looks trained on":

- loss              − cross-entropy of the true label
- entropy           − entropy of the predicted distribution
- modified_entropy  − Song & Mittal's modified entropy (2021): low when the model is confident AND
                      right, so it separates confident mistakes from confident hits
- lira (shadows)    a likelihood ratio in the spirit of LiRA / U-LiRA: `shadows` small models are
                    trained on complementary random halves of all images (train and test), so each
                    image is "in" for half of them; an image scores log N(φ; μ_in, σ_in) −
                    log N(φ; μ_out, σ_out) with φ = the model's logit-scaled confidence in the true
                    label and per-image means, pooled standard deviations (few shadows).

Each signal is summarised as the ROC AUC (0.5 = chance; below 0.5, the forget images look *less*
trained on than unseen images) and the true-positive rate at a 1% false-positive rate (the share of
forget images caught while wrongly flagging only 1% of test images; meaningful only with ≥ 100 test
images). The unlearned model is judged by closeness to Retrain, as MIA-Efficacy is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.data import ForgetSplit, ImageDataset
from core.errors import SalunError

SIGNALS = ("loss", "entropy", "modified_entropy")
SIGNAL_LABELS = {"loss": "Loss", "entropy": "Entropy", "modified_entropy": "Modified entropy", "lira": "Shadow LiRA"}
FPR = 0.01


@torch.no_grad()
def log_probabilities(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """log-softmax in float64 on the CPU: confidences of 0.99999 keep their distance from 1."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [torch.log_softmax(model(x[i:i + batch_size].to(device)).double(), dim=1).cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _log_one_minus(logp: torch.Tensor) -> torch.Tensor:
    """log(1 − p_i) for every class i, as the log-sum of the other classes' probabilities."""
    columns = []
    for i in range(logp.shape[1]):
        others = logp.clone()
        others[:, i] = -torch.inf
        columns.append(torch.logsumexp(others, dim=1))
    return torch.stack(columns, dim=1)


def signal_scores(logp: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """Every signal for every image; higher = more member-like."""
    labels = labels.view(-1, 1)
    p = logp.exp()
    log1m = _log_one_minus(logp)
    logp_y, log1m_y, p_y = logp.gather(1, labels)[:, 0], log1m.gather(1, labels)[:, 0], p.gather(1, labels)[:, 0]
    entropy = -(p * logp).sum(1)
    others = torch.ones_like(p, dtype=torch.bool).scatter_(1, labels, False)
    modified = -(1 - p_y) * logp_y - (p * log1m * others).sum(1)
    return {"loss": logp_y.numpy(), "entropy": (-entropy).numpy(), "modified_entropy": (-modified).numpy()}


def logit_confidence(logp: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """φ = log p_y − log(1 − p_y), LiRA's well-behaved (roughly Gaussian) version of the confidence."""
    labels = labels.view(-1, 1)
    return (logp.gather(1, labels)[:, 0] - _log_one_minus(logp).gather(1, labels)[:, 0]).numpy()


def roc_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """P(a member scores above a non-member), ties counted half (the Mann-Whitney statistic)."""
    from sklearn.metrics import roc_auc_score

    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return float("nan")
    labels = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    return float(roc_auc_score(labels, np.concatenate([member_scores, nonmember_scores])))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float = FPR) -> float:
    """Share of members (%) scoring above a threshold that at most `fpr` of the non-members exceed."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return float("nan")
    allowed = int(np.floor(fpr * len(nonmember_scores)))  # non-members allowed above the threshold
    ordered = np.sort(nonmember_scores)[::-1]
    threshold = ordered[allowed] if allowed < len(ordered) else -np.inf
    return float((member_scores > threshold).mean() * 100)


def roc_points(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of every threshold, for drawing the curve."""
    from sklearn.metrics import roc_curve

    scores = np.concatenate([member_scores, nonmember_scores])
    truth = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    fpr, tpr, _ = roc_curve(truth, scores)
    return fpr, tpr


def nonmember_index(split: ForgetSplit) -> np.ndarray:
    """Test rows of the same classes as the forget set: the forgotten class's test images for class-wise
    forgetting (other classes would make any model look like it 'remembers'), all test rows otherwise."""
    return split.forget_test_idx if split.classwise else split.test_idx


@dataclass
class ShadowModels:
    """Per-image LiRA statistics from shadow models trained on complementary random halves."""

    mean_in: np.ndarray  # per image of the pool (train then test rows)
    mean_out: np.ndarray
    std_in: float
    std_out: float
    count: int

    def score(self, phi: np.ndarray, pool_rows: np.ndarray) -> np.ndarray:
        def log_normal(x, mu, sigma):
            return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma)

        return (log_normal(phi, self.mean_in[pool_rows], self.std_in)
                - log_normal(phi, self.mean_out[pool_rows], self.std_out))


def train_shadows(dataset: ImageDataset, architecture: str, count: int, epochs: int, lr: float = 1e-3,
                  batch_size: int = 128, seed: int = 0, device=None,
                  progress: Callable[[int, int, float], None] | None = None) -> ShadowModels:
    """`count` (even) small models, pairs trained on the two halves of one random split of all images."""
    from core.classification.models import build_model
    from core.classification.training import fit
    from core.steps import make_generator, seeded_global_rng

    if count < 2 or count % 2:
        raise SalunError(f"--shadows must be an even number of at least 2 (pairs on complementary halves), got {count}")
    if epochs < 1:
        raise SalunError(f"shadow epochs must be at least 1, got {epochs}")
    device = device or torch.device("cpu")
    x = torch.cat([dataset.train_x, dataset.test_x])
    y = torch.cat([dataset.train_y, dataset.test_y])
    n = len(y)
    channels, height, _ = dataset.image_shape
    rng = np.random.default_rng(seed)
    steps_per_model = epochs * int(np.ceil((n - n // 2) / batch_size))
    phis, inside = [], []
    for k in range(count):
        if k % 2 == 0:
            order = rng.permutation(n)
        rows = np.sort(order[: n // 2] if k % 2 == 0 else order[n // 2:])
        with seeded_global_rng(seed * 1000 + k + 1):
            model = build_model(architecture, channels, dataset.num_classes, height).to(device)

        def report(done, total, loss, k=k):
            if progress:
                progress(k * steps_per_model + done, count * steps_per_model, loss)

        fit(model, x[rows], y[rows], epochs, lr, batch_size, make_generator(seed * 1000 + k + 1), device,
            report, what=f"shadow model {k + 1}")
        phis.append(logit_confidence(log_probabilities(model, x), y))
        member = np.zeros(n, dtype=bool)
        member[rows] = True
        inside.append(member)
    phis, inside = np.stack(phis), np.stack(inside)
    mean_in = np.where(inside, phis, 0).sum(0) / inside.sum(0)
    mean_out = np.where(~inside, phis, 0).sum(0) / (~inside).sum(0)
    floor = 1e-3  # one shadow per side gives zero residuals; keep the Gaussians proper
    std_in = max(float(np.sqrt(np.mean((phis - mean_in)[inside] ** 2))), floor)
    std_out = max(float(np.sqrt(np.mean((phis - mean_out)[~inside] ** 2))), floor)
    return ShadowModels(mean_in, mean_out, std_in, std_out, count)


@dataclass
class AuditReport:
    """AUC and TPR at 1% FPR of every signal for every model, and the per-image scores behind them."""

    results: dict[str, dict[str, dict[str, float]]]  # model -> signal -> {"auc", "tpr_at_1pct_fpr"}
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # model -> signal -> (forget, test)
    members: int
    nonmembers: int
    shadows: int = 0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"members": self.members, "nonmembers": self.nonmembers, "shadows": self.shadows,
                **{model: {signal: {k: round(v, 4) for k, v in values.items()} for signal, values in signals.items()}
                   for model, signals in self.results.items()}}


def audit_models(models: dict[str, nn.Module], dataset: ImageDataset, split: ForgetSplit,
                 shadows: ShadowModels | None = None) -> AuditReport:
    """Attack every model on forget images (members of the original) against same-class test images."""
    forget_idx = torch.as_tensor(split.forget_idx)
    test_rows = np.asarray(nonmember_index(split))
    if len(test_rows) == 0:
        raise SalunError("no test images of the forgotten classes to compare the forget set with")
    test_idx = torch.as_tensor(test_rows)
    xf, yf = dataset.train_x[forget_idx], dataset.train_y[forget_idx]
    xt, yt = dataset.test_x[test_idx], dataset.test_y[test_idx]
    results, scores = {}, {}
    for label, model in models.items():
        logp_f, logp_t = log_probabilities(model, xf), log_probabilities(model, xt)
        member, nonmember = signal_scores(logp_f, yf), signal_scores(logp_t, yt)
        if shadows is not None:
            n_train = len(dataset.train_y)
            member["lira"] = shadows.score(logit_confidence(logp_f, yf), np.asarray(split.forget_idx))
            nonmember["lira"] = shadows.score(logit_confidence(logp_t, yt), n_train + test_rows)
        scores[label] = {s: (member[s], nonmember[s]) for s in member}
        results[label] = {s: {"auc": roc_auc(member[s], nonmember[s]),
                              "tpr_at_1pct_fpr": tpr_at_fpr(member[s], nonmember[s])} for s in member}
    return AuditReport(results, scores, len(xf), len(xt), shadows.count if shadows else 0)
