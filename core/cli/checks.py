"""Every option of every subcommand checked before any work starts, and the JSON line kept valid.

Argparse already refuses text where a number belongs; this adds what it cannot know: numbers must be
finite and in range (a seed is 0..2^32-1, a sparsity in (0, 1], a step count a whole number with a
sane ceiling), paths must be plausible and a save target writable, and the operator's limits
(core.limits: the ones set in the environment or the limits file, all of them in hosted mode) apply.
Method settings are also checked against the method's own declaration by core.methods; the bounds
here are the CLI's outer fence, so `--epochs 99999999` is refused before a dataset is even loaded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from core.errors import SalunError, check_finite_metrics, check_fraction, check_number, check_seed

EXIT_USER_ERROR = 2
MAX_PATH_CHARS = 4096
_BIG = 10**6

# option (dest) -> (low, high, whole number?, low excluded?); None: no bound on that side
NUMBERS: dict[str, tuple] = {
    "epochs": (0, 10_000, True, True),
    "shadow_epochs": (0, 10_000, True, True),
    "steps": (0, _BIG, True, False),           # unlearn-gen / train-gen: optimizer steps; concept: 0 = by epochs
    "batch_size": (0, 65_536, True, True),
    "micro_batch": (0, 65_536, True, False),
    "lr": (0, 1e6, False, True),                # a fence only: a runaway rate is caught as divergence
    "alpha": (0, 1e6, False, False),
    "guidance": (0, 100.0, False, False),
    "mask_guidance": (0, 100.0, False, False),
    "sample_steps": (0, 1000, True, True),
    "per_class": (0, 1000, True, True),
    "images_per_prompt": (0, 10_000, True, True),
    "eval_images": (0, 10_000, True, False),
    "resolution": (0, 4096, True, False),
    "threads": (0, 1024, True, False),
    "threads_per_run": (0, 1024, True, True),
    "workers": (0, 1024, True, True),
    "gpus_per_run": (0, 64, False, False),
    "shadows": (0, 1000, True, False),
    "limit": (0, _BIG, True, True),
    "checkpoint_every": (0, 10**7, False, True),
    "stop_after": (0, 10**7, False, True),
    "log_every": (0, _BIG, True, False),
}
SEEDS = ("seed", "sample_seeds")
FRACTIONS = ("sparsity",)
PATHS = ("checkpoint", "generator", "data_root", "workdir", "save", "forget_images", "retain_images",
         "classifier_weights", "model", "directory", "run")
# commands whose --forget is a classifier forget target (class:K, random:SHARE, indices:PATH)
FORGET_TARGET_COMMANDS = ("unlearn", "mask", "unlearn-gen")
# commands whose --save is a folder, and those whose --save is a weights file
SAVE_FOLDER = ("unlearn", "unlearn-gen", "unlearn-concept")
SAVE_FILE = ("train", "train-gen")
CLASSES_PER_GENERATOR = 10  # every shipped dataset has ten classes; images per request = per_class x 10


class OneLineParser(argparse.ArgumentParser):
    """Argparse, but a bad command line is one line on stderr (and exit status 2), not a usage block."""

    def error(self, message: str):
        sys.stderr.write(f"error: {' '.join(message.split())} (see {self.prog} --help)\n")
        sys.exit(EXIT_USER_ERROR)


def _values(value):
    return value if isinstance(value, (list, tuple)) else [value]


def check_options(args: argparse.Namespace, limits=None) -> None:
    """Refuse, naming the option, any value that is not finite, out of range, or over an operator limit."""
    command = getattr(args, "command", None)
    options = vars(args)
    for dest, (low, high, whole, low_open) in NUMBERS.items():
        for value in _values(options.get(dest)):
            if value is None or isinstance(value, (str, bool)):
                continue
            check_number(f"--{dest.replace('_', '-')}", value, low, high, integer=whole, low_open=low_open)
    for dest in SEEDS:
        for value in _values(options.get(dest)):
            if value is not None and not isinstance(value, str):
                check_seed(value, f"--{dest.replace('_', '-')}")
    for dest in FRACTIONS:
        value = options.get(dest)
        if value is not None and not isinstance(value, str):
            check_fraction(f"--{dest}", value)
    for dest in PATHS:
        for value in _values(options.get(dest)):
            if isinstance(value, str) and ("\x00" in value or len(value) > MAX_PATH_CHARS):
                raise SalunError(f"--{dest.replace('_', '-')} is not a usable path "
                                 f"({'contains a NUL character' if chr(0) in value else 'too long'})")
    if command in FORGET_TARGET_COMMANDS and isinstance(options.get("forget"), str):
        from core.data import parse_forget

        target = parse_forget(options["forget"])
        if command == "unlearn-gen" and target.kind != "class":
            raise SalunError(f"generation forgets a whole class: use class:K, not {options['forget']!r}")
    if limits is not None:
        _check_limits(command, options, limits)
    save = options.get("save")
    if isinstance(save, str) and save and command in SAVE_FOLDER + SAVE_FILE:
        from pathlib import Path

        from core.checkpoint import check_writable

        if command in SAVE_FOLDER:
            check_writable(Path(save), "the run")
        else:
            check_writable(Path(save).parent, "the model")


def _check_limits(command: str | None, options: dict, limits) -> None:
    """The operator's limits (core.limits), each where it applies to this command."""
    def over(name: str, value) -> None:
        if value is not None and not isinstance(value, str):
            limits.check_if_set(name, value)

    if command in ("train", "unlearn", "sweep"):
        over("epochs", options.get("epochs"))
    if command in ("unlearn-gen", "train-gen", "unlearn-concept"):
        over("steps", options.get("steps"))
    per_class = options.get("per_class")
    if isinstance(per_class, int):
        over("generated_images", per_class * CLASSES_PER_GENERATOR)
    images = options.get("images_per_prompt")
    if isinstance(images, int):
        over("generated_images", images)


def operator_limits():
    """The limits an operator set (environment or limits file); None when nothing is set."""
    import os

    if not any(key == "SALUN_LIMITS_FILE" or key == "SALUN_HOSTED" or key.startswith("SALUN_MAX_")
               for key in os.environ):
        return None
    from core.limits import load_limits

    return load_limits()


def json_line(summary) -> str:
    """The one JSON line: strict JSON (no NaN or Infinity), numpy/torch scalars as numbers."""
    check_finite_metrics(summary)
    return json.dumps(summary, default=_plain, allow_nan=False)


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None
