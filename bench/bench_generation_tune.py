"""Quick search for a generator's SalUn defaults: one saliency mask, several settings, one forgotten class.

The mask does not depend on the settings tuned here (steps, lr, alpha), so it is computed once and every
setting reuses it; each setting's run time is therefore its training only (the mask's CPU seconds are
printed once; add them for the full RTE). Metrics as bench_generation.py, from fewer images per class.

    .venv/bin/python bench/bench_generation_tune.py --dataset fashion_mnist --forget 1 --try "alpha=5" "alpha=10 lr=5e-4"
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from core.data import load_dataset
from core.diffusion.methods import MASK_DRAWS, generation_saliency, generation_split
from core.diffusion.metrics import generation_metrics
from core.diffusion.run import GenerationRunConfig, load_models
from core.methods import get_method
from core.saliency import saliency_mask
from bench_fashion_tune import parse_setting  # "steps=60 lr=2.5e-4" -> {"steps": 60, "lr": 0.00025}




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--forget", type=int, default=1)
    parser.add_argument("--try", dest="settings", nargs="+", default=[""])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--draws", type=int, default=MASK_DRAWS, help="draws behind the saliency mask")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator, gen_meta, classifier, _ = load_models(dataset=args.dataset)
    config = GenerationRunConfig(dataset=args.dataset).validate().fitted_to(gen_meta)
    dataset = load_dataset(config.dataset)
    data = generation_split(dataset, args.forget)

    def metrics(model):
        return generation_metrics(model, classifier, args.forget, dataset.test_x, dataset.test_y,
                                  per_class=args.per_class, guidance=config.guidance, steps=config.sample_steps,
                                  seed=args.seed)

    kept = (Path(__file__).resolve().parent.parent / "runs" / "bench_generation_tune"
            / f"{args.dataset}_c{args.forget}_before_pc{args.per_class}_s{args.seed}_g{config.guidance}.json")
    if kept.is_file():  # the original's figures do not depend on the settings tried
        before = json.loads(kept.read_text())
    else:
        m = metrics(generator)
        before = {k: m[k] for k in ("ua", "retained_accuracy")}
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(before))
    start = time.process_time()
    # kept between invocations (runs/, ignored by git): the mask does not depend on the settings tried
    cached = (Path(__file__).resolve().parent.parent / "runs" / "bench_generation_tune"
              / f"{args.dataset}_c{args.forget}_d{args.draws}_s{args.seed}_g{config.guidance}.pt")
    if cached.is_file():
        gradients = torch.load(cached)
    else:
        gradients, _, _ = generation_saliency(generator, data.forget_x, args.forget, config.guidance, args.draws,
                                              seed=args.seed)
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(gradients, cached)
    mask = saliency_mask(gradients, args.sparsity)
    print(f"{args.dataset} class {args.forget}: before UA {before['ua']:.1f} retained {before['retained_accuracy']:.1f}; "
          f"mask ({args.draws} draws) {time.process_time() - start:.0f} CPU s; {args.per_class} images/class, guidance {config.guidance}",
          flush=True)
    spec = get_method("salun", "generation")
    for text in args.settings:
        params = spec.resolve(args.seed, config.dataset, "class", **parse_setting(text))
        model = copy.deepcopy(generator)
        start = time.process_time()
        spec.run(model, data, params, mask=mask)
        cpu = time.process_time() - start
        after = metrics(model.eval())
        drop = before["retained_accuracy"] - after["retained_accuracy"]
        print(f"  {text or 'defaults':<28} UA {after['ua']:5.1f} retained {after['retained_accuracy']:5.1f} "
              f"drop {drop:5.1f}  Fréchet {after['frechet_retained']:.1f}  training {cpu:.0f} CPU s  {params}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
