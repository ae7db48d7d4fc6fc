"""Fashion-MNIST as a built-in dataset: read from idx files (Debian's package or a root), its class names,
its defaults, and generation commands that name the dataset and generator they used."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from core.data import FASHION_NAMES, IDX_FILES, load_dataset
from core.errors import SalunError


def write_idx(path, array: np.ndarray) -> None:
    """The idx format: 0, 0, type 0x08 (unsigned byte), number of dimensions, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_folder(tmp_path):
    """A few hundred 28x28 images in Fashion-MNIST's four idx .gz files: 300 train, 100 test."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 300), ("test", 100)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        image_file, label_file = IDX_FILES[split]
        write_idx(tmp_path / image_file, images)
        write_idx(tmp_path / label_file, labels)
        arrays[split] = (images, labels)
    return tmp_path, arrays


def test_fashion_mnist_loads_from_idx_files_under_a_root(idx_folder):
    folder, arrays = idx_folder
    data = load_dataset("fashion_mnist", root=str(folder))
    assert data.train_x.shape == (300, 1, 28, 28) and data.test_x.shape == (100, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and 0.0 <= data.train_x.min() and data.train_x.max() <= 1.0
    # Pixels and labels are the files' own, in order: the original train/test split is kept, not redrawn.
    images, labels = arrays["train"]
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(images.astype(np.float32) / 255.0))
    assert data.train_y.tolist() == labels.tolist()
    assert data.test_y.tolist() == arrays["test"][1].tolist()
    assert data.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert data.num_classes == 10 and data.image_shape == (1, 28, 28)


def test_torchvisions_folder_layout_under_the_root_is_found_too(idx_folder, tmp_path_factory):
    folder, _ = idx_folder
    root = tmp_path_factory.mktemp("tv")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES["train"] + IDX_FILES["test"]:
        (raw / name).write_bytes((folder / name).read_bytes())
    assert len(load_dataset("fashion_mnist", root=str(root)).train_y) == 300


def test_the_dataset_is_held_once_and_shared(idx_folder):
    folder, _ = idx_folder
    assert load_dataset("fashion_mnist", root=str(folder)) is load_dataset("fashion_mnist", root=str(folder))


def test_a_truncated_idx_file_is_one_clear_error(idx_folder):
    folder, _ = idx_folder
    path = folder / IDX_FILES["test"][0]
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(SalunError, match="holds 78390 bytes of data; its header promises"):
        load_dataset("fashion_mnist", root=str(folder))


def test_without_the_debian_package_or_a_root_the_error_says_how_to_get_it(tmp_path, monkeypatch):
    import core.data
    import core.sources

    monkeypatch.setattr(core.sources, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    monkeypatch.delenv("SALUN_DATA_ROOT", raising=False)
    core.data._load_cached.cache_clear()  # a copy loaded earlier from the real package must not answer
    try:
        with pytest.raises(SalunError) as caught:
            load_dataset("fashion_mnist")
    finally:
        core.data._load_cached.cache_clear()
    message = str(caught.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root" in message
    assert len(message.splitlines()) == 1


def test_the_root_can_come_from_the_environment(idx_folder, monkeypatch):
    folder, _ = idx_folder
    monkeypatch.setenv("SALUN_DATA_ROOT", str(folder))
    assert len(load_dataset("fashion_mnist").test_y) == 100


def test_fashion_class_names_are_the_ten_clothing_classes():
    assert len(FASHION_NAMES) == 10 and FASHION_NAMES[7] == "Sneaker" and FASHION_NAMES[9] == "Ankle boot"


# --- generation: the dataset decides the generator -------------------------------------------------

@pytest.fixture
def tiny_pair(tmp_path):
    """An untrained 8x8 generator for `digits` and an untrained classifier to judge it (no training needed:
    these tests are about which files are used, not about image quality)."""
    from core.checkpoint import save_checkpoint
    from core.classification.models import SmallCNN
    from core.diffusion.model import UNetConfig, build_generator, save_generator

    torch.manual_seed(0)
    config = UNetConfig(image_size=8, block_out_channels=(8, 16), norm_num_groups=4, train_timesteps=100)
    gen = save_generator(build_generator(config), tmp_path / "gen_digits.safetensors",
                         {"dataset": "digits", "class_names": [str(i) for i in range(10)]})
    clf = save_checkpoint(SmallCNN(1, 10, 8), tmp_path / "clf.safetensors", {
        "architecture": "small_cnn", "dataset": "digits", "class_names": [str(i) for i in range(10)],
        "image_shape": [1, 8, 8]})
    return gen, clf


FAST = ["--steps", "1", "--per-class", "1", "--sample-steps", "1", "--quiet", "--json", "--threads", "1"]


def test_unlearn_gen_names_the_dataset_and_generator_it_used(tiny_pair, monkeypatch, capsys):
    import core.diffusion.model
    from core.cli import main

    gen, clf = tiny_pair
    monkeypatch.setitem(core.diffusion.model.SHIPPED_GENERATORS, "digits", gen)
    assert main(["unlearn-gen", "--dataset", "digits", "--checkpoint", str(clf), "--forget", "class:1"] + FAST) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dataset"] == "digits" and summary["generator"] == str(gen)
    assert summary["classifier"] == str(clf)
    assert summary["guidance"] == 2.0  # no tuned guidance in this generator's sidecar: the digit default
    assert summary["sparsity"] == 0.5  # the mask's share: upstream's by default


def test_unlearn_gen_names_the_mask_share_it_used(tiny_pair, capsys):
    from core.cli import main

    gen, clf = tiny_pair
    args = ["unlearn-gen", "--generator", str(gen), "--checkpoint", str(clf), "--forget", "class:1"] + FAST
    assert main(args + ["--sparsity", "0.3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sparsity"] == 0.3
    assert main(args + ["--method", "ga"]) == 0  # no mask: no share to name
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sparsity"] is None


def test_unlearn_gen_table_gives_the_retained_drop_with_its_standard_error(tiny_pair, capsys):
    from core.cli import main

    gen, clf = tiny_pair
    fast = [a for a in FAST if a != "--json"] + ["--per-class", "4"]
    assert main(["unlearn-gen", "--generator", str(gen), "--checkpoint", str(clf), "--forget", "class:1"] + fast) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("Retained accuracy drop (points, ± SE)"))
    drop, se = (float(v) for v in row.split()[-3::2])
    before, after = (float(v) for v in next(line for line in table.splitlines()
                                            if line.startswith("Retained accuracy ") and "drop" not in line).split()[-2:])
    assert drop == pytest.approx(before - after, abs=0.011) and se >= 0


def test_a_given_generator_decides_the_dataset_and_a_contradicting_one_is_refused(tiny_pair, capsys):
    from core.cli import main

    gen, clf = tiny_pair
    assert main(["unlearn-gen", "--generator", str(gen), "--checkpoint", str(clf)] + FAST) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dataset"] == "digits"
    assert main(["unlearn-gen", "--dataset", "fashion_mnist", "--generator", str(gen), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on 'digits', not 'fashion_mnist'" in err and len(err.splitlines()) == 1


def test_a_dataset_without_a_generator_is_one_clear_error_not_the_digit_generator(capsys):
    from core.cli import main

    assert main(["unlearn-gen", "--dataset", "cifar10", "--quiet", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no shipped generator for dataset 'cifar10'" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_each_generator_uses_its_own_tuned_guidance(tiny_pair, monkeypatch):
    from core.checkpoint import sidecar_path
    from core.diffusion.run import GenerationRunConfig

    gen, clf = tiny_pair
    sidecar = sidecar_path(gen)
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "evaluation": {"default_guidance": 1.5}}))
    assert GenerationRunConfig(generator=str(gen), classifier=str(clf)).resolved().guidance == 1.5
    assert GenerationRunConfig(generator=str(gen), classifier=str(clf), guidance=3.0).resolved().guidance == 3.0


# --- the app -----------------------------------------------------------------------------------------

def test_the_dataset_picker_offers_fashion_mnist_with_its_class_names_and_examples(idx_folder, monkeypatch):
    # One page stands for all three: unlearn, saliency and sweep share ui.target_picker.
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    folder, _ = idx_folder
    monkeypatch.setenv("SALUN_DATA_ROOT", str(folder))  # the few hundred images above, not the full set
    page = Path(__file__).resolve().parent.parent / "pages" / "unlearn.py"
    at = AppTest.from_file(str(page), default_timeout=180).run()
    at.selectbox(key="pick_dataset").set_value("fashion_mnist").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="pick_class").options == FASHION_NAMES
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert captions == FASHION_NAMES  # one example image per class, named


def test_switching_the_generator_shows_and_sends_that_generators_own_settings(idx_folder, monkeypatch):
    """Each generator has its own tuned defaults. The settings' widgets are keyed by generator, so after a
    switch they show the new generator's values, not the old one's kept under the same key (which the run
    would then have used: a Fashion-MNIST run with the digit generator's α and no null labels)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.methods import get_method

    folder, _ = idx_folder
    monkeypatch.setenv("SALUN_DATA_ROOT", str(folder))
    monkeypatch.setenv("SALUN_GEN_PER_CLASS", "1")
    monkeypatch.setenv("SALUN_GEN_SAMPLE_STEPS", "2")
    salun = get_method("salun", "generation")
    digits, fashion = salun.defaults("mnist5k", "class"), salun.defaults("fashion_mnist", "class")
    assert digits["alpha"] != fashion["alpha"] and digits["substitute"] != fashion["substitute"]
    page = Path(__file__).resolve().parent.parent / "pages" / "generation.py"
    at = AppTest.from_file(str(page), default_timeout=180).run()
    assert at.radio(key="gen_dataset").value == "mnist5k"
    assert at.number_input(key="gen_alpha_salun_mnist5k").value == digits["alpha"]
    at.radio(key="gen_dataset").set_value("fashion_mnist").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="gen_alpha_salun_fashion_mnist").value == fashion["alpha"]
    assert at.number_input(key="gen_null_share_salun_fashion_mnist").value == fashion["null_share"]
    assert at.number_input(key="gen_retain_focus_salun_fashion_mnist").value == fashion["retain_focus"]
    assert at.number_input(key="gen_guidance_fashion_mnist").value == 1.5  # its sidecar's, not the digits' 2.0
    substitute = at.selectbox(key="gen_substitute_salun_fashion_mnist")
    assert substitute.value == fashion["substitute"] and substitute.format_func(substitute.value) == "Trouser"


