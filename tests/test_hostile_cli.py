"""Hostile input over the CLI: every case is answered with ONE line on stderr and exit status 2, with no
traceback, nothing on stdout and nothing written — checked before any work starts.

The catalogue (CASES) is a list of argv templates; `{ckpt}` is the tests' digits classifier and
`{in}` a folder of hostile files made once per session (sidecars of the wrong type or absurd size,
NaN weights, binary index lists, ...). It runs in-process through `core.cli.main`, so it takes seconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.checkpoint import ASSETS
from core.cli import main

DIGITS = ["--dataset", "digits", "--checkpoint", "{ckpt}", "--quiet"]
GEN = ["--quiet", "--per-class", "1", "--sample-steps", "1"]
CONCEPT = ["unlearn-concept", "--model", "tiny", "--save", "{out}", "--quiet"]

# --- the catalogue ---------------------------------------------------------------------------------
NUMBERS = [
    # seeds: 0..2^32-1, whole numbers
    ["unlearn", *DIGITS, "--seed", "-1", "--forget", "random:0.1"],
    ["unlearn", *DIGITS, "--seed", "-1", "--forget", "random:0.1", "--method", "ssd"],
    ["unlearn", *DIGITS, "--seed", "4294967296"],
    ["unlearn", *DIGITS, "--seed", "1e3"],
    ["unlearn", *DIGITS, "--seed", "x"],
    ["unlearn", *DIGITS, "--seed", ""],
    ["unlearn", *DIGITS, "--seed", "1.5"],
    ["mask", *DIGITS, "--seed", "-5"],
    ["train", "--dataset", "digits", "--seed", "-1", "--save", "{out}/m.safetensors"],
    ["unlearn-gen", *GEN, "--seed", "-1"],
    ["unlearn-concept", "--model", "tiny", "--save", "{out}", "--sample-seeds", "0", "-1"],
    # sparsity: (0, 1]
    *[["unlearn", *DIGITS, "--sparsity", v] for v in ("0", "-0.5", "1.5", "nan", "inf", "x", "1e400")],
    ["unlearn", *DIGITS, "--sparsity=-inf"],
    ["unlearn", *DIGITS, "--sparsity", "-inf"],  # argparse takes it for an option: still one line
    ["mask", *DIGITS, "--sparsity", "nan"],
    ["unlearn-gen", *GEN, "--sparsity", "2"],
    [*CONCEPT, "--sparsity", "0"],
    # epochs, learning rate, alpha
    *[["unlearn", *DIGITS, "--epochs", v] for v in ("0", "-1", "99999999", "1.5", "abc")],
    *[["unlearn", *DIGITS, "--lr", v] for v in ("0", "-1", "inf", "nan", "1e308", "1e7")],
    ["unlearn", *DIGITS, "--lr=-inf"],
    *[["unlearn", *DIGITS, "--alpha", v] for v in ("-1", "nan", "inf")],
    ["train", "--dataset", "digits", "--epochs", "0", "--save", "{out}/m.safetensors"],
    ["train", "--dataset", "digits", "--epochs", "99999999", "--save", "{out}/m.safetensors"],
    ["train", "--dataset", "digits", "--lr", "nan", "--save", "{out}/m.safetensors"],
    *[["train", "--dataset", "digits", "--batch-size", v, "--save", "{out}/m.safetensors"] for v in ("0", "-3", "1000000000")],
    # generation: steps, guidance, sampling steps, images per class, threads
    ["unlearn-gen", *GEN, "--lr", "inf"],
    ["unlearn-gen", *GEN, "--lr", "nan"],
    ["unlearn-gen", "--quiet", "--per-class", "100000"],
    ["unlearn-gen", "--quiet", "--per-class", "0"],
    ["unlearn-gen", "--quiet", "--per-class", "-2"],
    *[["unlearn-gen", *GEN, "--steps", v] for v in ("-1", "1000000000")],
    *[["unlearn-gen", *GEN, "--guidance", v] for v in ("nan", "-1", "inf", "1e9")],
    *[["unlearn-gen", "--quiet", "--per-class", "1", "--sample-steps", v] for v in ("0", "100000", "-4")],
    *[["unlearn-gen", *GEN, "--threads", v] for v in ("-1", "100000")],
    ["unlearn-gen", *GEN, "--alpha", "nan"],
    ["eval-gen", "--quiet", "--per-class", "1", "--guidance", "1", "nan"],
    ["eval-gen", "--quiet", "--per-class", "0"],
    ["eval-gen", "--quiet", "--sample-steps", "-1"],
    ["eval-gen", "--quiet", "--threads", "-2"],
    ["train-gen", "--workdir", "{out}/w", "--steps", "-5"],
    ["train-gen", "--workdir", "{out}/w", "--lr", "inf"],
    ["train-gen", "--workdir", "{out}/w", "--batch-size", "0"],
    ["train-gen", "--workdir", "{out}/w", "--checkpoint-every", "nan"],
    ["train-gen", "--workdir", "{out}/w", "--stop-after", "-1"],
    ["train-gen", "--workdir", "{out}/w", "--log-every", "-1"],
    # concept: every number before a pipeline is loaded
    [*CONCEPT, "--lr", "nan"],
    [*CONCEPT, "--alpha", "-1"],
    [*CONCEPT, "--guidance", "inf"],
    [*CONCEPT, "--mask-guidance", "nan"],
    [*CONCEPT, "--sample-steps", "0"],
    [*CONCEPT, "--images-per-prompt", "0"],
    [*CONCEPT, "--images-per-prompt", "1000000"],
    [*CONCEPT, "--resolution", "-8"],
    [*CONCEPT, "--resolution", "13"],
    [*CONCEPT, "--batch-size", "0"],
    [*CONCEPT, "--micro-batch", "-1"],
    [*CONCEPT, "--epochs", "0"],
    [*CONCEPT, "--steps", "-1"],
]

FORGET_TARGETS = [
    *[["unlearn", *DIGITS, "--forget", spec] for spec in (
        "", "class:", "class:-1", "class:99", "class:²", "class:٣", "class:1_0", "class:3.5", "class:" + "9" * 5000,
        "random:0", "random:nan", "random:inf", "random:-0.1", "random:2", "random:1.0", "random:0.00001",
        "everything", "cluster:2", ":", "x" * 10000,
        "indices:/nonexistent/list.txt", "indices:{in}", "indices:{in}/binary.txt", "indices:{in}/dashdash.txt",
        "indices:{in}/superscript.txt", "indices:{in}/letters.txt", "indices:{in}/negative.txt",
        "indices:{in}/too_big.txt", "indices:{in}/empty.txt", "indices:{in}/huge_number.txt",
        "indices:{in}/arabic_digits.txt", "indices:{in}/utf16.txt")],
    ["mask", *DIGITS, "--forget", "class:²"],
    ["unlearn-gen", *GEN, "--forget", "random:0.1"],
    ["unlearn-gen", *GEN, "--forget", "class:12"],
    ["unlearn-gen", *GEN, "--forget", "class:--5"],
]

SIDECARS = ["image_shape_abc", "image_shape_huge_float", "image_shape_huge", "image_shape_two", "image_shape_zero",
            "image_shape_not_square", "image_shape_rgb", "class_names_5", "class_names_empty", "class_names_one",
            "class_names_5000", "training_null", "training_text", "training_epochs_text", "training_lr_negative",
            "architecture_5", "architecture_vit", "json_string", "json_list", "json_null", "json_nan",
            "json_deep", "json_binary", "json_truncated", "json_2mb", "no_sidecar", "weights_garbage",
            "weights_truncated", "weights_nan", "weights_inf", "weights_wrong_shape", "weights_pickled",
            "weights_empty"]
CHECKPOINTS = [
    *[["unlearn", "--dataset", "digits", "--checkpoint", f"{{in}}/{name}.safetensors", "--quiet"] for name in SIDECARS],
    ["unlearn", "--dataset", "digits", "--checkpoint", "{in}/weights_nan.safetensors", "--method", "ssd", "--quiet"],
    ["unlearn", "--dataset", "digits", "--checkpoint", "/nonexistent/model.safetensors", "--quiet"],
    ["unlearn", "--dataset", "digits", "--checkpoint", "{in}", "--quiet"],
    ["mask", "--dataset", "digits", "--checkpoint", "{in}/image_shape_huge.safetensors", "--quiet"],
    ["unlearn-gen", *GEN, "--checkpoint", "{in}/classifier_nan.safetensors"],
    *[["unlearn-gen", *GEN, "--generator", f"{{in}}/{name}.safetensors"] for name in (
        "unet_text", "unet_huge", "unet_groups", "unet_unknown_key", "unet_schedule", "gen_not_ddpm",
        "gen_evaluation_3", "gen_guidance_text", "gen_weights_nan")],
    ["eval-gen", "--quiet", "--per-class", "1", "--generator", "{in}/unet_huge.safetensors"],
]

SAVES = [
    ["unlearn", *DIGITS, "--save", "/proc/salun/run"],
    ["unlearn", *DIGITS, "--save", "{in}/a_file/run"],
    ["unlearn", *DIGITS, "--save", "{in}/a_file"],
    ["unlearn-gen", *GEN, "--save", "/proc/salun/run"],
    ["unlearn-gen", *GEN, "--save", "{in}/a_file"],
    ["train", "--dataset", "digits", "--save", "{in}/a_file/model.safetensors"],
    ["train-gen", "--workdir", "{out}/w", "--save", "/proc/salun/g.safetensors"],
    ["unlearn-concept", "--model", "tiny", "--save", "/proc/salun/concept", "--quiet"],
    ["unlearn", *DIGITS, "--checkpoint", "bad\x00path"],
    ["unlearn", *DIGITS, "--data-root", "x" * 5000],
]

COMMAND_LINES = [
    ["unlearn", "--no-such-option"],
    ["no-such-command"],
    [],
    ["unlearn", "--dataset"],
    ["unlearn", "--dataset", "imagenet", "--quiet"],
    ["unlearn", *DIGITS, "--method", "no_such_method"],
    ["unlearn-concept", "--model", "tiny", "--precision", "fp8", "--save", "{out}"],
    ["unlearn-concept", "--model", "tiny", "--forget", "same", "--pseudo", "same", "--save", "{out}"],
]

CATALOGUE = NUMBERS + FORGET_TARGETS + CHECKPOINTS + SAVES + COMMAND_LINES

# operator limits the CLI honours once they are set: (environment, argv)
LIMITED = [
    ({"SALUN_MAX_EPOCHS": "5"}, ["unlearn", *DIGITS, "--epochs", "6"]),
    ({"SALUN_MAX_EPOCHS": "5"}, ["train", "--dataset", "digits", "--epochs", "6", "--save", "{out}/m.safetensors"]),
    ({"SALUN_MAX_STEPS": "10"}, ["unlearn-gen", *GEN, "--steps", "11"]),
    ({"SALUN_HOSTED": "1"}, ["unlearn-gen", "--quiet", "--per-class", "30"]),  # 300 images > 200
    ({"SALUN_MAX_GENERATED_IMAGES": "5"}, [*CONCEPT, "--images-per-prompt", "6"]),
    ({"SALUN_MAX_EPOCHS": "abc"}, ["unlearn", *DIGITS]),
    ({"SALUN_MAX_EPOCHS": "0"}, ["unlearn", *DIGITS]),
    ({"SALUN_HOSTED": "maybe"}, ["unlearn", *DIGITS]),
    ({"SALUN_LIMITS_FILE": "/nonexistent/limits.toml"}, ["unlearn", *DIGITS]),
    ({"SALUN_LIMITS_FILE": "{in}/binary.txt"}, ["unlearn", *DIGITS]),
]


def catalogue_size() -> int:
    return len(CATALOGUE) + len(LIMITED)


# --- the hostile files -----------------------------------------------------------------------------

def _write_checkpoint(folder: Path, name: str, weights: Path, meta=None, sidecar_text: str | bytes | None = None,
                      tensors: dict | None = None) -> None:
    target = folder / f"{name}.safetensors"
    if tensors is not None:
        save_file(tensors, str(target))
    else:
        shutil.copy(weights, target)
    sidecar = target.with_suffix(".json")
    if sidecar_text is not None:
        (sidecar.write_bytes if isinstance(sidecar_text, bytes) else sidecar.write_text)(sidecar_text)
    elif meta is not None:
        sidecar.write_text(json.dumps(meta))


@pytest.fixture(scope="session")
def hostile_inputs(tmp_path_factory, digits_checkpoint) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    meta = json.loads(digits_checkpoint.with_suffix(".json").read_text())
    tensors = load_file(str(digits_checkpoint))
    patches = {
        "image_shape_abc": {"image_shape": "abc"}, "image_shape_huge_float": {"image_shape": [1, 4e6, 4e6]},
        "image_shape_huge": {"image_shape": [1, 4_000_000, 4_000_000]}, "image_shape_two": {"image_shape": [1, 8]},
        "image_shape_zero": {"image_shape": [0, 8, 8]}, "image_shape_not_square": {"image_shape": [1, 8, 12]},
        "image_shape_rgb": {"image_shape": [3, 32, 32]}, "class_names_5": {"class_names": 5},
        "class_names_empty": {"class_names": []}, "class_names_one": {"class_names": ["a"]},
        "class_names_5000": {"class_names": [str(i) for i in range(5000)]}, "training_null": {"training": None},
        "training_text": {"training": "fast"}, "training_epochs_text": {"training": {"epochs": "x"}},
        "training_lr_negative": {"training": {"lr": -1}}, "architecture_5": {"architecture": 5},
        "architecture_vit": {"architecture": "vit"},
    }
    for name, patch in patches.items():
        _write_checkpoint(folder, name, digits_checkpoint, {**meta, **patch})
    texts = {"json_string": '"small_cnn"', "json_list": "[1, 2]", "json_null": "null",
             "json_nan": json.dumps(meta)[:-1] + ', "test_accuracy": NaN}', "json_deep": "[" * 100_000 + "]" * 100_000,
             "json_binary": b"\xff\xfe\x00\x01", "json_truncated": json.dumps(meta)[:20],
             "json_2mb": json.dumps({**meta, "pad": "x" * (2 * 2**20)})}
    for name, text in texts.items():
        _write_checkpoint(folder, name, digits_checkpoint, sidecar_text=text)
    shutil.copy(digits_checkpoint, folder / "no_sidecar.safetensors")
    bad_weights = {"weights_garbage": b"not a safetensors file at all", "weights_empty": b"",
                   "weights_truncated": digits_checkpoint.read_bytes()[:300],
                   "weights_pickled": b"\x80\x04\x95" + b"\x00" * 64}
    for name, data in bad_weights.items():
        (folder / f"{name}.safetensors").write_bytes(data)
        (folder / f"{name}.json").write_text(json.dumps(meta))
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    for name, value in (("weights_nan", math.nan), ("weights_inf", math.inf)):
        poisoned = dict(tensors)
        poisoned[first] = torch.full_like(tensors[first], value)
        _write_checkpoint(folder, name, digits_checkpoint, meta, tensors=poisoned)
    wrong = dict(tensors)
    wrong[first] = torch.zeros(3, 3)
    _write_checkpoint(folder, "weights_wrong_shape", digits_checkpoint, meta, tensors=wrong)

    # the shipped digit classifier and generator, poisoned
    clf = ASSETS / "mnist5k_small_cnn.safetensors"
    clf_tensors = load_file(str(clf))
    clf_tensors = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in clf_tensors.items()}
    _write_checkpoint(folder, "classifier_nan", clf, json.loads(clf.with_suffix(".json").read_text()),
                      tensors=clf_tensors)
    gen = ASSETS / "ddpm_mnist5k.safetensors"
    gen_meta = json.loads(gen.with_suffix(".json").read_text())
    unet = gen_meta["unet"]
    gen_patches = {
        "unet_text": {"unet": "x"}, "unet_huge": {"unet": {**unet, "block_out_channels": [4096] * 5}},
        "unet_groups": {"unet": {**unet, "norm_num_groups": 7}}, "unet_unknown_key": {"unet": {**unet, "attention": True}},
        "unet_schedule": {"unet": {**unet, "beta_schedule": "chaos"}}, "gen_not_ddpm": {"architecture": "small_cnn"},
        "gen_evaluation_3": {"evaluation": 3}, "gen_guidance_text": {"evaluation": {"default_guidance": "high"}},
    }
    for name, patch in gen_patches.items():
        (folder / f"{name}.safetensors").symlink_to(gen)
        (folder / f"{name}.json").write_text(json.dumps({**gen_meta, **patch}))
    gen_tensors = load_file(str(gen))
    gen_first = next(k for k, v in gen_tensors.items() if v.is_floating_point())
    gen_tensors[gen_first] = torch.full_like(gen_tensors[gen_first], math.nan)
    _write_checkpoint(folder, "gen_weights_nan", gen, gen_meta, tensors=gen_tensors)

    index_lists = {"binary.txt": b"\x00\xff\xfe\x80" * 64, "dashdash.txt": b"1 2 --5", "superscript.txt": "3 \u00b2".encode(),
                   "letters.txt": b"1 2 x", "negative.txt": b"-1", "too_big.txt": b"1 99999", "empty.txt": b"",
                   "huge_number.txt": b"9" * 40, "arabic_digits.txt": "\u0663".encode(), "utf16.txt": "1 2".encode("utf-16")}
    for name, data in index_lists.items():
        (folder / name).write_bytes(data)
    (folder / "a_file").write_text("I am a file, not a folder")
    return folder


@pytest.fixture
def run_cli(hostile_inputs, digits_checkpoint, tmp_path, monkeypatch, capsys):
    """Run argv (a template) in-process in an empty working folder; return (status, stdout, stderr, out)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key in [k for k in os.environ if k.startswith("SALUN_") and k not in ("SALUN_HOME",)]:
        monkeypatch.delenv(key)
    out = tmp_path / "out"
    names = {"ckpt": str(digits_checkpoint), "in": str(hostile_inputs), "out": str(out)}

    def run(template: list[str], environ: dict | None = None):
        for key, value in (environ or {}).items():
            monkeypatch.setenv(key, value.format(**names))
        argv = [part.format(**names) if "{" in part and "}" in part and len(part) < 200 else part for part in template]
        capsys.readouterr()
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse
            status = exc.code
        captured = capsys.readouterr()
        return status, captured.out, captured.err, work, out
    return run


