"""Unlearning methods, declared once with typed settings; validation, CLI flags and app widgets derive from them.

    from core.methods import Method, Param, register, get_method
    method = get_method("salun")                          # classifier methods (family "classification")
    method = get_method("salun", family="generation")     # the conditional generator's
    params = method.resolve(seed=0, dataset="mnist5k", forget_kind="random", epochs=3)

    params.py    Param: name, type, default, allowed range, meaning; `check(value)`
    registry.py  Method, register(), get_method(), methods(), add_override()
    plugins.py   load_plugins(specs), load_env_plugins() ($SALUN_PLUGINS)
    widgets.py   widget_specs(): what the app draws for a method's settings

The built-in methods live with their family (core.classification.methods, core.diffusion.methods) and
register themselves when first asked for. A method from outside core/ registers the same way; see
examples/custom_method.py. Importing this package does not import torch.
"""

from core.methods.params import Param
from core.methods.plugins import ENV_VAR, load_env_plugins, load_plugin, load_plugins, plugin_source, split_specs
from core.methods.registry import (FAMILIES, FORGET_KINDS, Method, add_override, all_params, get_method, methods,
                                   normalise, register, unregister)
from core.methods.widgets import WidgetSpec, widget_specs

__all__ = ["Param", "Method", "register", "unregister", "get_method", "methods", "add_override", "all_params",
           "normalise", "FAMILIES", "FORGET_KINDS", "load_plugin", "load_plugins", "load_env_plugins", "plugin_source", "split_specs",
           "ENV_VAR", "WidgetSpec", "widget_specs"]
