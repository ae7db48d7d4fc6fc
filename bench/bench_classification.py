"""SalUn against Retrain on the default setting (shipped mnist5k small CNN), in one invocation.

For each scenario and seed: Retrain from scratch on the retain set (the gold standard) and SalUn with
its defaults, on the same split. Prints per-run metrics, then mean ± std over seeds of every metric,
Avg. Gap and the RTE ratio SalUn / Retrain (both timed in this same process, one after the other).

    python bench/bench_classification.py                      # class:3 and random:0.1, seeds 0 1 2
    python bench/bench_classification.py --all-classes        # also every class once (seed 0)
"""

import argparse
import statistics
import sys
import time

from core.classification.experiment import Experiment, RunConfig
from core.classification.metrics import avg_gap

KEYS = ("ua", "ra", "ta", "mia_efficacy")


def mean_std(values):
    return f"{statistics.mean(values):6.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:4.2f}"


def scenario(forget: str, seeds: list[int], out) -> dict:
    rows = []
    for seed in seeds:
        exp = Experiment.from_config(RunConfig(forget=forget, seed=seed))
        retrain = exp.unlearn("retrain", seed=seed)
        salun = exp.unlearn("salun", seed=seed)
        gap = avg_gap(salun.metrics, retrain.metrics)
        ratio = salun.metrics["rte_seconds"] / retrain.metrics["rte_seconds"]
        rows.append((retrain.metrics, salun.metrics, gap, ratio))
        print(f"{forget:<11} seed {seed}  retrain " + " ".join(f"{k}={retrain.metrics[k]:.2f}" for k in KEYS)
              + f" rte={retrain.metrics['rte_seconds']:.1f}s", file=out, flush=True)
        print(f"{'':<11} seed {seed}  salun   " + " ".join(f"{k}={salun.metrics[k]:.2f}" for k in KEYS)
              + f" rte={salun.metrics['rte_seconds']:.1f}s  avg_gap={gap:.2f}  rte_ratio={ratio:.3f}", file=out, flush=True)
    print(f"\n{forget}: mean ± std over seeds {seeds}", file=out)
    print(f"{'metric':<14}{'Retrain':>16}{'SalUn':>16}", file=out)
    for k in KEYS:
        print(f"{k:<14}{mean_std([r[0][k] for r in rows]):>16}{mean_std([r[1][k] for r in rows]):>16}", file=out)
    print(f"{'RTE (s)':<14}{mean_std([r[0]['rte_seconds'] for r in rows]):>16}{mean_std([r[1]['rte_seconds'] for r in rows]):>16}", file=out)
    print(f"Avg. Gap {mean_std([r[2] for r in rows])}   RTE ratio SalUn/Retrain {mean_std([r[3] for r in rows])}\n",
          file=out, flush=True)
    return {"gap": [r[2] for r in rows], "ratio": [r[3] for r in rows]}


def all_classes(out) -> None:
    print("every class, seed 0: SalUn vs Retrain (UA, RA, TA)", file=out)
    worst_ra = worst_ta = 0.0
    min_ua = 100.0
    for k in range(10):
        exp = Experiment.from_config(RunConfig(forget=f"class:{k}"))
        retrain, salun = exp.unlearn("retrain", seed=0), exp.unlearn("salun", seed=0)
        d_ra = retrain.metrics["ra"] - salun.metrics["ra"]
        d_ta = retrain.metrics["ta"] - salun.metrics["ta"]
        worst_ra, worst_ta, min_ua = max(worst_ra, d_ra), max(worst_ta, d_ta), min(min_ua, salun.metrics["ua"])
        print(f"class {k}: SalUn UA={salun.metrics['ua']:.2f} RA={salun.metrics['ra']:.2f} TA={salun.metrics['ta']:.2f} | "
              f"Retrain RA={retrain.metrics['ra']:.2f} TA={retrain.metrics['ta']:.2f} | "
              f"RA-gap={d_ra:+.2f} TA-gap={d_ta:+.2f}", file=out, flush=True)
    print(f"min UA {min_ua:.2f}; largest shortfall vs Retrain: RA {worst_ra:.2f}, TA {worst_ta:.2f} points\n", file=out, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenarios", nargs="+", default=["class:3", "random:0.1"])
    parser.add_argument("--all-classes", action="store_true")
    args = parser.parse_args()
    started = time.time()
    for forget in args.scenarios:
        scenario(forget, args.seeds, sys.stdout)
    if args.all_classes:
        all_classes(sys.stdout)
    print(f"total wall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
