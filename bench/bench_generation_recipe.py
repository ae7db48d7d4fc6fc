"""A candidate SalUn recipe for a shipped generator against the ablation's recipe, over classes and seeds.

It reuses bench_generation_ablation.py's kept results (runs/bench_generation_ablation/<dataset>/): the
original's figures per class, each class's saliency mask (seed 0, the default draws) and the default
recipe's SalUn runs (AS_RECORDED: upstream's retained loss), so only the candidate, that recipe with the
given settings changed, is trained. Each candidate is named by its settings; its runs
are kept beside the others, so the benchmark can be stopped and resumed.

    .venv/bin/python bench/bench_generation_recipe.py --try "null_share=0.3 retain_snr_gamma=5"

Printed per class: UA, retained accuracy lost and Fréchet distance (mean ± std over seeds), ablation vs
candidate, and the training CPU seconds. Written to bench/results/generation_recipe_<dataset>.txt.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

from bench_fashion_tune import parse_setting  # "steps=60 lr=2.5e-4" -> {"steps": 60, "lr": 0.00025}
from bench_generation_ablation import AS_RECORDED, CACHE, arguments, mean_std
from core.data import load_dataset
from core.diffusion.methods import generation_split
from core.diffusion.metrics import generation_metrics
from core.diffusion.run import GenerationRunConfig, load_models
from core.methods import get_method

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--try", dest="setting", required=True, help='settings, e.g. "null_share=0.3 alpha=5"')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = parse_setting(args.setting)
    label = "_".join(f"{k}{v}" for k, v in sorted(overrides.items()))

    generator, gen_meta, classifier, _ = load_models(dataset=args.dataset)
    config = GenerationRunConfig(dataset=args.dataset, per_class=args.per_class).validate().fitted_to(gen_meta)
    dataset = load_dataset(config.dataset)
    spec = get_method("salun", "generation")
    cache = CACHE / args.dataset
    lines = [f"# bench_generation_recipe ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), shipped {args.dataset} "
             f"generator: SalUn as the ablation ran it (upstream's retained loss) vs that + {overrides}",
             f"# the mask of bench_generation_ablation (seed 0); seeds {args.seeds} vary the unlearning; "
             f"judged on {args.per_class} images/class, guidance {config.guidance}, {config.sample_steps} DDIM steps, "
             "sampling seed 0",
             f"{'class':>5}  {'recipe':<10}{'UA':>14}{'retained drop':>16}{'Fréchet':>16}{'train CPU s':>13}"]
    every = {"ablation": [], "candidate": []}
    for k in args.classes:
        before = json.loads((cache / f"before_c{k}_pc{args.per_class}.json").read_text())
        mask = torch.load(cache / f"mask_c{k}.pt")
        data = generation_split(dataset, k)
        rows = {"ablation": [], "candidate": []}
        for seed in args.seeds:
            rows["ablation"].append(json.loads((cache / f"c{k}_salun_s{seed}_pc{args.per_class}.json").read_text()))
            path = cache / f"c{k}_salun-{label}_s{seed}_pc{args.per_class}.json"
            if not path.is_file():
                params = spec.resolve(seed, config.dataset, "class", **{**AS_RECORDED, **overrides})
                model = copy.deepcopy(generator)
                t0 = time.process_time()
                spec.run(model, data, params, mask=mask)
                cpu = time.process_time() - t0
                m = generation_metrics(model.eval(), classifier, k, dataset.test_x, dataset.test_y,
                                       per_class=args.per_class, guidance=config.guidance, steps=config.sample_steps,
                                       seed=0)
                row = {key: float(m[key]) for key in ("ua", "retained_accuracy", "frechet_retained")}
                row.update(drop=before["retained_accuracy"] - row["retained_accuracy"], train_cpu_seconds=cpu,
                           params=params, per_class_accuracy=[float(a) for a in m["per_class_accuracy"]])
                path.write_text(json.dumps(row))
                print(f"class {k} seed {seed}: UA {row['ua']:5.1f} drop {row['drop']:5.1f} "
                      f"Fréchet {row['frechet_retained']:6.1f}  training {cpu:.0f} CPU s; per class "
                      + " ".join(f"{a:.0f}" for a in row["per_class_accuracy"]), flush=True)
            rows["candidate"].append(json.loads(path.read_text()))
        for name, runs in rows.items():
            every[name] += runs
            cells = []
            for key in ("ua", "drop", "frechet_retained"):
                m, s = mean_std(r[key] for r in runs)
                cells.append(f"{m:7.1f} ± {s:4.1f}")
            cpu = mean_std(r["train_cpu_seconds"] for r in runs)[0]
            lines.append(f"{k:>5}  {name:<10}{cells[0]:>14}{cells[1]:>16}{cells[2]:>16}{cpu:>13.0f}")
    for name, runs in every.items():
        ua, drop = mean_std(r["ua"] for r in runs), mean_std(r["drop"] for r in runs)
        met = sum(r["ua"] >= 95 and r["drop"] <= 3 for r in runs)
        lines.append(f"# {name}: UA {ua[0]:.1f} ± {ua[1]:.1f}, retained drop {drop[0]:.2f} ± {drop[1]:.2f}; "
                     f"UA >= 95 and drop <= 3 in {met}/{len(runs)} (class, seed) runs")
    report = "\n".join(lines)
    print(report)
    out = RESULTS / f"generation_recipe_{args.dataset}.txt"
    out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
