"""Fair baselines: a documented grid search for GA, FT, ℓ1-sparse and SSD per (dataset, forget kind).

A comparison against baselines left at arbitrary defaults teaches the wrong thing, so every baseline
is searched over the grid below and the point closest to Retrain is kept:

  * criterion: the lowest Avg. Gap to Retrain (mean |Δ| over UA, RA, TA, MIA-Efficacy) on the tuning
    target, seed 0;
  * ties to the cheaper: every grid point within TIE (0.25 points) of the best counts as a tie, and
    among those the one with the fewest epochs wins (then the lowest gap). SSD trains nothing, so its
    ties go to the lowest gap;
  * SSD's grid follows its paper's guidance (Foster et al. 2023): λ (dampening) around 1, and the
    selection threshold α raised until the retained accuracy survives.

Stage `grid` runs the search (MIA with 3 member samples, to fit a shared 2-core machine); stage
`confirm` reruns each chosen setting on seeds 1 and 2 (seed 0 is the grid's run). A seed is the
unlearning run's own randomness: the forget set and the Retrain reference are seed 0's, so Retrain is
trained once per target. `report` prints both tables, the paper's Table 1 ordering beside ours, with
SalUn and RL taken from bench_mask_ablation.py's runs at their default learning rate.
Every run is appended to bench/results/*.json as it finishes, so a partial run is usable and a rerun
skips what is already there.

    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_baselines_tune.py grid confirm report
    python bench/bench_baselines_tune.py report            # tables from the saved results only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from core.classification.experiment import Experiment, RunConfig
from core.classification.metrics import GAP_METRICS, evaluate
from core.errors import DivergedError
from core.classification.training import copy_model
from core.methods import get_method

RESULTS = Path(__file__).resolve().parent / "results"
REFS = RESULTS / "retrain_refs.json"
GRID_FILE = RESULTS / "baselines_tune_grid.json"
CONFIRM_FILE = RESULTS / "baselines_tune_confirm.json"
ORIGINAL_FILE = RESULTS / "original_refs.json"  # the model before unlearning, scored like every run
TIE = 0.25  # Avg. Gap points; below the seed-to-seed spread of the cheap methods
GRID_MIA_SAMPLES = 3
FULL_MIA_SAMPLES = 10  # Retrain references
CONFIRM_MIA_SAMPLES = 3  # the confirmation runs, as the grid (a shared 2-core machine)

# The tuning target of each (dataset, forget kind); class 4 is the class the issue measured.
TARGETS = {("mnist5k", "class"): "class:4", ("mnist5k", "random"): "random:0.1"}

GRIDS = {
    # GA is a cliff on this model (lr 1e-3: 3 epochs leave UA 29, 5 epochs collapse RA to 11), so its
    # grid is fine around that edge; points that diverge are recorded and never chosen.
    "ga": {"lr": [5e-4, 1e-3, 2e-3, 3e-3, 1e-2, 3e-2], "epochs": [1, 2, 3, 4, 5, 6, 8]},
    "ft": {"lr": [0.01, 0.02, 0.05, 0.1], "epochs": [2, 5]},
    "l1_sparse": {"lr": [0.02, 0.05], "alpha": [1e-4, 1e-3], "epochs": [2, 5]},
    # SSD's paper fixes λ = 1 and tunes α; λ = 5 is a gentler dampening for the same selection.
    "ssd": {"alpha": [10, 50, 100, 250, 500, 1000], "dampening": [1.0, 5.0]},
}
# A random share: the forget images are ordinary training images that Retrain still classifies ~97%
# correctly, so the baselines must move little; the grid looks at short runs (a shared 2-core machine).
GRIDS_RANDOM = {
    "ga": {"lr": [5e-4, 1e-3, 2e-3], "epochs": [1, 3, 5]},
    "ft": {"lr": [0.01, 0.02, 0.05], "epochs": [1, 2]},
    "l1_sparse": {"lr": [0.02, 0.05], "alpha": [1e-4, 1e-3], "epochs": [2]},
}

# SalUn's paper, Table 1 (CIFAR-10, ResNet-18, random 10%, mean of 10 trials): UA, RA, TA, MIA, Avg. Gap.
PAPER_RANDOM10 = {
    "retrain": (5.24, 100.00, 94.26, 12.88, 0.0), "ft": (0.63, 99.88, 94.06, 2.70, 3.78),
    "rl": (7.61, 99.67, 92.83, 37.36, 7.15), "ga": (0.69, 99.50, 94.01, 1.70, 4.12),
    "l1_sparse": (4.19, 97.74, 91.59, 9.84, 2.26), "salun": (2.85, 99.62, 93.93, 14.39, 1.15),
}
# Class-wise CIFAR-10 UA as cited in issue #14 (the other columns are not in our notes).
PAPER_CLASS_UA = {"ft": 22.5, "ga": 93.1, "l1_sparse": 100.0}
LABELS = {"retrain": "Retrain", "ft": "FT", "ga": "GA", "l1_sparse": "ℓ1-sparse", "ssd": "SSD", "rl": "RL",
          "salun": "SalUn"}


# --- results on disk ------------------------------------------------------------------------------

class Results:
    """A JSON list of records, rewritten atomically after every record (a killed run loses one run)."""

    def __init__(self, path: Path):
        self.path = path
        self.records = json.loads(path.read_text()) if path.is_file() else []

    def find(self, **key) -> dict | None:
        for r in self.records:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, record: dict) -> dict:
        self.records.append(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=1))
        os.replace(tmp, self.path)
        return record


# --- runs -----------------------------------------------------------------------------------------

_experiments: dict[tuple, Experiment] = {}


def experiment(dataset: str, forget: str, seed: int) -> Experiment:
    key = (dataset, forget, seed)
    if key not in _experiments:
        _experiments.clear()  # one at a time: memory is shared too
        _experiments[key] = Experiment.from_config(RunConfig(dataset=dataset, forget=forget, seed=seed))
    return _experiments[key]


def measure(exp: Experiment, model, seed: int, mia_samples: int) -> dict:
    """UA, RA, TA and the MIA-Efficacy of each member sample (so runs scored with 3 samples compare
    with references scored with 10 by their first 3)."""
    m = evaluate(model, exp.dataset, exp.split, seed=seed, details=True, mia_samples=mia_samples)
    out = {k: m[k] for k in ("ua", "ra", "ta")}
    out["mia_per_sample"] = [float(v) for v in m["details"]["mia_per_sample"]]
    out["mia_efficacy"] = statistics.mean(out["mia_per_sample"])
    if "forget_test_accuracy" in m:
        out["forget_test_accuracy"] = m["forget_test_accuracy"]
    return out


def run_method(exp: Experiment, method: str, seed: int, mia_samples: int, sparsity: float = 0.5,
               masked: bool = False, **overrides) -> tuple[dict, torch.nn.Module, dict | None]:
    """One run as Experiment.unlearn does it (same params resolution, mask, timing), scored with
    `mia_samples` member samples drawn as for seed 0 (the same attacker members as the Retrain
    reference). Returns the metrics, the unlearned model and the mask used."""
    spec = get_method(method)
    params = spec.resolve(seed, exp.dataset.name, exp.split.target.kind, base=exp._recipe_defaults(spec),
                          **overrides)
    start = time.perf_counter()
    mask = exp.mask(sparsity) if spec.uses_mask(masked) else None
    model = copy_model(exp.original)
    spec.run(model, exp.data, params, mask=mask)
    rte = time.perf_counter() - start
    metrics = {**measure(exp, model, 0, mia_samples), "rte_seconds": rte}
    return {"params": {k: v for k, v in params.items() if k != "seed"}, "metrics": metrics}, model, mask


def retrain_ref(dataset: str, forget: str, seed: int, refs: Results | None = None) -> dict:
    """Retrain's metrics for this split and seed (10 MIA samples), computed once and kept in REFS."""
    refs = refs or Results(REFS)
    found = refs.find(dataset=dataset, forget=forget, seed=seed)
    if found:
        return found["metrics"]
    exp = experiment(dataset, forget, seed)
    record, _, _ = run_method(exp, "retrain", seed, FULL_MIA_SAMPLES)
    refs.add({"dataset": dataset, "forget": forget, "seed": seed, **record})
    log(f"retrain {dataset} {forget} seed {seed}: {fmt(record['metrics'])}")
    return record["metrics"]


