"""The run store: every finished run is an MLflow run that survives a restart, and a damaged one is redone."""

import json

import pytest

from core import store
from core.checkpoint import load_checkpoint, state_checksum
from core.cli import main

SEED = 11  # seeds no other test uses: the suite shares one store, and equal configs would be served from it


def digits_config(checkpoint, method="salun", seed=SEED, **settings):
    from core.classification.experiment import RunConfig

    return RunConfig(dataset="digits", forget="class:2", method=method, seed=seed, checkpoint=str(checkpoint),
                     **{"epochs": 1, **settings})


@pytest.fixture(scope="module")
def logged(digits_checkpoint):
    """One SalUn run on the digits model, recorded in the store."""
    from core.classification.experiment import run

    result = run(digits_config(digits_checkpoint))
    run_id = store.log_run(result)
    return result, run_id


def restart():
    """What a new process starts with: no cached results, no open MLflow client."""
    store._stores.clear()
    store._file_hashes.clear()


def test_a_run_is_an_mlflow_run_with_its_config_metrics_tags_and_files(logged, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    result, run_id = logged
    assert result.run_id == run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri())  # set_tracking_uri sets it too; undone after
    mlflow.set_tracking_uri(store.tracking_uri())
    found = mlflow.search_runs(experiment_names=["salun-classification"],
                               filter_string=f"tags.`salun.config_key` = '{store.config_key(result.config)}'",
                               output_format="list")
    assert [r.info.run_id for r in found] == [run_id]
    data = found[0].data
    assert (data.params["method"], data.params["forget"], data.params["seed"], data.params["epochs"]) == \
        ("salun", "class:2", str(SEED), "1")
    assert data.params["method.alpha"] and data.params["checkpoint"] == result.config.checkpoint
    for key in ("ua", "ra", "ta", "mia_efficacy", "rte_seconds"):
        assert data.metrics[key] == result.metrics[key]
    assert data.tags["salun.kind"] == "classification"
    assert data.tags["salun.model_sha256"] == store.file_sha256(result.config.checkpoint)
    assert "salun.git_commit" in data.tags or "salun.version" in data.tags
    client = MlflowClient(store.tracking_uri())
    assert len(client.get_metric_history(run_id, "loss")) == len(result.losses) > 0
    files = {a.path for a in client.list_artifacts(run_id)}
    assert files >= {"model.safetensors", "model.json", "mask.safetensors", "config.json", "metrics.json",
                     "result.json", "loss_curve.json", "manifest.json"}
    assert str(store.salun_home()) in found[0].info.artifact_uri  # the embedded store, under $SALUN_HOME


def test_the_same_config_is_served_after_a_restart_with_identical_numbers(logged, digits_checkpoint):
    result, run_id = logged
    restart()
    cache = store.ResultStore()
    served = cache.get(digits_config(digits_checkpoint))
    assert served is not None and served.run_id == run_id
    assert served.metrics == result.metrics and served.losses == result.losses and served.params == result.params
    assert state_checksum(served.model) == state_checksum(result.model)
    assert {k: v.tolist() for k, v in served.mask.items()} == {k: v.tolist() for k, v in result.mask.items()}
    assert cache.get_run(run_id) is served  # now from memory
    other_seed = digits_config(digits_checkpoint, seed=SEED + 100)
    assert cache.get(other_seed) is None


