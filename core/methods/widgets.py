"""What the app draws for a method's settings, derived from its declaration (no Streamlit here).

    for spec in widget_specs(method, method.defaults("mnist5k", "class")):
        st.number_input(spec.label, min_value=spec.min_value, ..., help=spec.help)
"""

from __future__ import annotations

from dataclasses import dataclass

from core.methods.registry import Method


@dataclass(frozen=True)
class WidgetSpec:
    name: str  # the setting's name: the key of the value in the run's params
    label: str
    kind: str  # "int", "float" or "bool"
    value: int | float | bool
    min_value: int | float | None
    max_value: int | float | None
    step: int | float | None
    format: str | None
    help: str
    primary: bool


def widget_specs(method: Method, defaults: dict | None = None) -> list[WidgetSpec]:
    """One spec per setting, primary ones first, each starting at `defaults` (the method's own if None).

    An open lower bound (a learning rate > 0) gets no minimum: the widget's minimum would be
    inclusive, and the run's validation refuses the bound itself with a clear message."""
    defaults = method.defaults() if defaults is None else defaults
    specs = []
    for p in sorted(method.params, key=lambda p: not p.primary):
        value = defaults.get(p.name, p.default)
        if p.type is bool:
            specs.append(WidgetSpec(p.name, p.title, "bool", bool(value), None, None, None, None, p.help(value), p.primary))
            continue
        if p.type is int:
            low = None if p.low is None else int(p.low) + (1 if p.low_open else 0)
            high = None if p.high is None else int(p.high)
            specs.append(WidgetSpec(p.name, p.title, "int", int(value), low, high, 1, None, p.help(value), p.primary))
            continue
        low = None if p.low is None or p.low_open else float(p.low)
        high = None if p.high is None else float(p.high)
        specs.append(WidgetSpec(p.name, p.title, "float", float(value), low, high, p.step, "%g", p.help(value), p.primary))
    return specs
