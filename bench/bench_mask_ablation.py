"""Does the saliency mask matter? SalUn against RL with the identical recipe, the mask the only difference.

SalUn and RL are one function here (core.classification.methods.run_relabel): same random labels, same
retain batches, same optimizer, same seed. SalUn passes the saliency mask, RL does not. So any
difference in the numbers is the mask's.

Stages (each appends every run to bench/results/mask_ablation.json as it finishes; reruns skip what
is there):

  lr        SalUn and RL at learning rates LRS (the stability curve), targets TARGETS (+ MORE_TARGETS with --more), seeds 0 1 2;
            also, per pair: how much of RL's weight change lies inside SalUn's mask (if RL already
            moves mostly the salient weights, the mask cannot change much), and how often the two
            models agree on the test set.
  sparsity  SalUn with a mask of SPARSITIES at lr 1e-3 (default) and 1e-2 (where RL collapses),
            class 4 and random 10%, seeds 0 1 2 (sparsity 0.5 comes from the lr stage).
  layers    which layers the mask picks, at 5% and 50%, for every target (seed 0; gradients only).
  report    mean ± std tables, and bench/results/mask_ablation_summary.json for the app's
            "Why the mask?" page.

A seed is the unlearning run's own randomness (its random labels, batch order, retain batches); the
forget set and the Retrain reference are seed 0's, shared with bench_baselines_tune.py
(bench/results/retrain_refs.json), so Retrain is trained once per target.
MIA-Efficacy uses 3 member samples here (10 in the app) to fit a shared 2-core machine.

    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_mask_ablation.py lr sparsity layers report
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from bench_baselines_tune import RESULTS, Results, experiment, fmt, gap, log, retrain_ref, run_method
from core.classification.training import predict
from core.saliency import saliency_mask

ABLATION_FILE = RESULTS / "mask_ablation.json"
LAYERS_FILE = RESULTS / "mask_ablation_layers.json"
SUMMARY_FILE = RESULTS / "mask_ablation_summary.json"
DATASET = "mnist5k"
TARGETS = ["class:4", "random:0.1"]  # the baselines' tuning targets (their Retrain runs are shared)
MORE_TARGETS = ["class:7", "random:0.3"]  # --more, when the machine allows
LRS = [1e-3, 3e-3, 1e-2, 3e-2]
SPARSITIES = [0.05, 0.2]  # with 0.5 (the lr stage) and 1.0 (RL)
SPARSITY_LRS = [1e-3, 1e-2]
SPARSITY_TARGETS = ["class:4", "random:0.1"]
MIA_SAMPLES = 3


def share_inside(original, model, mask) -> float:
    """Share of the squared weight change of `model` (from `original`) that lies inside `mask`."""
    inside = total = 0.0
    for (name, p0), p in zip(original.named_parameters(), model.parameters()):
        d2 = (p.detach() - p0.detach()) ** 2
        total += float(d2.sum())
        inside += float(d2[mask[name]].sum())
    return inside / total if total else 0.0


def stage_lr(seeds: list[int], targets: list[str]) -> None:
    results = Results(ABLATION_FILE)
    for seed in seeds:
        for forget in targets:
            for lr in LRS:
                if results.find(stage="lr", forget=forget, seed=seed, lr=lr, method="rl"):
                    continue
                ref = retrain_ref(DATASET, forget, 0)
                exp = experiment(DATASET, forget, 0)
                salun, salun_model, mask = run_method(exp, "salun", seed, MIA_SAMPLES, lr=lr)
                rl, rl_model, _ = run_method(exp, "rl", seed, MIA_SAMPLES, lr=lr)
                test_x = exp.dataset.test_x[torch.as_tensor(exp.split.test_idx)]
                agree = float((predict(salun_model, test_x).argmax(1) == predict(rl_model, test_x).argmax(1))
                              .float().mean() * 100)
                pair = {"rl_change_inside_mask_50": share_inside(exp.original, rl_model, mask),
                        "rl_change_inside_mask_5": share_inside(exp.original, rl_model, exp.mask(0.05)),
                        "test_agreement": agree}
                for method, record in (("salun", salun), ("rl", rl)):
                    g = gap(record["metrics"], ref)
                    results.add({"stage": "lr", "dataset": DATASET, "forget": forget, "seed": seed, "lr": lr,
                                 "sparsity": 0.5 if method == "salun" else 1.0, "method": method,
                                 "metrics": record["metrics"], "avg_gap": g, **(pair if method == "rl" else {})})
                    log(f"lr {forget} seed {seed} lr {lr:g} {method}: {fmt(record['metrics'])} gap={g:.2f}")
                log(f"   pair: {pair}")


def stage_sparsity(seeds: list[int]) -> None:
    results = Results(ABLATION_FILE)
    for seed in seeds:
        for forget in SPARSITY_TARGETS:
            for lr in SPARSITY_LRS:
                for sparsity in SPARSITIES:
                    key = dict(stage="sparsity", forget=forget, seed=seed, lr=lr, sparsity=sparsity)
                    if results.find(**key):
                        continue
                    ref = retrain_ref(DATASET, forget, 0)
                    exp = experiment(DATASET, forget, 0)
                    record, _, _ = run_method(exp, "salun", seed, MIA_SAMPLES, sparsity=sparsity, lr=lr)
                    g = gap(record["metrics"], ref)
                    results.add({**key, "dataset": DATASET, "method": "salun", "metrics": record["metrics"],
                                 "avg_gap": g})
                    log(f"sparsity {forget} seed {seed} lr {lr:g} s {sparsity}: {fmt(record['metrics'])} gap={g:.2f}")


def stage_layers(targets: list[str]) -> None:
    results = Results(LAYERS_FILE)
    for forget in targets:
        if results.find(forget=forget):
            continue
        exp = experiment(DATASET, forget, 0)
        grads = exp.forget_gradients()
        layers = {}
        for sparsity in (0.05, 0.5):
            mask = saliency_mask(grads, sparsity)
            selected = sum(int(m.sum()) for m in mask.values())
            layers[str(sparsity)] = {name: {"numel": m.numel(), "salient": int(m.sum()),
                                            "share_of_mask": int(m.sum()) / selected,
                                            "layer_fraction": float(m.float().mean())} for name, m in mask.items()}
        results.add({"forget": forget, "dataset": DATASET, "layers": layers})
        top = max(layers["0.05"].items(), key=lambda kv: kv[1]["share_of_mask"])
        log(f"layers {forget}: 5% mask — {top[0]} holds {top[1]['share_of_mask']:.0%}")


def aggregate() -> dict:
    """Mean ± std over seeds of every (stage, target, lr, sparsity, method) cell."""
    results = Results(ABLATION_FILE)
    cells: dict[tuple, list[dict]] = {}
    for r in results.records:
        cells.setdefault((r["stage"], r["forget"], r["lr"], r["sparsity"], r["method"]), []).append(r)
    # the lr stage's SalUn runs are the sparsity-0.5 points of the sparsity curves
    rows = []
    for (stage, forget, lr, sparsity, method), runs in sorted(cells.items(), key=lambda kv: str(kv[0])):
        row = {"stage": stage, "forget": forget, "lr": lr, "sparsity": sparsity, "method": method,
               "seeds": sorted(r["seed"] for r in runs), "n": len(runs)}
        for k in ("ua", "ra", "ta", "mia_efficacy", "rte_seconds"):
            values = [r["metrics"][k] for r in runs]
            row[k] = statistics.mean(values)
            row[k + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        gaps = [r["avg_gap"] for r in runs]
        row["avg_gap"], row["avg_gap_std"] = statistics.mean(gaps), statistics.stdev(gaps) if len(gaps) > 1 else 0.0
        for k in ("rl_change_inside_mask_50", "rl_change_inside_mask_5", "test_agreement"):
            if all(k in r for r in runs):
                row[k] = statistics.mean(r[k] for r in runs)
        rows.append(row)
    targets = [t for t in TARGETS + MORE_TARGETS if any(r["forget"] == t for r in rows)]
    return {"rows": rows, "layers": Results(LAYERS_FILE).records, "targets": targets}


def report() -> None:
    summary = aggregate()
    rows = summary["rows"]
    print("\n## SalUn (mask 50%) vs RL (no mask), identical recipe; mean ± std over seeds; Avg. Gap to Retrain")
    print(f"{'target':<12}{'lr':>7}  {'SalUn gap':>14}{'RL gap':>14}  {'SalUn RA':>14}{'RL RA':>14}  "
          f"{'SalUn UA':>14}{'RL UA':>14}  {'RL Δ in mask':>12}{'agree %':>9}")
    for forget in summary["targets"]:
        for lr in LRS:
            s = next((r for r in rows if (r["stage"], r["forget"], r["lr"], r["method"]) == ("lr", forget, lr, "salun")), None)
            q = next((r for r in rows if (r["stage"], r["forget"], r["lr"], r["method"]) == ("lr", forget, lr, "rl")), None)
            if not s or not q:
                continue
            pm = lambda r, k: f"{r[k]:.2f} ± {r[k + '_std']:.2f}"  # noqa: E731
            print(f"{forget:<12}{lr:>7g}  {pm(s, 'avg_gap'):>14}{pm(q, 'avg_gap'):>14}  {pm(s, 'ra'):>14}{pm(q, 'ra'):>14}  "
                  f"{pm(s, 'ua'):>14}{pm(q, 'ua'):>14}  {q.get('rl_change_inside_mask_50', 0):>12.1%}"
                  f"{q.get('test_agreement', 0):>9.1f}   (n={s['n']})")
    print("\n## SalUn by mask sparsity (share of weights free); 1.0 = RL")
    for forget in SPARSITY_TARGETS:
        for lr in SPARSITY_LRS:
            points = [r for r in rows if r["forget"] == forget and r["lr"] == lr and r["method"] == "salun"
                      and r["stage"] in ("sparsity", "lr")]
            points += [r for r in rows if r["forget"] == forget and r["lr"] == lr and r["method"] == "rl"]
            text = "  ".join(f"{r['sparsity']:g}: gap {r['avg_gap']:.2f}±{r['avg_gap_std']:.2f} RA {r['ra']:.1f}"
                             for r in sorted(points, key=lambda r: r["sparsity"]))
            print(f"{forget:<12} lr {lr:g}  {text}")
    print("\n## Which layers the mask picks (seed 0): share of the mask in each layer")
    for rec in summary["layers"]:
        for sp in ("0.05", "0.5"):
            parts = ", ".join(f"{name} {v['share_of_mask']:.0%} (of the layer {v['layer_fraction']:.0%})"
                              for name, v in rec["layers"][sp].items() if v["share_of_mask"] >= 0.01)
            print(f"{rec['forget']:<12} {float(sp):.0%} mask: {parts}")
    SUMMARY_FILE.write_text(json.dumps({**summary, "lrs": LRS, "dataset": DATASET,
                                        "mia_samples": MIA_SAMPLES}, indent=1))
    print(f"\nwrote {SUMMARY_FILE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", choices=["lr", "sparsity", "layers", "report"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--more", action="store_true", help=f"also {', '.join(MORE_TARGETS)}")
    parser.add_argument("--targets", nargs="+", help="only these forget targets (e.g. class:7)")
    args = parser.parse_args()
    targets = args.targets or TARGETS + (MORE_TARGETS if args.more else [])
    torch.set_num_threads(1)
    started = time.time()
    if "layers" in args.stages:
        stage_layers(TARGETS + MORE_TARGETS)  # gradients only: cheap
    if "lr" in args.stages:
        stage_lr(args.seeds, targets)
    if "sparsity" in args.stages:
        stage_sparsity(args.seeds)
    if "report" in args.stages:
        report()
    log(f"wall time {time.time() - started:.0f} s (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