def gap(metrics: dict, ref: dict) -> float:
    """Avg. Gap, with both MIA-Efficacies taken over the same member samples (the shorter prefix)."""
    k = min(len(metrics["mia_per_sample"]), len(ref["mia_per_sample"]))
    mia = statistics.mean(metrics["mia_per_sample"][:k]), statistics.mean(ref["mia_per_sample"][:k])
    diffs = [abs(metrics[m] - ref[m]) for m in GAP_METRICS if m != "mia_efficacy"] + [abs(mia[0] - mia[1])]
    return sum(diffs) / len(diffs)


def fmt(m: dict) -> str:
    return " ".join(f"{k}={m[k]:.2f}" for k in (*GAP_METRICS, "rte_seconds") if k in m)


def log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


# --- stage 1: the grid ----------------------------------------------------------------------------

def grid_points(method: str, kind: str = "class") -> list[dict]:
    grid = (GRIDS_RANDOM if kind == "random" else {}).get(method, GRIDS[method])
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if method == "ssd":  # min(λ·I_D/I_f, 1) with I_f > α·I_D: λ ≥ α would dampen nothing
        points = [p for p in points if p["dampening"] < p["alpha"]]
    return points


def ssd_grid(exp: Experiment, seed: int, points: list[dict], done, save) -> None:
    """SSD's Fisher importances do not depend on α or λ: compute them once and apply every grid point
    exactly as core.classification.methods.run_ssd does (the confirm stage runs the real method)."""
    from core.classification.methods import _fisher_diagonal

    data = exp.data
    bs = get_method("ssd").defaults()["batch_size"]
    start = time.perf_counter()
    full_x, full_y = torch.cat([data.forget_x, data.retain_x]), torch.cat([data.forget_y, data.retain_y])
    i_full, _ = _fisher_diagonal(exp.original, full_x, full_y, bs, None, 0, 0)
    i_forget, _ = _fisher_diagonal(exp.original, data.forget_x, data.forget_y, bs, None, 0, 0)
    fisher_seconds = time.perf_counter() - start
    for point in points:
        if done(point):
            continue
        model = copy_model(exp.original)
        start = time.perf_counter()
        with torch.no_grad():
            for name, p in model.named_parameters():
                selected = i_forget[name] > point["alpha"] * i_full[name]
                factor = torch.clamp(point["dampening"] * i_full[name] / i_forget[name].clamp_min(1e-30), max=1.0)
                p.copy_(torch.where(selected, p * factor, p))
        rte = fisher_seconds + time.perf_counter() - start
        save(point, {**measure(exp, model, seed, GRID_MIA_SAMPLES), "rte_seconds": rte})


