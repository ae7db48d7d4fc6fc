"""How many epochs class-wise SalUn needs on the shipped digit model: quality and cost per epoch budget.

    .venv/bin/python bench/bench_salun_budget.py [--classes 4 7] [--seeds 0 1 2] [--epochs 2 3 4 5]

For each forgotten class with a stored Retrain reference (bench/results/retrain_refs.json, seed 0), SalUn
runs with its defaults except the number of epochs (passes over the forget set), from each seed. Printed:
UA, RA, TA, MIA-Efficacy, Avg. Gap to Retrain (mean ± std over seeds) and the run's wall seconds (RTE:
mask included, metrics excluded; compare budgets with each other, on a shared machine), so the default can be the cheapest budget that forgets as well as the
largest. Results: bench/results/salun_budget.txt.
"""

from __future__ import annotations

import argparse
import os
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from core.classification.experiment import Experiment, RunConfig
from core.classification.metrics import avg_gap

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    refs = {r["forget"]: r["metrics"] for r in json.loads((RESULTS / "retrain_refs.json").read_text())
            if r["dataset"] == "mnist5k" and r["seed"] == 0}
    lines = [f"# bench_salun_budget ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): class-wise SalUn on the "
             f"shipped mnist5k model, defaults except epochs; seeds {args.seeds}; Retrain reference seed 0; "
             f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f} at start",
             f"{'forget':<8}{'epochs':>7}{'UA':>14}{'RA':>14}{'TA':>14}{'MIA-Eff.':>14}{'Avg. Gap':>14}{'RTE s':>8}"]
    print(lines[0], flush=True)
    for k in args.classes:
        forget = f"class:{k}"
        if forget not in refs:
            print(f"# no Retrain reference for {forget} in retrain_refs.json: skipped", flush=True)
            continue
        experiment = Experiment.from_config(RunConfig(forget=forget), device=torch.device("cpu"))
        experiment.unlearn("salun", seed=0, epochs=1)  # warm-up: first-call costs outside the table
        for epochs in args.epochs:
            runs = []
            for seed in args.seeds:
                experiment._gradients = None  # every run pays for its own mask, as a user's does
                result = experiment.unlearn("salun", seed=seed, epochs=epochs)
                runs.append((result.metrics, avg_gap(result.metrics, refs[forget]), result.metrics["rte_seconds"]))
            cells = []
            for key in ("ua", "ra", "ta", "mia_efficacy"):
                values = [m[key] for m, _, _ in runs]
                cells.append(f"{statistics.mean(values):7.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:4.2f}")
            gaps = [g for _, g, _ in runs]
            cells.append(f"{statistics.mean(gaps):7.2f} ± {statistics.stdev(gaps) if len(gaps) > 1 else 0:4.2f}")
            line = f"{forget:<8}{epochs:>7}" + "".join(f"{c:>14}" for c in cells) + f"{statistics.mean(c for _, _, c in runs):>8.1f}"
            print(line, flush=True)
            lines.append(line)
    (RESULTS / "salun_budget.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
