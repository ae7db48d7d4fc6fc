"""SalUn Lab: saliency unlearning for image classifiers and generators, as a library.

    from core import RunConfig, run
    result = run(RunConfig(forget="class:3", method="salun"), compare_retrain=True)
    result.summary()

Families, each a subpackage:
    core.classification   classifiers: models, training, methods, metrics, experiment
    core.diffusion        class-conditional diffusion generators
    core.concept          concept forgetting in Stable Diffusion pipelines
    core.cli              the `salun` command

What every family shares lives at the top: `data` (datasets and forget targets), `saliency` (the
mask), `steps` (the masked optimizer step loop), `checkpoint`, `errors`, `jobs`, `limits`, `uploads`.
Nothing here is imported until it is used, so `import core` is cheap.
"""

from core._lazy import lazy_exports

__all__ = [
    # classification
    "RunConfig", "RunResult", "Experiment", "run", "save_run",
    # generation and concepts
    "GenerationRunConfig", "run_generation", "ConceptConfig", "unlearn_concept",
    # shared
    "load_dataset", "parse_forget", "make_split", "saliency_mask", "layer_statistics", "mask_iou",
    "load_checkpoint", "save_checkpoint", "SalunError",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "RunConfig": "core.classification.experiment", "RunResult": "core.classification.experiment",
    "Experiment": "core.classification.experiment", "run": "core.classification.experiment",
    "save_run": "core.classification.experiment",
    "GenerationRunConfig": "core.diffusion.run", "run_generation": "core.diffusion.run",
    "ConceptConfig": "core.concept.run", "unlearn_concept": "core.concept.run",
    "load_dataset": "core.data", "parse_forget": "core.data", "make_split": "core.data",
    "saliency_mask": "core.saliency", "layer_statistics": "core.saliency", "mask_iou": "core.saliency",
    "load_checkpoint": "core.checkpoint", "save_checkpoint": "core.checkpoint",
    "SalunError": "core.errors",
})
