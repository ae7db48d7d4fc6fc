"""CLI commands for class-conditional diffusion; registered by core.cli.

    python -m core.cli train-gen  --dataset fashion_mnist        (resumable; saves assets/ddpm_fashion_mnist.safetensors)
    python -m core.cli unlearn-gen --dataset fashion_mnist --forget class:7 --method salun --seed 0 --json

`--dataset` picks that dataset's shipped generator and classifier (default: mnist5k, or the dataset of
a generator given with --generator); a dataset without a generator is a one-line error.
"""

from __future__ import annotations

from core.cli import runs
from core.cli.common import add_common_options, add_method_options, add_target_options, method_values

import sys
import time
from pathlib import Path


def _log_progress(every: int):
    start = time.perf_counter()

    def progress(done: int, total: int, loss: float) -> None:
        if done % every == 0 or done == total:
            rate = (time.perf_counter() - start) / max(1, done)
            print(f"step {done}/{total} loss {loss:.4f} ({rate:.2f} s/step this session)", flush=True)
    return progress


def cmd_train_gen(args) -> dict:
    from core.checkpoint import ASSETS
    from core.cli.common import ProgressBar
    from core.diffusion.model import SHIPPED_GENERATORS, save_generator
    from core.diffusion.training import GeneratorTrainConfig, train_generator

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    config = GeneratorTrainConfig(dataset=args.dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                  seed=args.seed)
    command = " ".join(["python -m core.cli"] + sys.argv[1:])
    if args.log_every:
        progress = _log_progress(args.log_every)
    else:
        progress = ProgressBar(not args.quiet).phase("train-gen")
    workdir = args.workdir or f"runs/ddpm_{args.dataset}"
    model, summary = train_generator(config, workdir, progress=progress,
                                     checkpoint_every_s=args.checkpoint_every,
                                     stop_after_s=args.stop_after * 60 if args.stop_after else None,
                                     meta={"command": command})
    if summary["steps_done"] < config.steps:
        print(f"stopped at step {summary['steps_done']}/{config.steps}; run the same command again to resume")
        return summary
    save = Path(args.save) if args.save else SHIPPED_GENERATORS.get(args.dataset, ASSETS / f"ddpm_{args.dataset}.safetensors")
    save_generator(model, save, summary)
    print(f"trained {summary['steps_done']} steps in {summary['training_seconds'] / 60:.1f} min; saved {save}")
    return {**summary, "path": str(save)}


