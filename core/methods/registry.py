"""One registry for every unlearning method, classifier and generator alike.

A method is declared once, with everything the rest of the project derives from it:

    register(Method(
        name="salun", label="SalUn", family="classification", mask="required", run=run_relabel,
        summary="Random labels on the forget set plus retain loss, moving only salient weights.",
        params=(Param("epochs", int, 5, low=0, low_open=True, meaning="passes over the forget set"), ...),
        overrides={("*", "random"): {"epochs": 2, "alpha": 8.0}},
    ))

Every method of a family has the same calling convention (`run(model, data, params, mask=None,
progress=None) -> list of step losses`; see core.classification.methods and core.diffusion.methods).
`overrides` change defaults for a dataset and/or a kind of forget target, keyed (dataset or "*",
forget kind or "*"); the most specific key wins: (dataset, kind) over (dataset, "*") over ("*", kind).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Mapping

from core.errors import SalunError
from core.methods.params import Param

FAMILIES = ("classification", "generation")
MASK_POLICIES = ("required", "optional", "none")
FORGET_KINDS = ("class", "random", "indices")
RESERVED = ("seed",)  # added to every method's params by the run itself
# The modules that declare the built-in methods; imported on first use, so `import core.methods` stays cheap.
BUILTIN_MODULES = {"classification": "core.classification.methods", "generation": "core.diffusion.methods"}


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    summary: str
    family: str  # "classification" or "generation"
    run: Callable  # run(model, data, params, mask=None, progress=None) -> list of step losses
    params: tuple[Param, ...] = ()
    mask: str = "optional"  # "required" (SalUn), "optional" (a baseline may be constrained too), "none" (Retrain)
    overrides: Mapping[tuple[str, str], Mapping[str, object]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "name", normalise(self.name))
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "overrides", {tuple(k): dict(v) for k, v in dict(self.overrides).items()})
        if not self.name.isidentifier():
            raise SalunError(f"method name {self.name!r} must be letters, digits and _ (it becomes a CLI value)")
        if self.family not in FAMILIES:
            raise SalunError(f"method {self.name!r}: family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.mask not in MASK_POLICIES:
            raise SalunError(f"method {self.name!r}: mask must be one of {', '.join(MASK_POLICIES)}, got {self.mask!r}")
        if not callable(self.run):
            raise SalunError(f"method {self.name!r}: run must be a function, got {self.run!r}")
        names = [p.name for p in self.params]
        for name in names:
            if names.count(name) > 1:
                raise SalunError(f"method {self.name!r} declares the setting {name!r} twice")
            if name in RESERVED:
                raise SalunError(f"method {self.name!r}: {name!r} is reserved (every run sets it); rename the setting")
        for key, values in self.overrides.items():
            self._check_override(key, values)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise SalunError(f"{self.label} has no setting {name!r}; it takes: {', '.join(sorted(self.param_names))}")

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def uses_mask(self, masked: bool = False) -> bool:
        """Whether a run computes the saliency mask: always for SalUn, on request for a baseline."""
        return self.mask == "required" or (masked and self.mask == "optional")

    def defaults(self, dataset: str = "*", forget_kind: str = "*") -> dict:
        """Declared defaults with the overrides for this dataset and forget kind applied (most specific last)."""
        values = {p.name: p.default for p in self.params}
        for key in (("*", "*"), ("*", forget_kind), (dataset, "*"), (dataset, forget_kind)):
            if key in self.overrides:
                values.update(self.overrides[key])
        return values

    def resolve(self, seed: int = 0, dataset: str = "*", forget_kind: str = "*", base: Mapping | None = None,
                **values) -> dict:
        """The params a run uses: defaults, then `base` (e.g. the recipe Retrain repeats), then `values`
        (None: keep the default), each checked against its declaration; `seed` is added."""
        params = self.defaults(dataset, forget_kind)
        for source in (base or {}, values):
            for key, value in source.items():
                if value is None:
                    continue
                if key not in params:
                    raise SalunError(f"{self.label} has no setting {key!r}; it takes: {', '.join(sorted(params))}")
                params[key] = value
        checked = {p.name: p.check(params[p.name]) for p in self.params}
        checked["seed"] = int(seed)
        return checked

    def add_override(self, dataset: str = "*", forget_kind: str = "*", **values) -> None:
        key = (str(dataset), str(forget_kind))
        self._check_override(key, values)
        self.overrides.setdefault(key, {}).update(values)

    def _check_override(self, key: tuple, values: Mapping) -> None:
        if len(key) != 2:
            raise SalunError(f"method {self.name!r}: an override is keyed (dataset or '*', forget kind or '*'), got {key!r}")
        if key[1] not in FORGET_KINDS + ("*",):
            raise SalunError(f"method {self.name!r}: forget kind {key[1]!r} is not one of {', '.join(FORGET_KINDS)} or '*'")
        for name, value in values.items():
            self.param(name).check(value)


_REGISTRY: dict[tuple[str, str], Method] = {}
_builtins_loaded: set[str] = set()


def normalise(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def register(method: Method, replace: bool = False) -> Method:
    """Add `method` to its family. A name already taken is refused unless `replace` (or it is the same
    declaration again, as when a plugin module is imported twice)."""
    _load_builtins(method.family)
    key = (method.family, method.name)
    old = _REGISTRY.get(key)
    if old is not None and not replace and not _same_declaration(old, method):
        raise SalunError(f"a {method.family} method named {method.name!r} is already registered "
                         f"({old.label}); pick another name or pass replace=True")
    _REGISTRY[key] = method
    return method


def _same_declaration(a: Method, b: Method) -> bool:
    same_run = getattr(a.run, "__qualname__", None) == getattr(b.run, "__qualname__", None) and \
        getattr(a.run, "__module__", None) == getattr(b.run, "__module__", None)
    return same_run and (a.label, a.summary, a.params, a.mask) == (b.label, b.summary, b.params, b.mask)


def unregister(name: str, family: str = "classification") -> None:
    """Remove a method (tests and plugins that replace one use this)."""
    _REGISTRY.pop((family, normalise(name)), None)


def _load_builtins(family: str) -> None:
    if family in _builtins_loaded:
        return
    _builtins_loaded.add(family)  # first, so the module's own register() calls do not come back here
    try:
        importlib.import_module(BUILTIN_MODULES[family])
    except BaseException:
        _builtins_loaded.discard(family)
        raise


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise SalunError(f"unknown method family {family!r}; choose one of: {', '.join(FAMILIES)}")
    return family


def methods(family: str = "classification") -> dict[str, Method]:
    """The family's methods by name, built-ins first, in the order they were registered."""
    _load_builtins(_check_family(family))
    return {name: m for (fam, name), m in _REGISTRY.items() if fam == family}


def get_method(name: str, family: str = "classification") -> Method:
    """The method called `name` (case and - or _ do not matter), or a SalunError listing the choices."""
    available = methods(family)
    key = normalise(name)
    if key not in available:
        what = "method" if family == "classification" else f"{family} method"
        raise SalunError(f"unknown {what} {name!r}; choose one of: {', '.join(available)}")
    return available[key]


def add_override(method: str, family: str = "classification", dataset: str = "*", forget_kind: str = "*",
                 **values) -> None:
    """Change a method's defaults for a dataset and/or forget kind from outside its declaration:
    `add_override("salun", dataset="fashion_mnist", lr=5e-4)`."""
    get_method(method, family).add_override(dataset, forget_kind, **values)


def all_params(family: str = "classification") -> dict[str, list[tuple[Method, Param]]]:
    """Every setting name in the family, with the methods that declare it (for CLI flags)."""
    out: dict[str, list[tuple[Method, Param]]] = {}
    for m in methods(family).values():
        for p in m.params:
            out.setdefault(p.name, []).append((m, p))
    return out
