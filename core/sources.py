"""Where the built-in datasets' files are, without loading them (no torch: the app's first page uses it)."""

from __future__ import annotations

from pathlib import Path

# Debian's `dataset-fashion-mnist` package: the four original idx .gz files, read without a download.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def fashion_mnist_folder(root: str | None) -> Path | None:
    """Where Fashion-MNIST's idx files are: the given root (or its FashionMNIST/raw), else Debian's package."""
    candidates = [Path(root), Path(root) / "FashionMNIST" / "raw"] if root else [DEBIAN_FASHION_MNIST]
    for folder in candidates:
        if all((folder / f).exists() for f in IDX_FILES["train"] + IDX_FILES["test"]):
            return folder
    return None