def cmd_unlearn_gen(args) -> dict:
    import json

    from core.cli.common import ProgressBar
    from core.checkpoint import save_mask
    from core.diffusion.model import save_generator
    from core.diffusion.metrics import GENERATION_METRIC_LABELS
    from core.diffusion.run import GenerationRunConfig, run_generation

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = method_values(args)
    config = GenerationRunConfig(forget=args.forget, method=args.method, seed=args.seed, sparsity=args.sparsity,
                                 masked=args.masked, steps=settings.pop("steps", None), lr=settings.pop("lr", None),
                                 alpha=settings.pop("alpha", None), options=settings,
                                 guidance=args.guidance, sample_steps=args.sample_steps, per_class=args.per_class,
                                 generator=args.generator, classifier=args.checkpoint,
                                 dataset=args.dataset).validate().resolved()
    result = runs.stored_result(args, config)
    reused = result is not None
    if result is None:
        bar = ProgressBar(not args.quiet)
        result = run_generation(config, progress=bar.phase(config.method))
        bar.close()
    run_id = runs.record(args, result)
    summary = {**result.summary(), "run_id": run_id, **({"reused": True} if reused else {})}
    if args.save:  # a temporary folder moved into place: a failed save is one line and leaves nothing
        from core.checkpoint import atomic_directory
        from core.errors import check_finite_metrics

        check_finite_metrics(summary)
        with atomic_directory(args.save) as directory:
            save_generator(result.unlearning.model, directory / "generator.safetensors",
                           {**result.meta["generator"], "unlearning": config.to_dict(),
                            "command": " ".join(["python -m core.cli"] + sys.argv[1:])})
            if result.unlearning.mask is not None:
                save_mask(result.unlearning.mask, directory / "mask.safetensors")
            (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
            (directory / "metrics.json").write_text(json.dumps(summary, indent=2, default=float, allow_nan=False))
    if not args.json:
        print(f"{config.dataset}: generator {config.generator}, judged by {config.classifier}, guidance {config.guidance}")
        print(f"{'metric':<42}{'before':>10}{'after':>10}")
        number = lambda v: f"{v:>10.2f}" if v is not None else f"{'n/a':>10}"  # noqa: E731
        for key in ("ua", "retained_accuracy", "frechet_retained"):
            print(f"{GENERATION_METRIC_LABELS[key]:<42}{number(summary['before'][key])}{number(summary[key])}")
        se = summary["retained_drop_se"]
        drop = f"{summary['retained_drop']:.2f} ± " + ("n/a" if se is None else f"{se:.2f}")
        print(f"{GENERATION_METRIC_LABELS['retained_drop'] + ' (points, ± SE)':<42}{'':>10}{drop:>14}")
        print(f"{'RTE (s)':<42}{'':>10}{summary['rte_seconds']:>10.1f}")
        if summary["substitute"] is not None:
            names = result.meta.get("generator", {}).get("class_names") or []
            name = lambda c: f"{c} ({names[c]})" if c < len(names) else str(c)  # noqa: E731
            print(f"Asked for class {name(config.forget_class())}, the generator now draws class {name(summary['substitute'])}.")
        if "frechet_note" in summary:
            print(f"Fréchet distance {summary['frechet_note']} (--per-class {summary['frechet_min_per_class']})")
    return summary


def cmd_eval_gen(args) -> dict:
    from core.diffusion.run import GenerationRunConfig, evaluate_generator, load_models

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    where = GenerationRunConfig(generator=args.generator, classifier=args.checkpoint, dataset=args.dataset).resolved()
    generator, meta, classifier, _ = load_models(where.generator, where.classifier)
    rows = []
    for guidance in args.guidance:
        config = GenerationRunConfig(guidance=guidance, sample_steps=args.sample_steps, per_class=args.per_class,
                                     seed=args.seed).validate()
        result = evaluate_generator(generator, classifier, None, config, where.dataset)
        row = {"guidance": guidance, "recognised": result["recognised"], "frechet_all": result["frechet_all"],
               "per_class_accuracy": [round(a, 1) for a in result["per_class_accuracy"]],
               **({"frechet_note": result["frechet_note"]} if "frechet_note" in result else {})}
        rows.append(row)
        if not args.json:
            print(f"guidance {guidance:<5} recognised {row['recognised']:6.2f}%  Fréchet (classifier features) "
                  + (f"{row['frechet_all']:8.3f}" if row["frechet_all"] is not None else "     n/a")
                  + f"  per class {row['per_class_accuracy']}", flush=True)
            if "frechet_note" in row:
                print(f"  Fréchet distance {row['frechet_note']}", flush=True)
    summary = {"dataset": where.dataset, "generator": where.generator, "steps_done": meta.get("steps_done"),
               "sample_steps": args.sample_steps, "per_class": args.per_class, "seed": args.seed,
               "classifier": where.classifier,
               "command": " ".join(["python -m core.cli"] + sys.argv[1:]), "rows": rows}
    if args.record:
        import json

        from core.checkpoint import sidecar_path

        sidecar = sidecar_path(Path(where.generator))
        values = json.loads(sidecar.read_text())
        values["evaluation"] = {k: v for k, v in summary.items() if k != "generator"}
        tmp = sidecar.with_name(sidecar.name + ".partial")
        try:  # strict JSON (a NaN figure is refused), written aside and renamed: a failure leaves the old sidecar
            tmp.write_text(json.dumps(values, indent=2, sort_keys=True, allow_nan=False))
            tmp.replace(sidecar)
        except (OSError, ValueError) as exc:
            from core.errors import SalunError

            tmp.unlink(missing_ok=True)
            raise SalunError(f"could not record the figures in {sidecar.name!r}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    return summary


def add_commands(subparsers) -> None:
    """Add this area's subcommands to `python -m core.cli`."""
    from core.diffusion.model import DEFAULT_SAMPLE_STEPS

    p = subparsers.add_parser("train-gen", help="train (or resume) the class-conditional diffusion generator")
    add_common_options(p)
    p.add_argument("--workdir", default=None, help="folder for the resumable state (default: runs/ddpm_<dataset>)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--checkpoint-every", type=float, default=180.0, help="seconds between state saves")
    p.add_argument("--stop-after", type=float, default=None, help="minutes; stop (resumably) after this long")
    p.add_argument("--log-every", type=int, default=0, help="print a log line every N steps instead of a bar")
    p.add_argument("--save", default=None, help="where the final EMA weights go (default: assets/ddpm_<dataset>.safetensors)")
    p.set_defaults(func=cmd_train_gen)

    p = subparsers.add_parser("unlearn-gen", help="make the generator forget a class; metrics before and after")
    add_common_options(p)
    add_target_options(p, "generation", "class:K")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance for sampling (default: the generator's own, from its sidecar)")
    p.add_argument("--sample-steps", type=int, default=DEFAULT_SAMPLE_STEPS, help="DDIM steps per image")
    p.add_argument("--per-class", type=int, default=30, help="images generated per class for the metrics")
    p.add_argument("--generator", default=None, help="generator checkpoint (default: the dataset's shipped one)")
    p.add_argument("--checkpoint", default=None, help="classifier that judges the images (default: the dataset's shipped one)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--save", default=None, help="folder for the unlearned generator, mask, config and metrics")
    runs.add_store_options(p)
    add_method_options(p, "generation")
    p.set_defaults(func=cmd_unlearn_gen, dataset=None)

    p = subparsers.add_parser("eval-gen", help="share of generated images the classifier recognises, per guidance")
    add_common_options(p)
    p.add_argument("--generator", default=None, help="generator checkpoint (default: the dataset's shipped one)")
    p.add_argument("--checkpoint", default=None, help="classifier (default: the dataset's shipped one)")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    p.add_argument("--sample-steps", type=int, default=DEFAULT_SAMPLE_STEPS)
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--record", action="store_true", help="store the figures in the generator's JSON sidecar")
    p.set_defaults(func=cmd_eval_gen, dataset=None)
