"""A small class-conditional DDPM with classifier-free guidance: the model, its checkpoint, sampling.

The network is diffusers' `UNet2DModel` with a class embedding of `num_classes + 1` rows; the last row
is the null class used for the unconditional branch of classifier-free guidance. It is trained with
`DDPMScheduler` (core.diffusion.training) and sampled with `DDIMScheduler`:

    eps = eps(x_t | null) + guidance * (eps(x_t | c) - eps(x_t | null))

so guidance 1 is the plain conditional model and guidance 0 the unconditional one. Images live in
[-1, 1] inside the model and in [0, 1] outside it, like the rest of the project.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from core.checkpoint import ASSETS, load_state_strict, read_meta, read_tensors, save_checkpoint
from core.config import config_from_dict
from core.errors import CheckpointError, SalunError, check_positive

# One shipped generator per dataset that has one; each is judged by that dataset's shipped classifier.
SHIPPED_GENERATORS = {
    "mnist5k": ASSETS / "ddpm_mnist5k.safetensors",
    "fashion_mnist": ASSETS / "ddpm_fashion_mnist.safetensors",
}
DEFAULT_GENERATOR = SHIPPED_GENERATORS["mnist5k"]
DEFAULT_GUIDANCE = 2.0  # the digit generator's; each generator's own is in its sidecar (default_guidance)
DEFAULT_SAMPLE_STEPS = 20


def default_generator(dataset: str) -> Path:
    """The shipped generator for `dataset`; a dataset without one is a SalunError, never a quiet substitute."""
    path = SHIPPED_GENERATORS.get(dataset)
    if path is None:
        raise SalunError(f"no shipped generator for dataset {dataset!r}; generators exist for: "
                         f"{', '.join(SHIPPED_GENERATORS)} (or pass --generator with one you trained)")
    if not path.is_file():
        raise SalunError(f"the generator for {dataset!r} is not in {str(path.parent)!r} yet; train it with "
                         f"`python -m core.cli train-gen --dataset {dataset}` or pass --generator")
    return path


def default_guidance(meta: dict) -> float:
    """The guidance a generator was tuned for (its sidecar's evaluation), else the digit generator's."""
    return float(meta.get("evaluation", {}).get("default_guidance", DEFAULT_GUIDANCE))


@dataclass
class UNetConfig:
    """Architecture of the generator; stored in the checkpoint's sidecar so it can be rebuilt."""

    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    train_timesteps: int = 1000
    beta_schedule: str = "linear"

    def to_dict(self) -> dict:
        values = asdict(self)
        values["block_out_channels"] = list(self.block_out_channels)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "UNetConfig":
        values = dict(values)
        if "block_out_channels" in values:
            values["block_out_channels"] = tuple(int(c) for c in values["block_out_channels"])
        return config_from_dict(cls, values, CheckpointError, "generator config")


class ConditionalUNet(nn.Module):
    """`UNet2DModel` plus the facts needed to use it: class count, null class, noise schedule."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        from diffusers import UNet2DModel

        n_blocks = len(config.block_out_channels)
        if config.image_size % (2 ** (n_blocks - 1)):
            raise SalunError(f"image side {config.image_size} must be divisible by {2 ** (n_blocks - 1)} "
                             f"for {n_blocks} UNet blocks")
        self.config = config
        self.unet = UNet2DModel(
            sample_size=config.image_size,
            in_channels=config.in_channels,
            out_channels=config.in_channels,
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            down_block_types=("DownBlock2D",) * n_blocks,
            up_block_types=("UpBlock2D",) * n_blocks,
            norm_num_groups=config.norm_num_groups,
            num_class_embeds=config.num_classes + 1,
        )

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Predicted noise eps(x_t | labels); `labels` may hold the null class."""
        return self.unet(x_t, t, class_labels=labels).sample


def build_generator(config: UNetConfig | None = None) -> ConditionalUNet:
    return ConditionalUNet(config or UNetConfig())


def train_scheduler(config: UNetConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule)


def sample_scheduler(config: UNetConfig):
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule,
                         clip_sample=True)


