"""Unlearning methods: the mask is a hard constraint, originals are never modified, runs reproduce."""

import pytest
import torch

from core.checkpoint import state_checksum
from core.errors import DivergedError, SalunError
from core.methods import methods

METHODS = methods("classification")

MASKABLE = [name for name, m in METHODS.items() if m.mask != "none"]
SMALL_BUDGET = {"salun": {"epochs": 2}, "rl": {"epochs": 2}, "ft": {"epochs": 1}, "l1_sparse": {"epochs": 1},
                "ga": {"epochs": 1}, "ssd": {"alpha": 1.0}, "retrain": {"epochs": 2}}


@pytest.mark.parametrize("method", MASKABLE)
def test_weights_outside_the_mask_stay_bit_identical(digits_experiment, method):
    exp = digits_experiment
    assert METHODS[method].defaults().get("weight_decay", 0) > 0 or method == "ssd"  # the hard case: decay + momentum
    result = exp.unlearn(method, seed=0, sparsity=0.3, masked=True, **SMALL_BUDGET[method])
    original = dict(exp.original.named_parameters())
    moved_inside = 0
    for name, p in result.model.named_parameters():
        outside = ~result.mask[name]
        assert torch.equal(p.detach()[outside], original[name].detach()[outside]), f"{method} moved {name} outside the mask"
        moved_inside += int((p.detach()[result.mask[name]] != original[name].detach()[result.mask[name]]).sum())
    assert moved_inside > 0, f"{method} changed nothing at all"


@pytest.mark.parametrize("method", list(METHODS))
def test_the_original_model_is_never_modified(digits_experiment, method):
    before = state_checksum(digits_experiment.original)
    digits_experiment.unlearn(method, seed=0, masked=METHODS[method].mask == "optional", **SMALL_BUDGET[method])
    assert state_checksum(digits_experiment.original) == before


def test_salun_forgets_a_class_of_the_shipped_model_and_keeps_the_rest():
    from core.classification.experiment import Experiment, RunConfig

    exp = Experiment.from_config(RunConfig(forget="class:3"), device="cpu")
    before = exp.original_metrics()
    result = exp.unlearn("salun", seed=0)
    assert before["ua"] < 2 and before["forget_test_accuracy"] > 95
    assert result.metrics["ua"] >= 99
    assert result.metrics["forget_test_accuracy"] <= 2
    assert result.metrics["ra"] >= before["ra"] - 1.5
    assert result.metrics["ta"] >= before["ta"] - 1.5


def test_same_seed_gives_the_same_metrics(digits_experiment):
    a = digits_experiment.unlearn("salun", seed=3, epochs=2)
    b = digits_experiment.unlearn("salun", seed=3, epochs=2)
    c = digits_experiment.unlearn("salun", seed=4, epochs=2)
    strip = lambda m: {k: v for k, v in m.items() if k != "rte_seconds"}  # noqa: E731
    assert strip(a.metrics) == strip(b.metrics)
    assert a.losses == b.losses
    assert a.losses != c.losses


def test_random_labels_never_equal_the_true_label():
    from core.classification.methods import _random_other_labels

    y = torch.randint(0, 10, (5000,))
    y2 = _random_other_labels(y, 10, torch.Generator().manual_seed(0))
    assert not bool((y == y2).any())
    assert set(y2.tolist()) == set(range(10))


def test_diverging_gradient_ascent_stops_with_a_clear_error(digits_experiment):
    before = state_checksum(digits_experiment.original)
    with pytest.raises(DivergedError, match="GA: the loss became"):
        digits_experiment.unlearn("ga", seed=0, lr=1e6, epochs=5)
    assert state_checksum(digits_experiment.original) == before


def test_salun_without_mask_and_retrain_with_mask_are_refused(digits_experiment):
    from core.classification.methods import UnlearnData, run_retrain, run_salun

    model = torch.nn.Linear(2, 2)
    with pytest.raises(SalunError, match="needs a saliency mask"):
        run_salun(model, None, {}, mask=None)
    with pytest.raises(SalunError, match="takes no mask"):
        run_retrain(model, None, {}, mask={"weight": torch.ones(2, 2, dtype=torch.bool)})


@pytest.mark.parametrize("override, message", [
    ({"epochs": 0}, "epochs must be > 0"),
    ({"epochs": 1.5}, "whole number"),
    ({"lr": -1}, "lr must be > 0"),
    ({"alpha": -2.0}, "alpha must be"),
    ({"momentum_typo": 1}, "has no setting 'momentum_typo'"),
])
def test_bad_hyperparameters_are_named(digits_experiment, override, message):
    with pytest.raises(SalunError, match=message):
        digits_experiment.unlearn("salun", seed=0, **override)


def test_unknown_method_lists_the_allowed_ones(digits_experiment):
    with pytest.raises(SalunError, match="unknown method 'salunn'; choose one of: salun, retrain"):
        digits_experiment.unlearn("salunn")


def test_progress_reports_every_step_and_can_cancel(digits_experiment):
    from core.errors import CancelledError

    seen = []
    result = digits_experiment.unlearn("salun", seed=0, epochs=2, progress=lambda d, t, l: seen.append((d, t, l)))
    assert [d for d, _, _ in seen] == list(range(1, len(result.losses) + 1))
    assert all(t == len(result.losses) for _, t, _ in seen)

    def cancel(done, total, loss):
        if done == 2:
            raise CancelledError()

    with pytest.raises(CancelledError):
        digits_experiment.unlearn("salun", seed=0, progress=cancel)
