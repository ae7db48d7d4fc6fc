"""The saliency mask: a global top fraction of all weights, exact, and the same as a full ranking."""

import pytest
import torch

from core.errors import SalunError
from core.saliency import argsort_mask, layer_statistics, mask_fraction, mask_iou, saliency_mask


def fake_gradients(seed=0, scale_per_layer=(1.0, 10.0, 0.1, 3.0)):
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 32, 3, 3), (4096,), (128, 64), (10,)]
    return {f"layer{i}.weight": torch.rand(shape, generator=g) * s
            for i, (shape, s) in enumerate(zip(shapes, scale_per_layer))}


@pytest.mark.parametrize("sparsity", [0.01, 0.3, 0.5, 0.9])
def test_mask_selects_exactly_the_asked_share_of_all_weights(sparsity):
    grads = fake_gradients()
    total = sum(g.numel() for g in grads.values())
    mask = saliency_mask(grads, sparsity)
    assert sum(int(m.sum()) for m in mask.values()) == int(total * sparsity)
    assert all(mask[n].shape == grads[n].shape and mask[n].dtype == torch.bool for n in grads)


def test_mask_is_global_so_layers_get_different_fractions():
    grads = fake_gradients()
    mask = saliency_mask(grads, 0.5)
    fractions = {n: float(m.float().mean()) for n, m in mask.items()}
    assert fractions["layer1.weight"] > 0.9  # the layer with 10x larger gradients is mostly salient
    assert fractions["layer2.weight"] == 0.0  # the layer with 10x smaller gradients is not at all


def test_every_selected_weight_outranks_every_unselected_one():
    grads = fake_gradients(seed=3)
    mask = saliency_mask(grads, 0.37)
    selected = torch.cat([g[mask[n]] for n, g in grads.items()])
    rejected = torch.cat([g[~mask[n]] for n, g in grads.items()])
    assert selected.min() >= rejected.max()


def test_same_mask_as_the_upstream_full_argsort():
    grads = fake_gradients(seed=1)
    for sparsity in (0.1, 0.5):
        ours, upstream = saliency_mask(grads, sparsity), argsort_mask(grads, sparsity)
        assert all(torch.equal(ours[n], upstream[n]) for n in grads)


def test_ties_still_give_the_exact_count():
    # most gradients exactly zero (dead units) and many tied values: the count must still be exact
    grads = {"a": torch.zeros(100_000), "b": torch.full((50_000,), 2.0), "c": torch.arange(1000.0)}
    for sparsity in (0.2, 0.4, 0.7):
        mask = saliency_mask(grads, sparsity)
        assert sum(int(m.sum()) for m in mask.values()) == int(151_000 * sparsity)
    assert bool(saliency_mask(grads, 0.4)["b"].all())  # every 2.0 outranks every zero


def test_sparsity_one_selects_everything():
    grads = fake_gradients()
    assert mask_fraction(saliency_mask(grads, 1.0)) == 1.0


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), "half"])
def test_sparsity_outside_zero_one_is_refused(bad):
    with pytest.raises(SalunError, match="sparsity"):
        saliency_mask(fake_gradients(), bad)


def test_overlap_of_masks_in_total_and_per_layer():
    grads = fake_gradients()
    a = saliency_mask(grads, 0.5)
    total, per_layer = mask_iou(a, a)
    assert total == 1.0 and set(per_layer.values()) == {1.0}
    b = {n: ~m for n, m in a.items()}
    total, per_layer = mask_iou(a, b)
    assert total == 0.0
    c = saliency_mask(fake_gradients(seed=9), 0.5)
    total, per_layer = mask_iou(a, c)
    inter = sum(int((a[n] & c[n]).sum()) for n in a)
    union = sum(int((a[n] | c[n]).sum()) for n in a)
    assert total == pytest.approx(inter / union)


def test_layer_statistics_report_fraction_and_quantiles():
    grads = fake_gradients()
    mask = saliency_mask(grads, 0.5)
    rows = layer_statistics(grads, mask)
    assert [r["layer"] for r in rows] == list(grads)
    for row in rows:
        assert row["salient_fraction"] == pytest.approx(float(mask[row["layer"]].float().mean()))
        assert row["grad_median"] <= row["grad_q90"] <= row["grad_q99"] <= row["grad_max"]


