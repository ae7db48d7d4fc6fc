"""The one way a small serialisable config (RunConfig, GenerationRunConfig, UNetConfig) is read back
from a dict: unknown keys are refused with a line naming them and the allowed ones, so a typo in a
saved config.json is an error instead of a silently ignored setting."""

from __future__ import annotations

from dataclasses import fields

from core.errors import SalunError


def config_from_dict(cls, values: dict, error: type[Exception] = SalunError, what: str = "config"):
    """`cls(**values)` for a dataclass `cls`, refusing keys it does not have."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise error(f"unknown {what} keys {unknown}; allowed: {', '.join(sorted(known))}")
    return cls(**values)
