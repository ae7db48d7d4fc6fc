"""Methods from outside core/: a plugin is a .py file or an importable module that calls
`core.methods.register(...)` when imported.

    salun unlearn --plugin examples/custom_method.py --method neggrad_plus ...
    SALUN_PLUGINS=examples/custom_method.py streamlit run app.py

Loading is idempotent: a plugin already loaded (same resolved file or module name) is not run again,
so the app may call `load_env_plugins()` on every rerun.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from core.errors import SalunError

ENV_VAR = "SALUN_PLUGINS"
_loaded: dict[str, object] = {}  # resolved spec -> module
_sources: dict[str, str] = {}  # module name -> the spec it was loaded with (for reproducing commands)


def split_specs(text: str | None) -> list[str]:
    """SALUN_PLUGINS as a list: entries separated by commas or the OS path separator (':' here)."""
    return [s.strip() for s in re.split(rf"[,{re.escape(os.pathsep)}]", text or "") if s.strip()]


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or "/" in spec


def load_plugin(spec: str):
    """Import one plugin (a .py path or a module name) and return its module; errors are one SalunError line."""
    spec = str(spec).strip()
    if not spec:
        raise SalunError("empty plugin name; give a .py file or a module name")
    if _is_file_spec(spec):
        path = Path(spec).expanduser().resolve()
        key = str(path)
        if key in _loaded:
            return _loaded[key]
        if not path.is_file():
            raise SalunError(f"plugin file {spec!r} does not exist")
        if path.suffix != ".py":
            raise SalunError(f"plugin file {spec!r} is not a .py file")
        stem = re.sub(r"\W", "_", path.stem)
        name = f"salun_plugin_{stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look a module up by name
        try:
            module_spec.loader.exec_module(module)
        except SalunError as exc:
            sys.modules.pop(name, None)
            raise SalunError(f"plugin {spec!r}: {exc}") from None
        except Exception as exc:
            sys.modules.pop(name, None)
            raise SalunError(f"plugin {spec!r} failed to load: {type(exc).__name__}: {exc}") from exc
    else:
        key = spec
        if key in _loaded:
            return _loaded[key]
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            if exc.name and spec.startswith(exc.name):
                raise SalunError(f"plugin module {spec!r} cannot be found; give a .py file or an importable module") from None
            raise SalunError(f"plugin {spec!r} failed to load: {type(exc).__name__}: {exc}") from exc
        except SalunError as exc:
            raise SalunError(f"plugin {spec!r}: {exc}") from None
        except Exception as exc:
            raise SalunError(f"plugin {spec!r} failed to load: {type(exc).__name__}: {exc}") from exc
    _loaded[key] = module
    _sources[module.__name__] = spec
    return module


def plugin_source(method) -> str | None:
    """The --plugin value that brings `method` back (None for a method of core/ itself)."""
    return _sources.get(getattr(method.run, "__module__", None))


def load_plugins(specs) -> list:
    """Load every plugin in `specs` (an iterable of .py paths or module names), in order."""
    return [load_plugin(spec) for spec in (specs or [])]


def load_env_plugins(environ=None) -> list:
    """Load the plugins named in $SALUN_PLUGINS (comma- or os.pathsep-separated); none if it is unset."""
    return load_plugins(split_specs((environ if environ is not None else os.environ).get(ENV_VAR)))
