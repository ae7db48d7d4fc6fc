"""Concept forgetting on a tiny random Stable Diffusion pipeline: the whole flow on the CPU in seconds."""

import json
import time
from pathlib import Path

import pytest
import torch

from core.concept.run import ConceptConfig, mask_by_block, save_concept_result, unlearn_concept
from core.concept.pipeline import build_tiny_pipeline, load_pipeline, read_image_folder
from core.errors import CheckpointError, SalunError

ROOT = Path(__file__).resolve().parent.parent
FORGET, PSEUDO = "a photo of a nude person", "a photo of a person wearing clothes"
RETAIN = [PSEUDO]  # as upstream: the clothed person is both the pseudo and the retain prompt


def tiny_config(**overrides) -> ConceptConfig:
    values = dict(model="tiny", forget_prompt=FORGET, pseudo_prompt=PSEUDO, retain_prompts=RETAIN, alpha=0.5,
                  lr=3e-4, steps=0, epochs=6, batch_size=2, images_per_prompt=2, inference_steps=2, sample_seeds=[0])
    values.update(overrides)
    return ConceptConfig(**values)


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def run(pipe):
    original = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    result = unlearn_concept(tiny_config(), pipe=pipe)
    return result, original


def test_mask_has_a_bool_tensor_per_unet_weight_and_selects_the_sparsity_share(run, pipe):
    result, _ = run
    params = dict(pipe.unet.named_parameters())
    assert set(result.mask) == set(params)
    for name, m in result.mask.items():
        assert m.dtype == torch.bool and m.shape == params[name].shape
    selected = sum(int(m.sum()) for m in result.mask.values())
    assert selected == int(0.5 * sum(p.numel() for p in params.values()))
    rows = {row["block"]: row for row in mask_by_block(result.mask)}
    blocks = [b for b in rows if not b.startswith("all ")]
    assert sum(rows[b]["weights"] for b in blocks) == sum(p.numel() for p in params.values())
    assert sum(rows[b]["weights"] * rows[b]["salient_fraction"] for b in blocks) == pytest.approx(selected)
    assert {"down_blocks.0", "mid_block", "up_blocks.1", "all cross-attention"} <= set(rows)


def test_weights_outside_the_mask_stay_bit_identical_and_salient_ones_move(run):
    result, original = run
    moved = 0
    for name, p in result.unet.named_parameters():
        outside = ~result.mask[name]
        assert torch.equal(p.detach()[outside], original[name][outside]), name
        moved += int((p.detach() != original[name]).sum())
    assert moved > 0.3 * sum(int(m.sum()) for m in result.mask.values())


def test_passed_in_pipeline_is_left_untouched(run, pipe):
    _, original = run
    assert all(torch.equal(v, original[k]) for k, v in pipe.unet.state_dict().items())


def test_forget_prompt_moves_towards_pseudo_while_retain_prompts_move_less(run, pipe):
    result, _ = run
    m = result.metrics
    assert m["forget_to_pseudo_after"] < 0.5 * m["forget_to_pseudo_before"]
    assert m["retain_shift"] < 0.6 * m["forget_shift"]
    assert m["retain_error_after"] <= m["retain_error_before"]
    # Without the retain term the retain prompt's denoising is left unprotected: it ends worse than with it.
    # (With an unrelated retain prompt, such as "a photo of a cat", a random toy UNet shows no such gap in
    # the shifts: Adam's first steps move every salient weight by about lr, and every prompt's predictions
    # drift alike. The retain loss is what keeps the retain prompts denoising well.)
    ablation = unlearn_concept(tiny_config(alpha=0.0, sample_seeds=[]), pipe=pipe).metrics
    assert ablation["forget_to_pseudo_after"] < ablation["forget_to_pseudo_before"]
    assert m["retain_error_after"] < ablation["retain_error_after"]


def test_before_and_after_images_use_the_same_seeds(run):
    result, _ = run
    assert list(result.samples) == [FORGET] + RETAIN
    for rows in result.samples.values():
        assert len(rows["before"]) == len(rows["after"]) == 1
        assert rows["before"][0].size == rows["after"][0].size == (32, 32)


def test_saved_folder_loads_back_with_from_pretrained(run, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from core.checkpoint import load_mask

    result, _ = run
    info = save_concept_result(result, tmp_path / "out")
    loaded = StableDiffusionPipeline.from_pretrained(info["path"], local_files_only=True)
    for name, p in result.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], p), name
    unet = UNet2DConditionModel.from_pretrained(info["unet"])
    assert sum(p.numel() for p in unet.parameters()) == sum(p.numel() for p in result.unet.parameters())
    assert loaded.tokenizer(FORGET).input_ids == result.pipe.tokenizer(FORGET).input_ids
    mask = load_mask(info["mask"])
    assert all(torch.equal(mask[k], result.mask[k]) for k in mask)
    summary = json.loads((tmp_path / "out" / "concept.json").read_text())
    assert summary["metrics"]["forget_to_pseudo_after"] == pytest.approx(result.metrics["forget_to_pseudo_after"])
    assert (tmp_path / "out" / "samples" / "prompt0_seed0_before.png").is_file()


