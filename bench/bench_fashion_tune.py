"""Quick search for SalUn's Fashion-MNIST defaults: a few settings, each run once on the shipped model.

Cheaper than bench_fashion.py: no Retrain and no MIA; RA on a fixed sample of 10,000 retained images.
The reference points are the original model's own figures (Retrain's TA is close to the original's; its
UA on a random share is close to the original's test error, on a class 100%).

    .venv/bin/python bench/bench_fashion_tune.py --forget class:7 --try epochs=1 epochs=2
    .venv/bin/python bench/bench_fashion_tune.py --forget random:0.1 --try epochs=1 "epochs=1 lr=5e-4"
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from core.classification.training import accuracy
from bench_fashion import fashion_experiment


def parse_setting(text: str) -> dict:
    out = {}
    for item in text.replace(",", " ").split():
        key, _, value = item.partition("=")
        words = {"true": True, "false": False}
        out[key] = words[value.lower()] if value.lower() in words else int(value) if value.isdigit() else float(value)
    return out


def quick_metrics(experiment, model) -> dict:
    data = experiment.data
    sample = torch.randperm(len(data.retain_y), generator=torch.Generator().manual_seed(0))[:10000]
    test = torch.as_tensor(experiment.split.test_idx)
    return {"ua": 100 - accuracy(model, data.forget_x, data.forget_y),
            "ra": accuracy(model, data.retain_x[sample], data.retain_y[sample]),
            "ta": accuracy(model, experiment.dataset.test_x[test], experiment.dataset.test_y[test])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forget", default="class:7")
    parser.add_argument("--try", dest="settings", nargs="+", default=["epochs=1"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    experiment = fashion_experiment(args.forget)
    experiment.evaluate = lambda model, seed=0, details=False: quick_metrics(experiment, model)
    original = quick_metrics(experiment, experiment.original)
    print(f"{args.forget}: original UA {original['ua']:.2f} RA {original['ra']:.2f} TA {original['ta']:.2f}", flush=True)
    for text in args.settings:
        start = time.process_time()
        result = experiment.unlearn("salun", seed=args.seed, **parse_setting(text))
        cpu = time.process_time() - start
        m = result.metrics
        print(f"{args.forget} salun {text:<28} UA {m['ua']:6.2f} RA {m['ra']:6.2f} TA {m['ta']:6.2f} "
              f"cpu {cpu:6.1f}s (metrics included) wall {m['rte_seconds']:6.1f}s  params {result.params}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
