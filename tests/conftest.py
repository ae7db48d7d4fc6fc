"""Shared fixtures: a tiny classifier trained on scikit-learn's 8x8 digits in a couple of seconds."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def salun_home(tmp_path_factory) -> Path:
    """The run store of the whole suite: a throwaway folder, never the repository's runs/ (nor a server)."""
    home = tmp_path_factory.mktemp("salun_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALUN_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield home


@pytest.fixture
def fresh_store(tmp_path, monkeypatch) -> Path:
    """A run store of this test's own, for tests whose runs must be computed, never served from a run
    another test stored with the same config."""
    monkeypatch.setenv("SALUN_HOME", str(tmp_path / "salun_home"))
    return tmp_path / "salun_home"


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    from core.checkpoint import save_checkpoint
    from core.data import load_dataset
    from core.classification.training import TrainConfig, accuracy, train_from_scratch, train_meta

    dataset = load_dataset("digits")
    config = TrainConfig(epochs=8, lr=3e-3, batch_size=64, seed=0)
    model = train_from_scratch(dataset, range(len(dataset.train_y)), config, device="cpu")
    path = tmp_path_factory.mktemp("ckpt") / "digits_small_cnn.safetensors"
    save_checkpoint(model, path, train_meta(dataset, config, accuracy(model, dataset.test_x, dataset.test_y)))
    return path


@pytest.fixture
def digits_experiment(digits_checkpoint):
    """A fresh experiment forgetting class 2 of the digits model (the model itself is loaded anew)."""
    from core.classification.experiment import Experiment, RunConfig

    return Experiment.from_config(RunConfig(dataset="digits", forget="class:2", checkpoint=str(digits_checkpoint)),
                                  device="cpu")
