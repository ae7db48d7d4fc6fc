"""Evaluation a user can trust: membership attacks, their spread, and the views' measures, checked on
inputs whose answers are known."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import norm


# --- attacks on synthetic scores -----------------------------------------------------------------

def test_attack_auc_is_one_on_separable_scores_and_a_half_on_identical_ones():
    from core.classification.audit import roc_auc, tpr_at_fpr

    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0, 1, 4000), rng.normal(0, 1, 4000)
    assert roc_auc(members, nonmembers) == pytest.approx(0.5, abs=0.02)
    assert tpr_at_fpr(members, nonmembers) == pytest.approx(1.0, abs=0.6)  # chance: 1% of members at 1% FPR
    assert roc_auc(members + 20, nonmembers) == 1.0
    assert tpr_at_fpr(members + 20, nonmembers) == 100.0
    assert roc_auc(members - 20, nonmembers) == 0.0  # forget images looking *less* trained on than unseen ones


def test_tpr_at_one_percent_fpr_matches_the_gaussian_answer():
    from core.classification.audit import roc_auc, tpr_at_fpr

    rng = np.random.default_rng(1)
    shift = norm.ppf(0.99)  # members shifted by z_0.99: half of them clear the 1%-FPR threshold
    members, nonmembers = rng.normal(shift, 1, 20000), rng.normal(0, 1, 20000)
    assert tpr_at_fpr(members, nonmembers) == pytest.approx(50.0, abs=2.0)
    assert roc_auc(members, nonmembers) == pytest.approx(norm.cdf(shift / np.sqrt(2)), abs=0.01)


def test_signals_rank_a_confident_correct_prediction_as_more_member_like():
    from core.classification.audit import logit_confidence, signal_scores

    probabilities = torch.tensor([[0.98, 0.01, 0.01], [0.4, 0.3, 0.3], [0.01, 0.98, 0.01]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0])  # a confident hit, an unsure hit, a confident miss
    scores = signal_scores(probabilities.log(), labels)
    for name in ("loss", "modified_entropy"):
        assert scores[name][0] > scores[name][1] > scores[name][2], name
    assert scores["entropy"][0] == pytest.approx(scores["entropy"][2])  # entropy ignores the label...
    assert scores["modified_entropy"][0] > scores["modified_entropy"][2]  # ...modified entropy does not
    p = probabilities[1]
    expected = -(1 - p[0]) * np.log(p[0]) - sum(p[i] * np.log(1 - p[i]) for i in (1, 2))
    assert scores["modified_entropy"][1] == pytest.approx(-float(expected))
    assert logit_confidence(probabilities.log(), labels)[1] == pytest.approx(np.log(0.4 / 0.6))


# --- the views' measures -------------------------------------------------------------------------

def test_linear_cka_is_one_for_the_same_representation_and_ignores_rotation_and_scale():
    from core.classification.compare import linear_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 30))
    rotation, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(200, 30))) < 0.25


def test_js_divergence_is_zero_for_identical_and_one_for_disjoint_distributions():
    from core.classification.metrics import js_divergence

    p = np.array([0.1, 0.6, 0.3])
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1, 0, 0], [0, 0, 1]) == pytest.approx(1.0)
    q = np.array([0.3, 0.3, 0.4])
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    assert 0 < js_divergence(p, q) < 1


def test_chance_overlap_is_what_random_masks_of_that_share_give():
    from core.classification.analysis import chance_iou

    rng = np.random.default_rng(0)
    for share in (0.1, 0.5, 0.9):
        a, b = rng.random(200_000) < share, rng.random(200_000) < share
        assert chance_iou(share) == pytest.approx((a & b).sum() / (a | b).sum(), abs=0.01)
    assert chance_iou(1.0) == 1.0


# --- MIA-Efficacy over member samples --------------------------------------------------------------

def test_mia_efficacy_is_a_mean_over_member_samples_whose_first_is_the_single_sample_number():
    from core.classification.metrics import membership_attack, mia_efficacy_samples

    rng = np.random.default_rng(0)
    # members and non-members alike: nothing to learn, so which members were drawn decides the verdict
    retain, test, forget = rng.uniform(0.3, 1, 600), rng.uniform(0.3, 1, 300), rng.uniform(0.3, 1, 100)
    values, attackers = mia_efficacy_samples(forget, retain, test, seed=7, samples=6)
    assert len(values) == len(attackers) == 6
    members = np.random.default_rng(7).choice(len(retain), size=len(test), replace=False)
    single = membership_attack(retain[members], test)
    assert values[0] == pytest.approx(float((single.predict(forget.reshape(-1, 1)) == 0).mean() * 100))
    assert values.std() > 0  # different members, different verdicts
    again, _ = mia_efficacy_samples(forget, retain, test, seed=7, samples=6)
    np.testing.assert_array_equal(values, again)  # same seed, same numbers


def test_evaluate_reports_mia_mean_spread_and_sample_count(digits_experiment):
    from core.classification.metrics import MIA_SAMPLES

    metrics = digits_experiment.evaluate(digits_experiment.original, seed=0, details=True)
    per_sample = metrics["details"]["mia_per_sample"]
    assert metrics["mia_samples"] == MIA_SAMPLES == len(per_sample)
    assert metrics["mia_efficacy"] == pytest.approx(per_sample.mean())
    assert metrics["mia_efficacy_std"] == pytest.approx(per_sample.std(ddof=1))
    json.dumps({k: v for k, v in metrics.items() if k != "details"}, allow_nan=False)  # plain scalars


def test_compare_retrain_summary_carries_the_spreads_and_js_to_retrain(digits_checkpoint):
    from core.classification.experiment import RunConfig, run
    from core.classification.metrics import avg_gap, avg_gap_std

    result = run(RunConfig(dataset="digits", forget="class:2", checkpoint=str(digits_checkpoint), epochs=2),
                 compare_retrain=True)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["mia_samples"] == summary["retrain"]["mia_samples"] >= 2
    assert summary["avg_gap"] == pytest.approx(avg_gap(result.metrics, result.retrain.metrics), abs=1e-4)
    assert summary["avg_gap_std"] == pytest.approx(
        np.hypot(summary["mia_efficacy_std"], summary["retrain"]["mia_efficacy_std"]) / 4, abs=1e-3)
    assert summary["avg_gap_std"] == pytest.approx(avg_gap_std(result.metrics, result.retrain.metrics), abs=1e-4)
    assert 0 <= summary["js_to_retrain"] <= 1


# --- the views' data on a real (tiny) run ----------------------------------------------------------

def test_salun_moves_no_weight_outside_its_mask_and_rl_moves_them_all(digits_experiment):
    from core.classification.compare import weight_change

    salun = digits_experiment.unlearn("salun", seed=0, epochs=1)
    rows = weight_change(digits_experiment.original, salun.model, salun.mask)
    assert all(r["max_change_outside"] == 0.0 for r in rows)
    assert any(r["mean_change_inside"] > 0 for r in rows)
    rl = digits_experiment.unlearn("rl", seed=0, epochs=1)
    rows = weight_change(digits_experiment.original, rl.model, salun.mask)
    moved = [r for r in rows if r["max_change_outside"] > 0]
    assert len(moved) >= 0.75 * len(rows)  # RL has no mask: weights outside SalUn's move too (dead units need not)


def test_replay_ends_at_the_same_model_and_metrics_as_the_run(digits_experiment):
    from core.classification.compare import replay
    from core.classification.experiment import RunConfig

    config = RunConfig(dataset="digits", forget="class:2", epochs=2)
    plain = digits_experiment.unlearn("salun", seed=0, epochs=2)
    trace = replay(digits_experiment, config)
    assert trace["metrics"] == {**plain.metrics, "rte_seconds": trace["metrics"]["rte_seconds"]}
    assert trace["step"][0] == 0 and trace["step"][-1] == len(plain.losses)
    assert trace["forget_accuracy"][-1] == pytest.approx(100 - plain.metrics["ua"])  # every forget image sampled
    assert trace["forget_accuracy"][0] > trace["forget_accuracy"][-1]


def test_embedding_uses_one_projection_for_every_model(digits_experiment):
    from core.classification.compare import embedding

    exp = digits_experiment
    emb = embedding({"Before": exp.original, "Same again": exp.original}, exp.dataset, exp.split, per_group=30)
    np.testing.assert_allclose(emb["points"]["Before"], emb["points"]["Same again"])
    assert emb["points"]["Before"].shape == (90, 2) and emb["method"] == "PCA"
    assert sorted(set(emb["groups"])) == ["forget", "retain", "test"]


def test_audit_command_attacks_original_unlearned_and_retrain_with_shadow_models(digits_checkpoint, tmp_path, capsys):
    from core.classification.experiment import RunConfig, run, save_run
    from core.cli import main

    save_run(run(RunConfig(dataset="digits", forget="class:2", checkpoint=str(digits_checkpoint), epochs=1)),
             tmp_path / "run")
    assert main(["audit", str(tmp_path / "run"), "--shadows", "2", "--shadow-epochs", "1", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["forget"] == "class:2" and summary["shadows"] == 2
    for model in ("original", "unlearned", "retrain"):
        assert set(summary[model]) == {"loss", "entropy", "modified_entropy", "lira"}
        assert all(0 <= v["auc"] <= 1 and 0 <= v["tpr_at_1pct_fpr"] <= 100 for v in summary[model].values())
    assert main(["audit", str(tmp_path / "run"), "--shadows", "3", "--no-retrain", "--quiet"]) == 2
    assert "even" in capsys.readouterr().err
