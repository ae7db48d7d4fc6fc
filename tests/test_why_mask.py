"""The lesson the app teaches about the mask, and the baselines it is compared with.

- Every baseline, at its tuned default for class-wise forgetting, really forgets a class of the shipped
  digit model and keeps the other digits (a comparison against broken baselines teaches nothing).
- The "Why the mask?" page shows the measured SalUn-vs-RL comparison and says so when there is none.
- Its sentences come from the numbers: a difference inside the spread over seeds is called no difference.
"""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shipped_class_experiment():
    from core.classification.experiment import Experiment, RunConfig

    return Experiment.from_config(RunConfig(forget="class:4"), device="cpu")


def _accuracy(model, x, y) -> float:
    from core.classification.training import predict

    return float((predict(model, x).argmax(1) == y).float().mean() * 100)


@pytest.mark.parametrize("method", ["ga", "ft", "l1_sparse", "ssd"])
def test_each_tuned_baseline_forgets_a_class_without_collapsing_the_rest(shipped_class_experiment, method):
    from core.classification.training import copy_model
    from core.methods import get_method

    exp = shipped_class_experiment
    spec = get_method(method)
    params = spec.resolve(0, "mnist5k", "class")
    assert params != spec.resolve(0, "mnist5k", "*"), "class-wise forgetting has its own tuned defaults"
    model = copy_model(exp.original)
    spec.run(model, exp.data, params)
    forget_acc = _accuracy(model, exp.data.forget_x, exp.data.forget_y)
    retain_acc = _accuracy(model, exp.data.retain_x, exp.data.retain_y)
    assert _accuracy(exp.original, exp.data.forget_x, exp.data.forget_y) > 98
    assert forget_acc <= 25, f"{method} still recognises {forget_acc:.1f}% of the forgotten digit"
    assert retain_acc >= 90, f"{method} kept only {retain_acc:.1f}% of the other digits"


@pytest.mark.parametrize("method", ["ga", "ssd"])  # the cheap ones; FT and ℓ1-sparse pass over all 3,600 kept images
def test_tuned_baselines_on_a_random_share_keep_the_other_images(method):
    from core.classification.experiment import Experiment, RunConfig
    from core.classification.training import copy_model
    from core.methods import get_method

    exp = Experiment.from_config(RunConfig(forget="random:0.1"), device="cpu")
    spec = get_method(method)
    model = copy_model(exp.original)
    spec.run(model, exp.data, spec.resolve(0, "mnist5k", "random"))
    assert _accuracy(model, exp.data.retain_x, exp.data.retain_y) >= 98
    test_x, test_y = exp.dataset.test_x, exp.dataset.test_y
    assert _accuracy(model, test_x, test_y) >= _accuracy(exp.original, test_x, test_y) - 1.5


def _pair(salun_gap, salun_std, rl_gap, rl_std):
    row = lambda gap, std, method: {"stage": "lr", "forget": "class:4", "lr": 1e-3, "method": method,  # noqa: E731
                                    "avg_gap": gap, "avg_gap_std": std, "ra": 99.0, "ra_std": 0.1}
    return {"rows": [row(salun_gap, salun_std, "salun"), row(rl_gap, rl_std, "rl")], "targets": ["class:4"],
            "lrs": [1e-3], "layers": []}


def test_a_difference_inside_the_spread_over_seeds_is_called_no_difference():
    from core.classification import why_mask

    assert why_mask.tally(_pair(1.43, 0.34, 1.42, 0.31)) == {"SalUn": 0, "RL": 0, "neither": 1}
    assert why_mask.tally(_pair(0.5, 0.1, 3.0, 0.2))["SalUn"] == 1
    assert why_mask.tally(_pair(3.0, 0.1, 0.5, 0.2))["RL"] == 1
    assert "no difference" in why_mask.reading(_pair(1.43, 0.34, 1.42, 0.31), "class:4")[0]


def test_why_page_shows_salun_against_rl_from_the_saved_benchmark():
    from core.classification import why_mask

    if why_mask.load_ablation() is None:
        pytest.skip("bench/results/mask_ablation_summary.json is not there")
    at = AppTest.from_file(str(ROOT / "pages" / "why.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "comparisons" in text and "SalUn Avg. Gap" in text
    generation = why_mask.load_generation_ablation()
    if generation is not None:  # the generator's comparison, read from its benchmark, with its reading
        assert "And on the image generator?" in [s.value for s in at.subheader]
        assert all(sentence in text for sentence in why_mask.generation_reading(generation))
    target = at.selectbox(key="why_target")
    target.set_value(target.options[-1]).run()
    assert not at.exception, [e.value for e in at.exception]


def test_why_page_says_when_there_are_no_results(tmp_path, monkeypatch):
    from core.classification import why_mask

    monkeypatch.setattr(why_mask, "ABLATION_SUMMARY", tmp_path / "missing.json")
    at = AppTest.from_file(str(ROOT / "pages" / "why.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("bench_mask_ablation.py" in i.value for i in at.info)


def test_ablation_summary_pairs_follow_the_learning_rates():
    from core.classification import why_mask

    summary = _pair(1.0, 0.1, 1.0, 0.1)
    summary["rows"] += [{**r, "lr": 1e-2} for r in summary["rows"]]
    assert [p["lr"] for p in why_mask.pairs(summary, "class:4")] == [1e-3, 1e-2]


def test_charts_name_the_target_in_words():
    from core.classification import why_mask

    summary = _pair(1.0, 0.1, 1.0, 0.1)
    title = why_mask.stability_figure(summary, "class:4").layout.title.text
    assert "digit 4" in title and "class:4" not in title
    assert why_mask.target_label("random:0.1") == "a random 10%"


def _generation(salun_drop, rl_drop):
    rows = []
    for k in (1, 3):
        for key, s, r in (("drop", salun_drop, rl_drop), ("frechet_retained", [90.0] * 3, [90.5, 89.5, 90.0]),
                          ("ua", [100.0] * 3, [100.0] * 3), ("retained_accuracy", [95.0] * 3, [93.0] * 3)):
            rows.append({"class": k, "metric": key, "before": 0.0, "salun": s, "rl": r})
    paired = {key: [b - a for row in rows if row["metric"] == key for a, b in zip(row["salun"], row["rl"])]
              for key in ("drop", "frechet_retained", "ua", "retained_accuracy")}
    return {"classes": [1, 3], "seeds": [0, 1, 2], "per_class": 30, "sparsity": 0.5, "rows": rows, "paired": paired}


def test_generation_reading_says_only_what_the_seeds_support():
    from core.classification import why_mask

    clear = why_mask.generation_reading(_generation([0.5, 1.0, 0.0], [3.0, 3.5, 2.5]))
    assert "SalUn better" in clear[0] and "in 6 of 6" in clear[0]
    assert "no difference" in clear[1]  # Fréchet moved both ways: not a finding
    noisy = why_mask.generation_reading(_generation([0.5, 4.0, -2.0], [3.0, -1.0, 1.0]))
    assert "no difference" in noisy[0]
    fig = why_mask.generation_figure(_generation([0.5, 1.0, 0.0], [3.0, 3.5, 2.5]))
    assert [t.name for t in fig.data][:2] == ["SalUn", "SalUn"] and len(fig.data) == 4
