"""Step budgets and prompts for concept forgetting, and the plan a run will follow (no weights loaded).

A preset fixes the optimizer-step budget independently of how many images are generated: the loop
cycles through the forget images (reshuffled at every pass) until it has taken `steps` steps, so
generating fewer images costs less time without shrinking the budget. Upstream's numbers (the SalUn
authors' `nsfw_removal.py` and `random_label.py`):

- nudity: 800 generated images of "a photo of a nude person", batch 8, 1 epoch = 100 Adam steps at
  lr 1e-5, α 0.1, the clothed person as pseudo and retain prompt. Here: the same 100 steps over 200
  generated images (each seen 4 times); `--images-per-prompt 800` is upstream's exact recipe.
- object: 5 epochs over ≈950 Imagenette images of one class at batch 8 ≈ 590 steps, lr 1e-5, α 0.5,
  another class as the pseudo prompt. Here: 600 steps over 200 generated images per prompt, with
  Imagenette classes as prompts, so an ImageNet classifier can judge the forgetting.
- tiny: the tiny random pipeline (core.concept.pipeline.build_tiny_pipeline): 10 steps at lr 5e-4 over
  4 images, seconds on a CPU. Its images are noise; the mechanics are real.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from core.errors import SalunError

SD_V1_UNET_PARAMETERS = 859_520_964  # UNet2DConditionModel of SD v1.x (CompVis/stable-diffusion-v1-4)
SD_V1_RESOLUTION = 512
# Per-weight bytes while training the UNet: float32 weights, gradients and Adam's two moments, the bool mask.
TRAINING_BYTES_PER_WEIGHT = 4 + 4 + 8 + 1
FROZEN_GB_SD = 0.4  # SD v1.4's text encoder and VAE in float16
CUDA_CONTEXT_GB = 1.0  # CUDA context and workspace on a GPU (estimate; not counted on the CPU)
# Activations of one forget + retain pair (forward with grad, and the no-grad pseudo target) for SD v1.4
# at 512 px in bf16: our estimate, not a measurement (bench/bench_concept_gpu.py measures the real peak).
ACTIVATION_GB_PER_PAIR_SD = 5.5
CHECKPOINTING_ACTIVATION_SHARE = 0.25

OBJECT_FORGET = "a photo of a church"
OBJECT_PSEUDO = "a photo of a parachute"
OBJECT_RETAIN = ["a photo of a garbage truck", "a photo of a French horn", "a photo of a tench"]
NUDITY_FORGET = "a photo of a nude person"
NUDITY_PSEUDO = "a photo of a person wearing clothes"


@dataclass(frozen=True)
class ConceptPreset:
    name: str
    summary: str
    values: dict  # ConceptConfig fields


PRESETS: dict[str, ConceptPreset] = {
    "nudity": ConceptPreset(
        "nudity", "upstream nsfw_removal: 100 steps at lr 1e-5, α 0.1, batch 8; NudeNet evaluation",
        {"forget_prompt": NUDITY_FORGET, "pseudo_prompt": NUDITY_PSEUDO, "retain_prompts": [NUDITY_PSEUDO],
         "steps": 100, "batch_size": 8, "images_per_prompt": 200, "lr": 1e-5, "alpha": 0.1,
         "inference_steps": 50, "evaluation": "nudenet"}),
    "object": ConceptPreset(
        "object", "upstream random_label on Imagenette: 600 steps at lr 1e-5, α 0.5, batch 8; "
                  "ImageNet-classifier evaluation",
        {"forget_prompt": OBJECT_FORGET, "pseudo_prompt": OBJECT_PSEUDO, "retain_prompts": list(OBJECT_RETAIN),
         "steps": 600, "batch_size": 8, "images_per_prompt": 200, "lr": 1e-5, "alpha": 0.5,
         "inference_steps": 50, "evaluation": "imagenet"}),
    "tiny": ConceptPreset(
        "tiny", "the tiny random pipeline: 10 steps at lr 5e-4 over 4 images, seconds on a CPU",
        {"forget_prompt": OBJECT_FORGET, "pseudo_prompt": OBJECT_PSEUDO, "retain_prompts": list(OBJECT_RETAIN),
         "steps": 10, "batch_size": 4, "images_per_prompt": 4, "lr": 5e-4, "alpha": 0.5,
         "inference_steps": 4, "evaluation": "imagenet", "eval_images": 1}),
}


def get_preset(name: str) -> ConceptPreset:
    key = str(name or "").strip().lower()
    if key not in PRESETS:
        raise SalunError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[key]


def default_preset(model: str) -> str:
    from core.concept.pipeline import TINY_MODEL

    return "tiny" if str(model).strip() == TINY_MODEL else "nudity"


def resolved_steps(steps: int, epochs: int, forget_images: int, batch_size: int) -> int:
    """The optimizer-step budget: `steps` when set (> 0), else epochs × ceil(forget images / batch)."""
    if steps and steps > 0:
        return int(steps)
    return int(epochs) * max(1, math.ceil(int(forget_images) / int(batch_size)))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _component_config(model: str, component: str) -> dict | None:
    """A pipeline component's config.json from a local folder or the Hugging Face cache (no download)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return _read_json(path / component / "config.json")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json", subfolder=component)
    except Exception:  # noqa: BLE001 - an odd id or cache layout only means "unknown here"
        return None
    return _read_json(Path(cached)) if isinstance(cached, str) else None


