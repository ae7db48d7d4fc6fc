"""The run store: every finished run is an MLflow run, found again by its config and seed.

    from core import store
    run_id = store.log_run(result)      # a classifier, generation or concept result
    store.find(config)                  # the stored result of this config (seed included), or None
    store.get_run(run_id)               # the result of a run by its id; UnknownRunError if there is none

Where: `$SALUN_HOME` (default `runs/` in the repository) holds a SQLite tracking database, `mlflow.db`,
and the artifact folder, `artifacts/`: `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` shows
the runs. `MLFLOW_TRACKING_URI` points everything at any MLflow server instead.

What a run holds: the whole config as params (and the method's resolved settings as `method.*`),
every finite metric (the loss at every step too; a non-finite value is left out and named in the tag
`salun.skipped_metrics`), tags `salun.kind`, `salun.config_key` (a hash of the kind and the config,
seed included), `salun.inputs` (a hash of the model files and index list the run read), the code
version (`salun.git_commit`, `salun.version`, `salun.model_sha256`), and artifacts: weights and mask as
safetensors with their JSON sidecars, `config.json`, `metrics.json` (the run's own JSON, as the CLI
prints it), `result.json` (what rebuilding the result needs), the loss curve, images as PNG and, for a
generator, the generated images as safetensors. `manifest.json` lists every file's sha256 and its own
sha256 is the tag `salun.manifest_sha256`. A run whose files do not match is marked (tag
`salun.damaged`) and deleted from the search, the caller gets `DamagedRunError` (or `find` says so
through `on_damaged`), and runs it again.

A config is served from the store only when the model files it reads are the same bytes as when it
was stored (`salun.inputs`), the code that computes it is the same (`salun.code`: the sha256 of the
modules that decide a run's numbers, and the torch version) and the method's settings resolve the same
way (`salun.method`: its defaults for this dataset and target, and its source file), so retraining the
shipped model, editing a method or changing its defaults never serves a stale result. The git commit
is recorded but not matched (a commit that touches only a page keeps the stored runs).

Speed: importing MLflow and opening its SQLite database costs seconds (see README), so only writing
imports it. Finding and loading runs in the embedded store reads its SQLite database and artifact
folder directly (read-only queries on MLflow's `runs`/`tags` tables); a remote tracking URI goes
through MLflow's client. `ResultStore` is the app's in-memory cache in front of all this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from core.errors import SalunError

REPO_ROOT = Path(__file__).resolve().parent.parent
FORMAT = 1
KINDS = {"RunConfig": "classification", "RunResult": "classification",
         "GenerationRunConfig": "generation", "GenerationRunResult": "generation",
         "ConceptConfig": "concept", "ConceptResult": "concept"}
EXPERIMENTS = {kind: f"salun-{kind}" for kind in ("classification", "generation", "concept")}
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
log = logging.getLogger("salun.store")


class StoreError(SalunError):
    """The store could not be read or written (full disk, unreachable server, ...)."""


class UnknownRunError(SalunError):
    """No stored run has this id."""


class DamagedRunError(SalunError):
    """A stored run's files no longer match the checksums taken when it was stored."""

    def __init__(self, run_id: str, reason: str):
        super().__init__(f"stored run {run_id} failed its integrity check ({reason}); it was dropped from the store")
        self.run_id, self.reason = run_id, reason


# --- where, and what identifies a run -----------------------------------------------------------

def salun_home() -> Path:
    return Path(os.environ.get("SALUN_HOME") or REPO_ROOT / "runs").expanduser().resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{salun_home() / 'mlflow.db'}"


def kind_of(obj) -> str:
    try:
        return KINDS[type(obj).__name__]
    except KeyError:
        raise StoreError(f"the run store keeps classifier, generation and concept runs, not {type(obj).__name__}") from None