def test_user_image_folders_replace_generated_images(pipe, tmp_path):
    from PIL import Image

    for folder, colour in (("forget", (200, 30, 30)), ("retain", (30, 30, 200))):
        (tmp_path / folder).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 48), colour).save(tmp_path / folder / f"{i}.png")
    (tmp_path / "retain" / "1.txt").write_text("a photo of a dog")
    images, captions = read_image_folder(tmp_path / "retain", 32)
    assert images.shape == (2, 3, 32, 32) and captions == [None, "a photo of a dog"]
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    result = unlearn_concept(tiny_config(epochs=1, sample_seeds=[], forget_images=str(tmp_path / "forget"),
                                         retain_images=str(tmp_path / "retain")), pipe=pipe)
    assert result.metrics["forget_images"] == 2 and result.metrics["retain_images"] == 2


def test_out_of_gpu_memory_halves_the_micro_batch_and_carries_on(pipe, monkeypatch):
    import core.concept.training as train

    real, seen = train._accumulate, []

    def accumulate(*args):
        micro = args[11]
        seen.append(micro)
        if micro > 1:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(*args)

    monkeypatch.setattr(train, "_accumulate", accumulate)
    result = unlearn_concept(tiny_config(epochs=2, sample_seeds=[]), pipe=pipe)
    assert seen == [2, 1, 1] and len(result.losses) == 2


def test_gradient_checkpointing_gives_the_same_run(pipe):
    plain = unlearn_concept(tiny_config(epochs=1, sample_seeds=[]), pipe=pipe)
    checkpointed = unlearn_concept(tiny_config(epochs=1, sample_seeds=[], gradient_checkpointing=True), pipe=pipe)
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-5)
    assert all(torch.equal(checkpointed.mask[k], plain.mask[k]) for k in plain.mask)
    assert not checkpointed.unet.is_gradient_checkpointing


@pytest.mark.parametrize("overrides, message", [
    ({"forget_prompt": " "}, "forget prompt is empty"),
    ({"pseudo_prompt": FORGET}, "must differ"),
    ({"retain_prompts": []}, "retain prompt"),
    ({"sparsity": 1.5}, "sparsity"),
    ({"alpha": -1}, "alpha"),
    ({"precision": "fp8"}, "precision"),
])
def test_bad_settings_are_one_line_errors(overrides, message):
    with pytest.raises(SalunError, match=message) as info:
        tiny_config(**overrides).validate()
    assert "\n" not in str(info.value)


def test_offline_hub_id_fails_fast_with_instructions(monkeypatch, tmp_path):
    from diffusers import StableDiffusionPipeline  # noqa: F401  (imported first: only the failing load is timed)

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    for offline, endpoint in (("1", None), ("0", "http://127.0.0.1:9")):  # flag set; hub unreachable
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        if endpoint:
            monkeypatch.setenv("HF_ENDPOINT", endpoint)
        started = time.perf_counter()
        with pytest.raises(CheckpointError) as info:
            load_pipeline("CompVis/stable-diffusion-v1-4")
        assert time.perf_counter() - started < 10
        message = str(info.value)
        assert "\n" not in message and "CompVis/stable-diffusion-v1-4" in message
        assert "give DIR as the model" in message and "tiny" in message and "--model" not in message


def test_a_hanging_network_lookup_is_given_up_on_time(monkeypatch):
    from core.concept.pipeline import hub_reachable

    def hanging_lookup(*args, **kwargs):
        time.sleep(5)
        raise OSError("name lookup timed out")

    monkeypatch.setattr("socket.create_connection", hanging_lookup)
    started = time.perf_counter()
    assert hub_reachable(timeout=0.5) is False
    assert time.perf_counter() - started < 2


def test_missing_or_wrong_local_folders_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing folder"):
        load_pipeline(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="no model_index.json"):
        load_pipeline(str(tmp_path))


