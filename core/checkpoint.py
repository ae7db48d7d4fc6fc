"""Checkpoints: weights as safetensors plus a JSON sidecar that says what they are.

`model.safetensors` + `model.json` (architecture, dataset, class names, image shape, training config,
seed, test accuracy). Loading is strict: a checkpoint that does not fit its architecture is an error
that names the mismatch, never a partial load. Masks are saved with the same tensor names as the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import CheckpointError
from core.classification.models import build_model

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"
DEFAULT_CHECKPOINT = ASSETS / "mnist5k_small_cnn.safetensors"


def sidecar_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write weights and sidecar atomically (temporary file, then rename), so a failed save leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_weights = path.with_name(path.name + ".partial")
    tmp_meta = sidecar_path(path).with_name(sidecar_path(path).name + ".partial")
    save_file(tensors, str(tmp_weights))
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True))
    tmp_weights.replace(path)
    tmp_meta.replace(sidecar_path(path))
    return path


def read_meta(path: str | Path, required=("architecture", "image_shape", "class_names")) -> dict:
    path = Path(path)
    meta_path = sidecar_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no sidecar {meta_path.name!r} naming its architecture")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"sidecar {str(meta_path)!r} is not valid JSON: {exc}") from None
    for key in required:
        if key not in meta:
            raise CheckpointError(f"sidecar {str(meta_path)!r} lacks {key!r}")
    return meta


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
    model.load_state_dict(tensors, strict=True)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().to(torch.bool).contiguous() for k, v in mask.items()}, str(path))
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
