"""Concept forgetting in text-to-image pipelines (Stable Diffusion, or a tiny random one for tests).

    pipeline.py  loading a pipeline (local folder or hub id), prompts, images, generation
    training.py  the concept saliency gradients and the masked SalUn loop on the UNet
    run.py       ConceptConfig -> ConceptResult, end to end, and saving the unlearned pipeline
"""

from core._lazy import lazy_exports

__all__ = ["ConceptConfig", "ConceptResult", "unlearn_concept", "save_concept_result", "load_pipeline"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "ConceptConfig": "core.concept.run", "ConceptResult": "core.concept.run",
    "unlearn_concept": "core.concept.run", "save_concept_result": "core.concept.run",
    "load_pipeline": "core.concept.pipeline",
})
