"""SalUn against Retrain on the full Fashion-MNIST (60,000 training, 10,000 test images), shipped classifier.

For each scenario (class-wise: one clothing class; random: 10% of the training set) Retrain trains a new
model from scratch on the retain set with the shipped model's own recipe (the gold standard), and SalUn
runs with this dataset's defaults, on the same split. Reported: UA, RA, TA, MIA-Efficacy, Avg. Gap to
Retrain and the RTE ratio SalUn / Retrain, mean ± std over seeds.

    .venv/bin/python bench/bench_fashion.py                        # class:7 and random:0.1, SalUn seeds 0 1 2
    .venv/bin/python bench/bench_fashion.py --retrain-seeds 0 1 2  # Retrain once per seed too (3 x 15 min)

Run time is measured twice: wall seconds (what a user waits, on a shared machine) and CPU seconds of this
single-threaded process (what the work costs, independent of other jobs); the RTE ratio uses CPU
seconds. Every finished run is kept in runs/bench_fashion/ (one JSON file each), so the benchmark can be
stopped and resumed, and bench_scaling.py reuses the full-size class-wise runs. The table is written to
bench/results/fashion.txt.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from core.classification.experiment import Experiment, RunConfig
from core.classification.metrics import avg_gap, evaluate

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "runs" / "bench_fashion"
RESULTS = ROOT / "bench" / "results" / "fashion.txt"
KEYS = ("ua", "ra", "ta", "mia_efficacy")
LABELS = {"ua": "UA", "ra": "RA", "ta": "TA", "mia_efficacy": "MIA-Efficacy"}
# MIA-Efficacy fits one SVC per member sample on ~10,000 + 10,000 confidences: ~12 CPU s each at this
# size, so the benchmark uses fewer member samples than the app (--mia-samples; each seed draws its own).
MIA_SAMPLES = 1


def set_mia_samples(samples: int) -> None:
    global MIA_SAMPLES
    MIA_SAMPLES = int(samples)


class BenchExperiment(Experiment):
    """An Experiment that also records the CPU seconds its evaluations take, so that the unlearning's own
    CPU time can be told apart from the metrics'."""

    eval_cpu = 0.0

    def evaluate(self, model, seed: int = 0, details: bool = False) -> dict:
        start = time.process_time()
        kwargs = {"mia_samples": MIA_SAMPLES} if "mia_samples" in inspect.signature(evaluate).parameters else {}
        out = evaluate(model, self.dataset, self.split, seed=seed, details=details, **kwargs)
        self.eval_cpu = time.process_time() - start
        return out


def timed_unlearn(experiment: BenchExperiment, method: str, seed: int, **overrides) -> dict:
    """One run: its metrics, wall seconds (rte_seconds), CPU seconds (cpu_seconds) and settings."""
    start = time.process_time()
    result = experiment.unlearn(method, seed=seed, **overrides)
    cpu = time.process_time() - start - experiment.eval_cpu
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    params = {k: v for k, v in result.params.items() if isinstance(v, (int, float, str, bool))}
    return {**metrics, "cpu_seconds": cpu, "params": params}


def cached(key: str, compute) -> dict:
    """The stored result of run `key`, computed (and stored) when it is not there yet."""
    path = CACHE / f"{key}.json"
    running = path.with_suffix(".running")  # holds the pid of the benchmark computing it right now
    while running.is_file() and not path.is_file() and _alive(int(running.read_text() or 0)):
        time.sleep(10)  # bench_scaling and bench_fashion share the full-size runs: wait, do not redo
    if path.is_file():
        return json.loads(path.read_text())
    CACHE.mkdir(parents=True, exist_ok=True)
    running.write_text(str(os.getpid()))
    try:
        value = compute()
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(value, indent=1))
        tmp.replace(path)
    finally:
        running.unlink(missing_ok=True)
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return pid > 0


def run_key(n_train: int, forget: str, method: str, seed: int, split_seed: int, epochs: int | None = None) -> str:
    """`epochs`: Retrain's (or, in bench_scaling, the original's) epochs when not the shipped recipe."""
    return (f"n{n_train}_{forget.replace(':', '')}_split{split_seed}_{method}_s{seed}"
            + (f"_e{epochs}" if epochs else "") + f"_mia{MIA_SAMPLES}")


def fashion_experiment(forget: str, split_seed: int = 0) -> BenchExperiment:
    config = RunConfig(dataset="fashion_mnist", forget=forget, seed=split_seed)
    return BenchExperiment.from_config(config, device=torch.device("cpu"))


def mean_std(values) -> str:
    values = list(values)
    return f"{statistics.mean(values):6.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:4.2f}"


