"""Checkpoints: weights as safetensors plus a JSON sidecar that says what they are.

`model.safetensors` + `model.json` (architecture, dataset, class names, image shape, training config,
seed, test accuracy). Loading is strict: a checkpoint that does not fit its architecture is an error
that names the mismatch, never a partial load. Masks are saved with the same tensor names as the model.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import CheckpointError, SalunError
from core.classification.models import build_model

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"
DEFAULT_CHECKPOINT = ASSETS / "mnist5k_small_cnn.safetensors"


def sidecar_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def _save_error(target: Path, exc: BaseException) -> SalunError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split("\n")[0]
    if isinstance(exc, SafetensorError):  # e.g. 'IoError(Os { code: 28, ..., message: "No space left on device" })'
        found = re.search(r'message: "([^"]+)"', reason)
        reason = found.group(1) if found else f"the weights could not be written ({reason[:200]})"
    return SalunError(f"could not save to {str(target)!r}: {reason}")


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those created (deepest last), to undo on failure."""
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(probe))
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            break


def check_writable(target: str | Path, what: str = "") -> None:
    """Refuse, before a long run, a save target that cannot be written; leaves nothing behind.
    `what` names what would be saved ("the run") in the message."""
    target = Path(target)
    lead = f"could not save {what + ' ' if what else ''}to {str(target)!r}"
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe == target and not target.is_dir():
        raise SalunError(f"{lead}: a file of that name exists and is not a folder")
    if not probe.is_dir():
        raise SalunError(f"{lead}: {str(probe)!r} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".salun-write-test-", dir=probe))
    except OSError as exc:
        raise SalunError(f"{lead}: {exc.strerror or exc}") from None


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a temporary folder next to `target`; when the block succeeds its files move into `target`.

    Any failure (no space, unwritable folder, a SafetensorError) becomes one SalunError line, and the
    temporary folder and any parents made for it are removed: a failed save leaves no partial folder.
    Files already in an existing `target` stay, except those of the same names, which are replaced.
    """
    target = Path(target)
    try:
        if target.exists() and not target.is_dir():
            raise SalunError(f"cannot save to {str(target)!r}: a file of that name exists and is not a folder")
        created = _make_parents(target.parent)
    except OSError as exc:
        raise _save_error(target, exc) from None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        _remove_created(created)
        raise _save_error(target, exc) from None
    try:
        yield tmp
        if not target.exists():
            tmp.rename(target)
        else:
            for item in sorted(tmp.iterdir()):
                destination = target / item.name
                if destination.is_dir() and item.is_dir():
                    shutil.rmtree(destination)
                item.replace(destination)
    except (OSError, SafetensorError) as exc:
        raise _save_error(target, exc) from None
    except SalunError as exc:  # name the folder the user asked for, not the temporary one
        raise type(exc)(str(exc).replace(str(tmp), str(target))) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not target.exists():
            _remove_created(created)


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write weights and sidecar atomically (temporary files, then rename), so a failed save leaves no
    half file; any write failure is one SalunError line."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_weights = path.with_name(path.name + ".partial")
    tmp_meta = sidecar_path(path).with_name(sidecar_path(path).name + ".partial")
    created: list[Path] = []
    try:
        created = _make_parents(path.parent)
        save_file(tensors, str(tmp_weights))
        tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False))
        tmp_weights.replace(path)
        tmp_meta.replace(sidecar_path(path))
    except (OSError, SafetensorError, ValueError) as exc:
        for partial in (tmp_weights, tmp_meta):
            partial.unlink(missing_ok=True)
        _remove_created(created)
        if isinstance(exc, ValueError) and not isinstance(exc, SalunError):
            raise SalunError(f"could not save to {str(path)!r}: its description holds a non-finite number "
                             f"({exc})") from None
        raise _save_error(path, exc) from None
    return path


MAX_SIDECAR_BYTES = 1 * 2**20          # a sidecar is a few kB; a bigger one is not ours
MAX_IMAGE_SIDE = 256                     # pixels; the project's datasets are 8-32 (bounds a small_cnn to 17 M weights)
MAX_CHANNELS = 4
MAX_CLASSES = 1000
MAX_NAME_LENGTH = 200


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_meta(meta, source: str) -> dict:
    """Type, shape and size of every field the project reads from a sidecar, checked before anything is
    built from it (an `image_shape` of [1, 4e6, 4e6] would otherwise ask for petabytes)."""
    if not isinstance(meta, dict):
        kind = {str: "a string", list: "a list", type(None): "null", bool: "a boolean"}.get(type(meta), "a number")
        raise CheckpointError(f"{source} must hold a JSON object, not {kind}")
    if "architecture" in meta and not (isinstance(meta["architecture"], str) and 0 < len(meta["architecture"]) <= 64):
        raise CheckpointError(f"{source}: architecture must be a model name, got {_short(meta['architecture'])}")
    if "image_shape" in meta:
        shape = meta["image_shape"]
        if not (isinstance(shape, list) and len(shape) == 3 and all(_is_whole(v) for v in shape)):
            raise CheckpointError(f"{source}: image_shape must be [channels, height, width] in whole numbers, "
                                  f"got {_short(shape)}")
        channels, height, width = shape
        if not (1 <= channels <= MAX_CHANNELS and 1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
            raise CheckpointError(f"{source}: image_shape {shape} is out of range (1-{MAX_CHANNELS} channels, "
                                  f"sides 1-{MAX_IMAGE_SIDE})")
        if height != width:
            raise CheckpointError(f"{source}: image_shape {shape} is not square; the models take square images")
    if "class_names" in meta:
        names = meta["class_names"]
        if not (isinstance(names, list) and all(isinstance(n, str) and len(n) <= MAX_NAME_LENGTH for n in names)):
            raise CheckpointError(f"{source}: class_names must be a list of names, got {_short(names)}")
        if not 2 <= len(names) <= MAX_CLASSES:
            raise CheckpointError(f"{source}: class_names lists {len(names)} classes; 2-{MAX_CLASSES} are allowed")
    if "dataset" in meta and not (isinstance(meta["dataset"], str) and len(meta["dataset"]) <= 64):
        raise CheckpointError(f"{source}: dataset must be a dataset name, got {_short(meta['dataset'])}")
    if "training" in meta:
        training = meta["training"]
        if not isinstance(training, dict):
            raise CheckpointError(f"{source}: training must be an object of settings, got {_short(training)}")
        for key, high in (("epochs", 100_000), ("batch_size", 1_000_000)):
            if key in training and not (_is_whole(training[key]) and 1 <= training[key] <= high):
                raise CheckpointError(f"{source}: training.{key} must be a whole number in 1..{high}, "
                                      f"got {_short(training[key])}")
        if "lr" in training and not (_is_number(training["lr"]) and training["lr"] > 0):
            raise CheckpointError(f"{source}: training.lr must be a finite number > 0, got {_short(training['lr'])}")
    if "unet" in meta:
        _check_unet(meta["unet"], source)
    if "evaluation" in meta:
        evaluation = meta["evaluation"]
        if not isinstance(evaluation, dict):
            raise CheckpointError(f"{source}: evaluation must be an object, got {_short(evaluation)}")
        if "default_guidance" in evaluation and not (_is_number(evaluation["default_guidance"])
                                                     and 0 <= evaluation["default_guidance"] <= 100):
            raise CheckpointError(f"{source}: evaluation.default_guidance must be a number in 0..100, "
                                  f"got {_short(evaluation['default_guidance'])}")
    return meta


# a generator's UNet: the bounds keep a hostile sidecar from asking for gigabytes of weights
_UNET_WHOLE = {"image_size": (4, 256), "in_channels": (1, MAX_CHANNELS), "num_classes": (2, MAX_CLASSES),
               "layers_per_block": (1, 4), "norm_num_groups": (1, 64), "train_timesteps": (2, 10_000)}
_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


def _check_unet(unet, source: str) -> None:
    if not isinstance(unet, dict):
        raise CheckpointError(f"{source}: unet must be an object of architecture settings, got {_short(unet)}")
    for key, (low, high) in _UNET_WHOLE.items():
        if key in unet and not (_is_whole(unet[key]) and low <= unet[key] <= high):
            raise CheckpointError(f"{source}: unet.{key} must be a whole number in {low}..{high}, got {_short(unet[key])}")
    if "block_out_channels" in unet:
        channels = unet["block_out_channels"]
        if not (isinstance(channels, list) and 1 <= len(channels) <= 5
                and all(_is_whole(c) and 1 <= c <= 256 for c in channels)):
            raise CheckpointError(f"{source}: unet.block_out_channels must be 1-5 whole numbers in 1..256, "
                                  f"got {_short(channels)}")
        groups = unet.get("norm_num_groups", 8)
        if any(c % groups for c in channels):
            raise CheckpointError(f"{source}: unet.block_out_channels {channels} must be multiples of "
                                  f"norm_num_groups {groups}")
    if "beta_schedule" in unet and unet["beta_schedule"] not in _BETA_SCHEDULES:
        raise CheckpointError(f"{source}: unet.beta_schedule must be one of {', '.join(_BETA_SCHEDULES)}, "
                              f"got {_short(unet['beta_schedule'])}")


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "…" + text[-4:]


def read_meta(path: str | Path, required=("architecture", "image_shape", "class_names")) -> dict:
    """The checkpoint's sidecar, checked (`check_meta`) and holding the `required` keys."""
    path = Path(path)
    meta_path = sidecar_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no sidecar {meta_path.name!r} naming its architecture")
    source = f"sidecar {str(meta_path)!r}"
    try:
        if meta_path.stat().st_size > MAX_SIDECAR_BYTES:
            raise CheckpointError(f"{source} is larger than {MAX_SIDECAR_BYTES // 2**20} MiB; it is not a sidecar")
        meta = json.loads(meta_path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, SalunError):
            raise
        raise CheckpointError(f"{source} is not valid JSON: {str(exc).splitlines()[0][:120]}") from None
    except OSError as exc:
        raise CheckpointError(f"{source} is unreadable: {exc.strerror or exc}") from None
    check_meta(meta, source)
    for key in required:
        if key not in meta:
            raise CheckpointError(f"{source} lacks {key!r}")
    return meta


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable safetensors file ({exc})") from None


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor, or raise naming what does not fit; the model is untouched on error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
    if wrong:
        problems.append("shape mismatch " + "; ".join(wrong[:2]) + (f" (+{len(wrong) - 2} more)" if len(wrong) > 2 else ""))
    if problems:
        raise CheckpointError(f"{source} does not fit the architecture: " + "; ".join(problems))
    check_finite_weights(tensors, source)
    model.load_state_dict(tensors, strict=True)


def check_finite_weights(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity: every run from them would be NaN, or crash far away."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source} holds NaN or infinite weights (first in {name!r})")


def load_checkpoint(path: str | Path = DEFAULT_CHECKPOINT, architecture: str | None = None,
                    device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Build the model named by the sidecar (or `architecture`, to check an upload) and load its weights."""
    path = Path(path)
    meta = read_meta(path)
    arch = architecture or meta["architecture"]
    channels, height, _ = meta["image_shape"]
    model = build_model(arch, channels, len(meta["class_names"]), height)
    load_state_strict(model, read_tensors(path), f"checkpoint {path.name!r}")
    model.to(device).eval()
    return model, meta


def save_mask(mask: dict[str, torch.Tensor], path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    created: list[Path] = []
    try:
        created = _make_parents(path.parent)
        save_file({k: v.detach().cpu().to(torch.bool).contiguous() for k, v in mask.items()}, str(tmp))
        tmp.replace(path)
    except (OSError, SafetensorError) as exc:
        tmp.unlink(missing_ok=True)
        _remove_created(created)
        raise _save_error(path, exc) from None
    return path


def load_mask(path: str | Path) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.bool) for k, v in read_tensors(path).items()}


def state_checksum(model: nn.Module) -> str:
    """A digest of every tensor in the model, to prove an original was not modified."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