def config_key(config) -> str:
    """A stable hash of what the run was asked to do: its kind and its whole config, seed included."""
    payload = json.dumps({"kind": kind_of(config), "config": config.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


_file_hashes: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def _folder_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times: hashing a multi-gigabyte pipeline on every lookup is too slow."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _local(path: str | None) -> Path | None:
    if not path:
        return None
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.exists():
            return candidate
    return None


def input_files(config) -> dict[str, str | None]:
    """The files a run reads besides the shipped dataset, by role: what must be unchanged to reuse it."""
    kind = kind_of(config)
    if kind == "classification":
        from core.classification.experiment import default_checkpoint

        files = {"model": config.checkpoint or str(default_checkpoint(config.dataset))}
        if config.forget.startswith(("indices:", "file:")):
            files["indices"] = config.forget.split(":", 1)[1]
        return files
    if kind == "generation":
        if config.generator is None or config.classifier is None:
            config = config.resolved()  # the dataset's shipped generator and classifier
        return {"model": config.generator, "classifier": config.classifier}
    return {"model": config.model, "forget_images": config.forget_images, "retain_images": config.retain_images}


def input_hashes(config) -> dict[str, str]:
    """sha256 of every input file (a folder: of its listing; a name that is no local path: the name)."""
    out = {}
    for role, name in input_files(config).items():
        if name is None:
            continue
        path = _local(name)
        if path is None:
            out[role] = "name:" + name
        elif path.is_dir():
            out[role] = "folder:" + _folder_fingerprint(path)
        else:
            out[role] = file_sha256(path)
            sidecar = path.with_suffix(".json")
            if role in ("model", "classifier") and sidecar.is_file() and path.suffix == ".safetensors":
                out[role + "_sidecar"] = file_sha256(sidecar)
    return out


def inputs_key(config) -> str:
    return hashlib.sha256(json.dumps(input_hashes(config), sort_keys=True).encode()).hexdigest()


# The modules whose code decides a run's numbers, by kind: an edit to any of them makes the stored runs
# of that kind stale (they are computed again on the next request). Pages, plots and the CLI are left
# out: changing how a result is shown does not change the result.
CODE_MODULES = {
    "classification": ("core/data.py", "core/saliency.py", "core/steps.py", "core/checkpoint.py", "core/config.py",
                       "core/classification/experiment.py", "core/classification/methods.py",
                       "core/classification/training.py", "core/classification/models.py",
                       "core/classification/metrics.py", "core/methods/registry.py", "core/methods/params.py"),
    "generation": ("core/data.py", "core/saliency.py", "core/steps.py", "core/checkpoint.py", "core/config.py",
                   "core/diffusion/run.py", "core/diffusion/methods.py", "core/diffusion/training.py",
                   "core/diffusion/model.py", "core/diffusion/metrics.py", "core/classification/models.py",
                   "core/classification/training.py", "core/methods/registry.py", "core/methods/params.py"),
    "concept": ("core/saliency.py", "core/steps.py", "core/checkpoint.py", "core/concept/run.py",
                "core/concept/training.py", "core/concept/pipeline.py", "core/concept/evaluation.py"),
}


def code_key(kind: str) -> str:
    """sha256 of the modules that compute a run of `kind` (CODE_MODULES) and of the torch version."""
    import torch

    digest = hashlib.sha256(f"torch {torch.__version__}\n".encode())
    for name in CODE_MODULES[kind]:
        path = REPO_ROOT / name
        digest.update(f"{name}:{file_sha256(path) if path.is_file() else 'missing'}\n".encode())
    return digest.hexdigest()


def method_key(config) -> str:
    """sha256 of what the config's method runs with unless the config says otherwise: its declared
    settings with their defaults for this dataset and kind of target, and its source file (a plugin's
    module lies outside CODE_MODULES). Changed defaults (an edited declaration, an override added at
    run time) make the stored runs stale even where the config leaves the setting unset."""
    kind = kind_of(config)
    if kind == "concept":
        return "concept"
    import inspect

    from core.methods import get_method

    family = "classification" if kind == "classification" else "generation"
    try:
        spec = get_method(config.method, family)
    except SalunError:  # a method this process does not know: nothing stored can match it
        return "unknown:" + str(config.method)
    forget_kind = str(config.forget).split(":", 1)[0]
    dataset = getattr(config, "dataset", None) or "*"
    try:
        source = inspect.getsourcefile(spec.run)
        source_hash = file_sha256(Path(source)) if source else "none"
    except (TypeError, OSError):
        source_hash = "none"
    declaration = {"name": spec.name, "mask": spec.mask, "defaults": spec.defaults(dataset, forget_kind),
                   "params": sorted(p.name for p in spec.params), "source": source_hash}
    return hashlib.sha256(json.dumps(declaration, sort_keys=True, default=str).encode()).hexdigest()


def reuse_keys(config) -> dict[str, str]:
    """The tags a stored run must carry to answer `config`: same config, inputs, code and method."""
    return {"salun.config_key": config_key(config), "salun.inputs": inputs_key(config),
            "salun.code": code_key(kind_of(config)), "salun.method_key": method_key(config)}


_git_commit: list = []


def code_version() -> dict[str, str]:
    """The git commit of this checkout if there is one, and the installed package version."""
    if not _git_commit:
        commit = None
        if (REPO_ROOT / ".git").exists():
            try:
                done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                      timeout=5)
                commit = done.stdout.strip() or None if done.returncode == 0 else None
            except (OSError, subprocess.SubprocessError):
                commit = None
        _git_commit.append(commit)
    out = {}
    if _git_commit[0]:
        out["salun.git_commit"] = _git_commit[0]
    try:
        from importlib.metadata import version

        out["salun.version"] = version("salun-lab")
    except Exception:  # not installed as a package: the commit has to do
        pass
    return out


# --- JSON that keeps NaN and inf (metrics may hold them; the JSON files must stay valid JSON) ---

def _encode(value):
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        return _encode(value.item())
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(_encode(value), indent=2, default=str, allow_nan=False))


