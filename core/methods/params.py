"""A method's setting, declared once: name, type, default, allowed range and one line of meaning.

    Param("lr", float, 1e-3, low=0, low_open=True, high=10, label="Learning rate",
          meaning="SGD step size; too small and the forget accuracy will not drop")

Validation (`check`), the CLI flag and the app's widget are all derived from this declaration, so a
setting's range and meaning are written in exactly one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from core.errors import SalunError

TYPES = {int: "a whole number", float: "a number", bool: "true or false"}


@dataclass(frozen=True)
class Param:
    name: str
    type: type  # int, float or bool
    default: int | float | bool
    low: float | None = None
    high: float | None = None
    meaning: str = ""
    label: str = ""  # what a widget calls it; the name if empty
    low_open: bool = False  # low itself is not allowed (a learning rate must be > 0)
    primary: bool = False  # shown first in the app
    step: float | None = None  # a widget's +/- step (floats; ints step by 1)

    def __post_init__(self):
        if not self.name.isidentifier():
            raise SalunError(f"setting name {self.name!r} must be a Python identifier (letters, digits, _)")
        if self.type not in TYPES:
            raise SalunError(f"setting {self.name!r} has type {self.type!r}; allowed: int, float, bool")
        self.check(self.default)  # a default outside its own range is a declaration bug

    @property
    def title(self) -> str:
        return self.label or self.name

    def with_default(self, default, **changes) -> "Param":
        """The same setting with another default (and any other field changed)."""
        return replace(self, default=default, **changes)

    def range_text(self) -> str:
        """The allowed range in words: '> 0', 'from 0 to 1', '>= 1', 'any'."""
        if self.type is bool:
            return "true or false"
        low = None if self.low is None else _fmt(self.low)
        high = None if self.high is None else _fmt(self.high)
        if low is not None and high is not None and not self.low_open:
            return f"from {low} to {high}"
        parts = []
        if low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {low}")
        if high is not None:
            parts.append(f"<= {high}")
        return " and ".join(parts) or "any"

    def check(self, value):
        """`value` as this setting's type, or a SalunError naming the value and the allowed range."""
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.strip().lower() in ("true", "1", "yes")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise SalunError(f"{self.name} must be true or false, got {value!r}")
        wanted = f"{TYPES[self.type]} {self.range_text()}".replace(" any", "")
        number = _as_number(value)
        if number is None:
            raise SalunError(f"{self.name} must be {wanted}, got {value!r}")
        if not math.isfinite(number):
            raise SalunError(f"{self.name} must be a finite number {self.range_text()}, got {value!r}".replace(" any", ""))
        if self.type is int:
            if number != int(number) or abs(number) >= 2**53:
                raise SalunError(f"{self.name} must be {wanted}, got {value!r}")
            number = int(number)
        else:
            number = float(number)
        too_low = self.low is not None and (number < self.low or (self.low_open and number == self.low))
        too_high = self.high is not None and number > self.high
        if too_low or too_high:
            raise SalunError(f"{self.name} must be {self.range_text()}, got {value!r}")
        return number

    def help(self, default=None) -> str:
        """One line for a widget or a flag: the meaning, the default (`default` if the dataset or forget
        kind changes it) and the allowed range."""
        default = self.default if default is None else default
        text = self.meaning.rstrip(".")
        return f"{text}. Default {_fmt(default)}; allowed {self.range_text()}." if text else \
            f"Default {_fmt(default)}; allowed {self.range_text()}."


def _as_number(value) -> float | None:
    """A real number from an int, a float or text; None for anything else (bools included)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value == int(value) and abs(value) < 1e6:
        return str(int(value)) if value >= 1 or value == 0 else f"{value:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)