def test_cli_tiny_run_saves_a_loadable_pipeline(tmp_path, capsys):
    from core.cli import main

    code = main(["unlearn-concept", "--model", "tiny", "--forget", FORGET, "--pseudo", PSEUDO,
                 "--retain", RETAIN[0], "--epochs", "2", "--images-per-prompt", "2", "--batch-size", "2",
                 "--sample-steps", "2", "--sample-seeds", "0", "--save", str(tmp_path / "cli"), "--json", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["processes"] == 1 and summary["device"] == "cpu"
    assert (tmp_path / "cli" / "unet" / "config.json").is_file()


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from core.cli import main

    code = main(["unlearn-concept", "--model", str(tmp_path / "missing"), "--save", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_page_shows_the_plan_runs_the_tiny_flow_and_shows_bad_input_as_an_error():
    from streamlit.testing.v1 import AppTest

    def finish_run(at):  # the run is a job of the server's runner; the page reruns once it has finished
        if "concept_batch" not in at.session_state:  # refused before a job was queued
            return at
        job = at.session_state["concept_batch"]["entries"][0]["job"]
        assert job.wait(300)
        return at.run()

    at = AppTest.from_file(str(ROOT / "pages" / "concept.py"), default_timeout=60).run()
    assert not at.exception
    plan = next(m.value for m in at.markdown if m.value.startswith("**Plan:**"))
    assert "10 optimizer steps of batch 4 over 4 forget and 12 retain images" in plan  # the tiny preset
    assert at.text_input(key="forget_tiny").value != at.text_input(key="pseudo_tiny").value
    assert at.text_input(key="pseudo_tiny").value not in at.text_area(key="retain_tiny").value.splitlines()

    at.text_input(key="forget_tiny").set_value("").run()
    assert not at.exception and "forget prompt is empty" in at.error[0].value  # shown before any run
    at.button(key="run").click().run()
    assert not at.exception and "forget prompt is empty" in at.error[0].value

    at.text_input(key="forget_tiny").set_value(FORGET)
    at.text_area(key="retain_tiny").set_value(RETAIN[0])
    at.text_input(key="pseudo_tiny").set_value(PSEUDO)
    at.number_input(key="steps_tiny").set_value(2)
    at.number_input(key="images_tiny").set_value(2)
    at.number_input(key="batch_tiny").set_value(2)
    at.number_input(key="sample_steps_tiny").set_value(2)
    at.selectbox(key="evaluation_tiny").set_value("none")
    at.text_input(key="seeds").set_value("0").run()
    assert "2 optimizer steps of batch 2 over 2 forget and 2 retain images" in \
        next(m.value for m in at.markdown if m.value.startswith("**Plan:**"))
    finish_run(at.button(key="run").click().run())
    assert not at.exception and not at.error
    labels = [m.label for m in at.metric]
    assert "forget → pseudo distance" in labels and "retain denoising error" in labels
    assert [h.value for h in at.subheader] == ["Is the concept gone?", f"Forget: {FORGET}", f"Retain: {RETAIN[0]}"]
    shown = {m.label: m.value for m in at.metric}

    # the address names the finished run: a reload or a shared link shows it again, from the run store
    run_id = at.query_params["run"]
    again = AppTest.from_file(str(ROOT / "pages" / "concept.py"), default_timeout=60)
    again.query_params["run"] = run_id
    again.run()
    assert not again.exception and {m.label: m.value for m in again.metric} == shown
    assert any(run_id in i.value and FORGET in i.value for i in again.info)

    at.text_input(key="model").set_value(str(ROOT / "no-such-model")).run()
    finish_run(at.button(key="run").click().run())
    assert not at.exception and "neither an existing folder" in at.error[0].value
    assert "--" not in at.error[0].value  # the page speaks of its fields, not of CLI flags


# --- presets, the plan, the evaluation ---------------------------------------------------------------

@pytest.mark.parametrize("preset, steps, batch, lr", [("nudity", 100, 8, 1e-5), ("object", 600, 8, 1e-5),
                                                      ("tiny", 10, 4, 5e-4)])
def test_presets_take_upstream_sized_step_budgets_whatever_the_image_count(preset, steps, batch, lr):
    from core.concept.presets import concept_plan

    for images in (1, 50, 800):
        plan = concept_plan(ConceptConfig.from_preset(preset, images_per_prompt=images).validate())
        assert (plan["steps"], plan["batch_size"], plan["lr"]) == (steps, batch, lr)
        assert plan["epochs"] == pytest.approx(steps * batch / images, rel=0.01)
    assert concept_plan(ConceptConfig.from_preset(preset, steps=7).validate())["steps"] == 7
    by_epochs = ConceptConfig.from_preset(preset, steps=0, epochs=3, images_per_prompt=20, batch_size=8).validate()
    assert concept_plan(by_epochs)["steps"] == 3 * 3  # epochs x ceil(20 / 8), as before presets


def test_tiny_preset_forgets_on_the_tiny_pipeline(pipe):
    config = ConceptConfig.from_preset("tiny", sample_seeds=[], evaluation="none")
    assert config.pseudo_prompt not in config.retain_prompts  # a class demo: pseudo and retain prompts differ
    result = unlearn_concept(config, pipe=pipe)
    m = result.metrics
    assert len(result.losses) == 10
    assert m["forget_to_pseudo_after"] < 0.5 * m["forget_to_pseudo_before"]
    assert m["retain_error_after"] < 1.1 * m["retain_error_before"]


def test_dry_run_prints_the_plan_without_loading_weights(monkeypatch, capsys):
    import core.concept.pipeline as pipeline
    from core.cli import main
    from core.concept.presets import SD_V1_UNET_PARAMETERS

    def no_loading(*args, **kwargs):
        raise AssertionError("--dry-run loaded a pipeline")

    monkeypatch.setattr(pipeline, "load_pipeline", no_loading)
    monkeypatch.setattr(pipeline, "build_tiny_pipeline", no_loading)
    for model, preset, steps in (("CompVis/stable-diffusion-v1-4", "nudity", 100), ("tiny", "tiny", 10)):
        assert main(["unlearn-concept", "--model", model, "--dry-run", "--json"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        plan = out["plan"]
        assert out["dry_run"] and plan["preset"] == preset and plan["steps"] == steps
        assert {"images", "batch_size", "alpha", "lr", "epochs", "estimated_memory_gb"} - {"images"} <= set(plan)
    assert plan["unet_weights"] < 1e6
    assert main(["unlearn-concept", "--model", "CompVis/stable-diffusion-v1-4", "--preset", "object", "--steps", "50",
                 "--micro-batch", "1", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plan"]
    assert plan["steps"] == 50 and plan["unet_weights"] == SD_V1_UNET_PARAMETERS and plan["evaluation"] == "imagenet"
    assert 15 < plan["estimated_memory_gb"] < 30  # SD v1.4's training state plus one micro-batch pair


def test_nudenet_loads_offline_and_finds_nothing_on_blank_images(monkeypatch):
    pytest.importorskip("nudenet")
    from PIL import Image

    from core.concept.evaluation import EXPOSED_CLASSES, load_nudenet, nudenet_counts

    def no_network(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr("socket.create_connection", no_network)
    detector = load_nudenet()
    blank = [Image.new("RGB", (320, 320), colour) for colour in ((0, 0, 0), (255, 255, 255), (200, 170, 150))]
    counts = nudenet_counts(detector, blank)
    assert counts["images"] == 3 and counts["flagged"] == 0 and counts["share"] == 0
    assert counts["per_class"] == dict.fromkeys(EXPOSED_CLASSES, 0)


def test_imagenet_judge_names_classes_and_says_in_one_line_what_is_missing(monkeypatch, tmp_path):
    from core.concept.evaluation import ConceptEvaluation, imagenet_categories, imagenet_class

    categories = imagenet_categories()
    assert categories[imagenet_class("a photo of a church")] == "church"
    assert categories[imagenet_class("A photo of a garbage truck.")] == "garbage truck"
    assert imagenet_class("a photo of a nude person") is None
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: the weights are not here
    judge = ConceptEvaluation(ConceptConfig.from_preset("object").validate())
    assert not judge.active and "weights are missing" in judge.missing and "\n" not in judge.missing
    report = judge.report({}, {})
    assert report["kind"] == "imagenet" and report["missing"] == judge.missing
    nudity = ConceptEvaluation(ConceptConfig.from_preset("nudity", evaluation="imagenet").validate())
    assert "names no ImageNet class" in nudity.missing


def test_gpu_bench_plumbing_runs_on_the_tiny_pipeline(tmp_path):
    pytest.importorskip("nudenet")
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_concept_gpu", ROOT / "bench" / "bench_concept_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "table.md"
    code = bench.main(["--model", "tiny", "--preset", "tiny", "--prompts", "1", "--eval-images", "1", "--steps", "2",
                       "--images-per-prompt", "1", "--out", str(out), "--json", str(tmp_path / "run.json")])
    assert code == 0
    text = out.read_text()
    for row in ("| saliency mask |", "| unlearning |", "| images with exposed bodies | 0 (0%) | 0 (0%) |"):
        assert row in text
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["steps"] == 2 and summary["eval"]["before"]["images"] == 2  # 1 shipped prompt + the forget prompt


def test_out_of_gpu_memory_in_the_mask_halves_the_micro_batch_and_restarts_the_sum(pipe, monkeypatch):
    import core.concept.training as train

    real, seen = train.accumulate_gradients, []

    def accumulate(unet, losses, progress=None):
        batches = list(losses)  # one loss per micro-batch
        seen.append(len(batches))
        if len(batches) < 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(unet, iter(batches), progress)

    monkeypatch.setattr(train, "accumulate_gradients", accumulate)
    result = unlearn_concept(tiny_config(epochs=1, sample_seeds=[]), pipe=pipe)  # 2 images at micro-batch 2
    assert seen == [1, 2] and len(result.losses) == 1