# --- per-dataset defaults ----------------------------------------------------------------------------

def test_fashion_mnist_has_its_own_salun_defaults_declared_with_the_method_and_runs_use_them(idx_folder):
    from core.classification.experiment import Experiment, RunConfig
    from core.methods import get_method

    salun = get_method("salun")
    assert ("fashion_mnist", "class") in salun.overrides  # declared with the method, not a special case in code
    assert salun.defaults("fashion_mnist", "class") != salun.defaults("mnist5k", "class")
    folder, _ = idx_folder
    experiment = Experiment.from_config(RunConfig(dataset="fashion_mnist", forget="class:7", data_root=str(folder)),
                                        device="cpu")  # the shipped Fashion-MNIST model on 300 images
    assert experiment.method_defaults("salun") == salun.defaults("fashion_mnist", "class")
    result = experiment.unlearn("salun", seed=0)
    assert {k: result.params[k] for k in salun.defaults("fashion_mnist", "class")} == salun.defaults("fashion_mnist", "class")
    assert result.metrics["ua"] == 100.0  # the 30 sneakers of this slice are forgotten


def test_a_random_share_of_fashion_mnist_has_its_own_relabel_defaults_for_salun_and_rl():
    from core.methods import get_method

    for name in ("salun", "rl"):
        method = get_method(name)
        fashion, digits = method.defaults("fashion_mnist", "random"), method.defaults("mnist5k", "random")
        assert ("fashion_mnist", "random") in method.overrides  # declared with the method
        assert fashion["alpha"] > digits["alpha"]  # the retain term weighs more: 6,000 images are relabelled
        assert method.defaults("fashion_mnist", "indices") == fashion  # an index list is forgotten the same way
        assert method.defaults("fashion_mnist", "class") != fashion


