"""CLI commands for unlearn-concept (Stable Diffusion concept forgetting); registered by core.cli.

    python -m core.cli unlearn-concept --model CompVis/stable-diffusion-v1-4 --preset nudity --save runs/nudity --json
    python -m core.cli unlearn-concept --model DIR --preset object --download --save runs/church
    python -m core.cli unlearn-concept --model DIR --preset nudity --dry-run      (the plan; loads no weights)
    python -m core.cli unlearn-concept --model tiny --save /tmp/tiny   (tiny random pipeline, seconds on a CPU)
    accelerate launch --multi_gpu --num_processes 4 -m core.cli unlearn-concept ...   (several GPUs, same flags)
    torchrun --nproc_per_node 2 -m core.cli unlearn-concept --model tiny ...          (two CPU processes, gloo)

A preset (core.concept.presets) sets the prompts, the step budget and the evaluation; every flag given
overrides it. Each process makes its share of the images; --batch-size is the global batch, split over
the processes.
"""

from __future__ import annotations

from core.cli import runs
from core.errors import SalunError


def concept_config(args):
    """The ConceptConfig the flags ask for: the preset's values, overridden by every flag given."""
    from core.concept.presets import default_preset
    from core.concept.run import ConceptConfig

    preset = args.preset or default_preset(args.model)
    steps, epochs = args.steps, args.epochs
    if epochs is not None and steps is None:
        steps = 0  # --epochs alone: the budget is epochs x ceil(images / batch), as before presets
    return ConceptConfig.from_preset(
        preset, model=args.model, forget_prompt=args.forget, pseudo_prompt=args.pseudo, retain_prompts=args.retain,
        sparsity=args.sparsity, alpha=args.alpha, lr=args.lr, steps=steps, epochs=epochs,
        batch_size=args.batch_size, micro_batch_size=args.micro_batch, images_per_prompt=args.images_per_prompt,
        mask_guidance=args.mask_guidance, sample_guidance=args.guidance, inference_steps=args.sample_steps,
        resolution=args.resolution, sample_seeds=args.sample_seeds, forget_images=args.forget_images,
        retain_images=args.retain_images, seed=args.seed, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing or None, safety_checker=args.safety_checker or None,
        evaluation=args.eval, eval_prompts=args.eval_prompt, eval_images=args.eval_images,
        classifier_weights=args.classifier_weights, download=args.download or None,
    ).validate()


def cmd_unlearn_concept(args) -> dict:
    from core.cli.common import ProgressBar
    from core.concept.evaluation import eval_summary_line
    from core.concept.presets import concept_plan
    from core.concept.run import make_accelerator, save_concept_result, unlearn_concept

    config = concept_config(args)
    plan = concept_plan(config)
    if args.dry_run:
        if not args.json:
            print(_plan_text(plan))
        return {"dry_run": True, "plan": plan, "config": config.to_dict()}
    if not args.save:
        raise SalunError("--save FOLDER is required (it receives the unlearned pipeline); --dry-run shows the plan")
    accelerator = make_accelerator(config.precision)
    bar = ProgressBar(not args.quiet and accelerator.is_main_process)
    if accelerator.is_main_process and not args.json:
        print(_plan_text(plan), flush=True)
    result = unlearn_concept(config, phase_progress=bar.phase, accelerator=accelerator)
    bar.close()
    saved = save_concept_result(result, args.save)
    run_id = runs.record(args, result)  # concept runs are recorded, never reused: --save needs the whole pipeline
    summary = {**result.summary(), **saved, "run_id": run_id, "plan": plan, "device": str(accelerator.device),
               "processes": accelerator.num_processes}
    if accelerator.is_main_process and not args.json:
        m = result.metrics
        print(f"forget→pseudo prediction distance  {m['forget_to_pseudo_before']:.4g} → "
              f"{m['forget_to_pseudo_after']:.4g}")
        print(f"retain denoising error             {m['retain_error_before']:.4g} → {m['retain_error_after']:.4g}")
        print(f"prediction shift  forget {m['forget_shift']:.4g}   retain {m['retain_shift']:.4g}")
        print(eval_summary_line(result.evaluation))
        print(f"{len(result.losses)} steps in {result.timings['unlearn_s']:.1f} s; saved {saved['path']}")
    if not accelerator.is_main_process:
        args.json = False  # under a multi-process launch only the main process prints the JSON line
    return summary


