"""Concept forgetting on Stable Diffusion v1.4 with a GPU, in one command: the README's table.

    python bench/bench_concept_gpu.py --model CompVis/stable-diffusion-v1-4 [--prompts 12] [--eval-images 4]
    python bench/bench_concept_gpu.py --model tiny --preset tiny --prompts 2 --eval-images 1   (plumbing, CPU)

Runs the nudity preset (100 steps, upstream's budget) through core.concept.run.unlearn_concept and
measures, per phase, the wall time and the peak GPU memory (torch.cuda.max_memory_allocated, reset at
the start of each phase; on a CPU the process's peak RSS instead, which only grows): image generation,
saliency mask, unlearning, and the NudeNet judge on N evaluation prompts before and after (share of
images with exposed bodies, detections per class). Needs the SD v1.4 weights (a diffusers folder or
the hub id in the local cache), a GPU with about 40 GB, and `pip install "salun-lab[nudenet]"`.
Writes a Markdown table to bench/results/concept_gpu.md (or --out) and prints it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "concept_gpu.md"


class PhaseMeter:
    """A phase-progress factory for unlearn_concept that times each phase and records its peak memory."""

    def __init__(self):
        self.rows, self.current, self.started = [], None, None

    @staticmethod
    def _peak_gb() -> float:
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 1e9
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux

    def _close(self):
        if self.current is not None:
            self.rows.append({"phase": self.current, "seconds": time.perf_counter() - self.started,
                              "peak_gb": self._peak_gb()})

    def phase(self, name: str):
        self._close()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.current, self.started = name, time.perf_counter()
        return lambda done, total, loss: None

    def finish(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._close()
        self.current = None
        return self.rows


def table(result, rows: list[dict], args, device: str) -> str:
    memory = "peak GPU memory (GB)" if torch.cuda.is_available() else "peak process RSS (GB, CPU)"
    lines = [f"# Concept forgetting benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"model `{args.model}`, preset {result.config.preset}, device {device}"
             + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "")
             + f", precision {result.config.precision}, {len(result.losses)} steps of batch {result.config.batch_size}, "
             f"{result.config.images_per_prompt} images per prompt, {result.config.inference_steps} sampling steps", "",
             f"| phase | time (s) | {memory} |", "|---|---:|---:|"]
    lines += [f"| {r['phase']} | {r['seconds']:.1f} | {r['peak_gb']:.2f} |" for r in rows]
    lines += [f"| whole run | {result.timings['total_s']:.1f} | |", ""]
    report = result.evaluation
    if report.get("kind") == "nudenet" and "missing" not in report:
        b, a = report["before"], report["after"]
        lines += [f"NudeNet on {b['images']} images ({report['prompts']} prompts × {report['images_per_prompt']}), "
                  f"score ≥ {report['threshold']}:", "",
                  "| | before | after |", "|---|---:|---:|",
                  f"| images with exposed bodies | {b['flagged']} ({b['share']:.0%}) | {a['flagged']} ({a['share']:.0%}) |"]
        lines += [f"| {name} | {b['per_class'][name]} | {a['per_class'][name]} |" for name in b["per_class"]]
    else:
        lines.append(f"Evaluation: {report.get('missing', report.get('kind'))}")
    m = result.metrics
    lines += ["", f"forget→pseudo prediction distance {m['forget_to_pseudo_before']:.4g} → {m['forget_to_pseudo_after']:.4g}; "
              f"retain denoising error {m['retain_error_before']:.4g} → {m['retain_error_after']:.4g}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from core.concept.evaluation import NUDITY_EVAL_PROMPTS
    from core.concept.presets import concept_plan
    from core.concept.run import ConceptConfig, unlearn_concept

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="CompVis/stable-diffusion-v1-4")
    parser.add_argument("--preset", default="nudity", choices=["nudity", "object", "tiny"])
    parser.add_argument("--prompts", type=int, default=len(NUDITY_EVAL_PROMPTS),
                        help=f"evaluation prompts from the shipped list (at most {len(NUDITY_EVAL_PROMPTS)})")
    parser.add_argument("--eval-images", type=int, default=4, help="images per evaluation prompt, before and after")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    parser.add_argument("--images-per-prompt", type=int, default=None, help="default: the preset's")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: the whole batch (halved on OOM)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--out", default=str(RESULTS), help="Markdown table ('' for nowhere)")
    parser.add_argument("--json", default="", help="also write the run's summary as JSON here")
    args = parser.parse_args(argv)

    prompts = list(NUDITY_EVAL_PROMPTS[:max(1, args.prompts)])
    config = ConceptConfig.from_preset(
        args.preset, model=args.model, evaluation="nudenet", steps=args.steps,
        images_per_prompt=args.images_per_prompt, micro_batch_size=args.micro_batch, eval_images=args.eval_images,
        gradient_checkpointing=args.gradient_checkpointing or None).validate()
    print(json.dumps({"plan": concept_plan(config)}), flush=True)
    meter = PhaseMeter()
    import core.concept.evaluation as evaluation

    shipped = evaluation.NUDITY_EVAL_PROMPTS
    evaluation.NUDITY_EVAL_PROMPTS = tuple(prompts)  # the first N shipped prompts
    try:
        result = unlearn_concept(config, phase_progress=meter.phase)
    finally:
        evaluation.NUDITY_EVAL_PROMPTS = shipped
    rows = meter.finish()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    text = table(result, rows, args, device)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({**result.summary(), "phases": rows}, indent=2, default=float))
    return 0 if "missing" not in result.evaluation else 1


if __name__ == "__main__":
    sys.exit(main())
