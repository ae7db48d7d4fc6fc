"""One generation-forgetting run, from a small serialisable config to before/after metrics.

    config = GenerationRunConfig(dataset="fashion_mnist", forget="class:7", method="salun", seed=0)
    result = run_generation(config)
    result.after["ua"], result.before["retained_accuracy"], result.rte_seconds

The before and after figures come from images generated with the same seeds, so every generated image
after unlearning has a twin before it. A dataset names its shipped generator and the shipped classifier
that judges it; a dataset without a generator is an error, never a quiet substitution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


from core.checkpoint import load_checkpoint, read_meta
from core.data import DEFAULT_DATASET, load_dataset, parse_forget
from core.diffusion.model import (DEFAULT_SAMPLE_STEPS, ConditionalUNet, check_guidance, default_generator,
                                  default_guidance, load_generator)
from core.diffusion.metrics import generation_metrics
from core.diffusion.methods import GenerationUnlearning, generation_split, unlearn_generator
from core.methods import get_method
from core.config import config_from_dict
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
    guidance: float | None = None  # default: the generator's own (its sidecar), 2.0 for the digits
    sample_steps: int = DEFAULT_SAMPLE_STEPS
    per_class: int = DEFAULT_PER_CLASS  # images generated per class for the metrics
    generator: str | None = None  # default: the dataset's shipped generator
    classifier: str | None = None  # default: the dataset's shipped classifier
    dataset: str | None = None  # default: the generator's (its sidecar), mnist5k when no generator is given
    options: dict = field(default_factory=dict)  # any other method setting, e.g. {"batch_size": 16}

    def to_dict(self) -> dict:
        values = asdict(self)
        if not values["options"]:  # configs saved before `options` existed read the same
            del values["options"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "GenerationRunConfig":
        return config_from_dict(cls, values)

    def overrides(self) -> dict:
        """The method settings this config sets (None: the method's default)."""
        return {**self.options, "steps": self.steps, "lr": self.lr, "alpha": self.alpha}

    def forget_class(self) -> int:
        target = parse_forget(self.forget)
        if target.kind != "class":
            raise SalunError(f"generation forgets a whole class: use class:K, not {self.forget!r}")
        return int(target.value)

    def validate(self) -> "GenerationRunConfig":
        self.forget_class()
        get_method(self.method, "generation").resolve(self.seed, self.dataset or "*", "class", **self.overrides())
        check_fraction("sparsity", self.sparsity)
        if self.guidance is not None:
            check_guidance(self.guidance)
        check_positive("sampling steps", self.sample_steps, integer=True)
        check_positive("images per class", self.per_class, integer=True)
        return self

    def resolved(self) -> "GenerationRunConfig":
        """A copy naming exactly what runs: dataset, generator and classifier files, guidance.

        Reads only the generator's sidecar. A generator given explicitly decides the dataset; a
        `dataset` that contradicts it is an error.
        """
        generator, dataset, meta = resolve_generator(self.generator, self.dataset)
        classifier = self.classifier or str(_default_classifier(dataset))
        return replace(self, generator=str(generator), classifier=str(classifier)).fitted_to(meta)

    def fitted_to(self, generator_meta: dict) -> "GenerationRunConfig":
        """A copy with the dataset and default guidance of the generator whose sidecar this is."""
        trained_on = generator_meta.get("dataset", DEFAULT_DATASET)
        if self.dataset is not None and self.dataset != trained_on:
            raise SalunError(f"the generator was trained on {trained_on!r}, not {self.dataset!r}")
        guidance = self.guidance if self.guidance is not None else default_guidance(generator_meta)
        return replace(self, dataset=trained_on, guidance=guidance)


def _default_classifier(dataset: str) -> Path:
    from core.classification.experiment import default_checkpoint

    return default_checkpoint(dataset)


def resolve_generator(generator: str | Path | None = None, dataset: str | None = None) -> tuple[Path, str, dict]:
    """(generator path, its dataset, its sidecar) for a generator file or a dataset's shipped one."""
    if generator is None:
        path = default_generator(dataset or DEFAULT_DATASET)
    else:
        path = Path(generator)
        if not path.is_file():
            raise SalunError(f"generator {str(path)!r} does not exist")
    meta = read_meta(path, required=("architecture",))
    trained_on = meta.get("dataset", DEFAULT_DATASET)
    if dataset is not None and dataset != trained_on:
        raise SalunError(f"generator {path.name!r} was trained on {trained_on!r}, not {dataset!r}; "
                         f"drop --generator to use the shipped one for {dataset!r}")
    return path, trained_on, meta


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
                "dataset": self.config.dataset, "generator": self.config.generator,
                "classifier": self.config.classifier, **pick(self.after), "rte_seconds": self.rte_seconds, "before": pick(self.before),
                "params": self.unlearning.params,
                "sparsity": self.config.sparsity if self.unlearning.mask is not None else None,  # None: no mask
                "guidance": self.config.guidance,
                "sample_steps": self.config.sample_steps, "per_class": self.config.per_class,
                "retained_drop": self.after.get("retained_drop"), "retained_drop_se": self.after.get("retained_drop_se"),
                "frechet_min_per_class": self.after.get("frechet_min_per_class"),
                "mask_stability": getattr(self.unlearning, "mask_stability", None),
                "substitute": self.unlearning.substitute,  # None: a method that maps the class to no other
                **({"frechet_note": self.after["frechet_note"]} if "frechet_note" in self.after else {})}


