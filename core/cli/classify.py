"""Classifier subcommands: train an original, unlearn a forget set, inspect the saliency mask.

    python -m core.cli train   --dataset mnist5k --save assets/mnist5k_small_cnn.safetensors
    python -m core.cli unlearn --dataset mnist5k --forget class:3 --method salun --compare-retrain --json
    python -m core.cli mask    --forget class:3 --sparsity 0.5          (per-layer saliency statistics)
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import runs
from core.cli.common import ProgressBar, add_common_options, add_method_options, add_target_options, method_values
from core.errors import SalunError


def _print_table(result) -> None:
    from core.classification.metrics import METRIC_LABELS

    rows = [("", result.method)] + ([("", "retrain")] if result.retrain and result.method != "retrain" else [])
    keys = [k for k in ("ua", "ra", "ta", "mia_efficacy", "mia_efficacy_std", "forget_test_accuracy", "rte_seconds")
            if k in result.metrics]
    header = f"{'metric':<28}{result.method:>12}" + (f"{'retrain':>12}" if len(rows) > 1 else "")
    print(header)
    for key in keys:
        line = f"{METRIC_LABELS[key]:<28}{result.metrics[key]:>12.2f}"
        if len(rows) > 1:
            line += f"{result.retrain.metrics[key]:>12.2f}"
        print(line)
    if result.retrain is not None:
        summary = result.summary()
        print(f"{'Avg. Gap':<28}{summary['avg_gap']:>12.2f}  ± {summary['avg_gap_std']:.2f}")
        if "js_to_retrain" in summary:
            print(f"{METRIC_LABELS['js_to_retrain']:<28}{summary['js_to_retrain']:>12.3f}")


def cmd_train(args) -> dict:
    from core.checkpoint import save_checkpoint
    from core.data import DATASETS, load_dataset
    from core.classification.experiment import default_checkpoint
    from core.classification.training import TrainConfig, accuracy, train_from_scratch, train_meta

    dataset = load_dataset(args.dataset, args.data_root, args.download)
    config = TrainConfig(architecture=args.model or DATASETS[args.dataset].default_model,
                         epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    bar = ProgressBar(not args.quiet)
    model = train_from_scratch(dataset, range(len(dataset.train_y)), config, progress=bar.phase("train"))
    test_acc = accuracy(model, dataset.test_x, dataset.test_y)
    meta = train_meta(dataset, config, test_acc)
    meta["command"] = " ".join(["python -m core.cli"] + sys.argv[1:])
    save = Path(args.save) if args.save else default_checkpoint(args.dataset)
    save_checkpoint(model.cpu(), save, meta)
    print(f"test accuracy {test_acc:.2f}%  saved {save}")
    return {"test_accuracy": test_acc, "path": str(save)}


def cmd_unlearn(args) -> dict:
    from core.classification.experiment import RunConfig, run, save_run

    settings = method_values(args)
    config = RunConfig(dataset=args.dataset, forget=args.forget, method=args.method, sparsity=args.sparsity,
                       seed=args.seed, epochs=settings.pop("epochs", None), lr=settings.pop("lr", None),
                       alpha=settings.pop("alpha", None), options=settings, masked=args.masked,
                       checkpoint=args.checkpoint, data_root=args.data_root, download=args.download)
    # a run stored without its Retrain does not answer --compare-retrain: then both are computed
    result = runs.stored_result(args, config, usable=lambda stored: not args.compare_retrain or
                                stored.method == "retrain" or stored.retrain is not None)
    if result is not None:
        result.retrain = (result if result.method == "retrain" else result.retrain) if args.compare_retrain else None
    reused = result is not None
    if result is None:
        bar = ProgressBar(not args.quiet)
        result = run(config, progress=bar.phase(config.method), compare_retrain=args.compare_retrain,
                     retrain_progress=bar.phase("retrain"))
        bar.close()
        if result.retrain is not None and result.retrain is not result:
            runs.record(args, result.retrain)  # first, so the run's record can name its Retrain
    run_id = runs.record(args, result)
    if args.save:
        try:
            save_run(result, Path(args.save))
        except OSError as exc:
            raise SalunError(f"could not save the run to {args.save!r}: {exc.strerror or exc}") from None
    if not args.json:
        _print_table(result)
    summary = {**result.summary(), "run_id": run_id, **({"reused": True} if reused else {})}
    if "retrain" in summary and result.retrain is not result:
        summary["retrain"]["run_id"] = getattr(result.retrain, "run_id", None)
    return summary


def cmd_mask(args) -> dict:
    from core.classification.experiment import Experiment, RunConfig
    from core.saliency import layer_statistics

    config = RunConfig(dataset=args.dataset, forget=args.forget, sparsity=args.sparsity, seed=args.seed,
                       checkpoint=args.checkpoint, data_root=args.data_root)
    experiment = Experiment.from_config(config)
    mask = experiment.mask(args.sparsity)
    rows = layer_statistics(experiment.forget_gradients(), mask)
    if not args.json:
        print(f"{'layer':<28}{'weights':>10}{'salient':>10}{'median |g|':>14}{'q99 |g|':>14}")
        for r in rows:
            print(f"{r['layer']:<28}{r['numel']:>10}{r['salient_fraction']:>10.3f}{r['grad_median']:>14.3e}{r['grad_q99']:>14.3e}")
    return {"forget": args.forget, "sparsity": args.sparsity, "layers": rows}


def add_commands(sub) -> None:
    """Add this area's subcommands to `python -m core.cli`."""
    p = sub.add_parser("train", help="train an original classifier")
    add_common_options(p)
    p.add_argument("--model", default=None, help="small_cnn, wide_cnn or resnet18 (default: the dataset's)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--save", default=None, help="weights path (default: assets/<dataset>_<model>.safetensors)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("unlearn", help="unlearn a forget set from a trained classifier")
    add_common_options(p)
    add_target_options(p, "classification", "class:K, random:SHARE or indices:PATH")
    p.add_argument("--checkpoint", default=None, help="original model (default: the shipped one)")
    p.add_argument("--compare-retrain", action="store_true", help="also retrain from scratch and report Avg. Gap")
    p.add_argument("--save", default=None, help="folder for model, mask, config and metrics")
    runs.add_store_options(p)
    add_method_options(p, "classification")
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("mask", help="per-layer statistics of the saliency mask")
    add_common_options(p)
    p.add_argument("--forget", default="class:3")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--checkpoint", default=None)
    p.set_defaults(func=cmd_mask)
