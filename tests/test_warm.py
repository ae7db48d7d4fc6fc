"""The warm store: reference runs computed ahead and served to the first visitor are the same runs a
fresh computation gives, and stop being served when the model, the code or a method's defaults change."""

from pathlib import Path

import pytest

from core import store
from core.checkpoint import state_checksum

ROOT = Path(__file__).resolve().parent.parent


def restart():
    """What a new process starts with: no cached results, no open MLflow client."""
    store._stores.clear()
    store._file_hashes.clear()


@pytest.fixture(scope="module")
def warmed(digits_checkpoint, tmp_path_factory):
    """SalUn with its default settings, class 2 of the digits model, computed by `warm` into a store
    of this module's own (computed once: the tests below only read it)."""
    from core.warm import warm

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALUN_HOME", str(tmp_path_factory.mktemp("warm_home")))
        done = warm(("digits",), [2], ("salun",), checkpoint=str(digits_checkpoint), threads=2)
        assert [item.status for item in done] == ["computed"]
        restart()
        yield done[0]
    restart()


def test_a_warm_run_is_served_and_equals_a_fresh_computation(warmed, digits_checkpoint):
    from core.classification.experiment import Experiment, RunConfig, run
    from core.warm import same_run

    served = store.ResultStore().get(warmed.config)
    assert served is not None and served.run_id == warmed.run_id
    assert served.served_from_store["source"] == "warm"  # what the app labels "cached"
    exp = Experiment.from_config(RunConfig(dataset="digits", forget="class:2", checkpoint=str(digits_checkpoint)))
    fresh = run(warmed.config, experiment=exp)
    assert same_run(served, fresh) == {"config": True, "metrics": True, "losses": True, "weights": True, "mask": True}
    assert state_checksum(served.model) == state_checksum(fresh.model)


def test_warming_again_computes_nothing(warmed, digits_checkpoint):
    from core.warm import warm

    again = warm(("digits",), [2], ("salun",), checkpoint=str(digits_checkpoint), threads=2)
    assert [(item.status, item.run_id) for item in again] == [("stored", warmed.run_id)]


def test_changed_method_defaults_or_code_make_a_warm_run_stale(warmed):
    from core.methods import get_method

    assert store.find(warmed.config) is not None
    with pytest.MonkeyPatch.context() as patch:
        # a default the config does not write out (the retain batch), changed: the stored run no longer answers
        patch.setitem(get_method("salun").overrides, ("digits", "class"), {"retain_batch_size": 64})
        assert store.find(warmed.config) is None
    assert store.find(warmed.config) is not None
    with pytest.MonkeyPatch.context() as patch:
        # a module that computes runs, edited (here: one more module counted as such)
        patch.setitem(store.CODE_MODULES, "classification", store.CODE_MODULES["classification"] + ("core/warm.py",))
        assert store.find(warmed.config) is None


def test_a_changed_model_file_makes_a_warm_run_stale(warmed, digits_checkpoint, tmp_path):
    import shutil
    from dataclasses import replace

    copy = tmp_path / "digits_small_cnn.safetensors"
    shutil.copy(digits_checkpoint, copy)
    shutil.copy(digits_checkpoint.with_suffix(".json"), copy.with_suffix(".json"))
    moved = replace(warmed.config, checkpoint=str(copy))
    assert store.find(moved) is None  # another path: another config (and the same bytes would not be enough)
    sidecar = digits_checkpoint.with_suffix(".json")
    original = sidecar.read_text()
    try:
        sidecar.write_text(original.replace("}", ', "note": "retrained"}', 1) if original.rstrip().endswith("}") else original)
        restart()
        assert store.find(warmed.config) is None
    finally:
        sidecar.write_text(original)
        restart()


def test_the_warm_configs_are_the_configs_the_app_builds(digits_experiment, digits_checkpoint):
    from core.methods import methods
    from core.warm import default_run_config
    from pages.ui.picker import Target
    from pages.ui.settings import default_settings, make_config

    target = Target("digits", "class:2", str(digits_checkpoint), None, 0)
    for method in methods("classification"):
        app = make_config(target, method, 0, 0.5, **default_settings(digits_experiment, method))
        assert default_run_config(digits_experiment, method, 0, checkpoint=str(digits_checkpoint)) == app, method


def test_warm_refuses_bad_options_in_one_line(capsys):
    from core.cli import main

    for argv, said in ((["warm", "--classes", "x"], "--classes"), (["warm", "--classes", "10"], "classes 0-9"),
                       (["warm", "--methods", "nope"], "unknown method"), (["warm", "--datasets", "nope"], "unknown dataset"),
                       (["warm", "--verify", "-1"], "--verify")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], (argv, err)