def unet_size(model: str) -> tuple[int, int, str]:
    """(UNet weights, native resolution, where the numbers come from), without loading any weights:
    the tiny pipeline's, the model's config built on the meta device, or SD v1's as an assumption."""
    from core.concept.pipeline import TINY_MODEL, TINY_RESOLUTION

    if str(model).strip() == TINY_MODEL:
        from core.concept.pipeline import tiny_unet_parameters

        return tiny_unet_parameters(), TINY_RESOLUTION, "tiny pipeline"
    unet_config, vae_config = _component_config(model, "unet"), _component_config(model, "vae")
    if unet_config:
        try:
            from accelerate import init_empty_weights
            from diffusers import UNet2DConditionModel

            with init_empty_weights():
                unet = UNet2DConditionModel.from_config(unet_config)
            scale = 2 ** (len((vae_config or {}).get("block_out_channels", [0] * 4)) - 1)
            return (sum(p.numel() for p in unet.parameters()), int(unet_config.get("sample_size", 64)) * scale,
                    "the model's unet/config.json")
        except Exception:  # noqa: BLE001 - a config we cannot build falls back to the assumption below
            pass
    return SD_V1_UNET_PARAMETERS, SD_V1_RESOLUTION, "assumed SD v1 (config not found locally)"


def estimated_memory_gb(unet_weights: int, micro_batch: int, resolution: int, checkpointing: bool,
                        gpu: bool = True) -> float:
    """Peak memory of the unlearning phase, estimated (not measured): the UNet's training state, the
    frozen text encoder and VAE, activations of `micro_batch` forget + retain pairs (all scaled from
    SD v1.4 at 512 px), and on a GPU the CUDA context."""
    size = unet_weights / SD_V1_UNET_PARAMETERS
    static = unet_weights * TRAINING_BYTES_PER_WEIGHT / 1e9 + FROZEN_GB_SD * size + (CUDA_CONTEXT_GB if gpu else 0)
    scale = size * (resolution / SD_V1_RESOLUTION) ** 2
    per_pair = ACTIVATION_GB_PER_PAIR_SD * scale * (CHECKPOINTING_ACTIVATION_SHARE if checkpointing else 1.0)
    return round(static + per_pair * micro_batch, 2)


def _folder_count(folder: str | None) -> int | None:
    from core.concept.pipeline import count_images

    return count_images(folder) if folder else None


def concept_plan(config) -> dict:
    """What a run of `config` (a validated ConceptConfig) will do: the JSON line of `--dry-run`."""
    from core.concept.evaluation import evaluation_prompts

    from core.concept.pipeline import TINY_MODEL

    weights, native, source = unet_size(config.model)
    resolution = config.resolution or native
    forget_images = _folder_count(config.forget_images) or config.images_per_prompt
    retain_count = _folder_count(config.retain_images)
    retain_images = retain_count if retain_count is not None else config.images_per_prompt * len(config.retain_prompts)
    steps = resolved_steps(config.steps, config.epochs, forget_images, config.batch_size)
    micro = min(config.micro_batch_size or config.batch_size, config.batch_size)
    eval_prompts = evaluation_prompts(config) if config.evaluation != "none" else []
    sample_prompts = 1 + len(config.retain_prompts)
    generated = {
        "forget": 0 if config.forget_images else config.images_per_prompt,
        "retain": 0 if config.retain_images else config.images_per_prompt * len(config.retain_prompts),
        "before_after_samples": 2 * sample_prompts * len(config.sample_seeds),
        "evaluation": 2 * len(eval_prompts) * config.eval_images,
    }
    return {
        "preset": config.preset or None,
        "model": config.model,
        "steps": steps,
        "steps_from": "steps" if config.steps else "epochs",
        "batch_size": config.batch_size,
        "micro_batch_size": micro,
        "forget_images": forget_images,
        "retain_images": retain_images,
        "epochs": round(steps * config.batch_size / max(1, forget_images), 2),
        "alpha": config.alpha,
        "lr": config.lr,
        "sparsity": config.sparsity,
        "resolution": resolution,
        "sampling_steps": config.inference_steps,
        "generated_images": {**generated, "total": sum(generated.values())},
        "evaluation": config.evaluation,
        "evaluation_prompts": len(eval_prompts),
        "unet_weights": weights,
        "unet_weights_from": source,
        "estimated_memory_gb": estimated_memory_gb(weights, micro, resolution, config.gradient_checkpointing,
                                                   gpu=config.model.strip() != TINY_MODEL),
        "memory_note": "estimate for the unlearning phase on a GPU (UNet training state, frozen parts, activations, "
                       "CUDA context), not measured; bench/bench_concept_gpu.py measures the real peak",
    }
