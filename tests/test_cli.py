"""The CLI's contract: JSON on the last stdout line, saved artefacts, one-line errors for bad input."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.checkpoint import ASSETS, read_tensors
from core.cli import main

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"method", "forget", "seed", "ua", "ra", "ta", "mia_efficacy", "rte_seconds"}


def assets_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(ASSETS.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_unlearn_json_contract_with_retrain_and_saved_run(tmp_path, digits_checkpoint):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "unlearn", "--dataset", "digits", "--checkpoint", str(digits_checkpoint),
         "--forget", "class:2", "--method", "salun", "--epochs", "3", "--compare-retrain", "--json",
         "--save", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert KEYS | {"forget_test_accuracy", "retrain", "avg_gap"} <= set(result)
    assert (result["method"], result["forget"], result["seed"]) == ("salun", "class:2", 0)
    assert KEYS | {"forget_test_accuracy"} <= set(result["retrain"])
    assert all(0 <= result[k] <= 100 for k in ("ua", "ra", "ta", "mia_efficacy", "forget_test_accuracy"))
    gap = sum(abs(result[k] - result["retrain"][k]) for k in ("ua", "ra", "ta", "mia_efficacy")) / 4
    assert result["avg_gap"] == pytest.approx(gap, abs=1e-3)
    assert result["ua"] > 90  # forgotten
    assert "salun" in proc.stderr  # progress bars go to stderr, not into the JSON
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "model.json", "mask.safetensors", "config.json", "metrics.json"}
    assert set(read_tensors(out / "mask.safetensors")) == set(read_tensors(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())
    assert (config["forget"], config["method"], config["epochs"]) == ("class:2", "salun", 3)
    assert json.loads((out / "metrics.json").read_text())["ua"] == result["ua"]
    from core.checkpoint import load_checkpoint

    unlearned, meta = load_checkpoint(out / "model.safetensors")  # the saved model loads back on its own
    assert meta["architecture"] == "small_cnn" and meta["unlearning"]["forget"] == "class:2"


def test_random_share_json_has_no_forget_test_accuracy(capsys, digits_checkpoint):
    code = main(["unlearn", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--forget", "random:0.1",
                 "--method", "ft", "--epochs", "1", "--json", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert KEYS <= set(result) and "forget_test_accuracy" not in result


BAD_INPUTS = [
    (["unlearn", "--dataset", "imagenet"], "unknown dataset 'imagenet'; choose one of"),
    (["unlearn", "--method", "forget-everything"], "unknown method 'forget-everything'; choose one of"),
    (["unlearn", "--forget", "class:10"], "class 10 does not exist in digits; classes are 0..9"),
    (["unlearn", "--forget", "random:1.2"], r"random forget share must be in (0, 1], got 1.2"),
    (["unlearn", "--forget", "random:0.00001"], "selects nothing"),
    (["unlearn", "--sparsity", "0"], "sparsity must be in (0, 1], got 0.0"),
    (["unlearn", "--sparsity", "1.5"], "sparsity must be in (0, 1], got 1.5"),
    (["unlearn", "--checkpoint", "/nonexistent/model.safetensors"], "does not exist"),
    (["unlearn", "--method", "ga", "--lr", "1e6", "--epochs", "5"], "GA: the loss became"),
    (["unlearn", "--epochs", "0"], "epochs must be > 0"),
    (["train", "--model", "vit"], "unknown model 'vit'; choose one of"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a[1:3]) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(argv, message, capsys, digits_checkpoint, tmp_path):
    before = assets_digest()
    argv = list(argv)
    if "--dataset" not in argv:
        argv += ["--dataset", "digits"]
    if argv[0] == "unlearn" and "--checkpoint" not in argv:
        argv += ["--checkpoint", str(digits_checkpoint)]
    if argv[0] == "train":
        argv += ["--save", str(tmp_path / "x.safetensors")]
    code = main(argv + ["--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert message in err
    assert assets_digest() == before
    assert not (tmp_path / "x.safetensors").exists()


def test_empty_index_file_and_corrupt_checkpoint(capsys, digits_checkpoint, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["unlearn", "--dataset", "digits", "--checkpoint", str(digits_checkpoint),
                 "--forget", f"indices:{empty}", "--quiet"]) == 2
    assert "is empty" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a tensor file")
    corrupt.with_suffix(".json").write_text(digits_checkpoint.with_suffix(".json").read_text())
    assert main(["unlearn", "--dataset", "digits", "--checkpoint", str(corrupt), "--quiet"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_mask_command_reports_every_layer(capsys, digits_checkpoint):
    assert main(["mask", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--forget", "class:1",
                 "--sparsity", "0.2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    layers = result["layers"]
    assert [r["layer"] for r in layers][:2] == ["features.0.weight", "features.0.bias"]
    salient = sum(r["salient"] for r in layers)
    assert salient == int(sum(r["numel"] for r in layers) * 0.2)


def test_a_failed_save_is_one_line_and_leaves_no_partial_files(capsys, digits_checkpoint, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the run folder should go")
    code = main(["unlearn", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--method", "ft",
                 "--epochs", "1", "--save", str(blocker / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: could not save the run to") and "\n" not in err
    assert blocker.read_text().startswith("a file")
