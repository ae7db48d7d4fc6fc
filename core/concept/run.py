"""SalUn concept forgetting on Stable Diffusion: saliency mask over the UNet, then masked unlearning.

1. Forget latents: images of the forget prompt (made by the original model, or the user's folder);
   retain latents: images of each retain prompt, each kept with its own prompt.
2. Mask: |Σ ∇θ ||ε − ε̂θ(x_t)||²| over the forget latents, where ε̂θ is the guided prediction
   (1 + w)·εθ(x_t | forget) − w·εθ(x_t | "") at the upstream w = 7.5 (w = 0 is the plain conditional
   loss); the top `sparsity` share of all UNet weights, ranked globally (core.saliency).
3. Unlearning: for forget latents noised to x_t, MSE(εθ(x_t | forget), sg[εθ(x_t | pseudo)]) plus
   α × the ordinary diffusion loss on retain latents with their own prompts; Adam; only salient weights
   move, the rest are restored bit-identical after every step (core.saliency.MaskConstraint).
   The budget is a number of optimizer steps (core.concept.presets): the loop cycles through the
   forget images, reshuffled at every pass, so it does not depend on how many images were made.
4. Evaluation (core.concept.evaluation): NudeNet or an ImageNet classifier on images of evaluation
   prompts generated before and after from the same seeds.

Runs through accelerate: one CPU process as is, or several GPUs under `accelerate launch`, each process
making and training on its own share of the images, with gradients summed across processes for the
mask and averaged by DDP for the steps. On a GPU the UNet keeps float32 master weights and computes in
bf16 (fp16 with loss scaling where bf16 is missing); on the CPU everything is float32.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from core.concept.pipeline import (TINY_MODEL, default_resolution, encode_images, encode_prompts, generate,
                                   load_pipeline, read_image_folder)
from core.concept.evaluation import ConceptEvaluation, check_evaluation, eval_seeds
from core.concept.presets import get_preset
from core.concept.training import expand_batch, noised, forget_gradients, train_salun
from core.errors import SalunError, check_fraction, check_positive
from core.steps import Progress
from core.saliency import mask_fraction, saliency_mask

PhaseProgress = Callable[[str], Progress]  # phase name -> progress callback, like core.cli.ProgressBar.phase
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PROBE_TIMESTEPS = (100, 300, 500, 700, 900)  # fixed timesteps at which predictions are compared
SMALL_UNET_WEIGHTS = 5_000_000  # below this a run uses one CPU thread (measured: the tiny run is ~10x faster)


@dataclass
class ConceptConfig:
    """Everything a concept-forgetting run depends on. The defaults are the nudity preset's budget
    (upstream nsfw_removal: 100 steps) without its evaluation; `ConceptConfig.from_preset("object")`
    starts from another preset (core.concept.presets)."""

    model: str = TINY_MODEL
    forget_prompt: str = "a photo of a nude person"
    pseudo_prompt: str = "a photo of a person wearing clothes"
    retain_prompts: list[str] = field(default_factory=lambda: ["a photo of a person wearing clothes"])
    sparsity: float = 0.5
    alpha: float = 0.1            # upstream 0.1–0.5
    lr: float = 1e-5
    steps: int = 100              # optimizer steps; 0 = epochs × ceil(forget images / batch)
    epochs: int = 1               # passes over the forget images, used only when steps is 0 (upstream 1–5)
    batch_size: int = 8           # forget images (and as many retain images) per optimizer step
    micro_batch_size: int = 0     # per forward pass; 0 = the whole batch (halved automatically on GPU OOM)
    images_per_prompt: int = 200  # generated forget images, and retain images per retain prompt (reused)
    mask_guidance: float = 7.5    # w in (1 + w)·ε(forget) − w·ε(""), as upstream; 0 = conditional only
    sample_guidance: float = 7.5  # diffusers guidance_scale for generating images
    inference_steps: int = 50
    resolution: int = 0           # 0 = the model's native size (512 for SD v1.4)
    sample_seeds: list[int] = field(default_factory=lambda: [0, 1])  # before/after images, same seeds
    forget_images: str | None = None   # folder of forget images instead of generating them
    retain_images: str | None = None   # folder of retain images (captions from same-name .txt files)
    seed: int = 0
    precision: str = "auto"
    gradient_checkpointing: bool = False  # recompute UNet activations in backward: less memory, ~30% slower
    safety_checker: bool = False
    evaluation: str = "none"      # "nudenet", "imagenet" or "none" (core.concept.evaluation)
    eval_prompts: list[str] = field(default_factory=list)  # the user's, added to the judge's own prompts
    eval_images: int = 2          # images per evaluation prompt, before and after (same seeds)
    classifier_weights: str | None = None  # local ResNet-50 state dict for the ImageNet evaluation
    download: bool = False        # may the ImageNet classifier's weights be downloaded
    preset: str = ""              # the preset these values came from (for the record)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ConceptConfig":
        """A preset's values with `overrides` on top (None means "the preset's value")."""
        preset = get_preset(name)
        values = {**preset.values, **{k: v for k, v in overrides.items() if v is not None}, "preset": preset.name}
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "ConceptConfig":
        for name in ("forget_prompt", "pseudo_prompt"):
            if not str(getattr(self, name) or "").strip():
                raise SalunError(f"{name.replace('_', ' ')} is empty; give the text of a prompt")
        if self.forget_prompt.strip() == self.pseudo_prompt.strip():
            raise SalunError("the pseudo prompt must differ from the forget prompt it replaces")
        retain = [p for p in (self.retain_prompts or []) if str(p).strip()]
        if not retain and not self.retain_images:
            raise SalunError("give at least one retain prompt (or a retain image folder)")
        self.retain_prompts = [str(p).strip() for p in retain]
        check_fraction("sparsity", self.sparsity)
        if not float(self.alpha) >= 0:
            raise SalunError(f"alpha must be >= 0, got {self.alpha}")
        check_positive("lr", self.lr)
        for name in ("epochs", "batch_size", "images_per_prompt", "inference_steps", "eval_images"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("steps", "micro_batch_size", "resolution"):
            if int(getattr(self, name)) < 0:
                raise SalunError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.resolution and self.resolution % 8:
            raise SalunError(f"resolution must be a multiple of 8, got {self.resolution}")
        if not float(self.mask_guidance) >= 0:
            raise SalunError(f"mask guidance must be >= 0, got {self.mask_guidance}")
        if self.precision not in PRECISIONS:
            raise SalunError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        self.evaluation = check_evaluation(self.evaluation)
        self.eval_prompts = [str(p).strip() for p in (self.eval_prompts or []) if str(p).strip()]
        return self


@dataclass
class ConceptResult:
    config: ConceptConfig
    pipe: object                      # the original pipeline (its UNet untouched when it was passed in)
    unet: torch.nn.Module             # the unlearned UNet
    mask: dict[str, torch.Tensor]
    metrics: dict[str, float]
    samples: dict[str, dict[str, list]]  # prompt -> {"before": [images], "after": [images]}, one per seed
    losses: list[float]
    timings: dict[str, float]
    is_main_process: bool = True
    evaluation: dict = field(default_factory=lambda: {"kind": "none"})  # core.concept.evaluation report
    eval_images: dict[str, dict[str, list]] = field(default_factory=dict)  # prompt -> {"before", "after"}

    def summary(self) -> dict:
        return {"config": self.config.to_dict(), "metrics": self.metrics, "timings": self.timings,
                "eval": self.evaluation,
                "mask_fraction": mask_fraction(self.mask), "mask_by_block": mask_by_block(self.mask),
                "steps": len(self.losses), "final_loss": self.losses[-1] if self.losses else None}


def mask_by_block(mask: dict[str, torch.Tensor]) -> list[dict]:
    """Where the salient weights are: the salient share of each UNet block (down_blocks.0, mid_block, ...),
    and of all cross-attention weights (attn2, where the prompt enters) and all self-attention weights."""
    groups: dict[str, list[int]] = {}
    for name, m in mask.items():
        parts = name.split(".")
        block = ".".join(parts[:2]) if parts[0] in ("down_blocks", "up_blocks") else parts[0]
        for group in [block] + [label for key, label in (("attn2", "all cross-attention"),
                                                         ("attn1", "all self-attention")) if key in parts]:
            counts = groups.setdefault(group, [0, 0])
            counts[0] += m.numel()
            counts[1] += int(m.sum())
    order = sorted(groups, key=lambda group: group.startswith("all "))  # blocks first, in model order
    return [{"block": group, "weights": groups[group][0], "salient_fraction": groups[group][1] / groups[group][0]}
            for group in order]


def make_accelerator(precision: str = "auto"):
    """One CPU process in float32, or the GPU(s) accelerate launched us on with bf16/fp16 autocast."""
    from accelerate import Accelerator

    if not torch.cuda.is_available():
        return Accelerator(cpu=True, mixed_precision="no")
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Accelerator(mixed_precision="no" if precision == "fp32" else precision)


def unlearned_pipeline(pipe, unet):
    """The pipeline's components with `unet` swapped in (nothing is copied)."""
    from diffusers import StableDiffusionPipeline

    components = {**pipe.components, "unet": unet}
    new = StableDiffusionPipeline(**components, requires_safety_checker=False)
    new.set_progress_bar_config(disable=True)
    return new


class _Probe:
    """Noise predictions on fixed noise at PROBE_TIMESTEPS: the forget and pseudo prompts on forget
    images, the retain prompts on retain images."""

    def __init__(self, unet, scheduler, forget_x0, retain_x0, forget_emb, pseudo_emb, retain_embs, seed):
        self.unet, self.scheduler, self.seed = unet, scheduler, seed
        self.inputs = {"forget": (forget_x0, forget_emb), "pseudo": (forget_x0, pseudo_emb),
                       "retain": (retain_x0, retain_embs)}

    @torch.no_grad()
    def __call__(self) -> dict[str, torch.Tensor]:
        was_training = self.unet.training
        self.unet.eval()
        out = {}
        for name, (x0, emb) in self.inputs.items():
            generator = torch.Generator().manual_seed(self.seed)  # the same noise for every prompt
            t = torch.tensor(PROBE_TIMESTEPS).repeat_interleave(len(x0))
            x_t, noise, t = noised(self.scheduler, x0.repeat(len(PROBE_TIMESTEPS), 1, 1, 1), generator, t)
            emb = emb.repeat(len(PROBE_TIMESTEPS), 1, 1) if len(emb) == len(x0) else expand_batch(emb, len(x_t))
            out[name] = self.unet(x_t, t, emb.to(x_t.device)).sample.float().cpu()
            out[f"{name}_noise"] = noise.float().cpu()
        self.unet.train(was_training)
        return out


def _compare(before: dict, after: dict) -> dict[str, float]:
    """Mean squared distances between noise predictions on the same noisy latents: the forget prompt to
    the pseudo prompt before and after, how far the forget and retain prompts' predictions moved, and
    the retain prompts' denoising error (the diffusion loss on retain images) before and after."""
    def mse(a, b):
        return float(F.mse_loss(a, b))

    return {
        "forget_to_pseudo_before": mse(before["forget"], before["pseudo"]),
        "forget_to_pseudo_after": mse(after["forget"], after["pseudo"]),
        "forget_shift": mse(after["forget"], before["forget"]),
        "retain_shift": mse(after["retain"], before["retain"]),
        "retain_error_before": mse(before["retain"], before["retain_noise"]),
        "retain_error_after": mse(after["retain"], after["retain_noise"]),
    }


def _shard(items: list, accelerator) -> list:
    return items[accelerator.process_index::accelerator.num_processes]


def _make_latents(pipe, config, prompt, folder, seeds, resolution, accelerator, progress) -> tuple:
    """(latents, captions) of one image source: the user's folder or images generated from `prompt`."""
    if folder:
        images, captions = read_image_folder(folder, resolution)
        index = _shard(list(range(len(images))), accelerator)
        latents = encode_images(pipe, images[index]) if index else torch.zeros(0)
        return latents, [captions[i] for i in index]
    with accelerator.autocast():
        latents = generate(pipe, prompt, seeds, config.inference_steps, config.sample_guidance, resolution,
                           output_type="latent")
    if progress:
        progress(len(seeds), len(seeds), 0.0)
    return latents, [prompt] * len(seeds)


def unlearn_concept(config: ConceptConfig, pipe=None, phase_progress: PhaseProgress | None = None,
                    accelerator=None) -> ConceptResult:
    """Run SalUn concept forgetting. A `pipe` passed in is left as it was (its UNet is copied and the
    copy trained); without one the model is loaded from `config.model` and its UNet trained in place."""
    config.validate()
    small = (config.model == TINY_MODEL if pipe is None
             else sum(p.numel() for p in pipe.unet.parameters()) < SMALL_UNET_WEIGHTS)
    threads = torch.get_num_threads()
    if small:  # toy-sized tensors: more threads only add synchronisation, and stall badly on a busy CPU
        torch.set_num_threads(1)
    try:
        return _unlearn_concept(config, pipe, phase_progress, accelerator)
    finally:
        torch.set_num_threads(threads)


def _unlearn_concept(config, pipe, phase_progress, accelerator) -> ConceptResult:
    accelerator = accelerator or make_accelerator(config.precision)
    device, timings, started = accelerator.device, {}, time.perf_counter()
    phase = phase_progress if (phase_progress and accelerator.is_main_process) else (lambda name: None)

    if pipe is None:
        pipe = load_pipeline(config.model, device, half_precision_frozen=device.type == "cuda",
                             safety_checker=config.safety_checker)
        unet = pipe.unet
    else:
        pipe = pipe.to(device)
        unet = copy.deepcopy(pipe.unet)
    pipe.text_encoder.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    resolution = config.resolution or default_resolution(pipe)
    timings["load_s"] = time.perf_counter() - started

    prompts = [config.forget_prompt, config.pseudo_prompt, ""] + config.retain_prompts
    embeddings = dict(zip(prompts, encode_prompts(pipe, prompts).float().split(1)))

    t0 = time.perf_counter()
    samples = {}
    sample_prompts = [config.forget_prompt] + config.retain_prompts
    if accelerator.is_main_process:
        phase("before/after samples (before)")  # marks where the phase starts (bench/bench_concept_gpu.py)
        with accelerator.autocast():
            for prompt in sample_prompts:
                samples[prompt] = {"before": generate(pipe, prompt, config.sample_seeds, config.inference_steps,
                                                      config.sample_guidance, resolution)}
    timings["samples_before_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    evaluation = ConceptEvaluation(config) if accelerator.is_main_process else None
    eval_images = {}
    if evaluation is not None and evaluation.active:
        eval_images = _eval_images(pipe, config, evaluation.prompts, resolution, accelerator,
                                   phase("evaluation images before"), "before")
    timings["eval_before_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = config.images_per_prompt
    forget_seeds = _shard([config.seed * 100_000 + i for i in range(n)], accelerator)
    forget_latents, _ = _make_latents(pipe, config, config.forget_prompt, config.forget_images, forget_seeds,
                                      resolution, accelerator, phase("forget images"))
    retain_latents, retain_captions = [], []
    for k, prompt in enumerate(config.retain_prompts or [None]):
        if config.retain_images and k > 0:
            break
        seeds = _shard([config.seed * 100_000 + (k + 1) * 10_000 + i for i in range(n)], accelerator)
        latents, captions = _make_latents(pipe, config, prompt, config.retain_images, seeds, resolution,
                                          accelerator, phase(f"retain images {k + 1}"))
        retain_latents.append(latents)
        retain_captions += [c or prompt or "" for c in captions]
    retain_latents = torch.cat(retain_latents)
    if len(forget_latents) == 0 or len(retain_latents) == 0:
        raise SalunError(f"too few images for {accelerator.num_processes} processes: each needs at least one "
                         "forget and one retain image")
    missing = sorted(set(retain_captions) - set(embeddings))
    if missing:
        embeddings.update(zip(missing, encode_prompts(pipe, missing).float().split(1)))
    retain_embs = torch.cat([embeddings[c] for c in retain_captions])
    timings["images_s"] = time.perf_counter() - t0

    # Only the UNet is needed from here on: park the frozen parts on the CPU to free accelerator memory.
    if device.type == "cuda":
        pipe.text_encoder.to("cpu")
        pipe.vae.to("cpu")
        torch.cuda.empty_cache()
    unet.to(device).train()
    unet.requires_grad_(True)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    micro = min(config.micro_batch_size or config.batch_size, config.batch_size)
    generator = torch.Generator().manual_seed(config.seed * 1000 + accelerator.process_index)

    t0 = time.perf_counter()
    gradients = forget_gradients(unet, pipe.scheduler, forget_latents, embeddings[config.forget_prompt],
                                 embeddings[""], config.mask_guidance, micro, generator, accelerator,
                                 phase("saliency mask"))
    mask = saliency_mask(gradients, config.sparsity)
    del gradients
    timings["mask_s"] = time.perf_counter() - t0

    # probes: two forget images; the first image of each retain prompt (of the first two folder images)
    retain_probe = [retain_captions.index(c) for c in dict.fromkeys(retain_captions)][:4]
    if len(retain_probe) == 1:
        retain_probe = list(range(min(2, len(retain_captions))))
    probe = _Probe(unet, pipe.scheduler, forget_latents[:2], retain_latents[retain_probe],
                   embeddings[config.forget_prompt], embeddings[config.pseudo_prompt], retain_embs[retain_probe],
                   config.seed)
    before = probe()

    t0 = time.perf_counter()
    losses = train_salun(unet, pipe.scheduler, mask, forget_latents, embeddings[config.forget_prompt],
                         embeddings[config.pseudo_prompt], retain_latents, retain_embs, config, micro, generator,
                         accelerator, phase("unlearning"))
    timings["unlearn_s"] = time.perf_counter() - t0

    if config.gradient_checkpointing:
        unet.disable_gradient_checkpointing()
    after = probe()
    metrics = {**_compare(before, after),
               "forget_images": int(accelerator.reduce(torch.tensor(len(forget_latents), device=device), "sum")),
               "retain_images": int(accelerator.reduce(torch.tensor(len(retain_latents), device=device), "sum"))}

    t0 = time.perf_counter()
    if device.type == "cuda":
        pipe.text_encoder.to(device)
        pipe.vae.to(device)
    if accelerator.is_main_process:
        phase("before/after samples (after)")
        after_pipe = unlearned_pipeline(pipe, unet)
        with accelerator.autocast():
            for prompt in sample_prompts:
                samples[prompt]["after"] = generate(after_pipe, prompt, config.sample_seeds, config.inference_steps,
                                                    config.sample_guidance, resolution)
        t1 = time.perf_counter()
        if evaluation.active:
            _eval_images(after_pipe, config, evaluation.prompts, resolution, accelerator,
                         phase("evaluation images after"), "after", eval_images)
        report = evaluation.report({p: v["before"] for p, v in eval_images.items()},
                                   {p: v["after"] for p, v in eval_images.items()})
        timings["eval_after_s"] = time.perf_counter() - t1
    accelerator.wait_for_everyone()
    timings["samples_after_s"] = time.perf_counter() - t0 - timings.get("eval_after_s", 0.0)
    timings["total_s"] = time.perf_counter() - started
    return ConceptResult(config, pipe, unet, mask, metrics, samples, losses, timings, accelerator.is_main_process,
                         report if accelerator.is_main_process else {"kind": config.evaluation}, eval_images)


def _eval_images(pipe, config, prompts, resolution, accelerator, progress, when, into=None) -> dict:
    """Images of each evaluation prompt at the evaluation seeds, stored under `when` in `into`."""
    into = {} if into is None else into
    seeds = eval_seeds(config)
    with accelerator.autocast():
        for k, prompt in enumerate(prompts):
            into.setdefault(prompt, {})[when] = generate(pipe, prompt, seeds, config.inference_steps,
                                                         config.sample_guidance, resolution)
            if progress:
                progress(k + 1, len(prompts), 0.0)
    return into


def save_concept_result(result: ConceptResult, directory) -> dict:
    """The unlearned pipeline in diffusers format (StableDiffusionPipeline.from_pretrained(directory)
    loads it; the UNet alone is in directory/unet), the mask, the config and metrics, and the
    before/after samples as PNGs. Only the main process writes."""
    import json
    from pathlib import Path

    from core.checkpoint import save_mask

    directory = Path(directory)
    if not result.is_main_process:
        return {"path": str(directory)}
    directory.mkdir(parents=True, exist_ok=True)
    unlearned_pipeline(result.pipe, result.unet).save_pretrained(str(directory))
    save_mask(result.mask, directory / "mask.safetensors")
    (directory / "concept.json").write_text(json.dumps(result.summary(), indent=2, default=float))
    samples = directory / "samples"
    samples.mkdir(exist_ok=True)
    for k, (prompt, images) in enumerate(result.samples.items()):
        for when, row in images.items():
            for seed, image in zip(result.config.sample_seeds, row):
                image.save(samples / f"prompt{k}_seed{seed}_{when}.png")
    (samples / "prompts.txt").write_text("\n".join(f"prompt{k}: {p}" for k, p in enumerate(result.samples)) + "\n")
    return {"path": str(directory), "unet": str(directory / "unet"), "mask": str(directory / "mask.safetensors")}
