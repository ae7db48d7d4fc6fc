"""The mask ablation beyond the shipped digit model: a 4x wider classifier, full Fashion-MNIST, random 30% and 50%.

Same question and method as bench_mask_ablation.py (SalUn against RL with the identical recipe, the mask
the only difference, mean ± std over seeds 0 1 2, Avg. Gap to Retrain), on settings the shipped small
digit model does not cover:

  wide      mnist5k, `wide_cnn` (SmallCNN x4: 3.3 M parameters), class 4; the model is
            trained by `python -m core.cli train --dataset mnist5k --model wide_cnn --epochs 15 --seed 0
            --save runs/wide/mnist5k_wide_cnn.safetensors` (13 MB: not shipped); Retrain with its recipe.
  random    the shipped mnist5k model, random 30% and 50% (the lr stage there covers class 4, class 7 and 10%).
  fashion   the shipped Fashion-MNIST model, class 7 (60,000 images), learning rates 1e-3 and 1e-2 only;
            Retrain is bench_fashion.py's seed-0 run (runs/bench_fashion/), MIA-Efficacy over 1 member sample.

Learning rates 1e-3, 3e-3, 1e-2, 3e-2 unless said; every other setting is SalUn's default for the dataset and forget
kind, shared by RL. Every run is appended to bench/results/mask_ablation_more_<setting>.json as it finishes (reruns
skip what is there); `report` prints the tables and writes mask_ablation_more.txt.

    OMP_NUM_THREADS=1 python bench/bench_mask_ablation_more.py wide random fashion report
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bench_baselines_tune import RESULTS, Results, fmt, log, run_method
from core.classification.experiment import Experiment, RunConfig
from core.classification.metrics import avg_gap

ROOT = Path(__file__).resolve().parent.parent
RUNS_FILE = RESULTS / "mask_ablation_more_{}.json"  # one per setting: settings run side by side
REPORT_FILE = RESULTS / "mask_ablation_more.txt"
WIDE = ROOT / "runs" / "wide" / "mnist5k_wide_cnn.safetensors"
LRS = [1e-3, 3e-3, 1e-2, 3e-2]
SETTINGS = {  # name -> (dataset, checkpoint, targets, MIA member samples, learning rates)
    "wide": ("mnist5k", WIDE, ["class:4"], 3, LRS),
    "random": ("mnist5k", None, ["random:0.3", "random:0.5"], 3, LRS),
    # a run here is ~100x a digit run: the default rate and the one where the digit model collapses
    "fashion": ("fashion_mnist", None, ["class:7"], 1, [1e-3, 1e-2]),
}


def retrain_metrics(setting: str, exp: Experiment, forget: str, mia: int, results: Results) -> dict:
    if setting == "fashion":  # bench_fashion.py's full-size Retrain (15 epochs, ~600 CPU s): reused
        path = ROOT / "runs" / "bench_fashion" / f"n60000_{forget.replace(':', '')}_split0_retrain_s0_mia1.json"
        if not path.is_file():
            raise SystemExit(f"run bench/bench_fashion.py first: {path.name} is missing")
        return json.loads(path.read_text())
    found = results.find(setting=setting, forget=forget, method="retrain")
    if found:
        return found["metrics"]
    record, _, _ = run_method(exp, "retrain", 0, mia)
    results.add({"setting": setting, "forget": forget, "method": "retrain", "seed": 0, **record})
    log(f"{setting} retrain {forget}: {fmt(record['metrics'])}")
    return record["metrics"]


def stage(setting: str, seeds: list[int]) -> None:
    dataset, checkpoint, targets, mia, lrs = SETTINGS[setting]
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise SystemExit(f"{checkpoint} is missing; train it first (see this file's docstring)")
    results = Results(Path(str(RUNS_FILE).format(setting)))
    for forget in targets:
        exp = Experiment.from_config(RunConfig(dataset=dataset, forget=forget, seed=0,
                                               checkpoint=str(checkpoint) if checkpoint else None),
                                     device=torch.device("cpu"))
        ref = retrain_metrics(setting, exp, forget, mia, results)
        for seed in seeds:
            for lr in lrs:
                for method in ("salun", "rl"):
                    if results.find(setting=setting, forget=forget, seed=seed, lr=lr, method=method):
                        continue
                    record, _, _ = run_method(exp, method, seed, mia, lr=lr)
                    g = avg_gap(record["metrics"], ref)
                    results.add({"setting": setting, "dataset": dataset, "forget": forget, "seed": seed, "lr": lr,
                                 "method": method, **record, "avg_gap": g})
                    log(f"{setting} {forget} seed {seed} lr {lr:g} {method}: {fmt(record['metrics'])} gap={g:.2f}")


def report() -> None:
    results = Results(Path(str(RUNS_FILE).format("all")))
    results.records = [r for name in SETTINGS for r in Results(Path(str(RUNS_FILE).format(name))).records]
    lines = [f"# bench_mask_ablation_more ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): SalUn (mask 50%) "
             "vs RL (no mask), identical recipe, mean ± std over seeds; Avg. Gap to Retrain (lower is better)",
             f"{'setting':<8}{'target':<12}{'lr':>7}  {'SalUn gap':>14}{'RL gap':>14}  {'SalUn RA':>14}{'RL RA':>14}"
             f"  {'SalUn UA':>14}{'RL UA':>14}  verdict"]
    verdicts = {"SalUn": 0, "RL": 0, "neither": 0}
    for setting, (_, _, targets, _, lrs) in SETTINGS.items():
        for forget in targets:
            for lr in lrs:
                cell = {m: [r for r in results.records if r.get("setting") == setting and r["forget"] == forget
                            and r.get("lr") == lr and r["method"] == m] for m in ("salun", "rl")}
                if not cell["salun"] or not cell["rl"]:
                    continue

                def pm(runs, key):
                    values = [r["avg_gap"] if key == "avg_gap" else r["metrics"][key] for r in runs]
                    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

                (sg, ss), (rg, rs) = pm(cell["salun"], "avg_gap"), pm(cell["rl"], "avg_gap")
                noise = 2.0 * max(ss, rs, 0.05)  # as the app's "Why the mask?" page: 2 spreads apart
                verdict = "SalUn" if rg - sg > noise else "RL" if sg - rg > noise else "neither"
                if min(len(cell["salun"]), len(cell["rl"])) < 2:
                    verdict = "one seed: no verdict"
                else:
                    verdicts[verdict] += 1
                cells = [pm(cell["salun"], "avg_gap"), pm(cell["rl"], "avg_gap"), pm(cell["salun"], "ra"),
                         pm(cell["rl"], "ra"), pm(cell["salun"], "ua"), pm(cell["rl"], "ua")]
                lines.append(f"{setting:<8}{forget:<12}{lr:>7g}  " + "".join(f"{m:7.2f} ± {s:4.2f}" for m, s in cells[:2])
                             + "  " + "".join(f"{m:7.2f} ± {s:4.2f}" for m, s in cells[2:4])
                             + "  " + "".join(f"{m:7.2f} ± {s:4.2f}" for m, s in cells[4:])
                             + f"  {verdict} (n={len(cell['salun'])})")
    lines.append(f"# clearly closer to Retrain (2 spreads apart): SalUn {verdicts['SalUn']}, RL {verdicts['RL']}, "
                 f"neither {verdicts['neither']}")
    REPORT_FILE.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", choices=[*SETTINGS, "report"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.stages:
        if name == "report":
            report()
        else:
            stage(name, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