def test_the_diffusion_before_grid_is_generated_once_per_generator_and_settings(tmp_path, fresh_store):
    import torch

    from core.diffusion.metrics import generate_grid
    from core.diffusion.model import UNetConfig, build_generator, load_generator, save_generator
    from core.warm import before_grid, grid_path

    torch.manual_seed(0)
    model = build_generator(UNetConfig(image_size=8, block_out_channels=(8, 16), norm_num_groups=4, train_timesteps=100))
    path = save_generator(model, tmp_path / "gen.safetensors", {"dataset": "digits", "seed": 0})
    calls = []

    def load():
        calls.append(1)
        return load_generator(path)[0]

    first = before_grid(path, 2, 1.5, 3, 0, load_generator=load)
    again = before_grid(path, 2, 1.5, 3, 0, load_generator=load)
    assert len(calls) == 1 and grid_path(path, 2, 1.5, 3, 0).is_file()  # the second was read back
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    fresh = generate_grid(load_generator(path)[0], 2, 1.5, 3, 0)
    assert torch.equal(fresh[0], again[0])  # what was kept is what generating now gives
    before_grid(path, 2, 2.0, 3, 0, load_generator=load)  # another guidance: generated
    assert len(calls) == 2
    save_generator(build_generator(UNetConfig(image_size=8, block_out_channels=(8, 16), norm_num_groups=4,
                                              train_timesteps=100)), path, {"dataset": "digits", "seed": 1})
    before_grid(path, 2, 1.5, 3, 0, load_generator=load)  # a changed generator file: generated again
    assert len(calls) == 3


def test_start_here_shows_a_warm_run_at_once_labelled_cached(fresh_store):
    from streamlit.testing.v1 import AppTest

    from core.warm import warm

    done = warm(("mnist5k",), [4], ("salun",))
    assert [item.status for item in done] == ["computed"]
    restart()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.radio(key="pick_class").set_value(4).run()
    at.button(key="home_run").click().run()  # no job to wait for: the result is on this very rerun
    assert not at.exception, [e.value for e in at.exception]
    assert any("Digit 4 is forgotten" in s.value for s in at.subheader)
    notes = [c.value for c in at.caption if "**cached**" in c.value]
    assert notes and "warm store" in notes[0] and done[0].run_id[:8] in notes[0]


def test_the_original_models_evaluation_is_kept_and_read_back(digits_checkpoint, fresh_store):
    from core.classification.experiment import Experiment, RunConfig
    from core.warm import original_metrics

    def experiment():
        return Experiment.from_config(RunConfig(dataset="digits", forget="class:2", checkpoint=str(digits_checkpoint)))

    first = original_metrics(experiment(), 0, str(digits_checkpoint))
    assert list((fresh_store / "original").glob("*.json"))
    again = experiment()
    again.evaluate = None  # a second server reads it back: evaluating again would fail here
    assert original_metrics(again, 0, str(digits_checkpoint)) == first == experiment().original_metrics(0)


def test_example_images_are_kept_and_read_back_without_torch(tmp_path, monkeypatch):
    """The first page's example digits: picked from the dataset once, then read back from disk in a
    process that never imports torch (the first page draws before torch has loaded)."""
    import json
    import subprocess
    import sys

    import numpy as np

    from core.classification.analysis import example_images as pick
    from core.data import load_dataset
    from core.warm import example_images, examples_path

    monkeypatch.setenv("SALUN_HOME", str(tmp_path))
    monkeypatch.delenv("SALUN_DATA_ROOT", raising=False)
    first, names, n_train = example_images("digits")
    data = load_dataset("digits")
    expected = pick(data, per_class=1)
    assert names == data.class_names and n_train == len(data.train_y)
    assert all(np.array_equal(first[c], expected[c]) for c in expected)
    assert examples_path("digits").is_file()
    probe = ("import sys, json; from core.warm import example_images; e, n, t = example_images('digits'); "
             "print(json.dumps([e[3].tolist(), n, t, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "SALUN_HOME": str(tmp_path)})
    image, again_names, again_n, torch_loaded = json.loads(out.stdout)
    assert not torch_loaded, "reading the kept examples imported torch"
    assert np.array_equal(np.array(image, dtype=np.float32), first[3]) and again_names == names and again_n == n_train
    # a user's own data folder is never answered from the cache
    assert examples_path("digits", str(tmp_path)) is None and examples_path("mnist5k") != examples_path("digits")
