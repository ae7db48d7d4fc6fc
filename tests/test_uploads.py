"""Uploads from visitors: safetensors classifiers and index lists; pickles and oversize files refused."""

import io

import pytest
import torch
from safetensors.torch import save as save_safetensors_bytes

from core.checkpoint import state_checksum
from core.data import load_dataset
from core.errors import SalunError
from core.limits import Limits
from core.classification.models import build_model
from core.uploads import load_uploaded_classifier, load_uploaded_index_list

LIMITS = Limits(max_upload_bytes=2_000_000, max_forget_size=100)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_a_fitting_safetensors_classifier_loads_exactly(digits):
    model = build_model("small_cnn", 1, 10, 8)
    data = save_safetensors_bytes(model.state_dict())
    loaded = load_uploaded_classifier(data, "mine.safetensors", "small_cnn", digits, LIMITS)
    assert state_checksum(loaded) == state_checksum(model)


def test_pickled_checkpoints_are_refused_by_content_and_by_name(digits):
    buffer = io.BytesIO()
    torch.save(build_model("small_cnn", 1, 10, 8).state_dict(), buffer)
    with pytest.raises(SalunError, match="pickled checkpoint, which can run code"):
        load_uploaded_classifier(buffer.getvalue(), "innocent.safetensors", "small_cnn", digits, LIMITS)
    with pytest.raises(SalunError, match="pickled checkpoint"):
        load_uploaded_classifier(b"\x80\x04K\x01.", "model.pkl", "small_cnn", digits, LIMITS)


def test_a_model_that_does_not_fit_is_refused_naming_the_mismatch(digits):
    wrong_classes = save_safetensors_bytes(build_model("small_cnn", 1, 7, 8).state_dict())
    with pytest.raises(SalunError, match=r"shape mismatch classifier.weight: checkpoint \(7, 64\) vs model \(10, 64\)"):
        load_uploaded_classifier(wrong_classes, "seven.safetensors", "small_cnn", digits, LIMITS)
    with pytest.raises(SalunError, match="as resnet18 for digits.*missing"):
        load_uploaded_classifier(save_safetensors_bytes(build_model("small_cnn", 1, 10, 8).state_dict()),
                                 "cnn.safetensors", "resnet18", digits, Limits())


def test_oversize_empty_and_garbage_uploads_are_refused(digits):
    with pytest.raises(SalunError, match="uploads are limited to 1.9 MiB"):
        load_uploaded_classifier(b"x" * 2_000_001, "big.safetensors", "small_cnn", digits, LIMITS)
    with pytest.raises(SalunError, match="is empty"):
        load_uploaded_classifier(b"", "empty.safetensors", "small_cnn", digits, LIMITS)
    with pytest.raises(SalunError, match="is not a safetensors file"):
        load_uploaded_classifier(b"hello world, not tensors", "text.safetensors", "small_cnn", digits, LIMITS)


def test_index_lists(digits):
    assert load_uploaded_index_list(b"4\n2,9 2", "f.txt", 1437, LIMITS).tolist() == [2, 4, 9]
    with pytest.raises(SalunError, match="'seven' is not an integer index"):
        load_uploaded_index_list(b"1 seven", "f.txt", 1437, LIMITS)
    with pytest.raises(SalunError, match="forget size 101 exceeds this server's limit of 100"):
        load_uploaded_index_list(" ".join(map(str, range(101))).encode(), "f.txt", 1437, LIMITS)
    with pytest.raises(SalunError, match="not a text file"):
        load_uploaded_index_list(b"\xff\xfe\x00\x81", "f.bin", 1437, LIMITS)


def test_the_app_keeps_a_fitting_upload_as_a_checkpoint_and_refuses_a_pickle(tmp_path, monkeypatch):
    from core.checkpoint import load_checkpoint
    from pages.ui import picker

    monkeypatch.setattr(picker, "UPLOADS", tmp_path)
    model = build_model("small_cnn", 1, 10, 8)
    path = picker.store_uploaded_model(save_safetensors_bytes(model.state_dict()), "mine.safetensors",
                                       "small_cnn", "digits", None)
    loaded, meta = load_checkpoint(path)
    assert state_checksum(loaded) == state_checksum(model)
    assert (meta["dataset"], meta["uploaded_as"]) == ("digits", "mine.safetensors")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    with pytest.raises(SalunError, match="pickled checkpoint"):
        picker.store_uploaded_model(buffer.getvalue(), "model.pt", "small_cnn", "digits", None)
    assert len(list(tmp_path.iterdir())) == 2  # the good upload's weights and sidecar, nothing for the pickle