def test_a_whole_fashion_class_can_be_forgotten_in_the_app_under_the_default_limits(tmp_path, monkeypatch):
    # Every Fashion-MNIST class holds 6,000 training images (and a random 10 % is as many): the default
    # limits must let the app forget one, not refuse it as too large.
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.limits import Limits

    rng = np.random.default_rng(1)
    for split, labels in (("train", np.r_[np.full(6000, 3), np.arange(300) % 10]), ("test", np.arange(100) % 10)):
        image_file, label_file = IDX_FILES[split]
        write_idx(tmp_path / image_file, rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8))
        write_idx(tmp_path / label_file, labels.astype(np.uint8))
    monkeypatch.setenv("SALUN_DATA_ROOT", str(tmp_path))
    for name in ("SALUN_MAX_FORGET_SIZE", "SALUN_LIMITS_FILE", "SALUN_HOSTED"):
        monkeypatch.delenv(name, raising=False)
    Limits().check("forget_size", 6000)
    page = Path(__file__).resolve().parent.parent / "pages" / "unlearn.py"
    at = AppTest.from_file(str(page), default_timeout=180).run()
    at.selectbox(key="pick_dataset").set_value("fashion_mnist").run()
    at.radio(key="pick_class").set_value(3).run()  # Dress: 6,030 images here
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error], [e.value for e in at.error]
    assert at.button(key="un_run").label == "Run"  # the picker let the target through to the run form
