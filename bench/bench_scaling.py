"""How the cost of forgetting grows with the data: SalUn and Retrain on nested subsets of Fashion-MNIST.

For each size n (default 5,000, 15,000, 30,000, 60,000 training images; each subset contains the smaller
ones) an original small CNN is trained on the n images with the shipped model's recipe (15 epochs, Adam
1e-3, batch 128, seed 0; at 60,000 that is the shipped model itself), then the same class is forgotten
by Retrain (from scratch on the n images minus the class) and by SalUn (this dataset's defaults).
Retrain's cost grows with the data kept; SalUn's with the data forgotten (about n/10 images here).

    .venv/bin/python bench/bench_scaling.py [--sizes 5000 15000 30000 60000] [--forget class:7]

Sizes run in the order given and the table is rewritten after each, so a stopped run keeps what it
measured (put 60000 first when bench_fashion.py has already run Retrain there).

Writes bench/results/scaling.txt (table), bench/results/scaling.csv (the figure's data, which the app
draws with core.classification.plots.scaling_figure) and bench/results/scaling.html (the figure; also
scaling.png when kaleido can render it). Runs at 60,000 are shared with bench_fashion.py.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

import bench_fashion
from bench_fashion import BenchExperiment, CACHE, KEYS, cached, fashion_experiment, run_key, timed_unlearn
from core.classification.metrics import avg_gap
from core.classification.training import TrainConfig, accuracy, train_from_scratch, train_meta
from core.data import ImageDataset, load_dataset, make_split

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FULL = 60000


def nested_subset(n_train_total: int, n: int, seed: int = 0) -> np.ndarray:
    """The first n rows of one fixed random order: every subset contains all the smaller ones."""
    order = np.random.default_rng(seed).permutation(n_train_total)
    return np.sort(order[:n])


def subset_experiment(n: int, forget: str, epochs: int | None = None) -> BenchExperiment:
    """Original trained on the n-image subset with the shipped recipe (`epochs` instead of its 15 if
    given; the shipped model itself at full size), forgetting `forget`."""
    if n >= FULL and not epochs:
        return fashion_experiment(forget)
    full = load_dataset("fashion_mnist")
    rows = torch.as_tensor(nested_subset(len(full.train_y), n))
    data = ImageDataset("fashion_mnist", full.train_x[rows], full.train_y[rows], full.test_x, full.test_y,
                        full.class_names)
    shipped = fashion_experiment(forget).meta["training"]
    config = TrainConfig(architecture=shipped["architecture"], epochs=epochs or shipped["epochs"], lr=shipped["lr"],
                         batch_size=shipped["batch_size"], seed=shipped["seed"])
    path = CACHE / f"original_n{n}_e{config.epochs}.pt"
    if path.is_file():
        from core.classification.models import build_model

        model = build_model(config.architecture, 1, data.num_classes, 28)
        model.load_state_dict(torch.load(path))
    else:
        started = time.process_time()
        model = train_from_scratch(data, range(n), config, device="cpu")
        print(f"  original on {n} images: {time.process_time() - started:.0f} CPU s", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    meta = train_meta(data, config, accuracy(model, data.test_x, data.test_y))
    return BenchExperiment(data, model.eval(), meta, make_split(data, forget, seed=0), device=torch.device("cpu"))


def run_at(n: int, forget: str, method: str, epochs: int | None = None) -> dict:
    def compute():
        print(f"[{time.strftime('%H:%M:%S')}] n={n} {method}", flush=True)
        return timed_unlearn(subset_experiment(n, forget, epochs), method, 0)  # fresh: SalUn pays for its own mask
    return cached(run_key(n, forget, method, 0, 0, epochs), compute)


def measure(sizes: list[int], forget: str, retrain_only: bool = False, epochs: int | None = None,
            on_row=None) -> list[dict]:
    """One row per size, in the order given (pass finished sizes first: their runs are reused); after every
    size `on_row(rows so far)`, so a run stopped part way still leaves its table."""
    if retrain_only:
        for n in sizes:
            run_at(n, forget, "retrain", epochs)
        return []
    full = load_dataset("fashion_mnist")
    forgotten_class = int(forget.split(":")[1])
    rows = []
    for n in sizes:
        retrain, salun = run_at(n, forget, "retrain", epochs), run_at(n, forget, "salun", epochs)
        subset_labels = full.train_y[torch.as_tensor(nested_subset(len(full.train_y), n))]
        row = {"n_train": n, "n_forget": int((subset_labels == forgotten_class).sum()),
               "salun_cpu_s": salun["cpu_seconds"], "retrain_cpu_s": retrain["cpu_seconds"],
               "salun_wall_s": salun["rte_seconds"], "retrain_wall_s": retrain["rte_seconds"],
               "avg_gap": avg_gap(salun, retrain),
               **{f"salun_{k}": salun[k] for k in KEYS}, **{f"retrain_{k}": retrain[k] for k in KEYS}}
        rows.append(row)
        print(f"n={n:>6} forget {row['n_forget']:>5}: SalUn {row['salun_cpu_s']:7.1f} CPU s, Retrain "
              f"{row['retrain_cpu_s']:7.1f} CPU s, Avg. Gap {row['avg_gap']:.2f}", flush=True)
        if on_row:
            on_row(sorted(rows, key=lambda r: r["n_train"]))
    return rows


def write_results(rows: list[dict], forget: str, epochs: int | None = None) -> None:
    from core.classification.plots import scaling_figure

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    lines = [f"Forgetting {forget} of Fashion-MNIST on nested training subsets; original = small CNN trained on the "
             f"subset with the shipped recipe, {epochs or 15} epochs (Retrain the same); 1 thread; CPU seconds of "
             f"the unlearning (mask included, metrics excluded)",
             f"{'train images':>12}{'forgotten':>10}{'SalUn CPU s':>13}{'Retrain CPU s':>15}{'ratio':>8}"
             f"{'Avg. Gap':>10}{'SalUn UA':>10}{'SalUn RA':>10}{'SalUn TA':>10}{'Retr. TA':>10}"]
    for r in rows:
        lines.append(f"{r['n_train']:>12}{r['n_forget']:>10}{r['salun_cpu_s']:>13.1f}{r['retrain_cpu_s']:>15.1f}"
                     f"{r['salun_cpu_s'] / r['retrain_cpu_s']:>8.3f}{r['avg_gap']:>10.2f}{r['salun_ua']:>10.2f}"
                     f"{r['salun_ra']:>10.2f}{r['salun_ta']:>10.2f}{r['retrain_ta']:>10.2f}")
    (RESULTS / "scaling.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    figure = scaling_figure(rows)
    figure.write_html(RESULTS / "scaling.html", include_plotlyjs="cdn")
    try:
        figure.write_image(RESULTS / "scaling.png", width=900, height=380, scale=2)
    except Exception as exc:  # kaleido (and a browser for it) is optional
        print(f"no PNG ({type(exc).__name__}: {exc}); the HTML and CSV are written", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 15000, 30000, 60000])
    parser.add_argument("--forget", default="class:7")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--retrain-only", action="store_true", help="train the originals and run Retrain only")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every original and Retrain (default: the shipped recipe's 15)")
    parser.add_argument("--mia-samples", type=int, default=bench_fashion.MIA_SAMPLES)
    args = parser.parse_args(argv)
    bench_fashion.set_mia_samples(args.mia_samples)
    torch.set_num_threads(args.threads)
    started = time.time()
    rows = measure(args.sizes, args.forget, args.retrain_only, args.epochs,
                   on_row=lambda rows: write_results(rows, args.forget, args.epochs))
    if not rows:
        return 0
    print(f"total wall time of this invocation {time.time() - started:.0f} s (finished runs are reused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