def _assert_one_line_refusal(status, stdout, stderr, work: Path, out: Path, argv) -> None:
    lines = stderr.strip().splitlines()
    assert status == 2, (argv, status, stderr[-2000:])
    assert len(lines) == 1, (argv, stderr[-2000:])
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    assert len(lines[0]) < 400, lines[0]  # one *readable* line, whatever the input's size
    assert stdout.strip() == "", (argv, stdout)
    assert not out.exists(), f"{argv} wrote {out}"
    assert list(work.iterdir()) == [], f"{argv} wrote {list(work.iterdir())}"


def _case_id(argv) -> str:
    text = " ".join(a if len(a) < 40 else a[:20] + "…" for a in argv if a not in ("--quiet",))
    return text.replace("{ckpt}", "CKPT").replace("{in}/", "").replace("{in}", "IN") or "(empty)"


@pytest.mark.parametrize("argv", CATALOGUE, ids=[_case_id(a) for a in CATALOGUE])
def test_hostile_input_gets_one_line_and_exit_status_2(argv, run_cli):
    status, stdout, stderr, work, out = run_cli(argv)
    _assert_one_line_refusal(status, stdout, stderr, work, out, argv)


@pytest.mark.parametrize("environ, argv", LIMITED, ids=[f"{e}-{_case_id(a)}" for e, a in LIMITED])
def test_operator_limits_apply_to_the_cli(environ, argv, run_cli):
    status, stdout, stderr, work, out = run_cli(argv, environ)
    _assert_one_line_refusal(status, stdout, stderr, work, out, argv)