def test_overlap_across_sparsity_equals_the_masks_iou_at_every_sparsity_ties_included():
    from core.classification.analysis import overlap_across_sparsity
    from core.saliency import mask_iou, saliency_mask

    g = torch.Generator().manual_seed(0)
    # rounded values and zeros: many ties at every threshold, which saliency_mask breaks by parameter order
    a = {"w1": torch.randint(0, 4, (30, 7), generator=g).float(), "b1": torch.zeros(7), "w2": torch.rand(5, 9, generator=g).round(decimals=1)}
    b = {name: torch.randint(0, 3, v.shape, generator=g).float() for name, v in a.items()}
    shares = [0.001, 0.05, 0.2, 0.33, 0.5, 0.77, 0.999, 1.0]
    rows = overlap_across_sparsity(a, b, shares)
    assert [r["sparsity"] for r in rows] == shares
    for row in rows:
        expected = mask_iou(saliency_mask(a, row["sparsity"]), saliency_mask(b, row["sparsity"]))[0]
        assert row["iou"] == expected, row


def test_class_iou_matrix_from_rankings_equals_the_class_masks_iou():
    from core.classification.analysis import class_iou_matrix, class_masks, mask_ranks

    g = torch.Generator().manual_seed(1)
    grads = {c: {"w": torch.randint(0, 5, (40, 6), generator=g).float(), "b": torch.zeros(6)} for c in range(4)}
    for sparsity in (0.03, 0.4, 0.5, 0.9):
        masks = class_masks(grads, sparsity)
        expected = [[mask_iou(masks[a], masks[b])[0] for b in range(4)] for a in range(4)]
        ranks = {c: mask_ranks(v) for c, v in grads.items()}
        for matrix in (class_iou_matrix(grads, sparsity), class_iou_matrix(grads, sparsity, ranks)):
            assert matrix.tolist() == expected, sparsity


def test_mask_read_off_the_ranking_is_the_saliency_mask_ties_included():
    """The Saliency explorer's slider reads each mask off a cached ranking: it must be saliency_mask's
    mask at every share, weight for weight, also where many gradients tie at the threshold."""
    from core.classification.analysis import mask_from_ranks, mask_ranks

    g = torch.Generator().manual_seed(2)
    grads = {"conv.weight": torch.randint(0, 4, (6, 2, 3, 3), generator=g).float(), "conv.bias": torch.zeros(6),
             "fc.weight": torch.rand(5, 9, generator=g).round(decimals=1), "fc.bias": torch.rand(5, generator=g)}
    ranks = mask_ranks(grads)
    for sparsity in (0.001, 0.05, 0.25, 0.5, 0.51, 0.9, 1.0):
        expected, got = saliency_mask(grads, sparsity), mask_from_ranks(ranks, grads, sparsity)
        assert list(got) == list(expected)
        for name in grads:
            assert got[name].shape == grads[name].shape and torch.equal(got[name], expected[name]), (sparsity, name)


@pytest.mark.parametrize("view", ["overlay", "mask", "gradient"])
def test_heatmap_shows_each_cell_s_salient_share_and_log_gradient(view):
    """What the Saliency explorer draws per layer: the mask as whole percents (a block-averaged cell holds
    its block's salient share), log10 |g| as float32; the browser gets the bytes of that, not float64."""
    import numpy as np
    import plotly.io as pio

    from core.classification.plots import gradient_heatmap, weight_grid

    grads = fake_gradients(seed=4)
    mask = saliency_mask(grads, 0.3)
    name = "layer0.weight"  # 64 x 288: drawn cell for weight
    figure = gradient_heatmap(name, grads[name], mask[name], view=view)
    log_grad = np.log10(np.maximum(weight_grid(grads[name]), 1e-12))
    shares = np.rint(weight_grid(mask[name]) * 100)
    z = {("overlay", 0): log_grad, ("overlay", 1): 100 - shares, ("mask", 0): shares, ("gradient", 0): log_grad}
    assert len(figure.data) == sum(v == view for v, _ in z)
    for i, trace in enumerate(figure.data):
        np.testing.assert_allclose(np.asarray(trace.z, dtype=np.float64), z[view, i], rtol=1e-6)
        assert np.asarray(trace.z).dtype in (np.float32, np.uint8)
    assert f"{float(mask[name].float().mean()) * 100:.1f}% salient" in figure.layout.title.text

    big = gradient_heatmap("fc", torch.rand(64, 3136), torch.rand(64, 3136) < 0.5, view="mask")
    assert "block-averaged" in big.layout.title.text
    cells = np.asarray(big.data[0].z)
    assert cells.shape == (64, 384) and 30 < cells.mean() < 70 and len(np.unique(cells)) > 2  # shares, not 0/1
    assert len(pio.to_json(big, validate=False)) < 64 * 384 * 2  # one byte per cell, base64
