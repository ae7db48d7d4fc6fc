"""Files a visitor uploads: a classifier (safetensors only) or a list of training indices.

Pickled checkpoints (`.pt`, `.pth`, `.ckpt`, `.bin`, `.pkl`) can run arbitrary code when loaded, so they
are refused by content, not only by name. Sizes are capped by `core.limits`. A classifier that does
not fit the chosen architecture is refused naming what did not match; nothing is partially loaded.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

from core.checkpoint import load_state_strict
from core.data import ImageDataset, read_index_list
from core.errors import CheckpointError, SalunError
from core.limits import Limits
from core.classification.models import build_model

_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def _check_size(data: bytes, filename: str, limits: Limits) -> None:
    if len(data) == 0:
        raise SalunError(f"{filename!r} is empty")
    if len(data) > limits.max_upload_bytes:
        raise SalunError(f"{filename!r} is {len(data) / 2**20:.1f} MiB; uploads are limited to "
                         f"{limits.max_upload_bytes / 2**20:.1f} MiB (SALUN_MAX_UPLOAD_BYTES)")


def _looks_pickled(data: bytes) -> bool:
    # a raw pickle starts with the PROTO opcode; torch.save writes a zip archive holding one
    return data[:1] == b"\x80" or data[:4] == b"PK\x03\x04"


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len <= 0 or 8 + header_len > len(data):
        return False
    try:
        return isinstance(json.loads(data[8:8 + header_len]), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def load_uploaded_classifier(data: bytes, filename: str, architecture: str, dataset: ImageDataset,
                             limits: Limits) -> nn.Module:
    """A classifier of `architecture` for `dataset`, from uploaded safetensors bytes."""
    _check_size(data, filename, limits)
    if filename.lower().endswith(_PICKLE_SUFFIXES) or _looks_pickled(data):
        raise SalunError(f"{filename!r} is a pickled checkpoint, which can run code when loaded; "
                         "upload a .safetensors file (safetensors.torch.save_file(model.state_dict(), path))")
    if not _looks_like_safetensors(data):
        raise CheckpointError(f"{filename!r} is not a safetensors file")
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{filename!r} is not a readable safetensors file ({exc})") from None
    channels, height, _ = dataset.image_shape
    model = build_model(architecture, channels, dataset.num_classes, height)
    load_state_strict(model, tensors, f"uploaded {filename!r} (as {architecture} for {dataset.name})")
    return model.eval()


def load_uploaded_index_list(data: bytes, filename: str, n_train: int, limits: Limits) -> np.ndarray:
    """Training-set indices from an uploaded text file (integers separated by spaces, commas or lines)."""
    _check_size(data, filename, limits)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SalunError(f"{filename!r} is not a text file of indices") from None
    indices = read_index_list(text, n_train, source=f"uploaded {filename!r}")
    limits.check("forget_size", len(indices))
    return indices