def stage_grid(methods: list[str]) -> None:
    results = Results(GRID_FILE)
    for (dataset, kind), forget in TARGETS.items():
        ref = retrain_ref(dataset, forget, 0)
        exp = experiment(dataset, forget, 0)
        for method in methods:
            def done(point, method=method):
                return results.find(dataset=dataset, forget=forget, method=method, point=point) is not None

            def save(point, metrics, method=method):
                g = gap(metrics, ref)
                results.add({"dataset": dataset, "kind": kind, "forget": forget, "method": method, "point": point,
                             "metrics": metrics, "avg_gap": g})
                log(f"{dataset} {forget} {method} {point}: {fmt(metrics)} gap={g:.2f}")

            points = grid_points(method, kind)
            if method == "ssd":
                ssd_grid(exp, 0, points, done, save)
                continue
            for point in points:
                if done(point):
                    continue
                try:
                    record, _, _ = run_method(exp, method, 0, GRID_MIA_SAMPLES, **point)
                except DivergedError as exc:  # a grid point that blows up is a result too: never chosen
                    results.add({"dataset": dataset, "kind": kind, "forget": forget, "method": method,
                                 "point": point, "diverged": str(exc), "avg_gap": float("inf")})
                    log(f"{dataset} {forget} {method} {point}: diverged")
                    continue
                save(point, record["metrics"])


def chosen(results: Results, dataset: str, kind: str, method: str) -> dict | None:
    """The grid point closest to Retrain; ties (within TIE) to the fewest epochs."""
    rows = [r for r in results.records if (r["dataset"], r["kind"], r["method"]) == (dataset, kind, method)]
    if not rows:
        return None
    best = min(r["avg_gap"] for r in rows)
    tied = [r for r in rows if r["avg_gap"] <= best + TIE]
    return min(tied, key=lambda r: (r["point"].get("epochs", 0), r["avg_gap"]))


# --- stage 2: confirm over seeds ------------------------------------------------------------------

def stage_confirm(methods: list[str], seeds: list[int]) -> None:
    """The chosen setting of each baseline on more seeds. A seed here is the unlearning run's own
    randomness (batch order; SSD has none); the forget set and the Retrain reference stay seed 0's, so
    the machine trains Retrain once per target (on this 2-core machine, under load, Retrain took 2-10
    minutes). Seed 0 is the grid's own run of the chosen point."""
    grid, results = Results(GRID_FILE), Results(CONFIRM_FILE)
    for (dataset, kind), forget in TARGETS.items():
        ref = retrain_ref(dataset, forget, 0)
        exp = experiment(dataset, forget, 0)
        for seed in seeds:
            for method in methods:
                best = chosen(grid, dataset, kind, method)
                if best is None:
                    continue
                point, setting = best["point"], "tuned"
                key = dict(dataset=dataset, forget=forget, seed=seed, method=method, setting=setting, point=point)
                if results.find(**key):
                    continue
                if seed == 0:  # the grid's run (SSD's grid applied run_ssd's rule itself; seeds 1-2 run the method)
                    results.add({**key, "kind": kind, "metrics": best["metrics"], "avg_gap": best["avg_gap"],
                                 "from": "grid"})
                    continue
                try:
                    record, _, _ = run_method(exp, method, seed, CONFIRM_MIA_SAMPLES, **point)
                except DivergedError as exc:  # a setting that diverges on another seed is reported as such
                    results.add({**key, "kind": kind, "diverged": str(exc)})
                    log(f"confirm {forget} seed {seed} {method} {point}: diverged")
                    continue
                g = gap(record["metrics"], ref)
                results.add({**key, "kind": kind, **record, "avg_gap": g})
                log(f"confirm {forget} seed {seed} {method} {setting} {point}: {fmt(record['metrics'])} gap={g:.2f}")


