"""Limits for a hosted showcase, from the environment or a TOML file; defaults suit a 2-core machine.

Each limit can be set as an environment variable `SALUN_<NAME>` (e.g. `SALUN_MAX_EPOCHS=20`) or in a
TOML file named by `SALUN_LIMITS_FILE` (keys are the field names below). The environment wins.

Hosted mode (`SALUN_HOSTED=1`, or `hosted = true` in the file) locks the app down for visitors: no field
takes a server path, models are picked from the operator's list (a `[models]` table mapping a display
name to a path, relative to the limits file; the shipped models by default), messages never show
server paths, and every limit applies. The CLI applies the limits an operator set (all of them in
hosted mode) and leaves an unconfigured machine unlimited.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from core.errors import SalunError

REPO_ROOT = Path(__file__).resolve().parent.parent
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
_UNBOUNDED = 2**62  # the largest limit an operator may set: anything a machine can count


@dataclass(frozen=True)
class Limits:
    max_epochs: int = 30               # epochs of any classifier run (Retrain included)
    max_steps: int = 2000              # optimizer steps of a diffusion / concept run
    # images in a forget set: one whole class of every built-in dataset (Fashion-MNIST's are 6,000 images, SVHN's
    # largest 13,861) and a random quarter of Fashion-MNIST; SalUn's cost grows with it (one Fashion class: ~17 CPU s)
    max_forget_size: int = 15_000
    max_sweep_runs: int = 24           # sparsities x seeds in one sweep
    max_generated_images: int = 200    # images generated in one request
    max_upload_bytes: int = 20 * 1024 * 1024
    max_concurrent_jobs: int = 1       # training runs at once; the rest queue
    max_queue: int = 16                # waiting runs before new ones are refused
    hosted: bool = False               # lock the app down for visitors (see the module docstring)
    # (display name, path) pairs a hosted visitor may pick from; empty: the shipped models
    models: tuple[tuple[str, str], ...] = ()
    # the names the operator set (file or environment); the CLI enforces only these unless hosted
    configured: frozenset[str] = field(default=frozenset(), compare=False)

    def check(self, name: str, value: float) -> None:
        """Refuse `value` when it exceeds the limit `max_<name>`, naming how to raise it."""
        limit = getattr(self, f"max_{name}")
        if value > limit:
            raise SalunError(f"{name.replace('_', ' ')} {value} exceeds this server's limit of {limit} "
                             f"(set SALUN_MAX_{name.upper()} to change it)")

    def enforces(self, name: str) -> bool:
        """Whether the CLI applies `max_<name>`: in hosted mode always, otherwise when the operator set it."""
        return self.hosted or f"max_{name}" in self.configured

    def check_if_set(self, name: str, value: float) -> None:
        if self.enforces(name):
            self.check(name, value)

    def model_choices(self, kind: str | None = None) -> dict[str, str]:
        """Display name -> path of the models a hosted visitor may pick (the shipped ones by default),
        optionally only those of one `kind`: "classifier", "generator" or "pipeline" (Stable Diffusion)."""
        if self.models:
            choices = {name: path for name, path in self.models}
        else:
            choices = {**{name: str(path) for name, path in shipped_models().items()}, "tiny": "tiny"}
        return {name: path for name, path in choices.items() if kind is None or model_kind(path) == kind}

    def as_dict(self) -> dict:
        values = asdict(self)
        values.pop("configured")
        values["models"] = {name: path for name, path in self.models}
        return values


def shipped_models() -> dict[str, Path]:
    """The checkpoints in assets/, named by their file stem (e.g. 'mnist5k_small_cnn', 'ddpm_mnist5k')."""
    assets = REPO_ROOT / "assets"
    return {p.stem: p for p in sorted(assets.glob("*.safetensors")) if p.with_suffix(".json").is_file()}


def model_kind(path: str) -> str:
    """"pipeline" for a diffusers folder, a hub id or `tiny`; "generator" for a checkpoint whose sidecar
    names the DDPM UNet; "classifier" for any other checkpoint (a bad sidecar is refused when loaded)."""
    import json

    candidate = Path(path)
    if path == "tiny" or candidate.is_dir() or candidate.suffix != ".safetensors":
        return "pipeline"
    try:
        meta = json.loads(candidate.with_suffix(".json").read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return "classifier"
    return "generator" if isinstance(meta, dict) and meta.get("architecture") == "ddpm_unet" else "classifier"


def _parse_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise SalunError(f"limit {name} must be true or false (1/0), got {value!r}")


def _parse_models(value, base: Path) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise SalunError("limit models must be a table of display name = path, e.g. [models] \"MNIST\" = \"a.safetensors\"")
    pairs = []
    for name, path in value.items():
        if not isinstance(path, str) or not path.strip() or not str(name).strip():
            raise SalunError(f"model {name!r} in the limits file must name a path, got {path!r}")
        resolved = Path(path).expanduser()
        pairs.append((str(name).strip(), str(resolved if resolved.is_absolute() else base / resolved)))
    return tuple(pairs)


def load_limits(environ: dict | None = None) -> Limits:
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    path = environ.get("SALUN_LIMITS_FILE")
    base = Path.cwd()
    if path:
        try:
            values.update(tomllib.loads(Path(path).read_text()))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SalunError(f"limits file {path!r} is unreadable: {exc}") from None
        base = Path(path).resolve().parent
    for f in fields(Limits):
        key = f"SALUN_{f.name.upper()}"
        if key in environ and f.name not in ("models", "configured"):
            values[f.name] = environ[key]
    known = {f.name for f in fields(Limits)} - {"configured"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SalunError(f"unknown limits {unknown}; known: {', '.join(sorted(known))}")
    parsed: dict[str, object] = {}
    for name, value in values.items():
        if name == "hosted":
            parsed[name] = _parse_bool(name, value)
        elif name == "models":
            parsed[name] = _parse_models(value, base)
        else:
            if isinstance(value, bool) or isinstance(value, float):
                raise SalunError(f"limit {name} must be a whole number, got {value!r}")
            try:
                parsed[name] = int(str(value).strip()) if isinstance(value, str) else int(value)
            except (TypeError, ValueError):
                raise SalunError(f"limit {name} must be a whole number, got {value!r}") from None
            if parsed[name] < 1:
                raise SalunError(f"limit {name} must be at least 1, got {parsed[name]}")
            if parsed[name] > _UNBOUNDED:
                raise SalunError(f"limit {name} must be at most {_UNBOUNDED}, got {parsed[name]}")
    return Limits(**parsed, configured=frozenset(parsed))


def is_hosted(environ: dict | None = None) -> bool:
    """Whether this server runs in hosted mode; an unreadable limits file counts as hosted (fail closed)."""
    try:
        return load_limits(environ).hosted
    except SalunError:
        return True
