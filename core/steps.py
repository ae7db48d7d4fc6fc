"""What every training loop here shares: the masked optimizer step, progress reporting, finite-loss
checks and private random streams. Classifier, diffusion and concept unlearning all step through
`MaskedSteps`, so the mask constraint is enforced in exactly one place.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Callable

import torch

from core.errors import DivergedError
from core.saliency import MaskConstraint

Progress = Callable[[int, int, float], None]

GLOBAL_RNG_LOCK = threading.Lock()


def make_generator(seed: int) -> torch.Generator:
    """A private random stream for one run; runs in other threads cannot disturb it."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def seeded_global_rng(seed: int):
    """Layer initialisers draw from torch's global generator, which concurrent runs share: seed it and
    draw under one lock, so the same seed gives the same weights whatever else is running."""
    with GLOBAL_RNG_LOCK:
        torch.manual_seed(seed)
        yield


def load_optimizer_machinery() -> None:
    """Make one throwaway optimizer, so torch does its one-off import of torch._dynamo (which every
    optimizer's constructor triggers the first time in a process: 1-2 s on a quiet 2-core machine,
    several more under load) here, before any run's clock starts. It is a cost of the process, not of
    the method that happens to run first: in one CLI invocation SalUn ran first and paid all of it,
    Retrain none. Draws no random numbers, so no run's numbers change."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def check_finite(loss: torch.Tensor, what: str) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise DivergedError(f"{what}: the loss became {value}; lower the learning rate or the number of epochs")
    return value


class MaskedSteps:
    """One optimizer step at a time: zero grads, backward, mask, clip, step, restore, report.

    With `decay_lr` the learning rate decays linearly to zero over the run, so the last steps settle
    the retained classes instead of leaving the model wherever the forgetting loss last pushed it.
    """

    def __init__(self, model, optimizer, constraint: MaskConstraint | None, total: int,
                 progress: Progress | None, what: str, clip: float = 0.0, decay_lr: bool = True):
        self.model, self.optimizer, self.constraint = model, optimizer, constraint
        self.total, self.progress, self.what, self.losses, self.clip = total, progress, what, [], clip
        self.schedule = (torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
                         if decay_lr else None)

    def __call__(self, loss: torch.Tensor) -> None:
        value = check_finite(loss, self.what)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.constraint:
            self.constraint.mask_gradients()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        if self.schedule:
            self.schedule.step()
        if self.constraint:
            self.constraint.restore()
        self.losses.append(value)
        if self.progress:
            self.progress(len(self.losses), self.total, value)
