"""Errors a user can cause, each with a one-line message naming the bad value and what is allowed.

The CLI prints these as a single line and exits non-zero; the app shows them in place. Anything that
is not a `SalunError` is a bug and keeps its traceback.
"""


class SalunError(ValueError):
    """Bad input from the user: unknown name, value out of range, unusable file."""


class CheckpointError(SalunError):
    """A checkpoint is missing, corrupt, or does not fit the architecture it claims."""


class DivergedError(SalunError):
    """A loss became NaN or infinite during a run (for example gradient ascent running away)."""


class CancelledError(Exception):
    """The user cancelled a run; partial results are discarded and nothing is saved."""


def check_fraction(name: str, value: float) -> float:
    """A share or sparsity must lie in (0, 1]."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SalunError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not (0.0 < value <= 1.0):
        raise SalunError(f"{name} must be in (0, 1], got {value}")
    return value


def check_positive(name: str, value, integer: bool = False):
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise SalunError(f"{name} must be a positive number, got {value!r}") from None
    if integer and float(value) != number:
        raise SalunError(f"{name} must be a whole number, got {value!r}")
    if not number > 0:
        raise SalunError(f"{name} must be > 0, got {value}")
    return number