def load_models(generator: str | Path | None = None, classifier: str | Path | None = None,
                dataset: str | None = None):
    """The generator and the classifier that judges it, with their sidecars: by default the shipped
    pair for `dataset` (mnist5k), or for the dataset a given generator was trained on."""
    path, trained_on, _ = resolve_generator(generator, dataset)
    gen, gen_meta = load_generator(path)
    clf, clf_meta = load_checkpoint(classifier or _default_classifier(trained_on))
    if len(clf_meta["class_names"]) != gen.num_classes:
        raise SalunError(f"the classifier knows {len(clf_meta['class_names'])} classes, the generator {gen.num_classes}")
    return gen, gen_meta, clf, clf_meta


def evaluate_generator(generator: ConditionalUNet, classifier, forget_class: int | None, config: GenerationRunConfig,
                       dataset_name: str = "mnist5k", before: dict | None = None) -> dict:
    dataset = load_dataset(dataset_name)
    return generation_metrics(generator, classifier, forget_class, dataset.test_x, dataset.test_y,
                              per_class=config.per_class, guidance=config.guidance, steps=config.sample_steps,
                              seed=config.seed, before=before)


def run_generation(config: GenerationRunConfig, progress: Progress | None = None, models=None,
                   before: dict | None = None) -> GenerationRunResult:
    """Unlearn, then measure before and after. Pass `models` (from load_models) and a `before` result
    computed with the same config to reuse them."""
    config.validate()
    if models is None:
        config = config.resolved()
        models = load_models(config.generator, config.classifier)
    generator, gen_meta, classifier, _ = models
    config = config.fitted_to(gen_meta)
    forget_class = config.forget_class()
    dataset = load_dataset(config.dataset)
    data = generation_split(dataset, forget_class)
    if before is None:
        before = evaluate_generator(generator, classifier, forget_class, config, dataset.name)
    unlearning = unlearn_generator(generator, data, config.method, sparsity=config.sparsity, seed=config.seed,
                                   masked=config.masked, mask_guidance=config.guidance, progress=progress,
                                   dataset=config.dataset, **config.overrides())
    after = evaluate_generator(unlearning.model, classifier, forget_class, config, dataset.name, before=before)
    return GenerationRunResult(config, before, after, unlearning, {"generator": gen_meta})
