"""What every subcommand shares: the progress bar, the common options and the exit status for user errors."""

from __future__ import annotations

import argparse
import sys

EXIT_USER_ERROR = 2


class ProgressBar:
    """A tqdm bar on stderr per named phase; `progress(done, total, loss)` is the core's callback."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bars = enabled, {}

    def phase(self, name: str):
        def progress(done: int, total: int, loss: float) -> None:
            if not self.enabled:
                return
            from tqdm import tqdm

            bar = self.bars.get(name)
            if bar is None:
                bar = self.bars[name] = tqdm(total=total, desc=name, file=sys.stderr, leave=True,
                                             dynamic_ncols=True, mininterval=0.5)
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if done >= total:
                bar.close()
        return progress

    def close(self):
        for bar in self.bars.values():
            bar.close()


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist5k", help="mnist5k (default, offline), digits, mnist, fashion_mnist, cifar10, svhn")
    p.add_argument("--data-root", default=None, help="folder holding torchvision datasets")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset (needs internet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
