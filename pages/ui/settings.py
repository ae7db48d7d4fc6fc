"""A method's settings widgets and the complete run config.

THE one place where the pages know what a method's settings are. The typed registry (core/methods/)
declares every setting once (type, default, range, meaning); `method_settings` lays out widgets from
those declarations (core.methods.widget_specs) and `default_settings` reads their defaults.
"""

from __future__ import annotations

import hashlib
import json

import streamlit as st

from pages.ui.resources import limits


def methods(family: str = "classification") -> dict:
    """The registered methods of a family, with the plugins named in $SALUN_PLUGINS loaded first (once;
    a plugin that fails to load is explained on the page and left out)."""
    from core.errors import SalunError
    from core.methods import load_env_plugins, methods as registered

    try:
        load_env_plugins()
    except SalunError as exc:
        st.error(f"A method plugin from $SALUN_PLUGINS could not be loaded: {exc}")
    return registered(family)


def default_settings(exp, method: str) -> dict:
    """A method's up-front settings (epochs / lr / alpha ...) for this dataset and kind of target
    (Retrain: the original model's recipe), as declared in core.methods."""
    from core.methods import get_method

    defaults = exp.method_defaults(method)
    return {p.name: p.type(defaults[p.name]) for p in get_method(method).params if p.primary}


def widget(column, spec, key: str, max_value=None):
    """One Streamlit input drawn from a core.methods.WidgetSpec."""
    if spec.kind == "bool":
        return bool(column.checkbox(spec.label, value=spec.value, key=key, help=spec.help))
    high = spec.max_value if max_value is None else (max_value if spec.max_value is None else min(max_value, spec.max_value))
    value = spec.value if high is None else min(spec.value, high)
    got = column.number_input(spec.label, min_value=spec.min_value, max_value=high, value=value, step=spec.step,
                              format=spec.format, key=key, help=spec.help)
    return int(got) if spec.kind == "int" else float(got)


def method_settings(exp, method: str, key: str) -> dict:
    """Widgets for a method's settings, derived from its declaration: the up-front ones (epochs, lr,
    alpha) in the first row, the rest below. Returns the up-front values, and any other value the
    visitor changed from its default (so untouched settings leave the run config as it was)."""
    from core.methods import get_method, widget_specs

    defaults = exp.method_defaults(method)
    specs = widget_specs(get_method(method), defaults)
    # the key names the model too: a widget keeps its value under its key, so another model's
    # defaults would otherwise never show
    model_id = hashlib.sha1(json.dumps([exp.dataset.name, exp.meta.get("training")], default=str).encode()).hexdigest()[:8]
    kind = f"{exp.split.target.kind}_{model_id}"
    values = {}
    for row in range(0, len(specs), 3):
        for column, spec in zip(st.columns(3), specs[row:row + 3]):
            value = widget(column, spec, f"{key}_{method}_{kind}_{spec.name}",
                           limits().max_epochs if spec.name == "epochs" else None)
            if spec.primary or value != spec.value:
                values[spec.name] = value
    return values


def make_config(target, method: str, seed: int, sparsity: float, masked: bool = False, **settings):
    """A complete RunConfig: every setting filled in, and sparsity only where a mask is used, so equal
    runs get equal cache keys whichever page asks."""
    from core.classification.experiment import RunConfig
    from core.methods import get_method
    from core.saliency import DEFAULT_SPARSITY

    spec = get_method(method)
    named = {k: settings.get(k) for k in ("epochs", "lr", "alpha")}
    options = {k: v for k, v in settings.items() if k not in named}
    return RunConfig(dataset=target.dataset, forget=target.forget, method=spec.name,
                     sparsity=float(sparsity) if spec.uses_mask(masked) else DEFAULT_SPARSITY, seed=int(seed),
                     **named, options=options, masked=bool(masked and spec.mask == "optional"),
                     checkpoint=target.checkpoint, data_root=target.data_root)


def run_config(exp, config, progress=None):
    """Run one config on its (cached) experiment: the job's work function."""
    from core.classification.experiment import run

    return run(config, progress=progress, experiment=exp)
