"""Weight saliency: the gradient of the forgetting loss, the global top-fraction mask, and its constraint.

The mask keeps the `sparsity` share of ALL parameters with the largest |gradient|, ranked globally, so
each layer ends up with its own salient fraction. The threshold is bracketed from a small sample and
confirmed by exact counts, never by sorting or concatenating all parameters: a few linear passes, and
memory on the order of the largest tensor.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from core.errors import SalunError, check_fraction

Mask = dict[str, torch.Tensor]  # parameter name -> bool tensor of the parameter's shape

DEFAULT_SPARSITY = 0.5
_SAMPLE = 200_000  # elements sampled to bracket the threshold


def accumulate_gradients(model: nn.Module, losses: Iterable[torch.Tensor],
                         progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Sum the gradients of every loss in `losses` (each computed with `model`) and return |sum|.

    Gradients are summed over batches before the absolute value, as in the paper's g = ∇θ ℓf(θo; Df).
    The model's own .grad fields are left as they were found (None).
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    seen = 0
    for loss in losses:
        if not torch.isfinite(loss):
            raise SalunError("the forgetting loss is not finite on the forget set; check the checkpoint")
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                total[name] += g
        seen += 1
        if progress:
            progress(seen)
    if seen == 0:
        raise SalunError("the forget set is empty: no gradient to rank weights by")
    return {name: g.abs_() for name, g in total.items()}


def classifier_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                         device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """|∇θ CE(model(x), y)| summed over the whole forget set, at the model's current weights."""
    was_training = model.training
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")

    def losses():
        for start in range(0, len(y), batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = y[start:start + batch_size].to(device)
            yield loss_fn(model(xb), yb)

    try:
        return accumulate_gradients(model, losses())
    finally:
        model.train(was_training)


def _kth_largest_threshold(values: list[torch.Tensor], k: int) -> torch.Tensor:
    """The k-th largest value among all elements of `values` (flat tensors), without sorting them.

    A strided sample brackets the threshold between two sample quantiles; exact counts (one comparison
    pass per bound) confirm the bracket holds the k-th largest value, widening it if the sample was
    unlucky; only the few values inside the bracket are gathered and selected exactly. Extra memory is
    one boolean per element of the largest tensor plus the bracket, never a copy of all parameters.
    """
    n = sum(v.numel() for v in values)
    stride = max(1, n // _SAMPLE)
    sample = torch.sort(torch.cat([v[::stride] for v in values]).float().cpu()).values
    below = 1 - k / n  # share of elements under the threshold
    margin = 4 / len(sample) ** 0.5 + 1e-3
    while True:
        lo_i = int((below - margin) * (len(sample) - 1))
        hi_i = int((below + margin) * (len(sample) - 1)) + 1
        lo = sample[lo_i].item() if lo_i > 0 else None  # None: no lower bound
        hi = sample[hi_i].item() if hi_i < len(sample) - 1 else None  # None: no upper bound
        above = 0 if hi is None else sum(int((v > hi).sum()) for v in values)
        if above >= k:  # the bracket sits too low
            margin *= 4
            continue

        def inside(v):
            keep = torch.ones_like(v, dtype=torch.bool) if hi is None else v <= hi
            return keep if lo is None else keep & (v > lo)

        window = sum(int(inside(v).sum()) for v in values)
        if above + window < k:  # the bracket sits too high
            margin *= 4
            continue
        pool = torch.cat([v[inside(v)] for v in values])
        need = k - above  # the need-th largest in the pool
        return torch.kthvalue(pool.cpu(), pool.numel() - need + 1).values.to(values[0].device)


def saliency_mask(gradients: dict[str, torch.Tensor], sparsity: float = DEFAULT_SPARSITY) -> Mask:
    """Select the `sparsity` share of all weights with the largest gradient magnitude, globally.

    Exactly floor(sparsity × total) weights are selected; ties at the threshold go to the earliest
    weights in parameter order, so the result is deterministic.
    """
    sparsity = check_fraction("sparsity", sparsity)
    if not gradients:
        raise SalunError("no gradients given: the model has no trainable parameters")
    flat = {name: g.detach().reshape(-1) for name, g in gradients.items()}
    total = sum(v.numel() for v in flat.values())
    k = max(1, int(total * sparsity))
    if k >= total:
        return {name: torch.ones_like(g, dtype=torch.bool) for name, g in gradients.items()}
    threshold = _kth_largest_threshold(list(flat.values()), k)
    mask = {name: v > threshold for name, v in flat.items()}
    ties_needed = k - sum(int(m.sum()) for m in mask.values())
    for name, v in flat.items():
        if ties_needed <= 0:
            break
        tied = torch.nonzero(v == threshold).flatten()[:ties_needed]
        mask[name][tied] = True
        ties_needed -= tied.numel()
    return {name: mask[name].reshape(gradients[name].shape) for name in gradients}


def argsort_mask(gradients: dict[str, torch.Tensor], sparsity: float = DEFAULT_SPARSITY) -> Mask:
    """The upstream ranking: concatenate everything and argsort twice. Kept only as the benchmark baseline."""
    all_values = -torch.cat([g.reshape(-1) for g in gradients.values()])
    k = int(all_values.numel() * sparsity)
    ranks = torch.argsort(torch.argsort(all_values, stable=True))
    mask, start = {}, 0
    for name, g in gradients.items():
        mask[name] = (ranks[start:start + g.numel()] < k).reshape(g.shape)
        start += g.numel()
    return mask


def mask_fraction(mask: Mask) -> float:
    return sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())


def layer_statistics(gradients: dict[str, torch.Tensor], mask: Mask) -> list[dict]:
    """Per parameter tensor: size, salient fraction and gradient-magnitude quantiles."""
    rows = []
    for name, g in gradients.items():
        flat = g.detach().reshape(-1).float().cpu()
        if flat.numel() > 1_000_000:  # torch.quantile's size limit; a fixed-stride sample is plenty
            flat = flat[:: flat.numel() // 1_000_000 + 1]
        q = torch.quantile(flat, torch.tensor([0.5, 0.9, 0.99]))
        m = mask[name]
        rows.append({
            "layer": name,
            "numel": g.numel(),
            "salient": int(m.sum()),
            "salient_fraction": float(m.float().mean()),
            "grad_median": float(q[0]), "grad_q90": float(q[1]), "grad_q99": float(q[2]),
            "grad_max": float(flat.max()), "grad_mean": float(g.float().mean()),
        })
    return rows


def mask_iou(a: Mask, b: Mask) -> tuple[float, dict[str, float]]:
    """Intersection over union of two masks: over all weights, and per layer."""
    if a.keys() != b.keys():
        raise SalunError("the two masks belong to different models (their parameter names differ)")
    per_layer, inter_total, union_total = {}, 0, 0
    for name in a:
        if a[name].shape != b[name].shape:
            raise SalunError(f"mask shapes differ for {name}: {tuple(a[name].shape)} vs {tuple(b[name].shape)}")
        inter = int((a[name] & b[name]).sum())
        union = int((a[name] | b[name]).sum())
        per_layer[name] = inter / union if union else 1.0
        inter_total += inter
        union_total += union
    return (inter_total / union_total if union_total else 1.0), per_layer


class MaskConstraint:
    """Keeps every weight outside the mask bit-identical to its value when the constraint was made.

    Masking gradients is not enough: weight decay and momentum move weights whose gradient is zero.
    So after every optimizer step the non-salient weights are written back from a stored copy; their
    gradients are also zeroed before the step so optimizer statistics stay clean.
    """

    def __init__(self, model: nn.Module, mask: Mask):
        params = dict(model.named_parameters())
        missing = [n for n in params if n not in mask]
        extra = [n for n in mask if n not in params]
        if missing or extra:
            raise SalunError(f"mask does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
        self.pairs = []
        for name, p in params.items():
            m = mask[name].to(device=p.device, dtype=torch.bool)
            if m.shape != p.shape:
                raise SalunError(f"mask for {name} has shape {tuple(m.shape)}, the weight has {tuple(p.shape)}")
            self.pairs.append((p, m, p.detach().clone()))

    def mask_gradients(self) -> None:
        for p, m, _ in self.pairs:
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def restore(self) -> None:
        for p, m, original in self.pairs:
            p.copy_(torch.where(m, p, original))