def scenario(forget: str, seeds: list[int], retrain_seeds: list[int], split_seed: int, log,
             retrain_epochs: int | None = None, finished_only: bool = False) -> list[str]:
    """Retrain (once per retrain seed) and SalUn (once per seed) on one split; the report's lines.
    `finished_only`: tabulate the runs already kept, compute none (a seed not run yet is left out)."""
    def get(method, seed):
        epochs = retrain_epochs if method == "retrain" else None
        key = run_key(60000, forget, method, seed, split_seed, epochs)
        if finished_only:
            path = CACHE / f"{key}.json"
            return json.loads(path.read_text()) if path.is_file() else None

        def compute():
            print(f"[{time.strftime('%H:%M:%S')}] running {key}", file=log, flush=True)
            # A fresh experiment per run, so every SalUn run pays for its own saliency mask.
            return timed_unlearn(fashion_experiment(forget, split_seed), method, seed,
                                 **({"epochs": epochs} if epochs else {}))
        row = cached(key, compute)
        print(f"{forget:<11} {method:<8} seed {seed}  " + " ".join(f"{k}={row[k]:.2f}" for k in KEYS)
              + f"  wall {row['rte_seconds']:.1f}s  cpu {row['cpu_seconds']:.1f}s", file=log, flush=True)
        return row

    retrains = [r for r in (get("retrain", s) for s in retrain_seeds) if r is not None]
    saluns = [r for r in (get("salun", s) for s in seeds) if r is not None]
    retrain_seeds = [s for s in retrain_seeds if finished_only is False or (CACHE / f"{run_key(60000, forget, 'retrain', s, split_seed, retrain_epochs)}.json").is_file()]
    seeds = [s for s in seeds if finished_only is False or (CACHE / f"{run_key(60000, forget, 'salun', s, split_seed)}.json").is_file()]
    if not saluns or not retrains:
        return []
    gaps = [avg_gap(s, r) for s in saluns for r in retrains]
    cpu_ratio = [s["cpu_seconds"] / r["cpu_seconds"] for s in saluns for r in retrains]
    wall_ratio = [s["rte_seconds"] / r["rte_seconds"] for s in saluns for r in retrains]
    lines = [f"{forget}: SalUn seeds {seeds}, Retrain seeds {retrain_seeds}, forget set drawn with seed {split_seed}",
             f"{'metric':<16}{'Retrain':>16}{'SalUn':>16}{'SalUn - Retrain':>18}"]
    for k in KEYS:
        diff = statistics.mean(s[k] for s in saluns) - statistics.mean(r[k] for r in retrains)
        lines.append(f"{LABELS[k]:<16}{mean_std(r[k] for r in retrains):>16}{mean_std(s[k] for s in saluns):>16}{diff:>+18.2f}")
    lines.append(f"{'RTE CPU (s)':<16}{mean_std(r['cpu_seconds'] for r in retrains):>16}"
                 f"{mean_std(s['cpu_seconds'] for s in saluns):>16}")
    lines.append(f"{'RTE wall (s)':<16}{mean_std(r['rte_seconds'] for r in retrains):>16}"
                 f"{mean_std(s['rte_seconds'] for s in saluns):>16}")
    lines.append(f"Avg. Gap {mean_std(gaps)}   RTE ratio SalUn/Retrain: CPU {mean_std(cpu_ratio)}, wall {mean_std(wall_ratio)}")
    lines.append(f"SalUn settings: {saluns[0]['params']}")
    lines.append(f"Retrain settings: {retrains[0]['params']}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", nargs="+", default=["class:7", "random:0.1"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SalUn seeds")
    parser.add_argument("--retrain-seeds", type=int, nargs="+", default=[0],
                        help="Retrain seeds (each is a full 15-epoch training on ~54,000 images)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed that draws a random forget set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--retrain-only", action="store_true", help="run (and keep) only the Retrain runs")
    parser.add_argument("--retrain-epochs", type=int, default=None,
                        help="Retrain for this many epochs instead of the shipped model's 15 (to save time)")
    parser.add_argument("--mia-samples", type=int, default=MIA_SAMPLES)
    parser.add_argument("--finished-only", action="store_true",
                        help="tabulate the runs kept in runs/bench_fashion/, compute none (missing seeds left out)")
    args = parser.parse_args(argv)
    set_mia_samples(args.mia_samples)
    torch.set_num_threads(args.threads)
    started = time.time()
    report = [f"SalUn vs Retrain on full Fashion-MNIST (60,000 train / 10,000 test), shipped small CNN (15 epochs); "
              f"Retrain {args.retrain_epochs or 15} epochs; {args.threads} thread(s); MIA-Efficacy over "
              f"{MIA_SAMPLES} member sample(s) per seed", ""]
    # Every Retrain first (they do not depend on SalUn's settings), then SalUn, then the tables.
    if not args.finished_only:
        for forget in args.scenarios:
            scenario(forget, [], args.retrain_seeds, args.split_seed, sys.stdout, args.retrain_epochs)
    if args.retrain_only:
        return 0
    for forget in args.scenarios:
        report += scenario(forget, args.seeds, args.retrain_seeds, args.split_seed, sys.stdout, args.retrain_epochs,
                           args.finished_only) + [""]
        RESULTS.write_text("\n".join(report) + "\n")
    report.append(f"total wall time of this invocation {time.time() - started:.0f} s (finished runs are reused)")
    RESULTS.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
