"""The `sweep` subcommand: a grid of unlearning runs, on this machine or on a Ray cluster.

    python -m core.cli sweep --classes all --method salun,rl --sparsity 0.3,0.5,0.7 --seeds 0,1,2 --compare-retrain
    python -m core.cli sweep --forget class:0 --forget random:0.1 --backend ray --address auto --json

With --json, stdout holds one JSON object per run as it finishes (`unlearn --json`'s keys plus
`sparsity`; a failed run has `error` instead of metrics), then a summary object as the last line.
The exit status is 1 when any run failed, 2 for a bad grid.
"""

from __future__ import annotations

import sys

from core.errors import CancelledError, SalunError


class GridBar:
    """One tqdm bar on stderr over the grid's tasks (runs plus shared Retrain references)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def __call__(self, done: int, total: int, failed: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="sweep", unit="run", file=sys.stderr, leave=True,
                            dynamic_ncols=True, mininterval=0.5)
        self.bar.update(done - self.bar.n)
        if failed:
            self.bar.set_postfix(failed=failed, refresh=False)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _table(outcomes) -> None:
    from core.classification.metrics import METRIC_LABELS

    keys = ("ua", "ra", "ta", "mia_efficacy")
    with_gap = any(o.result is not None and o.result.retrain is not None for o in outcomes)
    print(f"{'forget':<14}{'method':<11}{'sparsity':>9}{'seed':>6}" + "".join(f"{METRIC_LABELS[k]:>14}" for k in keys)
          + (f"{'Avg. Gap':>10}" if with_gap else ""))
    for o in outcomes:
        sparsity = "-" if o.sparsity is None else f"{o.sparsity:g}"
        line = f"{o.config.forget:<14}{o.config.method:<11}{sparsity:>9}{o.config.seed:>6}"
        if o.error is not None:
            print(f"{line}  failed: {o.error}")
            continue
        row = o.row
        print(line + "".join(f"{row[k]:>14.2f}" for k in keys) + (f"{row['avg_gap']:>10.2f}" if "avg_gap" in row else ""))


def cmd_sweep(args) -> dict:
    from core.cli.checks import json_line, operator_limits
    from core.sweep import Grid, Sweep, class_targets, describe, make_backend, parse_list

    forgets = list(args.forget or [])
    if args.classes:
        forgets += class_targets(args.classes, args.dataset, args.checkpoint)
    grid = Grid(dataset=args.dataset, forgets=list(dict.fromkeys(forgets or ["class:3"])),
                methods=parse_list(args.method, "--method", str), sparsities=parse_list(args.sparsity, "--sparsity", float),
                seeds=parse_list(args.seeds, "--seeds", int), epochs=args.epochs, lr=args.lr, alpha=args.alpha,
                compare_retrain=args.compare_retrain, checkpoint=args.checkpoint, data_root=args.data_root)
    backend = make_backend(args.backend, args.address, args.workers)
    store = None
    if not args.no_store:
        from core.store import default_store

        store = default_store()
    bar = GridBar(not args.quiet)
    sweep = Sweep(grid, backend, threads_per_run=args.threads_per_run, gpus_per_run=args.gpus_per_run,
                  store=store, notify=bar.write)
    limits = operator_limits()
    if limits is not None:  # an operator's SALUN_MAX_SWEEP_RUNS applies here as in the app
        limits.check_if_set("sweep_runs", len(sweep.points))
    try:
        for outcome in sweep.run(progress=bar):
            try:
                line = json_line(outcome.row)
            except SalunError as exc:  # a NaN or infinite metric: this run failed, the others go on
                outcome.error, outcome.result = str(exc), None
                bar.write(f"{describe(outcome.config)} failed: {exc}")
                line = json_line(outcome.row)
            if args.json:
                print(line, flush=True)
    except KeyboardInterrupt:
        bar.close()
        kept = " (they are in the run store)" if store is not None else ""
        print(f"interrupted: the outstanding runs were cancelled; {len(sweep.outcomes)} of {len(sweep.points)} "
              f"had finished{kept}", file=sys.stderr)
        raise CancelledError("sweep interrupted") from None
    finally:
        bar.close()
    if not args.json:
        order = {id(c): i for i, c in enumerate(sweep.points)}
        _table(sorted(sweep.outcomes, key=lambda o: order[id(o.config)]))
    summary = sweep.summary()
    if summary["failed"]:
        print(f"{summary['failed']} of {summary['runs']} runs failed (see above)", file=sys.stderr)
        args.exit_status = 1
    return summary


def add_commands(sub) -> None:
    """Add `sweep` to `python -m core.cli`."""
    p = sub.add_parser("sweep", help="a grid of unlearning runs (forget sets x methods x sparsities x seeds), "
                                     "locally or on a Ray cluster")
    p.add_argument("--dataset", default="mnist5k", help="mnist5k (default, offline), digits, mnist, fashion_mnist, cifar10, svhn")
    p.add_argument("--data-root", default=None, help="folder holding torchvision datasets")
    p.add_argument("--checkpoint", default=None, help="original model (default: the shipped one)")
    p.add_argument("--forget", action="append", metavar="TARGET",
                   help="a forget target (class:K, random:SHARE, indices:PATH); repeat for more grid points")
    p.add_argument("--classes", default=None, help="all, or a list such as 0,1,2: one class-wise target per class")
    p.add_argument("--method", default="salun", help="comma-separated: salun,rl,ft,ga,l1_sparse,ssd,retrain")
    p.add_argument("--sparsity", default="0.5", help="comma-separated mask sparsities, e.g. 0.3,0.5,0.7 "
                                                     "(methods without a mask run once)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--alpha", type=float, default=None, help="retain-loss weight (SalUn/RL), l1 weight, SSD threshold")
    p.add_argument("--compare-retrain", action="store_true",
                   help="compare every run with Retrain (one per forget set and seed, shared) and report Avg. Gap")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: worker processes here (default); ray: tasks on a Ray cluster")
    p.add_argument("--address", default=None,
                   help="Ray cluster: auto (the one `ray start` runs here) or ray://HOST:PORT; none: a local Ray for this sweep")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core; 1: in-process)")
    p.add_argument("--threads-per-run", type=int, default=1,
                   help="torch threads (and Ray CPUs) per run; the same in every backend, so results match bit for bit")
    p.add_argument("--gpus-per-run", type=float, default=0, help="GPUs per run (runs on CUDA when above 0)")
    p.add_argument("--no-store", action="store_true", help="neither reuse nor record runs in the run store")
    p.add_argument("--json", action="store_true", help="one JSON object per run, then a summary object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)
