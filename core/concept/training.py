"""The two SalUn phases on a Stable Diffusion UNet: the forget gradient for the mask, and the masked loop.

Both work on precomputed latents and prompt embeddings, so only the UNet is on the accelerator. Random
draws (timesteps, noise) come from a CPU generator, so a seed gives the same run on any device.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from core.concept.presets import resolved_steps
from core.errors import SalunError
from core.saliency import MaskConstraint, accumulate_gradients
from core.steps import Progress, check_finite


def noised(scheduler, latents, generator, timesteps=None):
    """(x_t, ε, t): latents noised at random (or given) timesteps, drawn on the CPU for reproducibility."""
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
    timesteps = timesteps.to(latents.device)
    return scheduler.add_noise(latents, noise, timesteps), noise, timesteps


def expand_batch(embedding, n):
    """One prompt's embedding (1, tokens, width) repeated as a batch of n without copying."""
    return embedding.expand(n, *embedding.shape[1:]) if embedding.shape[0] == 1 else embedding


def forget_gradients(unet, scheduler, latents, forget_emb, null_emb, guidance, micro_batch, generator,
                     accelerator, progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """|Σ ∇θ ||ε − ε̂θ(x_t)||²| over this process's forget latents, summed over all processes.

    On a single GPU that runs out of memory the micro-batch is halved and the sum started again
    (accelerate's find_executable_batch_size, with halving and a one-line error at micro-batch 1)."""
    from accelerate.utils import find_executable_batch_size

    def losses(micro):
        for start in range(0, len(latents), micro):
            x0 = latents[start:start + micro]
            x_t, noise, t = noised(scheduler, x0, generator)
            with accelerator.autocast():
                if guidance:
                    both = unet(torch.cat([x_t, x_t]), torch.cat([t, t]),
                                torch.cat([expand_batch(forget_emb, len(x0)), expand_batch(null_emb, len(x0))])).sample
                    cond, uncond = both.float().chunk(2)
                    prediction = (1 + guidance) * cond - guidance * uncond
                else:
                    prediction = unet(x_t, t, expand_batch(forget_emb, len(x0))).sample.float()
            yield F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3)).sum()

    def halve() -> int:
        nonlocal micro_batch
        micro_batch = _halve_after_oom(micro_batch, accelerator)
        return micro_batch

    @find_executable_batch_size(starting_batch_size=micro_batch, reduce_batch_size_fn=halve)
    def whole_pass(micro):
        total = math.ceil(len(latents) / micro)
        return accumulate_gradients(unet, losses(micro),
                                    progress=(lambda seen: progress(seen, total, 0.0)) if progress else None)

    gradients = whole_pass()
    if accelerator.num_processes > 1:  # one tensor at a time, so the peak stays at one extra tensor
        gradients = {name: accelerator.reduce(g, "sum") for name, g in gradients.items()}
    return gradients


def _halve_after_oom(micro: int, accelerator) -> int:
    # Several processes cannot retry alone (the others would wait in a collective): they fail instead.
    if micro == 1 or accelerator.num_processes > 1:
        raise SalunError(f"out of memory at micro-batch {micro}; set a smaller --micro-batch or "
                         "--resolution, use --gradient-checkpointing, or use a GPU with more memory")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return micro // 2


def _out_of_memory(exc: BaseException) -> bool:
    """Out of accelerator (or CPU) memory, as accelerate recognises it."""
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(exc, torch.cuda.OutOfMemoryError) or should_reduce_batch_size(exc)


def salun_losses(unet, frozen_unet, scheduler, forget_x0, forget_emb, pseudo_emb, retain_x0, retain_emb,
                 generator):
    """(forget loss, retain loss) for one micro-batch: MSE to the detached pseudo-prompt prediction,
    and the plain noise-prediction loss of retain latents with their own prompts.

    Forget and retain latents go through the UNet in one call: DDP allows one forward per backward.
    """
    f_t, _, ft = noised(scheduler, forget_x0, generator)
    r_t, r_noise, rt = noised(scheduler, retain_x0, generator)
    with torch.no_grad():
        target = frozen_unet(f_t, ft, expand_batch(pseudo_emb, len(f_t))).sample.float()
    prediction = unet(torch.cat([f_t, r_t]), torch.cat([ft, rt]),
                      torch.cat([expand_batch(forget_emb, len(f_t)), retain_emb])).sample.float()
    forget_loss = F.mse_loss(prediction[:len(f_t)], target)
    retain_loss = F.mse_loss(prediction[len(f_t):], r_noise)
    return forget_loss, retain_loss


