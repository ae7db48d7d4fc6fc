"""Membership audit of an unlearned classifier: can an attacker still tell its forget images from unseen ones?

    python -m core.cli audit runs/salun_class-3_seed0                (a folder written by `unlearn --save`)
    python -m core.cli audit runs/salun_class-3_seed0/model.safetensors --shadows 4 --json

The original, the unlearned model and Retrain (trained here, same seed) are attacked with the loss,
entropy and modified-entropy signals, and with `--shadows N` also with a shadow-model likelihood ratio.
"""

from __future__ import annotations

from pathlib import Path

from core.cli.common import ProgressBar
from core.errors import SalunError


def _resolve_model(path: str) -> Path:
    given = Path(path)
    if given.is_dir():
        given = given / "model.safetensors"
    if not given.is_file():
        raise SalunError(f"{path!r} is neither a run folder (with model.safetensors) nor a model file")
    return given


def _print_table(summary: dict) -> None:
    from core.classification.audit import SIGNAL_LABELS

    models = [m for m in ("original", "unlearned", "retrain") if m in summary]
    signals = list(summary[models[0]])
    print(f"forget images {summary['members']} vs test images {summary['nonmembers']} of the same classes"
          + (f", {summary['shadows']} shadow models" if summary["shadows"] else ""))
    print(f"{'signal':<20}" + "".join(f"{m + ' AUC':>16}{'TPR@1%':>9}" for m in models))
    for signal in signals:
        print(f"{SIGNAL_LABELS[signal]:<20}" + "".join(
            f"{summary[m][signal]['auc']:>16.3f}{summary[m][signal]['tpr_at_1pct_fpr']:>9.1f}" for m in models))


def cmd_audit(args) -> dict:
    from core.checkpoint import load_checkpoint, read_meta
    from core.classification.audit import audit_models, train_shadows
    from core.classification.experiment import Experiment, RunConfig

    path = _resolve_model(args.run)
    meta = read_meta(path)
    recorded = dict(meta.get("unlearning") or {})
    if not recorded and not args.forget:
        raise SalunError(f"{str(path)!r} records no unlearning run; say what was forgotten with --forget")
    config = RunConfig.from_dict(recorded) if recorded else RunConfig()
    if args.forget:
        config.forget = args.forget
    if args.dataset:
        config.dataset = args.dataset
    if args.checkpoint:
        config.checkpoint = args.checkpoint
    experiment = Experiment.from_config(config)
    model, _ = load_checkpoint(path, device=experiment.device)
    models = {"original": experiment.original, "unlearned": model}
    bar = ProgressBar(not args.quiet)
    if not args.no_retrain:
        models["retrain"] = experiment.unlearn("retrain", seed=config.seed, progress=bar.phase("retrain")).model
    shadows = None
    if args.shadows:
        training = experiment.data.original_training
        shadows = train_shadows(experiment.dataset, meta["architecture"], args.shadows,
                                args.shadow_epochs or training.epochs, lr=training.lr, batch_size=training.batch_size,
                                seed=config.seed, device=experiment.device, progress=bar.phase("shadow models"))
    bar.close()
    summary = {"model": str(path), "forget": config.forget, "seed": config.seed,
               **audit_models(models, experiment.dataset, experiment.split, shadows).summary()}
    if not args.json:
        _print_table(summary)
    return summary


def add_commands(sub) -> None:
    p = sub.add_parser("audit", help="membership audit of an unlearned classifier (loss, entropy, shadow models)")
    p.add_argument("run", help="a run folder from `unlearn --save`, or a model .safetensors with its sidecar")
    p.add_argument("--forget", default=None, help="what was forgotten (default: as the run recorded)")
    p.add_argument("--dataset", default=None, help="default: as the run recorded")
    p.add_argument("--checkpoint", default=None, help="the original model (default: as the run recorded)")
    p.add_argument("--shadows", type=int, default=0,
                   help="train this many shadow models (even; pairs on complementary halves) for a LiRA-style attack")
    p.add_argument("--shadow-epochs", type=int, default=None, help="epochs per shadow model (default: the original's)")
    p.add_argument("--no-retrain", action="store_true", help="skip Retrain (faster; nothing to compare with)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_audit)
