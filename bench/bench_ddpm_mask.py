"""Stability of the generation saliency mask on the shipped generator: IoU of two seeds' masks by draws.

    .venv/bin/python bench/bench_ddpm_mask.py [--classes 3 8] [--passes 1 4 12 20] [--threads 1]

For each class, two independent streams of draws (images, timesteps and noise behind the mask;
core.diffusion.methods.generation_gradient_sums) are run pass by pass, one pass being the whole class once
at fresh timesteps and noise. After each pass listed in --passes, the masks from the two streams' running
sums are compared: their IoU at sparsity 0.5 is the mask's stability at that many draws, the figure the
default MASK_DRAWS must keep at 0.9 or more. One run thus gives the whole curve (a k-pass sum is exactly
what generation_saliency computes from k passes, up to which random numbers are drawn). The old default,
128 draws with replacement, is measured directly. Writes bench/results/ddpm_mask.txt, a line per point as
it is measured.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from core.data import load_dataset
from core.diffusion.methods import MASK_DRAWS, generation_gradient_sums, generation_saliency, generation_split
from core.diffusion.model import DEFAULT_GUIDANCE, load_generator
from core.saliency import mask_iou, saliency_mask

RESULTS = Path(__file__).resolve().parent / "results" / "ddpm_mask.txt"
OLD_DRAWS = 128  # the mask's budget before: 128 images drawn with replacement


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--passes", type=int, nargs="+", default=None,
                        help="passes through the class after which to compare (default: 1, 4, 12 and MASK_DRAWS' count)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS), help="where to write the table ('' for nowhere)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator, meta = load_generator()
    dataset = load_dataset(meta.get("dataset", "mnist5k"))
    guidance = float(meta.get("evaluation", {}).get("default_guidance", DEFAULT_GUIDANCE))
    lines = [f"# bench_ddpm_mask ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): shipped generator "
             f"({meta.get('steps_done')} steps), guidance {guidance}, sparsity {args.sparsity}, MASK_DRAWS {MASK_DRAWS}, "
             f"{args.threads} thread(s), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
             "class  images  draws  IoU(two seeds)  s per 1,000 draws (one stream)"]

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")

    print("\n".join(lines), flush=True)
    for k in args.classes:
        data = generation_split(dataset, k)
        n = len(data.forget_x)
        passes = sorted(set(args.passes or [1, 4, 12, -(-MASK_DRAWS // n)]))
        t0 = time.perf_counter()
        old = [saliency_mask(generation_saliency(generator, data.forget_x, k, guidance, OLD_DRAWS, seed=seed)[0],
                             args.sparsity) for seed in (0, 1)]
        per_1000 = (time.perf_counter() - t0) / 2 / OLD_DRAWS * 1000
        emit(f"{k:>5}  {n:>6}  {OLD_DRAWS:>5}  {mask_iou(*old)[0]:>14.3f}  {per_1000:>6.1f}   (old default, with replacement)")
        sums = [None, None]
        seconds = 0.0
        for done in range(1, passes[-1] + 1):
            t0 = time.perf_counter()
            for stream in (0, 1):
                a, b = generation_gradient_sums(generator, data.forget_x, k, guidance, n, seed=1000 * (stream + 1) + done)
                one = {name: a[name] + b[name] for name in a}
                sums[stream] = one if sums[stream] is None else {name: sums[stream][name] + one[name] for name in one}
            seconds += (time.perf_counter() - t0) / 2
            if done in passes:
                masks = [saliency_mask({name: g.abs() for name, g in s.items()}, args.sparsity) for s in sums]
                emit(f"{k:>5}  {n:>6}  {done * n:>5}  {mask_iou(*masks)[0]:>14.3f}  {seconds / (done * n) * 1000:>6.1f}"
                     + ("   (MASK_DRAWS)" if done == -(-MASK_DRAWS // n) else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
