"""Errors a user can cause, each with a one-line message naming the bad value and what is allowed.

The CLI prints these as a single line and exits non-zero; the app shows them in place. Anything that
is not a `SalunError` is a bug and keeps its traceback.
"""

import math
import re


class SalunError(ValueError):
    """Bad input from the user: unknown name, value out of range, unusable file."""


class CheckpointError(SalunError):
    """A checkpoint is missing, corrupt, or does not fit the architecture it claims."""


class DivergedError(SalunError):
    """A loss became NaN or infinite during a run (for example gradient ascent running away)."""


class CancelledError(Exception):
    """The user cancelled a run; partial results are discarded and nothing is saved."""


def _number(name: str, value, integer: bool, what: str):
    """`value` as an int or a finite float, or a SalunError naming `name`; bools and text are refused."""
    original = value
    if isinstance(value, bool) or value is None:
        raise SalunError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer and text.lstrip("+-").isascii() and text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise SalunError(f"{name} must be {what}, got {value!r}") from None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SalunError(f"{name} must be {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise SalunError(f"{name} must be a finite number, got {original!r}")
    if integer:
        if number != int(number) or (isinstance(value, float) and abs(number) >= 2**53):
            raise SalunError(f"{name} must be a whole number, got {original!r}")
        return int(value) if isinstance(value, int) else int(number)
    return number


def check_number(name: str, value, low: float | None = None, high: float | None = None, integer: bool = False,
                 low_open: bool = False):
    """A finite number (an int if `integer`) in [low, high] (`low_open`: low itself excluded), else one clear line."""
    what = "a whole number" if integer else "a number"
    number = _number(name, value, integer, what)
    if low is not None and (number < low or (low_open and number == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise SalunError(f"{name} must be {bound}, got {value!r}")
    if high is not None and number > high:
        raise SalunError(f"{name} must be <= {high}, got {value!r}")
    return number


def check_fraction(name: str, value: float) -> float:
    """A share or sparsity must lie in (0, 1]."""
    number = float(check_number(name, value))
    if not 0.0 < number <= 1.0:
        raise SalunError(f"{name} must be in (0, 1], got {number!r}")
    return number


def check_positive(name: str, value, integer: bool = False):
    """A finite number > 0 (a whole one if `integer`); inf and NaN are refused."""
    return check_number(name, value, 0, None, integer=integer, low_open=True)


MAX_SEED = 2**32 - 1  # numpy's and torch's seeding take a 32-bit seed


def check_seed(value, name: str = "seed") -> int:
    return check_number(name, value, 0, MAX_SEED, integer=True)


# --- messages shown to visitors of a hosted server ------------------------------------------------

# An absolute POSIX path (/etc/passwd, /home/op/assets/x.json) or a Windows one (C:\x), possibly quoted;
# also ~/ and ../ paths, which reveal the layout as well.
_PATH = re.compile(r"""(?<![\w.:/])(?:[A-Za-z]:\\|~/|\.\./|/)(?:[^\s'"`,;:()\[\]{}<>]*)""")


def strip_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last component (or `<path>`), for a visitor's eyes."""
    def short(match: re.Match) -> str:
        tail = re.split(r"[\\/]", match.group(0).rstrip("/\\"))[-1]
        return f"<server path>/{tail}" if tail and tail not in ("..", "~") else "<server path>"
    return _PATH.sub(short, str(text))


def public_message(exc: BaseException | str, hosted: bool) -> str:
    """The one line to show for a user error: as is locally, without server paths in hosted mode."""
    text = " ".join(str(exc).split())
    return strip_paths(text) if hosted else text


def non_finite_entries(values, path: str = "") -> list[str]:
    """The dotted names of every NaN or infinite number inside nested dicts and lists."""
    found: list[str] = []
    if isinstance(values, dict):
        for key, value in values.items():
            found += non_finite_entries(value, f"{path}.{key}" if path else str(key))
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            found += non_finite_entries(value, f"{path}[{i}]")
    elif isinstance(values, float) and not math.isfinite(values):
        found.append(f"{path} = {values}")
    elif hasattr(values, "dtype") and getattr(values, "ndim", 1) == 0:  # a numpy or torch scalar
        try:
            number = float(values)
        except (TypeError, ValueError):
            return found
        if not math.isfinite(number):
            found.append(f"{path} = {number}")
    return found


def check_finite_metrics(summary, what: str = "the run") -> None:
    """No result with a NaN or infinite metric is reported as a success (or saved, or printed as JSON)."""
    bad = non_finite_entries(summary)
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DivergedError(f"{what} produced a non-finite metric, {bad[0]}{more}: it diverged (try a smaller "
                            "learning rate or fewer steps) or had too few samples to measure it")
