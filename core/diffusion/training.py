"""Training the class-conditional generator: resumable, with EMA weights and label dropout.

Every step draws its batch, timesteps, noise and dropped labels from a generator seeded by
(seed, step), so a run that is stopped and resumed from its last state file takes exactly the steps an
uninterrupted run would. The state file (`<workdir>/state.pt`: weights, EMA, optimizer, step, elapsed
time) is rewritten atomically every `checkpoint_every_s` seconds; the EMA weights are exported next to
it as a normal generator checkpoint at the same time, so they can be evaluated while training goes on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from core.data import load_dataset
from core.diffusion.model import ConditionalUNet, UNetConfig, build_generator, save_generator, to_model_range, train_scheduler
from core.errors import SalunError, check_fraction, check_positive
from core.steps import Progress, check_finite


@dataclass
class GeneratorTrainConfig:
    dataset: str = "mnist5k"
    steps: int = 6000
    batch_size: int = 64
    lr: float = 1.5e-3
    warmup_steps: int = 200
    label_dropout: float = 0.1  # share of labels replaced by the null class, for classifier-free guidance
    ema_decay: float = 0.999
    snr_gamma: float = 5.0  # min-SNR loss weighting (Hang et al. 2023): faster convergence; 0 turns it off
    seed: int = 0
    unet: UNetConfig = field(default_factory=UNetConfig)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["unet"] = self.unet.to_dict()
        return values

    def validate(self) -> "GeneratorTrainConfig":
        check_positive("training steps", self.steps, integer=True)
        check_positive("batch size", self.batch_size, integer=True)
        check_positive("learning rate", self.lr)
        check_fraction("label dropout", self.label_dropout)
        if not 0.0 <= self.ema_decay < 1.0:
            raise SalunError(f"EMA decay must be in [0, 1), got {self.ema_decay}")
        return self


def learning_rate(config: GeneratorTrainConfig, step: int) -> float:
    """Linear warm-up, then constant; the EMA does the averaging a decay would do.

    The rate never depends on `config.steps`, so a run can be extended, and the EMA weights after N
    steps are the same whatever the planned total was. (diffusers' get_scheduler("constant_with_warmup")
    is not used: its first step runs at lr 0 and every warm-up step one step behind this schedule, so
    the shipped generator's command would no longer give its weights.)
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def diffusion_loss(model: ConditionalUNet, scheduler, x0: torch.Tensor, labels: torch.Tensor,
                   generator: torch.Generator | None = None, snr_gamma: float = 0.0,
                   teacher: ConditionalUNet | None = None) -> torch.Tensor:
    """The DDPM noise-prediction loss ||eps - eps(x_t | labels)||^2 at uniform random timesteps.

    With a `teacher` the target is the teacher's prediction eps_teacher(x_t | labels) instead of the noise
    eps (the same draws): the model is held to what the teacher predicts, not trained on the data again.

    `x0` is in the model's range [-1, 1]. With `snr_gamma` > 0 each image's error is weighted by
    min(SNR(t), gamma) / SNR(t), which stops nearly noise-free timesteps dominating training.
    (diffusers.training_utils.compute_snr goes through square roots: its SNR differs from this one by up
    to 3e-7 relative at 642 of the 1000 timesteps and the weights at 84, so training would not reproduce.)
    """
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t.to(x0.device))
    target = noise
    if teacher is not None:
        with torch.no_grad():
            target = teacher(x_t, t.to(x0.device), labels)
    error = (model(x_t, t.to(x0.device), labels) - target).pow(2).mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        alpha_bar = scheduler.alphas_cumprod[t]
        snr = alpha_bar / (1.0 - alpha_bar)
        error = error * (snr.clamp(max=snr_gamma) / snr).to(error.device)
    return error.mean()


@torch.no_grad()
def update_ema(ema: ConditionalUNet, model: ConditionalUNet, decay: float, step: int) -> None:
    # Early on the average follows the model closely; the full decay applies once it has many steps.
    # (diffusers' EMAModel uses the same (1 + n) / (10 + n) warm-up but decay 0 at its first update, where
    # this uses 0.1, and tracks no buffers; its state also differs from the state files written here.)
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _resumable(config: dict) -> dict:
    # The planned total does not change any step (see learning_rate), so a run may be extended.
    return {k: v for k, v in config.items() if k != "steps"}


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    tmp.replace(path)


def train_generator(config: GeneratorTrainConfig, workdir: str | Path, progress: Progress | None = None,
                    checkpoint_every_s: float = 180.0, stop_after_s: float | None = None,
                    meta: dict | None = None) -> tuple[ConditionalUNet, dict]:
    """Train (or resume) a generator in `workdir`; returns the EMA model and a summary.

    Resumes from `<workdir>/state.pt` when it exists and was written for the same config; a state file
    for another config is an error rather than a silent restart. `stop_after_s` ends this session early
    (the state is saved; call again to continue).
    """
    config.validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / "state.pt"
    dataset = load_dataset(config.dataset)
    if dataset.image_shape != (config.unet.in_channels, config.unet.image_size, config.unet.image_size):
        raise SalunError(f"dataset {config.dataset} has images {dataset.image_shape}, the UNet expects "
                         f"{(config.unet.in_channels, config.unet.image_size, config.unet.image_size)}")
    if config.unet.num_classes != dataset.num_classes:
        raise SalunError(f"dataset {config.dataset} has {dataset.num_classes} classes, the UNet {config.unet.num_classes}")

    torch.manual_seed(config.seed)
    model = build_generator(config.unet)
    ema = build_generator(config.unet)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, elapsed, losses = 0, 0.0, []
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if _resumable(state["config"]) != _resumable(config.to_dict()):
            raise SalunError(f"{state_path} was written for another training config; use a new workdir "
                             f"or the same settings (saved: {state['config']})")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
        if step > config.steps:
            raise SalunError(f"{state_path} is already at step {step}, beyond the {config.steps} asked for; "
                             "use a new workdir to reproduce an earlier step")

    scheduler = train_scheduler(config.unet)
    x_all = to_model_range(dataset.train_x)
    y_all = dataset.train_y
    n = len(y_all)

    def checkpoint() -> None:
        _save_state(state_path, {"config": config.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
                                 "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed,
                                 "losses": losses})
        save_generator(ema, workdir / "ema_latest.safetensors", summary())

    def summary() -> dict:
        return {**(meta or {}), "dataset": config.dataset, "class_names": dataset.class_names,
                "training": config.to_dict(), "seed": config.seed, "steps_done": step,
                "training_seconds": round(elapsed, 1),
                "final_loss": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 5)}

    model.train()
    session_start = last_save = time.perf_counter()
    tick = time.perf_counter()
    while step < config.steps:
        g = step_generator(config.seed, step)
        idx = torch.randint(0, n, (config.batch_size,), generator=g)
        labels = y_all[idx].clone()
        drop = torch.rand(config.batch_size, generator=g) < config.label_dropout
        labels[drop] = model.null_class
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        loss = diffusion_loss(model, scheduler, x_all[idx], labels, g, config.snr_gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        update_ema(ema, model, config.ema_decay, step)
        losses.append(check_finite(loss, "generator training"))
        step += 1
        now = time.perf_counter()
        elapsed += now - tick
        tick = now
        if progress:
            progress(step, config.steps, losses[-1])
        if now - last_save >= checkpoint_every_s:
            checkpoint()
            last_save = time.perf_counter()
        if stop_after_s is not None and now - session_start >= stop_after_s:
            break
    checkpoint()
    ema.eval()
    return ema, summary()
