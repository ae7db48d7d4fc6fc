"""CLI commands for unlearn-concept (Stable Diffusion concept forgetting); registered by core.cli.

    python -m core.cli unlearn-concept --model CompVis/stable-diffusion-v1-4 \\
        --forget "a photo of a nude person" --pseudo "a photo of a person wearing clothes" \\
        --retain "a photo of a person wearing clothes" --save runs/nudity --json
    python -m core.cli unlearn-concept --model tiny --save /tmp/tiny   (tiny random pipeline, seconds on a CPU)
    accelerate launch --multi_gpu --num_processes 4 -m core.cli unlearn-concept ...   (several GPUs, same flags)
    torchrun --nproc_per_node 2 -m core.cli unlearn-concept --model tiny ...          (two CPU processes, gloo)

Each process makes its share of the images; --batch-size is the global batch, split over the processes.
"""

from __future__ import annotations

# The tiny random pipeline needs bigger steps and more of them to show anything, and few sampling steps.
TINY_DEFAULTS = {"lr": 5e-4, "epochs": 10, "images_per_prompt": 4, "batch_size": 4, "steps": 4}
SD_DEFAULTS = {"lr": 1e-5, "epochs": 1, "images_per_prompt": 8, "batch_size": 8, "steps": 50}


def cmd_unlearn_concept(args) -> dict:
    from core.cli.common import ProgressBar
    from core.concept.run import ConceptConfig, make_accelerator, save_concept_result, unlearn_concept
    from core.concept.pipeline import TINY_MODEL

    defaults = TINY_DEFAULTS if args.model.strip() == TINY_MODEL else SD_DEFAULTS
    chosen = {key: getattr(args, key) if getattr(args, key) is not None else value for key, value in defaults.items()}
    config = ConceptConfig(
        model=args.model, forget_prompt=args.forget, pseudo_prompt=args.pseudo,
        retain_prompts=args.retain or ConceptConfig().retain_prompts,
        sparsity=args.sparsity, alpha=args.alpha, lr=chosen["lr"], epochs=chosen["epochs"],
        batch_size=chosen["batch_size"], micro_batch_size=args.micro_batch,
        images_per_prompt=chosen["images_per_prompt"], mask_guidance=args.mask_guidance,
        sample_guidance=args.guidance, inference_steps=chosen["steps"],
        resolution=args.resolution, sample_seeds=args.sample_seeds, forget_images=args.forget_images,
        retain_images=args.retain_images, seed=args.seed, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        safety_checker=args.safety_checker,
    ).validate()
    accelerator = make_accelerator(config.precision)
    bar = ProgressBar(not args.quiet and accelerator.is_main_process)
    result = unlearn_concept(config, phase_progress=bar.phase, accelerator=accelerator)
    bar.close()
    saved = save_concept_result(result, args.save)
    summary = {**result.summary(), **saved, "device": str(accelerator.device), "processes": accelerator.num_processes}
    if accelerator.is_main_process and not args.json:
        m = result.metrics
        print(f"forget→pseudo prediction distance  {m['forget_to_pseudo_before']:.4g} → "
              f"{m['forget_to_pseudo_after']:.4g}")
        print(f"retain denoising error             {m['retain_error_before']:.4g} → {m['retain_error_after']:.4g}")
        print(f"prediction shift  forget {m['forget_shift']:.4g}   retain {m['retain_shift']:.4g}")
        print(f"{len(result.losses)} steps in {result.timings['unlearn_s']:.1f} s; saved {saved['path']}")
    if not accelerator.is_main_process:
        args.json = False  # under a multi-process launch only the main process prints the JSON line
    return summary


def add_commands(subparsers) -> None:
    """Add this area's subcommands to `python -m core.cli`."""
    p = subparsers.add_parser(
        "unlearn-concept", help="forget a text-to-image concept in Stable Diffusion (SalUn on the UNet)",
        description="SalUn concept forgetting on a diffusers StableDiffusionPipeline. Upstream defaults: "
                    "alpha 0.1-0.5, lr 1e-5, batch 8, 1-5 epochs, mask at guidance 7.5.")
    p.add_argument("--model", required=True,
                   help="diffusers folder, hub id (cached or downloadable), or 'tiny' (tiny random pipeline)")
    p.add_argument("--forget", default="a photo of a nude person", help="the prompt whose concept is forgotten")
    p.add_argument("--pseudo", default="a photo of a person wearing clothes", help="the prompt it is mapped to")
    p.add_argument("--retain", action="append", default=None,
                   help="a prompt to keep (repeat for several; default: the default pseudo prompt)")
    p.add_argument("--forget-images", default=None, help="folder of forget images instead of generating them")
    p.add_argument("--retain-images", default=None, help="folder of retain images (captions: same-name .txt files)")
    p.add_argument("--sparsity", type=float, default=0.5, help="share of UNet weights the saliency mask selects")
    p.add_argument("--alpha", type=float, default=0.1, help="weight of the retain diffusion loss (upstream 0.1-0.5)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-5; 5e-4 for tiny)")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the forget images (default 1, upstream 1-5; 10 for tiny)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="forget (and retain) images per optimizer step, over all processes (default 8; 4 for tiny)")
    p.add_argument("--micro-batch", type=int, default=0, help="images per forward pass; 0 = whole batch")
    p.add_argument("--images-per-prompt", type=int, default=None,
                   help="generated forget images, and per retain prompt (default 8; 4 for tiny)")
    p.add_argument("--mask-guidance", type=float, default=7.5, help="w in (1+w)·ε(forget) − w·ε('') for the mask")
    p.add_argument("--guidance", type=float, default=7.5, help="guidance scale when generating images")
    p.add_argument("--steps", type=int, default=None, help="sampling steps per image (default 50; 4 for tiny)")
    p.add_argument("--resolution", type=int, default=0, help="image size; 0 = the model's own (512 for SD v1.4)")
    p.add_argument("--sample-seeds", type=int, nargs="+", default=[0, 1], help="seeds of the before/after images")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="GPU compute precision (auto: bf16, else fp16); the CPU always uses fp32")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in backward: much less GPU memory, about a third slower")
    p.add_argument("--safety-checker", action="store_true", help="keep the pipeline's safety checker")
    p.add_argument("--save", required=True, help="folder for the unlearned pipeline, mask, metrics and samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_unlearn_concept)
