"""Classifiers: models, training, unlearning methods, metrics and the experiment that ties them together.

    models.py       SmallCNN, CIFAR-style ResNet-18, `build_model`
    training.py     training from scratch (the original and Retrain), prediction, accuracy
    methods.py      SalUn, Retrain, FT, GA, RL, l1-sparse, SSD: one signature, declared in core.methods
    metrics.py      UA, RA, TA, MIA-Efficacy, Avg. Gap
    experiment.py   RunConfig -> RunResult: load, split, mask, unlearn, evaluate, save
    analysis.py     per-class gradients, mask overlaps, sparsity sweeps
    attribution.py  integrated gradients (captum) before and after
    plots.py        Plotly figures for all of the above
"""

from core._lazy import lazy_exports

__all__ = ["RunConfig", "RunResult", "Experiment", "run", "save_run", "build_model", "evaluate", "avg_gap",
           "get_method"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "RunConfig": "core.classification.experiment", "RunResult": "core.classification.experiment",
    "Experiment": "core.classification.experiment", "run": "core.classification.experiment",
    "save_run": "core.classification.experiment", "build_model": "core.classification.models",
    "evaluate": "core.classification.metrics", "avg_gap": "core.classification.metrics",
    "get_method": "core.methods",
})
