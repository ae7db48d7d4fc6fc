"""Saliency-mask generation on a ResNet-18-sized parameter set: ours against the upstream full argsort.

Upstream ranks all weights by concatenating every gradient and running argsort twice. Ours brackets
the threshold from a small sample, confirms it by exact counts, and never builds the concatenation. Each variant runs in its own subprocess so
its peak memory is its own: extra memory = peak RSS during ranking − RSS with the gradients in place.
Prints time ratio, extra-memory ratio, and whether the two masks agree bit for bit.

    python bench/bench_mask.py [--repeats 3] [--sparsity 0.5]
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def resnet18_like_gradients(seed: int = 0):
    import torch

    from core.classification.models import resnet18_cifar

    torch.manual_seed(seed)
    model = resnet18_cifar()
    # heavy-tailed magnitudes with a per-layer scale, like real gradients; continuous, so no ties
    return {name: (torch.randn(p.shape).abs() ** 2) * float(torch.rand(1) * 10 + 0.1)
            for name, p in model.named_parameters()}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def worker(variant: str, sparsity: float, repeats: int) -> None:
    import torch

    from core.saliency import argsort_mask, saliency_mask

    torch.set_num_threads(1)
    grads = resnet18_like_gradients()
    fn = saliency_mask if variant == "ours" else argsort_mask
    baseline = rss_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mask = fn(grads, sparsity)
        times.append(time.perf_counter() - start)
        del mask
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mask = fn(grads, sparsity)
    digest = sum(int(m.sum()) for m in mask.values())
    torch.save(mask, f"/tmp/bench_mask_{variant}.pt")
    print(json.dumps({"variant": variant, "seconds": statistics.median(times), "extra_bytes": peak - baseline,
                      "selected": digest, "params": sum(g.numel() for g in grads.values())}))


def run_variant(variant: str, sparsity: float, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", variant, "--sparsity", str(sparsity),
                          "--repeats", str(repeats)], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", default=None)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.sparsity, args.repeats)
        return
    import torch

    upstream = run_variant("argsort", args.sparsity, args.repeats)
    ours = run_variant("ours", args.sparsity, args.repeats)
    a, b = torch.load("/tmp/bench_mask_ours.pt"), torch.load("/tmp/bench_mask_argsort.pt")
    same = all(torch.equal(a[n], b[n]) for n in a)
    mib = 1024 * 1024
    print(f"parameters: {ours['params']:,} (ResNet-18, CIFAR stem), sparsity {args.sparsity}, 1 thread, median of {args.repeats}")
    print(f"upstream argsort: {upstream['seconds']:.3f} s, extra memory {upstream['extra_bytes'] / mib:.1f} MiB")
    print(f"ours (bracketed) : {ours['seconds']:.3f} s, extra memory {ours['extra_bytes'] / mib:.1f} MiB")
    print(f"speed-up: {upstream['seconds'] / ours['seconds']:.1f}x   "
          f"extra-memory ratio ours/upstream: {ours['extra_bytes'] / max(upstream['extra_bytes'], 1):.3f}   "
          f"masks identical: {same} ({ours['selected']:,} weights selected)")


if __name__ == "__main__":
    main()
