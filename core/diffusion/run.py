"""One generation-forgetting run, from a small serialisable config to before/after metrics.

    config = GenerationRunConfig(forget="class:3", method="salun", seed=0)
    result = run_generation(config)
    result.after["ua"], result.before["retained_accuracy"], result.rte_seconds

The before and after figures come from images generated with the same seeds, so every generated image
after unlearning has a twin before it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


from core.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from core.data import load_dataset, parse_forget
from core.diffusion.model import DEFAULT_GENERATOR, DEFAULT_GUIDANCE, DEFAULT_SAMPLE_STEPS, ConditionalUNet, check_guidance, load_generator
from core.diffusion.metrics import generation_metrics
from core.diffusion.methods import GenerationUnlearning, generation_split, get_generation_method, unlearn_generator
from core.errors import SalunError, check_fraction, check_positive
from core.saliency import DEFAULT_SPARSITY
from core.steps import Progress

DEFAULT_PER_CLASS = 30


@dataclass
class GenerationRunConfig:
    forget: str = "class:3"
    method: str = "salun"
    seed: int = 0
    sparsity: float = DEFAULT_SPARSITY
    masked: bool = False
    steps: int | None = None
    lr: float | None = None
    alpha: float | None = None
    guidance: float = DEFAULT_GUIDANCE
    sample_steps: int = DEFAULT_SAMPLE_STEPS
    per_class: int = DEFAULT_PER_CLASS  # images generated per class for the metrics
    generator: str | None = None  # default: the shipped generator
    classifier: str | None = None  # default: the shipped classifier

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GenerationRunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SalunError(f"unknown config keys {unknown}; allowed: {', '.join(sorted(known))}")
        return cls(**values)

    def forget_class(self) -> int:
        target = parse_forget(self.forget)
        if target.kind != "class":
            raise SalunError(f"generation forgets a whole class: use class:K, not {self.forget!r}")
        return int(target.value)

    def validate(self) -> "GenerationRunConfig":
        self.forget_class()
        get_generation_method(self.method)
        check_fraction("sparsity", self.sparsity)
        check_guidance(self.guidance)
        check_positive("sampling steps", self.sample_steps, integer=True)
        check_positive("images per class", self.per_class, integer=True)
        if self.steps is not None:
            check_positive("steps", self.steps, integer=True)
        if self.lr is not None:
            check_positive("learning rate", self.lr)
        return self


@dataclass
class GenerationRunResult:
    config: GenerationRunConfig
    before: dict
    after: dict
    unlearning: GenerationUnlearning
    meta: dict = field(default_factory=dict)

    @property
    def rte_seconds(self) -> float:
        return self.unlearning.rte_seconds

    def summary(self) -> dict:
        keys = ("ua", "retained_accuracy", "frechet_retained", "forget_accuracy", "per_class_accuracy")
        pick = lambda m: {k: m[k] for k in keys}  # noqa: E731
        return {"method": self.config.method, "forget": self.config.forget, "seed": self.config.seed,
                **pick(self.after), "rte_seconds": self.rte_seconds, "before": pick(self.before),
                "params": self.unlearning.params, "guidance": self.config.guidance,
                "sample_steps": self.config.sample_steps, "per_class": self.config.per_class}


def load_models(generator: str | Path | None = None, classifier: str | Path | None = None):
    """The generator and the classifier that judges it, with their sidecars."""
    gen, gen_meta = load_generator(generator or DEFAULT_GENERATOR)
    clf, clf_meta = load_checkpoint(classifier or DEFAULT_CHECKPOINT)
    if len(clf_meta["class_names"]) != gen.num_classes:
        raise SalunError(f"the classifier knows {len(clf_meta['class_names'])} classes, the generator {gen.num_classes}")
    return gen, gen_meta, clf, clf_meta


def evaluate_generator(generator: ConditionalUNet, classifier, forget_class: int | None, config: GenerationRunConfig,
                       dataset_name: str = "mnist5k") -> dict:
    dataset = load_dataset(dataset_name)
    return generation_metrics(generator, classifier, forget_class, dataset.test_x, dataset.test_y,
                              per_class=config.per_class, guidance=config.guidance, steps=config.sample_steps,
                              seed=config.seed)


def run_generation(config: GenerationRunConfig, progress: Progress | None = None, models=None,
                   before: dict | None = None) -> GenerationRunResult:
    """Unlearn, then measure before and after. Pass `models` (from load_models) and a `before` result
    computed with the same config to reuse them."""
    config.validate()
    generator, gen_meta, classifier, _ = models or load_models(config.generator, config.classifier)
    forget_class = config.forget_class()
    dataset = load_dataset(gen_meta.get("dataset", "mnist5k"))
    data = generation_split(dataset, forget_class)
    if before is None:
        before = evaluate_generator(generator, classifier, forget_class, config, dataset.name)
    unlearning = unlearn_generator(generator, data, config.method, sparsity=config.sparsity, seed=config.seed,
                                   masked=config.masked, mask_guidance=config.guidance, progress=progress,
                                   steps=config.steps, lr=config.lr, alpha=config.alpha)
    after = evaluate_generator(unlearning.model, classifier, forget_class, config, dataset.name)
    return GenerationRunResult(config, before, after, unlearning, {"generator": gen_meta})