def _read_json(path: Path):
    return _decode(json.loads(path.read_text()))


# --- writing a result's files -------------------------------------------------------------------

def _loss_curve(losses: list[float], folder: Path, title: str) -> None:
    _write_json(folder / "loss_curve.json", {"step": list(range(1, len(losses) + 1)), "loss": list(losses)})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the JSON carries the curve; the picture is a convenience
        return
    finite = [(i + 1, v) for i, v in enumerate(losses) if math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if finite:
        ax.plot(*zip(*finite), linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "loss_curve.png")
    plt.close(fig)


def _write_classification(result, folder: Path) -> None:
    from core.classification.experiment import save_run

    save_run(result, folder)  # model.safetensors + model.json, mask.safetensors, config.json, metrics.json
    _write_json(folder / "result.json", {
        "format": FORMAT, "kind": "classification", "method": result.method, "metrics": result.metrics,
        "params": result.params, "losses": result.losses, "mask_seconds": result.mask_seconds,
        "retrain_run_id": getattr(result.retrain, "run_id", None) if result.retrain is not result else None})
    _loss_curve(result.losses, folder, f"{result.method} · forget {result.config.forget} · seed {result.config.seed}")


def _write_generation(result, folder: Path) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    from core.checkpoint import save_mask
    from core.diffusion.metrics import scalar_metrics
    from core.diffusion.model import save_generator
    from core.diffusion.plots import grid_image

    config, unlearning = result.config, result.unlearning
    save_generator(unlearning.model, folder / "generator.safetensors",
                   {**result.meta.get("generator", {}), "unlearning": config.to_dict()})
    if unlearning.mask is not None:
        save_mask(unlearning.mask, folder / "mask.safetensors")
    if unlearning.gradients is not None:  # the page's per-layer saliency view reads them
        save_file({k: v.detach().cpu().float().contiguous() for k, v in unlearning.gradients.items()},
                  str(folder / "gradients.safetensors"))
    save_file({"before_images": result.before["images"].detach().cpu().contiguous(),
               "after_images": result.after["images"].detach().cpu().contiguous(),
               "labels": result.after["labels"].detach().cpu().contiguous()}, str(folder / "samples.safetensors"))
    forget_class = config.forget_class()
    for when in ("before", "after"):
        grid = grid_image(getattr(result, when)["images"].detach().cpu(), config.per_class, marked_row=forget_class)
        Image.fromarray(grid).save(folder / f"grid_{when}.png")
    _write_json(folder / "config.json", config.to_dict())
    _write_json(folder / "metrics.json", result.summary())
    _write_json(folder / "result.json", {
        "format": FORMAT, "kind": "generation", "before": scalar_metrics(result.before),
        "after": scalar_metrics(result.after), "method": unlearning.method, "params": unlearning.params,
        "losses": unlearning.losses, "rte_seconds": unlearning.rte_seconds, "timings": unlearning.timings,
        "mask_stability": getattr(unlearning, "mask_stability", None), "substitute": unlearning.substitute,
        "meta": result.meta})
    _loss_curve(unlearning.losses, folder, f"{config.method} · forget {config.forget} · seed {config.seed}")


def _write_concept(result, folder: Path) -> None:
    from core.checkpoint import save_checkpoint, save_mask

    config = result.config
    unet_config = json.loads(json.dumps(dict(getattr(result.unet, "config", {})), default=str))
    save_checkpoint(result.unet, folder / "unet.safetensors",
                    {"architecture": "sd_unet", "model": config.model, "unet": unet_config, "unlearning": config.to_dict()})
    save_mask(result.mask, folder / "mask.safetensors")
    _write_json(folder / "config.json", config.to_dict())
    _write_json(folder / "metrics.json", result.summary())
    samples = folder / "samples"
    samples.mkdir()
    prompts = list(result.samples)
    for k, (prompt, images) in enumerate(result.samples.items()):
        for when, row in images.items():
            for seed, image in zip(config.sample_seeds, row):
                image.save(samples / f"prompt{k}_seed{seed}_{when}.png")
    _write_json(folder / "result.json", {"format": FORMAT, "kind": "concept", "metrics": result.metrics,
                                         "losses": result.losses, "timings": result.timings, "prompts": prompts,
                                         "evaluation": getattr(result, "evaluation", None)})
    _loss_curve(result.losses, folder, f"concept · {config.forget_prompt[:40]} · seed {config.seed}")


WRITERS = {"classification": _write_classification, "generation": _write_generation, "concept": _write_concept}


def _flat_params(config, result) -> dict[str, str]:
    def text(value) -> str:
        out = value if isinstance(value, str) else json.dumps(_encode(value), default=str)
        return out if len(out) <= MAX_PARAM_LENGTH else out[:MAX_PARAM_LENGTH - 12] + "…(truncated)"

    params = {key: text(value) for key, value in config.to_dict().items()}
    resolved = getattr(result, "params", None)
    if resolved is None and hasattr(result, "unlearning"):
        resolved = result.unlearning.params
    for key, value in (resolved or {}).items():
        params[f"method.{key}"] = text(value)
    return params


def _metrics_of(result) -> dict[str, float]:
    kind = kind_of(result)
    if kind == "classification":
        out = dict(result.metrics)
        if result.retrain is not None and result.retrain is not result:
            from core.classification.metrics import avg_gap

            out["avg_gap"] = avg_gap(result.metrics, result.retrain.metrics)
        return out
    if kind == "generation":
        out = {}
        for prefix, values in (("", result.after), ("before_", result.before)):
            for key, value in values.items():
                if key == "per_class_accuracy":
                    out.update({f"{prefix}per_class_accuracy_{k}": v for k, v in enumerate(value)})
                elif isinstance(value, (int, float)) and key not in ("seed", "per_class", "sample_steps", "guidance"):
                    out[prefix + key] = value
        out["rte_seconds"] = result.rte_seconds
        out.update({f"timing_{k}": v for k, v in result.unlearning.timings.items()})
        return out
    out = dict(result.metrics)
    out.update({f"timing_{k}": v for k, v in result.timings.items()})
    return out


def _losses_of(result) -> list[float]:
    return result.unlearning.losses if kind_of(result) == "generation" else result.losses


def _tags_of(result, config) -> dict[str, str]:
    hashes = input_hashes(config)
    tags = {"salun.kind": kind_of(result), **reuse_keys(config),
            "salun.model_sha256": hashes.get("model", ""), "salun.seed": str(config.seed),
            **code_version()}
    if kind_of(result) == "concept":
        tags.update({"salun.method": "salun", "salun.forget": config.forget_prompt[:250]})
    else:
        tags.update({"salun.method": config.method, "salun.forget": config.forget})
    return tags


def _run_name(result, config) -> str:
    if kind_of(result) == "concept":
        return f"concept {config.forget_prompt[:40]!r} seed {config.seed}"
    return f"{config.method} {config.forget} seed {config.seed}"


def _manifest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# --- reading an index of runs: MLflow's client, or its SQLite database directly ----------------

@dataclass
class RunInfo:
    run_id: str
    status: str
    lifecycle_stage: str
    artifact_uri: str
    start_time: int
    tags: dict
    params: dict
    metrics: dict


def _import_mlflow():
    """MLflow's client class, with MLflow's and alembic's INFO chatter (creating and migrating the
    database) kept off stderr: the CLI's stderr carries one line per user error."""
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


class RunStore:
    """The MLflow store at `uri` (default: `tracking_uri()`), with `home` for its files."""

    def __init__(self, uri: str | None = None, home: Path | None = None):
        self.uri = uri or tracking_uri()
        self.home = Path(home) if home else salun_home()
        self.db_path = _sqlite_path(self.uri)
        self._client = None
        self._experiments: dict[str, str] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one record at a time: SQLite takes one writer anyway
        self._warming: threading.Thread | None = None
        self._damaged: dict[str, str] = {}

    # MLflow itself: only for writing, or for a tracking server
    def client(self):
        with self._lock:
            if self._client is None:
                MlflowClient = _import_mlflow()
                if self.db_path is not None:
                    self.db_path.parent.mkdir(parents=True, exist_ok=True)
                self._client = MlflowClient(tracking_uri=self.uri)
            return self._client

    def warm_up(self) -> None:
        """Import MLflow in a background thread, so the first write waits less. Only the import: a
        run refused later (bad input) must leave no database behind."""
        with self._lock:
            if self._client is not None or self._warming is not None:
                return
            self._warming = threading.Thread(target=self._warm, name="salun-store-warm-up", daemon=True)
            self._warming.start()

    def _warm(self) -> None:
        try:
            _import_mlflow()
        except Exception as exc:  # the write that follows reports it
            log.debug("run store warm-up failed: %s", exc)

    def _experiment_id(self, kind: str) -> str:
        if kind not in self._experiments:
            client = self.client()
            name = EXPERIMENTS[kind]
            found = client.get_experiment_by_name(name)
            if found is None:
                location = (self.home / "artifacts" / kind).as_uri() if self.db_path is not None else None
                try:
                    self._experiments[kind] = client.create_experiment(name, artifact_location=location)
                except Exception:  # another process created it meanwhile
                    self._experiments[kind] = client.get_experiment_by_name(name).experiment_id
            else:
                self._experiments[kind] = found.experiment_id
        return self._experiments[kind]

    def _uses_sql(self) -> bool:
        return self.db_path is not None

    def _sql(self, query: str, args=()) -> list[tuple]:
        if not self.db_path.is_file():
            return []
        try:
            db = sqlite3.connect(self.db_path.as_uri() + "?mode=ro", uri=True, timeout=10)
            try:
                return db.execute(query, args).fetchall()
            finally:
                db.close()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created, but MLflow has not made its tables yet
                return []
            raise StoreError(f"cannot read the run store {str(self.db_path)!r}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the run store {str(self.db_path)!r} is not a readable database: {exc}") from None

    def info(self, run_id: str) -> RunInfo | None:
        if self._uses_sql():
            rows = self._sql("SELECT status, lifecycle_stage, artifact_uri, start_time FROM runs WHERE run_uuid = ?",
                             (run_id,))
            if not rows:
                return None
            status, stage, artifact_uri, start = rows[0]
            tags = dict(self._sql("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
            params = dict(self._sql("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
            metrics = dict(self._sql("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)))
            return RunInfo(run_id, status, stage, artifact_uri, start or 0, tags, params, metrics)
        from mlflow.exceptions import MlflowException

        try:
            run = self.client().get_run(run_id)
        except MlflowException:
            return None
        return RunInfo(run.info.run_id, run.info.status, run.info.lifecycle_stage, run.info.artifact_uri,
                       run.info.start_time or 0, dict(run.data.tags), dict(run.data.params), dict(run.data.metrics))

    def run_ids(self, config_key: str | None = None, inputs: str | None = None, **tags: str) -> list[str]:
        """Finished, not deleted runs of the store (with this config key and inputs, and these other
        tags: `run_ids(**{"salun.code": ...})`), newest first."""
        wanted = [("salun.config_key", config_key), ("salun.inputs", inputs), *tags.items()]
        if self._uses_sql():
            query = ("SELECT r.run_uuid FROM runs r JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = 'salun.kind' "
                     "WHERE r.status = 'FINISHED' AND r.lifecycle_stage = 'active'")
            args = []
            for key, value in wanted:
                if value is not None:
                    query += " AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)"
                    args += [key, value]
            return [row[0] for row in self._sql(query + " ORDER BY r.start_time DESC", args)]
        client = self.client()
        ids = [e.experiment_id for e in (client.get_experiment_by_name(n) for n in EXPERIMENTS.values()) if e]
        if not ids:
            return []
        terms = ["attributes.status = 'FINISHED'"]
        terms += [f"tags.`{k}` = '{v}'" for k, v in wanted if v]
        runs = client.search_runs(ids, " and ".join(terms), order_by=["attributes.start_time DESC"], max_results=5000)
        return [r.info.run_id for r in runs]

    # writing
    def log(self, result, source: str = "library") -> str | None:
        """Record a finished result as an MLflow run; returns its id (None for a non-main process).
        `source` (app, cli, sweep, library) becomes the tag `salun.source`."""
        if not getattr(result, "is_main_process", True):
            return None
        with self._write_lock:
            return self._log(result, source)

    def _log(self, result, source: str) -> str:
        kind = kind_of(result)
        config = result.config
        if self._warming is not None:
            self._warming.join()
        try:
            client = self.client()
            experiment = self._experiment_id(kind)
        except Exception as exc:
            raise StoreError(f"cannot open the run store at {self.uri}: {_one_line(exc)}") from None
        from mlflow.entities import Metric, Param, RunTag

        metrics, skipped = {}, []
        for key, value in _metrics_of(result).items():
            value = float(value)
            if math.isfinite(value):
                metrics[key] = value
            else:
                skipped.append(f"{key}={value}")
        tags = _tags_of(result, config)
        if skipped:  # MLflow would store NaN as if it were a number; say which were left out instead
            tags["salun.skipped_metrics"] = ", ".join(skipped)
        run = client.create_run(experiment, run_name=_run_name(result, config),
                                tags={**tags, "salun.source": source})
        run_id = run.info.run_id
        scratch = None
        try:
            stamp = run.info.start_time or 0
            params = [Param(k, v) for k, v in _flat_params(config, result).items()]
            for i in range(0, len(params), 100):
                client.log_batch(run_id, params=params[i:i + 100])
            points = [Metric(k, v, stamp, 0) for k, v in metrics.items()]
            points += [Metric("loss", float(v), stamp, step) for step, v in enumerate(_losses_of(result), 1)
                       if math.isfinite(v)]
            for i in range(0, len(points), 1000):
                client.log_batch(run_id, metrics=points[i:i + 1000])
            scratch = Path(tempfile.mkdtemp(prefix="salun-run-"))
            WRITERS[kind](result, scratch)
            manifest = _manifest(scratch)
            _write_json(scratch / "manifest.json", {"format": FORMAT, "run_id": run_id, "files": manifest})
            client.log_artifacts(run_id, str(scratch))
            client.log_batch(run_id, tags=[RunTag("salun.manifest_sha256", file_sha256(scratch / "manifest.json"))])
            client.set_terminated(run_id, "FINISHED")
        except Exception as exc:
            try:
                client.set_terminated(run_id, "FAILED")
                client.delete_run(run_id)
            except Exception:
                pass
            raise StoreError(f"could not record the run in the store ({_one_line(exc)})") from None
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        result.run_id = run_id
        return run_id

    # reading
    def folder(self, info: RunInfo) -> Path:
        """The run's artifact folder on this machine (downloaded first from a tracking server)."""
        parsed = urlparse(info.artifact_uri)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        local = self.home / "downloads" / info.run_id
        if not (local / "manifest.json").is_file():
            import mlflow.artifacts

            shutil.rmtree(local, ignore_errors=True)
            local.mkdir(parents=True, exist_ok=True)
            try:
                mlflow.artifacts.download_artifacts(run_id=info.run_id, dst_path=str(local), tracking_uri=self.uri)
            except Exception as exc:
                shutil.rmtree(local, ignore_errors=True)
                raise StoreError(f"cannot download run {info.run_id}'s files: {_one_line(exc)}") from None
        return local

    def checked_folder(self, run_id: str) -> tuple[RunInfo, Path]:
        """The run's info and artifact folder, every file checked against its sha256; marks a damaged run."""
        info = self.info(run_id)
        if info is None or "salun.kind" not in info.tags:
            raise UnknownRunError(f"no stored run has the id {run_id!r}; `python -m core.cli runs list` shows them")
        if "salun.damaged" in info.tags or run_id in self._damaged:
            raise DamagedRunError(run_id, info.tags.get("salun.damaged") or self._damaged[run_id])
        if info.lifecycle_stage != "active" or info.status != "FINISHED":
            raise UnknownRunError(f"run {run_id} is {'deleted' if info.lifecycle_stage != 'active' else info.status.lower()}, "
                                  "not a finished run of the store")
        folder = self.folder(info)
        reason = _verify(folder, info.tags.get("salun.manifest_sha256"))
        if reason is not None:
            self.mark_damaged(run_id, reason)
            raise DamagedRunError(run_id, reason)
        return info, folder

    def mark_damaged(self, run_id: str, reason: str) -> None:
        self._damaged[run_id] = reason
        try:
            client = self.client()
            client.set_tag(run_id, "salun.damaged", reason)
            client.delete_run(run_id)
        except Exception as exc:  # a read-only store still refuses it in this process
            log.warning("could not mark run %s as damaged: %s", run_id, exc)

    def load(self, run_id: str):
        """The result of a stored run, rebuilt from its files (checked first)."""
        info, folder = self.checked_folder(run_id)
        kind = info.tags["salun.kind"]
        result = READERS[kind](self, folder)
        result.run_id = run_id
        # what the app labels "cached": this result was read back, not computed for the request
        result.served_from_store = {"run_id": run_id, "source": info.tags.get("salun.source", ""),
                                    "stored_at": info.start_time}
        return result

    def find(self, config, on_damaged=None):
        """The newest intact stored result of `config` on the same input files, code and method
        settings (`reuse_keys`), or None. A damaged one is dropped, `on_damaged(reason)` is told
        ("stored run ID: model.safetensors does not match its checksum"; else it is logged), and the
        next one is tried."""
        keys = reuse_keys(config)
        for run_id in self.run_ids(keys.pop("salun.config_key"), keys.pop("salun.inputs"), **keys):
            try:
                return self.load(run_id)
            except DamagedRunError as exc:
                (on_damaged or log.warning)(f"stored run {run_id}: {exc.reason}")
        return None

    def list(self, limit: int | None = None) -> list[RunInfo]:
        ids = self.run_ids()
        return [info for info in (self.info(i) for i in ids[:limit]) if info is not None]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _sha256_now(path: Path) -> str:
    """Read anew, never from the cache: a damaged file may keep its size and time."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(folder: Path, manifest_sha: str | None) -> str | None:
    """None if every file matches the manifest (and the manifest its tag), else what is wrong."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return "manifest.json is missing"
    if manifest_sha is not None and _sha256_now(manifest_path) != manifest_sha:
        return "manifest.json does not match its checksum"
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "manifest.json is unreadable"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256_now(path) != expected:
            return f"{name} does not match its checksum"
    return None


# --- rebuilding results from their files --------------------------------------------------------

def _read_classification(store: RunStore, folder: Path):
    from core.checkpoint import load_checkpoint, load_mask
    from core.classification.experiment import RunConfig, RunResult
    from core.classification.models import default_device

    config = RunConfig.from_dict(_read_json(folder / "config.json"))
    data = _read_json(folder / "result.json")
    model, meta = load_checkpoint(folder / "model.safetensors", device=default_device())
    mask = load_mask(folder / "mask.safetensors") if (folder / "mask.safetensors").is_file() else None
    retrain = store.load(data["retrain_run_id"]) if data.get("retrain_run_id") else None
    meta = {k: v for k, v in meta.items() if k != "unlearning"}
    return RunResult(config, data["method"], data["metrics"], data["params"], data["losses"], model, mask,
                     data["mask_seconds"], retrain, extra={"meta": meta})


def _read_generation(store: RunStore, folder: Path):
    from core.checkpoint import load_mask, read_tensors
    from core.diffusion.methods import GenerationUnlearning
    from core.diffusion.model import load_generator
    from core.diffusion.run import GenerationRunConfig, GenerationRunResult

    config = GenerationRunConfig.from_dict(_read_json(folder / "config.json"))
    data = _read_json(folder / "result.json")
    model, _ = load_generator(folder / "generator.safetensors")
    mask = load_mask(folder / "mask.safetensors") if (folder / "mask.safetensors").is_file() else None
    gradients = read_tensors(folder / "gradients.safetensors") if (folder / "gradients.safetensors").is_file() else None
    samples = read_tensors(folder / "samples.safetensors")
    before = {**data["before"], "images": samples["before_images"], "labels": samples["labels"]}
    after = {**data["after"], "images": samples["after_images"], "labels": samples["labels"]}
    unlearning = GenerationUnlearning(model, data["method"], data["params"], mask, gradients, data["losses"],
                                      data["rte_seconds"], data["timings"], data.get("mask_stability"),
                                      data.get("substitute"))
    return GenerationRunResult(config, before, after, unlearning, data["meta"])


def _read_concept(store: RunStore, folder: Path):
    import copy

    from PIL import Image

    from core.checkpoint import load_mask, load_state_strict, read_tensors
    from core.concept.pipeline import load_pipeline
    from core.concept.run import ConceptConfig, ConceptResult

    values = _read_json(folder / "config.json")
    config = ConceptConfig(**values)
    data = _read_json(folder / "result.json")
    pipe = load_pipeline(config.model)
    unet = copy.deepcopy(pipe.unet)
    load_state_strict(unet, read_tensors(folder / "unet.safetensors"), "stored UNet")
    samples = {}
    for k, prompt in enumerate(data["prompts"]):
        samples[prompt] = {}
        for when in ("before", "after"):
            paths = [folder / "samples" / f"prompt{k}_seed{seed}_{when}.png" for seed in config.sample_seeds]
            if all(p.is_file() for p in paths):
                samples[prompt][when] = [Image.open(p).copy() for p in paths]
    extra = {"evaluation": data["evaluation"]} if data.get("evaluation") is not None else {}
    return ConceptResult(config, pipe, unet.eval(), load_mask(folder / "mask.safetensors"), data["metrics"], samples,
                         data["losses"], data["timings"], **extra)


READERS = {"classification": _read_classification, "generation": _read_generation, "concept": _read_concept}


# --- the default store of this process ----------------------------------------------------------

_stores: dict[tuple, RunStore] = {}
_stores_lock = threading.Lock()


def default_store() -> RunStore:
    """One RunStore per tracking URI and home (they are read from the environment on every call)."""
    key = (tracking_uri(), str(salun_home()))
    with _stores_lock:
        if key not in _stores:
            _stores[key] = RunStore(*key)
        return _stores[key]


def log_run(result, source: str = "library") -> str | None:
    """Record a finished result in the default store; returns its run id (StoreError if it cannot)."""
    return default_store().log(result, source)


def find(config, on_damaged=None):
    """The stored result of `config` (same kind, config, seed and input files), or None."""
    return default_store().find(config, on_damaged)


def get_run(run_id: str):
    """The result of the stored run `run_id`: UnknownRunError if there is none, DamagedRunError if its
    files no longer match their checksums (it is dropped; run the config again)."""
    return default_store().load(run_id)


def export_run(run_id: str, directory: str | Path) -> Path:
    """Copy a stored run's files (checked first) into `directory`, which must not exist or be empty.
    Written to a sibling folder and renamed, so a failure leaves nothing behind."""
    _, folder = default_store().checked_folder(run_id)
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SalunError(f"cannot export to {str(target)!r}: it exists and is not an empty folder")
    partial = target.with_name(target.name + ".partial")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder, partial)
        if target.exists():
            target.rmdir()
        partial.rename(target)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise SalunError(f"could not export run {run_id} to {str(target)!r}: {exc.strerror or exc}") from None
    return target


# --- the app's in-memory cache in front of the store --------------------------------------------

def _model_of(result):
    kind = kind_of(result)
    return result.model if kind == "classification" else result.unlearning.model if kind == "generation" else result.unet


class ResultStore:
    """Finished runs by their config (seed included), shared by all visitors: a repeated demo is instant.

    A cache in front of the run store: a miss is looked up there (so results survive a restart), and
    `put` records a new result there. Cached weights are checksummed when stored; a result whose
    weights changed since (something modified a shared model) is dropped and the visitor told."""

    def __init__(self, capacity: int = 48, runs: RunStore | None | bool = True, source: str = "app"):
        self.capacity, self._items, self._lock, self.source = capacity, OrderedDict(), threading.Lock(), source
        self._running = {}  # config key -> Job not finished yet: visitors asking for the same run share it
        self._by_run_id: dict[str, str] = {}
        self._runs = runs

    @property
    def runs(self) -> RunStore | None:
        """The run store behind the cache (None: memory only)."""
        if self._runs is True:
            return default_store()
        return self._runs or None

    def job_for(self, config, submit):
        """The unfinished job computing `config`, or a new one from `submit()`."""
        key = self.key(config)
        with self._lock:
            job = self._running.get(key)
            if job is None or job.finished:
                job = self._running[key] = submit()
                if self.runs is not None:
                    self.runs.warm_up()  # MLflow's import overlaps the run, not the wait after it
            return job

    @staticmethod
    def key(config) -> str:
        return json.dumps(config.to_dict(), sort_keys=True, default=str)

    def get(self, config, on_damaged=None):
        """The result of `config` from memory or else the run store, or None (then run it). A damaged
        result (its cached weights changed, or its stored files no longer match) is dropped,
        `on_damaged(reason)` is called, and None returned so the run is done again."""
        from core.checkpoint import state_checksum

        key = self.key(config)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                result, checksum = item
                if state_checksum(_model_of(result)) == checksum:
                    self._items.move_to_end(key)
                    return result
                del self._items[key]
        if item is not None:
            if on_damaged is not None:
                on_damaged("its weights changed after it was stored")
            return None
        if self.runs is None:
            return None
        try:
            result = self.runs.find(config, on_damaged=on_damaged)
        except StoreError as exc:  # an unreadable store must not stop the run: compute it
            log.warning("%s", exc)
            return None
        if result is not None:
            self._remember(result)
        return result

    def get_run(self, run_id: str):
        """The result of a stored run by its id (for `?run=RUN_ID`): UnknownRunError, DamagedRunError."""
        with self._lock:
            key = self._by_run_id.get(run_id)
            item = self._items.get(key) if key is not None else None
        if item is not None:
            result = self.get(item[0].config)
            if result is not None and getattr(result, "run_id", None) == run_id:
                return result
        if self.runs is None:
            raise UnknownRunError(f"no stored run has the id {run_id!r}")
        result = self.runs.load(run_id)
        self._remember(result)
        return result

    def put(self, result) -> str | None:
        """Cache `result` and record it in the run store unless it came from there; returns its run id
        (None if the store could not take it: the result is still cached, and the failure logged)."""
        self._remember(result)
        if getattr(result, "run_id", None) is None and self.runs is not None:
            try:
                self.runs.log(result, self.source)
            except StoreError as exc:
                log.warning("%s", exc)
                return None
            with self._lock:
                self._by_run_id[result.run_id] = self.key(result.config)
        return getattr(result, "run_id", None)

    def _remember(self, result) -> None:
        from core.checkpoint import state_checksum

        checksum = state_checksum(_model_of(result))
        key = self.key(result.config)
        with self._lock:
            self._items[key] = (result, checksum)
            self._items.move_to_end(key)
            if getattr(result, "run_id", None):
                self._by_run_id[result.run_id] = key
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
