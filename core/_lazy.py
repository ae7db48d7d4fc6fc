"""Lazy re-exports for package `__init__` files.

A package's public names are listed once, with the module each lives in; the module is imported on
first use. That keeps `import core` (and the app's first page) free of torch, diffusers and mlflow
until something actually needs them, and leaves no import cycles between a package and its modules.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """`__getattr__` and `__dir__` for `package` that import `exports[name]` (a module path) on demand."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip this function
        return value

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