def stage_original() -> None:
    """The original model, untouched, scored against Retrain: the gap that doing nothing leaves."""
    results = Results(ORIGINAL_FILE)
    for (dataset, kind), forget in TARGETS.items():
        if results.find(dataset=dataset, forget=forget):
            continue
        exp = experiment(dataset, forget, 0)
        metrics = {**measure(exp, exp.original, 0, CONFIRM_MIA_SAMPLES), "rte_seconds": 0.0}
        g = gap(metrics, retrain_ref(dataset, forget, 0))
        results.add({"dataset": dataset, "kind": kind, "forget": forget, "seed": 0, "metrics": metrics, "avg_gap": g})
        log(f"original {forget}: {fmt(metrics)} gap={g:.2f}")


# --- report ---------------------------------------------------------------------------------------

def report(out=sys.stdout) -> None:
    from core.classification import why_mask

    grid = Results(GRID_FILE)
    table = why_mask.baseline_table(RESULTS)
    for (dataset, kind), forget in TARGETS.items():
        print(f"\n## {dataset}, {forget} — chosen settings (grid on seed 0, criterion: Avg. Gap to Retrain, "
              f"ties within {TIE} to fewer epochs)", file=out)
        for method in GRIDS:
            best = chosen(grid, dataset, kind, method)
            rows = [r for r in grid.records if (r["dataset"], r["kind"], r["method"]) == (dataset, kind, method)]
            diverged = sum(1 for r in rows if "diverged" in r)
            if best:
                print(f"  {LABELS[method]:<10} {best['point']}  grid gap {best['avg_gap']:.2f} "
                      f"({len(rows)} points, {diverged} diverged)", file=out)
        rows = [r for r in table if r["forget"] == forget]
        if not rows:
            continue
        print(f"\n{dataset} {forget}: mean over seeds (Avg. Gap ± std); MIA-Efficacy with {CONFIRM_MIA_SAMPLES} "
              f"member samples, Retrain with {FULL_MIA_SAMPLES}", file=out)
        print(f"{'method':<34}{'setting':<30}{'seeds':>6}{'UA':>8}{'RA':>8}{'TA':>8}{'MIA':>8}{'Avg. Gap':>16}"
              f"{'RTE (s)':>9}", file=out)
        for r in rows:
            print(f"{r['method']:<34}{r['setting']:<30}{r['seeds']:>6}{r['UA']:>8.2f}{r['RA']:>8.2f}{r['TA']:>8.2f}"
                  f"{r['MIA-Efficacy']:>8.2f}{r['Avg. Gap']:>9.2f} ± {r['Avg. Gap ±']:<4.2f}{r['RTE (s)']:>9.1f}"
                  + (f"  ({r['diverged']} seed(s) diverged)" if r.get("diverged") else ""), file=out)
        print(f"ours, closest to Retrain first: {' < '.join(why_mask.ordering(table, forget))}", file=out)
        if kind == "random":
            paper = " < ".join(LABELS[m] for m in sorted((m for m in PAPER_RANDOM10 if m != "retrain"),
                                                          key=lambda m: PAPER_RANDOM10[m][4]))
            print(f"paper Table 1 (CIFAR-10, ResNet-18, random 10%), closest first: {paper} "
                  f"(SSD is not in the paper's table)", file=out)
            for m, (ua, ra, ta, mia, g) in PAPER_RANDOM10.items():
                print(f"  paper {LABELS[m]:<10} UA {ua:6.2f}  RA {ra:6.2f}  TA {ta:6.2f}  MIA {mia:6.2f}  Avg. Gap {g:.2f}",
                      file=out)
        else:
            print("paper, class-wise CIFAR-10 UA (as cited in issue #14): "
                  + ", ".join(f"{LABELS[m]} {v}" for m, v in PAPER_CLASS_UA.items())
                  + "; Retrain UA 100, SalUn within about a point of it", file=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", choices=["grid", "confirm", "original", "report"])
    parser.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    if "grid" in args.stages:
        stage_grid(args.methods)
    if "confirm" in args.stages:
        stage_confirm(args.methods, args.seeds)
    if "original" in args.stages:
        stage_original()
    if "report" in args.stages:
        report()
    log(f"wall time {time.time() - started:.0f} s (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
