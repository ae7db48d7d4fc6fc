"""The run store from the command line, and the store options of every unlearning command.

    python -m core.cli runs list [--json] [--limit N]
    python -m core.cli runs show RUN_ID [--json]     (the same metrics as the run's own --json line)
    python -m core.cli runs export RUN_ID DIR        (model, mask, sidecars, config, metrics, plots)

`unlearn`, `unlearn-gen` and `unlearn-concept` record every finished run in the store ($SALUN_HOME,
default runs/; MLFLOW_TRACKING_URI for a server) and print its `run_id` in their --json line. A
classifier or generator run whose config, seed and model files are already in the store is served
from there (said on stderr, `"reused": true` in the JSON) instead of computed again: same config and
seed give the same numbers, so only the wait differs. `--recompute` runs it anyway and records the new
run; `--no-store` neither looks up nor records anything. A concept run is always computed (its
--save folder needs the whole pipeline) and then recorded.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

SHOWN = {"classification": ("ua", "ra", "ta", "mia_efficacy", "rte_seconds"),
         "generation": ("ua", "retained_accuracy", "frechet_retained", "rte_seconds"),
         "concept": ("forget_shift", "retain_shift", "timing_total_s")}


# --- the store options of the unlearning commands ----------------------------------------------

def add_store_options(p) -> None:
    p.add_argument("--no-store", action="store_true",
                   help="neither look this run up in the run store nor record it there ($SALUN_HOME)")
    p.add_argument("--recompute", action="store_true",
                   help="run even if the store already has this config, seed and model; record the new run")


def stored_result(args, config, usable=lambda result: True):
    """The stored result of `config` unless --no-store or --recompute (or it is not `usable` here),
    said on stderr; else None. Then also starts importing MLflow in the background, for the record
    that follows the computed run."""
    if getattr(args, "no_store", False):
        return None
    from core import store

    try:
        if not getattr(args, "recompute", False):
            result = store.find(config, on_damaged=lambda reason: print(
                f"note: {reason}, so it was dropped from the store; running it again", file=sys.stderr))
            if result is not None and usable(result):
                print(f"served from the run store: run {result.run_id} has this config, seed and model "
                      "(--recompute runs it again)", file=sys.stderr)
                return result
    except store.StoreError as exc:
        print(f"warning: {exc}; running it", file=sys.stderr)
    store.default_store().warm_up()
    return None


def record(args, result) -> str | None:
    """Record a computed result (its run id), or return the id it was served with; None with --no-store.
    A store that cannot take it is a warning: the run itself succeeded and is printed."""
    if getattr(args, "no_store", False):
        return None
    if getattr(result, "run_id", None) is not None:
        return result.run_id
    from core import store

    try:
        return store.log_run(result, source="cli")
    except store.StoreError as exc:
        print(f"warning: {exc}", file=sys.stderr)
        return None


# --- runs list / show / export -----------------------------------------------------------------

def _started(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _row(info) -> dict:
    kind = info.tags.get("salun.kind")
    return {"run_id": info.run_id, "kind": kind, "method": info.tags.get("salun.method"),
            "forget": info.tags.get("salun.forget"), "seed": int(info.tags.get("salun.seed", 0)),
            "started": _started(info.start_time) + " UTC", "source": info.tags.get("salun.source"),
            "metrics": {k: info.metrics[k] for k in SHOWN.get(kind, ()) if k in info.metrics}}


def cmd_list(args) -> dict:
    from core import store
    from core.errors import SalunError

    if args.limit is not None and args.limit < 1:
        raise SalunError(f"--limit must be a whole number >= 1, got {args.limit}")
    runs = [_row(info) for info in store.default_store().list(args.limit)]
    if not args.json:
        if not runs:
            print(f"no runs stored yet in {store.tracking_uri()}")
        for r in runs:
            metrics = "  ".join(f"{k} {v:.2f}" for k, v in r["metrics"].items())
            print(f"{r['run_id']}  {r['started'][:16]}  {r['kind']:<14} {r['method'] or '':<9} "
                  f"{(r['forget'] or '')[:30]:<30} seed {r['seed']:<4} {metrics}")
    return {"store": store.tracking_uri(), "runs": runs}


def cmd_show(args) -> dict:
    from core import store

    info, folder = store.default_store().checked_folder(args.run_id)
    summary = {**json.loads((folder / "metrics.json").read_text()), "run_id": info.run_id}
    if not args.json:
        row = _row(info)
        print(f"run {info.run_id} · {row['kind']} · started {row['started']} · from {row['source']}")
        config = json.loads((folder / "config.json").read_text())
        print("config   " + ", ".join(f"{k}={v}" for k, v in config.items() if v not in (None, {}, [])))
        print("metrics  " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(info.metrics.items())
                                      if k != "loss" and isinstance(v, (int, float))))
        skipped = info.tags.get("salun.skipped_metrics")
        if skipped:
            print(f"not finite, not logged as metrics: {skipped}")
        version = [f"{k.split('.', 1)[1]} {info.tags[k][:12]}" for k in ("salun.git_commit", "salun.version",
                                                                           "salun.model_sha256") if k in info.tags]
        print("code     " + ", ".join(version))
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        print(f"files    {folder}: " + ", ".join(files))
    return summary


def cmd_export(args) -> dict:
    from core import store

    target = store.export_run(args.run_id, args.directory)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    if not args.json:
        print(f"exported run {args.run_id} to {target}: {', '.join(files)}")
    return {"run_id": args.run_id, "path": str(target), "files": files}


def add_commands(subparsers) -> None:
    """Add `runs list|show|export` to `python -m core.cli`."""
    p = subparsers.add_parser("runs", help="the run store: list, show or export recorded runs",
                              description="Every finished unlearning run is recorded in an MLflow store "
                                          "($SALUN_HOME, default runs/; MLFLOW_TRACKING_URI for a server). "
                                          "Open it with: mlflow ui --backend-store-uri sqlite:///runs/mlflow.db")
    sub = p.add_subparsers(dest="runs_command", required=True)
    q = sub.add_parser("list", help="the recorded runs, newest first")
    q.add_argument("--limit", type=int, default=None, help="at most this many runs")
    q.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    q.set_defaults(func=cmd_list)
    q = sub.add_parser("show", help="a run's config, metrics, code version and files")
    q.add_argument("run_id")
    q.add_argument("--json", action="store_true", help="the run's own JSON line (as its command printed it)")
    q.set_defaults(func=cmd_show)
    q = sub.add_parser("export", help="copy a run's files (checked against their checksums) into a new folder")
    q.add_argument("run_id")
    q.add_argument("directory", help="a folder that does not exist yet (or is empty)")
    q.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    q.set_defaults(func=cmd_export)
