"""Limits for a hosted showcase, from the environment or a TOML file; defaults suit a 2-core machine.

Each limit can be set as an environment variable `SALUN_<NAME>` (e.g. `SALUN_MAX_EPOCHS=20`) or in a
TOML file named by `SALUN_LIMITS_FILE` (keys are the field names below). The environment wins.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.errors import SalunError


@dataclass(frozen=True)
class Limits:
    max_epochs: int = 30               # epochs of any classifier run (Retrain included)
    max_steps: int = 2000              # optimizer steps of a diffusion / concept run
    max_forget_size: int = 4000        # images in a forget set
    max_sweep_runs: int = 24           # sparsities x seeds in one sweep
    max_generated_images: int = 200    # images generated in one request
    max_upload_bytes: int = 20 * 1024 * 1024
    max_concurrent_jobs: int = 1       # training runs at once; the rest queue
    max_queue: int = 16                # waiting runs before new ones are refused

    def check(self, name: str, value: float) -> None:
        """Refuse `value` when it exceeds the limit `max_<name>`, naming how to raise it."""
        limit = getattr(self, f"max_{name}")
        if value > limit:
            raise SalunError(f"{name.replace('_', ' ')} {value} exceeds this server's limit of {limit} "
                             f"(set SALUN_MAX_{name.upper()} to change it)")

    def as_dict(self) -> dict:
        return asdict(self)


def load_limits(environ: dict | None = None) -> Limits:
    environ = os.environ if environ is None else environ
    values: dict[str, int] = {}
    path = environ.get("SALUN_LIMITS_FILE")
    if path:
        try:
            values.update(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SalunError(f"limits file {path!r} is unreadable: {exc}") from None
    for f in fields(Limits):
        key = f"SALUN_{f.name.upper()}"
        if key in environ:
            values[f.name] = environ[key]
    known = {f.name for f in fields(Limits)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SalunError(f"unknown limits {unknown}; known: {', '.join(sorted(known))}")
    parsed = {}
    for name, value in values.items():
        try:
            parsed[name] = int(value)
        except (TypeError, ValueError):
            raise SalunError(f"limit {name} must be a whole number, got {value!r}") from None
        if parsed[name] < 1:
            raise SalunError(f"limit {name} must be at least 1, got {parsed[name]}")
    return Limits(**parsed)
