"""`warm`: fill the run store with the reference runs a first visitor asks for (core/warm.py).

    python -m core.cli warm [--datasets mnist5k] [--classes 0,3] [--methods salun,retrain] [--recompute] [--json]
    python -m core.cli warm --verify 3 [--methods salun]   (compute class 3 afresh, compare with the stored run)
"""

from __future__ import annotations

import sys

from core.errors import SalunError


def _names(text: str, option: str) -> list[str]:
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise SalunError(f"{option} needs at least one name, got {text!r}")
    return names


def _classes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        classes = [int(part) for part in _names(text, "--classes")]
    except ValueError:
        raise SalunError(f"--classes takes class indices separated by commas (e.g. 0,3), got {text!r}") from None
    if any(k < 0 for k in classes):
        raise SalunError(f"--classes takes class indices of 0 or more, got {text!r}")
    return classes


def cmd_warm(args) -> dict:
    from core.data import DATASETS, load_dataset
    from core.methods import get_method
    from core.warm import warm

    datasets = _names(args.datasets, "--datasets")
    for name in datasets:
        if name not in DATASETS:
            raise SalunError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    methods = [get_method(m).name for m in _names(args.methods, "--methods")]
    classes = _classes(args.classes)
    if args.verify is not None:
        if args.verify < 0:
            raise SalunError(f"--verify takes a class index of 0 or more, got {args.verify}")
        classes = [*(classes or []), args.verify]
    if classes is not None:
        for name in datasets:
            count = len(load_dataset(name).class_names)
            if max(classes) >= count:
                raise SalunError(f"--classes: {name} has classes 0-{count - 1}, got {max(classes)}")

    if args.verify is not None:
        from core.warm import verify

        checks = {}
        for name in datasets:
            for method in methods:
                checks[f"{name} class:{args.verify} {method}"] = verify(name, args.verify, method, args.seed, args.threads)
        for what, check in checks.items():
            same = all(v for k, v in check.items() if k != "run_id")
            print(f"{what}: stored run {check['run_id']} {'==' if same else '!='} a fresh computation "
                  f"({', '.join(k for k, v in check.items() if k != 'run_id' and v) or 'nothing'} identical)",
                  file=sys.stderr)
            if not same:
                args.exit_status = 1
        return {"verify": checks}

    def report(item) -> None:
        if not args.quiet:
            where = f"run {item.run_id}" if item.run_id else item.message
            print(f"{item.config.dataset} {item.config.forget} {item.config.method}: {item.status} "
                  f"in {item.seconds:.1f} s ({where})", file=sys.stderr, flush=True)

    from core.warm import DEFAULT_CLASS, warm_grids, warm_masks

    def runs(which: list[str], which_classes):
        return warm(which, which_classes, methods, seed=args.seed, recompute=args.recompute, threads=args.threads,
                    report=report)

    # What a first visitor meets first comes first: the default class's runs, then the Diffusion page's
    # before-grid and mask, then every other class (a server warming in the background answers soonest).
    done = runs(datasets, classes if classes is not None else [DEFAULT_CLASS])
    grids, masks = [], []
    if not args.no_grids:
        grids = warm_grids(datasets, threads=args.threads)
        for dataset, status, seconds in grids:
            if not args.quiet:
                print(f"{dataset} Diffusion before-grid: {status} in {seconds:.1f} s", file=sys.stderr, flush=True)
        masks = warm_masks(datasets, classes or [DEFAULT_CLASS], seed=args.seed, threads=args.threads)
        for dataset, k, status, seconds in masks:
            if not args.quiet:
                print(f"{dataset} Diffusion saliency mask, class {k}: {status} in {seconds:.1f} s", file=sys.stderr,
                      flush=True)
    if classes is None:
        for name in datasets:
            rest = [k for k in range(len(load_dataset(name).class_names)) if k != DEFAULT_CLASS]
            done += runs([name], rest)
    failed = [item for item in done if item.status == "failed"]
    if failed:
        args.exit_status = 1
    return {"runs": [{"dataset": i.config.dataset, "forget": i.config.forget, "method": i.config.method,
                      "status": i.status, "seconds": round(i.seconds, 2), "run_id": i.run_id,
                      **({"error": i.message} if i.message else {})} for i in done],
            "computed": sum(i.status == "computed" for i in done), "stored": sum(i.status == "stored" for i in done),
            "failed": len(failed),
            "grids": [{"dataset": d, "status": st, "seconds": round(sec, 2)} for d, st, sec in grids],
            "masks": [{"dataset": d, "class": k, "status": st, "seconds": round(sec, 2)} for d, k, st, sec in masks]}


def add_commands(sub) -> None:
    p = sub.add_parser("warm", help="compute the reference runs the app serves at once (Retrain and SalUn, every class)")
    p.add_argument("--datasets", default="mnist5k", help="shipped models to warm, separated by commas (default: mnist5k)")
    p.add_argument("--classes", default=None, help="class indices separated by commas (default: every class)")
    p.add_argument("--methods", default="salun,retrain", help="methods, separated by commas (default: salun,retrain)")
    p.add_argument("--seed", type=int, default=0, help="run seed (the app's default is 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: as the app's job runner, cores // max_concurrent_jobs)")
    p.add_argument("--recompute", action="store_true", help="compute and record every run even if it is stored")
    p.add_argument("--no-grids", action="store_true",
                   help="skip the Diffusion page's before-grid and default-class mask of each dataset's shipped generator")
    p.add_argument("--verify", type=int, default=None, metavar="CLASS",
                   help="compute this class's runs afresh and say whether the stored ones are the same (exit 1 if not)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--quiet", action="store_true", help="no line per run on stderr")
    p.set_defaults(func=cmd_warm)