def _plan_text(plan: dict) -> str:
    return (f"plan ({plan['preset'] or 'custom'}): {plan['steps']} steps of batch {plan['batch_size']} "
            f"(micro-batch {plan['micro_batch_size']}) over {plan['forget_images']} forget and "
            f"{plan['retain_images']} retain images ({plan['epochs']:g} passes), α {plan['alpha']:g}, "
            f"lr {plan['lr']:g}; {plan['generated_images']['total']} images to generate; "
            f"evaluation {plan['evaluation']}; ≈{plan['estimated_memory_gb']:g} GB estimated for unlearning "
            f"({plan['unet_weights'] / 1e6:.1f} M UNet weights, {plan['unet_weights_from']})")


def add_commands(subparsers) -> None:
    """Add this area's subcommands to `python -m core.cli`."""
    from core.concept.presets import PRESETS

    presets = "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
    p = subparsers.add_parser(
        "unlearn-concept", help="forget a text-to-image concept in Stable Diffusion (SalUn on the UNet)",
        description="SalUn concept forgetting on a diffusers StableDiffusionPipeline. A preset sets the prompts, "
                    f"the step budget and the evaluation; any flag overrides it. Presets: {presets}.")
    p.add_argument("--model", required=True,
                   help="diffusers folder, hub id (cached or downloadable), or 'tiny' (tiny random pipeline)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="nudity, object or tiny (default: tiny for --model tiny, else nudity)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved plan (steps, images, batch, α, lr, memory estimate) and stop; "
                        "loads no weights")
    p.add_argument("--forget", default=None, help="the prompt whose concept is forgotten (default: the preset's)")
    p.add_argument("--pseudo", default=None, help="the prompt it is mapped to (default: the preset's)")
    p.add_argument("--retain", action="append", default=None,
                   help="a prompt to keep (repeat for several; default: the preset's)")
    p.add_argument("--forget-images", default=None, help="folder of forget images instead of generating them")
    p.add_argument("--retain-images", default=None, help="folder of retain images (captions: same-name .txt files)")
    p.add_argument("--sparsity", type=float, default=None, help="share of UNet weights the saliency mask selects (0.5)")
    p.add_argument("--alpha", type=float, default=None,
                   help="weight of the retain diffusion loss (preset: 0.1 nudity, 0.5 object and tiny)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (preset: 1e-5; 5e-4 for tiny)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps, whatever the number of images (preset: 100 nudity, 600 object, 10 tiny)")
    p.add_argument("--epochs", type=int, default=None,
                   help="instead of --steps: passes over the forget images (steps = epochs x ceil(images / batch))")
    p.add_argument("--batch-size", type=int, default=None,
                   help="forget (and retain) images per optimizer step, over all processes (preset: 8; 4 for tiny)")
    p.add_argument("--micro-batch", type=int, default=None, help="images per forward pass; 0 = whole batch")
    p.add_argument("--images-per-prompt", type=int, default=None,
                   help="generated forget images, and per retain prompt, reused across passes (preset: 200; 4 tiny)")
    p.add_argument("--mask-guidance", type=float, default=None, help="w in (1+w)·ε(forget) − w·ε('') for the mask (7.5)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale when generating images (7.5)")
    p.add_argument("--sample-steps", type=int, default=None,
                   help="sampling steps per generated image (preset: 50; 4 for tiny)")
    p.add_argument("--resolution", type=int, default=None, help="image size; 0 = the model's own (512 for SD v1.4)")
    p.add_argument("--sample-seeds", type=int, nargs="+", default=None, help="seeds of the before/after images (0 1)")
    p.add_argument("--eval", choices=["nudenet", "imagenet", "none"], default=None,
                   help="judge of the forgetting (preset: nudenet for nudity, imagenet for object and tiny)")
    p.add_argument("--eval-prompt", action="append", default=None,
                   help="an evaluation prompt added to the judge's own (repeat for several)")
    p.add_argument("--eval-images", type=int, default=None, help="images per evaluation prompt, before and after (2)")
    p.add_argument("--classifier-weights", default=None,
                   help="local torchvision ResNet-50 ImageNet state dict (.pth or .safetensors) for --eval imagenet")
    p.add_argument("--download", action="store_true",
                   help="allow downloading the ImageNet classifier's weights (98 MB) for --eval imagenet")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="GPU compute precision (auto: bf16, else fp16); the CPU always uses fp32")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in backward: much less GPU memory, about a third slower")
    p.add_argument("--safety-checker", action="store_true", help="keep the pipeline's safety checker")
    p.add_argument("--save", default=None, help="folder for the unlearned pipeline, mask, metrics and samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-store", action="store_true", help="do not record this run in the run store ($SALUN_HOME)")
    p.set_defaults(func=cmd_unlearn_concept)
