"""Stability of the generation saliency mask on the shipped generator: IoU of two seeds' masks by draws.

    .venv/bin/python bench/bench_ddpm_mask.py [--classes 3] [--draws 128 400 1600 3200] [--threads 1]

For each class and number of draws (images, timesteps and noise behind the mask; core.diffusion.methods
.generation_saliency, whole passes through the class), builds the mask from two seeds and prints their
IoU at sparsity 0.5, the IoU of the two half-draw masks the page shows (a lower bound), and the time
per mask. Goal: IoU >= 0.9 at the default MASK_DRAWS. Writes bench/results/ddpm_mask.txt.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from core.data import load_dataset
from core.diffusion.methods import MASK_DRAWS, generation_saliency, generation_split, mask_stability
from core.diffusion.model import DEFAULT_GUIDANCE, load_generator
from core.saliency import mask_iou, saliency_mask

RESULTS = Path(__file__).resolve().parent / "results" / "ddpm_mask.txt"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[3])
    parser.add_argument("--draws", type=int, nargs="+", default=[128, MASK_DRAWS])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS), help="where to write the table ('' for nowhere)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator, meta = load_generator()
    dataset = load_dataset(meta.get("dataset", "mnist5k"))
    guidance = float(meta.get("evaluation", {}).get("default_guidance", DEFAULT_GUIDANCE))
    lines = [f"# bench_ddpm_mask ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): shipped generator "
             f"({meta.get('steps_done')} steps), guidance {guidance}, sparsity {args.sparsity}, seeds {args.seeds}, "
             f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f} at start",
             "class  images  draws  IoU(seeds)  half-draw IoU  s/mask"]
    print("\n".join(lines), flush=True)
    for k in args.classes:
        data = generation_split(dataset, k)
        for draws in args.draws:
            runs, seconds = [], []
            for seed in args.seeds:
                t0 = time.perf_counter()
                runs.append(generation_saliency(generator, data.forget_x, k, guidance, draws, seed=seed))
                seconds.append(time.perf_counter() - t0)
            iou, _ = mask_iou(saliency_mask(runs[0][0], args.sparsity), saliency_mask(runs[1][0], args.sparsity))
            used = -(-draws // len(data.forget_x)) * len(data.forget_x)
            half = mask_stability(runs[0][1], runs[0][2], args.sparsity, used)["half_iou"]
            line = f"{k:>5}  {len(data.forget_x):>6}  {used:>5}  {iou:>10.3f}  {half:>13.3f}  {sum(seconds) / 2:>6.1f}"
            lines.append(line)
            print(line, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
