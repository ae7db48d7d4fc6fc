"""CLI commands for class-conditional diffusion; registered by core.cli.

    python -m core.cli train-gen  --workdir runs/ddpm_mnist5k --save assets/ddpm_mnist5k.safetensors
    python -m core.cli unlearn-gen --forget class:3 --method salun --seed 0 --json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _log_progress(every: int):
    start = time.perf_counter()

    def progress(done: int, total: int, loss: float) -> None:
        if done % every == 0 or done == total:
            rate = (time.perf_counter() - start) / max(1, done)
            print(f"step {done}/{total} loss {loss:.4f} ({rate:.2f} s/step this session)", flush=True)
    return progress


def cmd_train_gen(args) -> dict:
    from core.cli import ProgressBar
    from core.diffusion import DEFAULT_GENERATOR, save_generator
    from core.diffusion_train import GeneratorTrainConfig, train_generator

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    config = GeneratorTrainConfig(dataset=args.dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                  seed=args.seed)
    command = " ".join(["python -m core.cli"] + sys.argv[1:])
    if args.log_every:
        progress = _log_progress(args.log_every)
    else:
        progress = ProgressBar(not args.quiet).phase("train-gen")
    model, summary = train_generator(config, args.workdir, progress=progress,
                                     checkpoint_every_s=args.checkpoint_every,
                                     stop_after_s=args.stop_after * 60 if args.stop_after else None,
                                     meta={"command": command})
    if summary["steps_done"] < config.steps:
        print(f"stopped at step {summary['steps_done']}/{config.steps}; run the same command again to resume")
        return summary
    save = Path(args.save) if args.save else DEFAULT_GENERATOR
    save_generator(model, save, summary)
    print(f"trained {summary['steps_done']} steps in {summary['training_seconds'] / 60:.1f} min; saved {save}")
    return {**summary, "path": str(save)}


def add_commands(subparsers) -> None:
    """Add this area's subcommands to `python -m core.cli`."""
    from core.cli import _add_common

    p = subparsers.add_parser("train-gen", help="train (or resume) the class-conditional diffusion generator")
    _add_common(p)
    p.add_argument("--workdir", default="runs/ddpm_mnist5k", help="folder for the resumable state")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--checkpoint-every", type=float, default=180.0, help="seconds between state saves")
    p.add_argument("--stop-after", type=float, default=None, help="minutes; stop (resumably) after this long")
    p.add_argument("--log-every", type=int, default=0, help="print a log line every N steps instead of a bar")
    p.add_argument("--save", default=None, help="where the final EMA weights go (default: the shipped generator)")
    p.set_defaults(func=cmd_train_gen)