def test_a_damaged_artifact_is_detected_and_the_run_redone(digits_checkpoint):
    from core.classification.experiment import run

    config = digits_config(digits_checkpoint, method="ga", seed=SEED + 1)
    first = run(config)
    cache = store.ResultStore()
    run_id = cache.put(first)
    info = store.default_store().info(run_id)
    weights = store.default_store().folder(info) / "model.safetensors"
    damaged = bytearray(weights.read_bytes())
    damaged[-1] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    restart()
    told = []
    cache = store.ResultStore()
    assert cache.get(config, on_damaged=told.append) is None  # so the caller runs it again
    assert len(told) == 1 and "model.safetensors does not match its checksum" in told[0] and run_id in told[0]
    with pytest.raises(store.DamagedRunError):
        store.get_run(run_id)
    assert store.default_store().info(run_id).lifecycle_stage == "deleted"
    again = run(config)
    new_id = cache.put(again)
    assert new_id != run_id
    restart()
    assert store.find(config).run_id == new_id
    assert store.find(config).metrics["ua"] == first.metrics["ua"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_runs_list_show_and_export_from_the_command_line(digits_checkpoint, capsys, tmp_path):
    argv = ["unlearn", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--forget", "class:2",
            "--method", "ft", "--epochs", "1", "--seed", str(SEED + 2), "--json", "--quiet"]
    assert main(argv) == 0
    line = last_json(capsys)
    run_id = line["run_id"]
    assert "reused" not in line

    assert main(["runs", "list", "--json"]) == 0
    listed = {r["run_id"]: r for r in last_json(capsys)["runs"]}
    assert (listed[run_id]["method"], listed[run_id]["seed"]) == ("ft", SEED + 2)
    assert main(["runs", "show", run_id, "--json"]) == 0
    assert last_json(capsys) == line  # the run's own JSON line, run id included
    assert main(["runs", "show", run_id]) == 0
    assert run_id in capsys.readouterr().out

    restart()
    assert main(argv) == 0  # the same config again: served from the store, said so
    captured = capsys.readouterr()
    again = json.loads(captured.out.strip().splitlines()[-1])
    assert again.pop("reused") is True and again == line and "served from the run store" in captured.err
    assert main(argv + ["--recompute"]) == 0
    recomputed = last_json(capsys)
    assert recomputed["run_id"] != run_id and recomputed["ua"] == line["ua"]

    out = tmp_path / "exported"
    assert main(["runs", "export", run_id, str(out)]) == 0
    capsys.readouterr()
    assert {"model.safetensors", "model.json", "metrics.json", "config.json", "manifest.json"} <= \
        {p.name for p in out.iterdir()}
    model, meta = load_checkpoint(out / "model.safetensors")
    assert meta["unlearning"]["seed"] == SEED + 2
    assert json.loads((out / "metrics.json").read_text())["ua"] == line["ua"]

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for bad in (["runs", "export", run_id, str(blocker / "run")], ["runs", "show", "0123abcd"],
                ["runs", "export", "nope", str(tmp_path / "x")], ["runs", "export", run_id, str(out)]):
        assert main(bad) == 2, bad
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "exported"]  # no partial folder left


def test_no_store_writes_nothing(digits_checkpoint, capsys, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SALUN_HOME", str(home))
    assert main(["unlearn", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--method", "ft",
                 "--epochs", "1", "--seed", str(SEED + 3), "--json", "--quiet", "--no-store"]) == 0
    assert last_json(capsys)["run_id"] is None
    assert not home.exists()
    assert main(["runs", "list", "--json"]) == 0 and last_json(capsys)["runs"] == []


def test_a_generation_run_is_stored_and_served_again(tmp_path, capsys):
    """A tiny 8x8 generator: the run, its images and metrics come back from the store unchanged."""
    import torch

    from core.checkpoint import save_checkpoint
    from core.classification.models import SmallCNN
    from core.data import load_dataset
    from core.diffusion.model import UNetConfig, save_generator
    from core.diffusion.training import GeneratorTrainConfig, train_generator

    digits = load_dataset("digits")
    tiny = UNetConfig(image_size=8, block_out_channels=(8, 16), norm_num_groups=4, train_timesteps=100)
    trained, _ = train_generator(GeneratorTrainConfig(dataset="digits", steps=5, batch_size=64, unet=tiny, seed=SEED),
                                 tmp_path / "work", checkpoint_every_s=1e9)
    generator = save_generator(trained, tmp_path / "gen.safetensors", {"dataset": "digits", "seed": 0})
    torch.manual_seed(0)
    classifier = save_checkpoint(SmallCNN(1, 10, 8), tmp_path / "clf.safetensors", {
        "architecture": "small_cnn", "dataset": "digits", "class_names": digits.class_names, "image_shape": [1, 8, 8]})
    argv = ["unlearn-gen", "--generator", str(generator), "--checkpoint", str(classifier), "--forget", "class:2",
            "--steps", "2", "--per-class", "2", "--sample-steps", "2", "--seed", str(SEED), "--quiet", "--json"]
    assert main(argv) == 0
    line = last_json(capsys)
    restart()
    stored = store.get_run(line["run_id"])
    assert stored.after["ua"] == line["ua"] and stored.before["per_class_accuracy"] == line["before"]["per_class_accuracy"]
    assert stored.after["images"].shape == (20, 1, 8, 8) and stored.unlearning.mask is not None
    folder = store.default_store().folder(store.default_store().info(line["run_id"]))
    assert {"generator.safetensors", "generator.json", "samples.safetensors", "grid_before.png", "grid_after.png",
            "metrics.json", "manifest.json"} <= {p.name for p in folder.iterdir()}
    assert main(argv) == 0
    again = last_json(capsys)
    assert again.pop("reused") is True and again == line
    served = store.find(stored.config)
    assert torch.equal(served.after["images"], stored.after["images"])