def train_salun(unet, scheduler, mask, forget_latents, forget_emb, pseudo_emb, retain_latents, retain_embs,
                config, micro, generator, accelerator, progress) -> list[float]:
    """The SalUn loop: Adam on the salient weights, gradient accumulation over micro-batches."""
    constraint = MaskConstraint(unet, mask)
    for name, p in unet.named_parameters():  # tensors with no salient weight need neither grads nor Adam state
        p.requires_grad_(bool(mask[name].any()))
    optimizer = torch.optim.Adam([p for p in unet.parameters() if p.requires_grad], lr=config.lr)
    # The pseudo-prompt target is computed under no_grad by the same weights, outside DDP's bookkeeping.
    frozen_view = unet
    unet, optimizer = accelerator.prepare(unet, optimizer)
    local_batch = max(1, config.batch_size // accelerator.num_processes)
    total_forget = int(accelerator.reduce(torch.tensor(len(forget_latents), device=accelerator.device), "sum"))
    steps = resolved_steps(config.steps, config.epochs, total_forget, config.batch_size)
    order, cursor, losses = torch.randperm(len(forget_latents), generator=generator), 0, []
    unet.train()
    while len(losses) < steps:
        take = []
        while len(take) < local_batch:  # every process makes the same number of steps, whatever its share
            if cursor == len(order):
                order, cursor = torch.randperm(len(forget_latents), generator=generator), 0
            take.append(int(order[cursor]))
            cursor += 1
        f_idx = torch.tensor(take)
        r_idx = torch.randint(0, len(retain_latents), (len(take),), generator=generator)
        # Retried here, batch by batch, rather than with find_executable_batch_size: that restarts the
        # whole function it wraps (retaking steps already taken) and collects garbage on every call.
        while True:
            try:
                loss = _accumulate(unet, frozen_view, scheduler, forget_latents, forget_emb, pseudo_emb,
                                   retain_latents, retain_embs, f_idx, r_idx, config.alpha, micro, generator,
                                   accelerator)
                break
            except RuntimeError as exc:
                if not _out_of_memory(exc):
                    raise
            # outside the except block, the failed pass's tensors are no longer referenced
            optimizer.zero_grad(set_to_none=True)
            micro = _halve_after_oom(micro, accelerator)
        constraint.mask_gradients()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        constraint.restore()
        losses.append(check_finite(accelerator.gather(loss.reshape(1)).mean(), "SalUn concept unlearning"))
        if progress:
            progress(len(losses), steps, losses[-1])
    unet = accelerator.unwrap_model(unet, keep_fp32_wrapper=False)
    unet.requires_grad_(False)
    return losses


def _accumulate(unet, frozen_view, scheduler, forget_latents, forget_emb, pseudo_emb, retain_latents,
                retain_embs, f_idx, r_idx, alpha, micro, generator, accelerator) -> torch.Tensor:
    """Backward of (forget + α·retain) over one batch in micro-batches; returns the batch's loss."""
    chunks = list(zip(f_idx.split(micro), r_idx.split(micro)))
    total = torch.zeros((), device=accelerator.device)
    for i, (fi, ri) in enumerate(chunks):
        sync = accelerator.no_sync(unet) if i < len(chunks) - 1 else nullcontext()
        with sync:
            with accelerator.autocast():
                forget_loss, retain_loss = salun_losses(unet, frozen_view, scheduler, forget_latents[fi], forget_emb,
                                                        pseudo_emb, retain_latents[ri], retain_embs[ri], generator)
                loss = (forget_loss + alpha * retain_loss) * (len(fi) / len(f_idx))
            accelerator.backward(loss)
        total += loss.detach()
    return total