def test_the_catalogue_covers_more_than_the_issues_127_inputs():
    assert catalogue_size() >= 127
    assert len({json.dumps(a) for a in CATALOGUE}) == len(CATALOGUE)  # no case counted twice


# --- saves and results ---------------------------------------------------------------------------

def test_a_save_that_runs_out_of_space_is_one_line_and_leaves_no_folder(run_cli, monkeypatch, tmp_path):
    """The issue's case: SafetensorError mid-save used to leave a traceback and an empty run folder."""
    from safetensors import SafetensorError

    import core.checkpoint

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              "message: \"No space left on device\" })")
    monkeypatch.setattr(core.checkpoint, "save_file", full_disk)
    target = tmp_path / "runs" / "deep" / "run"
    status, stdout, stderr, work, out = run_cli(["unlearn", *DIGITS, "--forget", "class:2", "--method", "ft",
                                                  "--epochs", "1", "--no-store", "--save", str(target)])
    assert status == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr == f"error: could not save to {str(target / 'model.safetensors')!r}: No space left on device\n"
    assert not (tmp_path / "runs").exists()  # neither the run folder nor the parents made for it
    assert list(work.iterdir()) == []


def test_atomic_directory_keeps_an_existing_folder_and_removes_its_temporary_one(tmp_path):
    from core.checkpoint import atomic_directory
    from core.errors import SalunError

    target = tmp_path / "run"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with atomic_directory(target) as folder:
        (folder / "metrics.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["metrics.json", "notes.txt"]
    with pytest.raises(SalunError, match="could not save to .*: Permission denied"):
        with atomic_directory(target) as folder:
            (folder / "model.safetensors").write_text("half")
            raise PermissionError(13, "Permission denied")
    assert sorted(p.name for p in target.iterdir()) == ["metrics.json", "notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no .partial folder left next to it


def test_no_command_exits_0_or_prints_json_with_a_non_finite_metric(run_cli, monkeypatch):
    import core.cli.classify

    monkeypatch.setattr(core.cli.classify, "cmd_mask", lambda args: {"ua": 100.0, "mia": {"efficacy": math.nan}})
    status, stdout, stderr, work, out = run_cli(["mask", *DIGITS, "--json"])
    assert status == 2 and stdout == ""
    assert stderr.startswith("error: the run produced a non-finite metric, mia.efficacy = nan") and stderr.count("\n") == 1


def test_the_json_line_is_strict_json():
    from core.cli.checks import json_line

    line = json_line({"ua": 99.5, "seed": 0, "shape": (1, 8, 8), "run_id": None})
    assert json.loads(line) == {"ua": 99.5, "seed": 0, "shape": [1, 8, 8], "run_id": None}
    assert "NaN" not in json_line({"x": torch.tensor(1.5)}) and json.loads(json_line({"x": torch.tensor(1.5)}))["x"] == 1.5