# --- checkpoints --------------------------------------------------------------------------------

def save_generator(model: ConditionalUNet, path: str | Path, meta: dict) -> Path:
    meta = {**meta, "architecture": "ddpm_unet", "unet": model.config.to_dict(),
            "image_shape": [model.config.in_channels, model.config.image_size, model.config.image_size]}
    return save_checkpoint(model.cpu(), path, meta)


def load_generator(path: str | Path = DEFAULT_GENERATOR) -> tuple[ConditionalUNet, dict]:
    """The generator and its sidecar; strict: a file that does not fit is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"generator {str(path)!r} does not exist; train one with `python -m core.cli train-gen`")
    meta = read_meta(path, required=("architecture",))
    if meta.get("architecture") != "ddpm_unet" or "unet" not in meta:
        raise CheckpointError(f"{str(path)!r} is not a generator checkpoint (its sidecar names "
                              f"architecture {meta.get('architecture')!r})")
    model = build_generator(UNetConfig.from_dict(meta["unet"]))
    load_state_strict(model, read_tensors(path), f"generator {path.name!r}")
    return model.eval(), meta


# --- inputs -------------------------------------------------------------------------------------

def check_class(model: ConditionalUNet, label, what: str = "class") -> int:
    try:
        k = int(label)
    except (TypeError, ValueError):
        raise SalunError(f"{what} must be a whole number, got {label!r}") from None
    if float(label) != k or not 0 <= k < model.num_classes:
        raise SalunError(f"{what} {label!r} does not exist; classes are 0..{model.num_classes - 1}")
    return k


def check_guidance(guidance) -> float:
    return float(check_positive("guidance", guidance))


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    return images * 2.0 - 1.0


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


# --- sampling -----------------------------------------------------------------------------------

def guided_noise(model: ConditionalUNet, x_t: torch.Tensor, t: int, labels: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guided noise prediction at one timestep `t`: one batched pass, conditional and null."""
    null = torch.full_like(labels, model.null_class)
    t_batch = torch.full((2 * len(x_t),), int(t), dtype=torch.long, device=x_t.device)
    eps = model(torch.cat([x_t, x_t]), t_batch, torch.cat([labels, null]))
    eps_cond, eps_null = eps.chunk(2)
    return eps_null + guidance * (eps_cond - eps_null)


@torch.no_grad()
def generate(model: ConditionalUNet, labels, guidance: float = DEFAULT_GUIDANCE, steps: int = DEFAULT_SAMPLE_STEPS,
             seed: int = 0, batch_size: int = 50, preview=None) -> torch.Tensor:
    """Images in [0, 1], shape (N, C, H, W), one per label, with DDIM sampling.

    `batch_size` images go through the model at once (twice that with guidance): on the CPU 50 drew the
    Diffusion page's 300 images in 21-25 s against 30-32 s with 200 (the activations of a smaller batch stay
    in cache), and the images are the same bit for bit.

    The starting noise of image i depends only on (seed, i), so the same seed and labels give the same
    images from any model: a before/after comparison is seed for seed. `preview(done, total)` is called
    after every denoising step of every batch.
    """
    guidance = check_guidance(guidance)
    steps = int(check_positive("sampling steps", steps, integer=True))
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    for label in labels.unique().tolist():
        check_class(model, label)
    config = model.config
    shape = (len(labels), config.in_channels, config.image_size, config.image_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scheduler = sample_scheduler(config)
    scheduler.set_timesteps(steps)
    out = []
    total = steps * ((len(labels) + batch_size - 1) // batch_size)
    done = 0
    try:
        for start in range(0, len(labels), batch_size):
            x = noise[start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device)
            for t in scheduler.timesteps:
                eps = guided_noise(model, x, t, y, guidance)
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
                done += 1
                if preview:
                    preview(done, total)
            out.append(to_image_range(x).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(shape)


def class_grid_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """Labels for a grid with one row per class: 0,0,...,1,1,... (row-major)."""
    return torch.arange(num_classes).repeat_interleave(per_class)
