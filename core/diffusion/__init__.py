"""Class-conditional diffusion (DDPM with classifier-free guidance): forgetting a class of generated images.

    model.py     the conditional UNet (diffusers), sampling, loading and saving generators
    training.py  training a generator (resumable), the diffusion loss
    methods.py   SalUn, RL, GA, FT for generators; the diffusion saliency gradients
    metrics.py   generation UA, retained-class accuracy, Frechet distance on classifier features
    run.py       GenerationRunConfig -> GenerationRunResult, end to end
    plots.py     image grids and figures
"""

from core._lazy import lazy_exports

__all__ = ["GenerationRunConfig", "GenerationRunResult", "run_generation", "load_generator", "generate",
           "unlearn_generator", "generation_metrics"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "GenerationRunConfig": "core.diffusion.run", "GenerationRunResult": "core.diffusion.run",
    "run_generation": "core.diffusion.run", "load_generator": "core.diffusion.model",
    "generate": "core.diffusion.model", "unlearn_generator": "core.diffusion.methods",
    "generation_metrics": "core.diffusion.metrics",
})
