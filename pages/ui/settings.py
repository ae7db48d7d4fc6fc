"""A method's settings widgets and the complete run config.

THE one place where the pages know what a method's settings are. Engineer A's typed registry
(core/methods/) will declare every setting once (type, default, range, meaning); `method_settings`
then lays out widgets from those declarations and `default_settings` reads their defaults.
"""

from __future__ import annotations

import hashlib
import json

import streamlit as st

from pages.ui.resources import limits


def default_settings(exp, method: str) -> dict:
    """A method's epochs / lr / alpha for this kind of target (Retrain: the original model's recipe)."""
    from core.classification.methods import METHODS

    defaults = METHODS[method].params_for(exp.split.target.kind)
    if method == "retrain":
        t = exp.data.original_training
        defaults = {**defaults, "epochs": t.epochs, "lr": t.lr}
    out = {}
    if "epochs" in defaults:
        out["epochs"] = int(defaults["epochs"])
    for key in ("lr", "alpha"):
        if key in defaults:
            out[key] = float(defaults[key])
    return out


def method_settings(exp, method: str, key: str) -> dict:
    """Widgets for a method's epochs / lr / alpha, defaulting to its settings for this kind of target."""
    from core.classification.methods import METHODS

    spec = METHODS[method]
    defaults = default_settings(exp, method)
    # the key names the model too: a widget keeps its value under its key, so another model's
    # defaults would otherwise never show
    model_id = hashlib.sha1(json.dumps([exp.dataset.name, exp.meta.get("training")], default=str).encode()).hexdigest()[:8]
    kind = f"{exp.split.target.kind}_{model_id}"
    values = {}
    columns = st.columns(3)
    if "epochs" in defaults:
        values["epochs"] = int(columns[0].number_input(
            "Epochs", min_value=1, max_value=limits().max_epochs, value=min(defaults["epochs"], limits().max_epochs),
            step=1, key=f"{key}_{method}_{kind}_epochs",
            help="Passes over the forget set (SalUn, RL, GA) or the retain set (FT, ℓ1-sparse, Retrain)."))
    if "lr" in defaults:
        values["lr"] = float(columns[1].number_input(
            "Learning rate", min_value=1e-6, max_value=1.0, value=defaults["lr"], format="%.5f",
            step=1e-4, key=f"{key}_{method}_{kind}_lr",
            help="Too small and the forget accuracy will not drop; too large and the kept classes suffer."))
    if "alpha" in defaults:
        meaning = {"salun": "weight of the retain loss", "rl": "weight of the retain loss",
                   "l1_sparse": "ℓ1 penalty weight", "ssd": "selection threshold (importance ratio)"}
        values["alpha"] = float(columns[2].number_input(
            "α", min_value=0.0, value=defaults["alpha"], format="%g", key=f"{key}_{method}_{kind}_alpha",
            help=f"α for {spec.label}: {meaning.get(method, 'method weight')}."))
    return values


def make_config(target, method: str, seed: int, sparsity: float, masked: bool = False, **settings):
    """A complete RunConfig: every setting filled in, and sparsity only where a mask is used, so equal
    runs get equal cache keys whichever page asks."""
    from core.classification.experiment import RunConfig
    from core.saliency import DEFAULT_SPARSITY
    from core.classification.methods import METHODS

    spec = METHODS[method]
    uses_mask = spec.mask == "required" or (masked and spec.mask == "optional")
    return RunConfig(dataset=target.dataset, forget=target.forget, method=method,
                     sparsity=float(sparsity) if uses_mask else DEFAULT_SPARSITY, seed=int(seed),
                     epochs=settings.get("epochs"), lr=settings.get("lr"), alpha=settings.get("alpha"),
                     masked=bool(masked and spec.mask == "optional"), checkpoint=target.checkpoint,
                     data_root=target.data_root)


def run_config(exp, config, progress=None):
    """Run one config on its (cached) experiment: the job's work function."""
    from core.classification.experiment import run

    return run(config, progress=progress, experiment=exp)
