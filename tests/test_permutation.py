"""Permutation nulls (metrics.permutation) against the authors' package, calibrated-similarity, on the same
matrices and the same block permutations."""

import numpy as np
import pytest
import torch

from pytest_analog import metrics
from pytest_analog.metrics import permutation

calibrated_similarity = pytest.importorskip("calibrated_similarity")

P, M, K = 40, 3, 99  # prompts, rows per prompt, permutations


def _clustered(seed, dims, share=0.5):
    """Rows clustered by prompt (M consecutive rows a prompt), a shared latent with weight ``share``."""
    rng = np.random.default_rng(seed)
    latent = np.repeat(rng.normal(size=(P, 6)), M, axis=0) + rng.normal(size=(P * M, 6))
    return [torch.from_numpy(share * latent @ rng.normal(size=(6, d)) + rng.normal(size=(P * M, d))) for d in dims]


def _perm_fn(orders, size):
    rows = iter(torch.from_numpy(permutation.block_rows(order, size)) for order in orders)
    return lambda n, device: next(rows)


def _same(ours, theirs):
    score, p_value, threshold = (float(t) for t in theirs)
    assert ours["calibrated"] == pytest.approx(score, abs=2e-6)
    assert ours["p_value"] == pytest.approx(p_value, abs=1e-7)
    assert ours["threshold"] == pytest.approx(threshold, abs=2e-6)


@pytest.mark.parametrize("share", [0.0, 1.0], ids=["unrelated", "related"])
def test_linear_and_rbf_cka_nulls_match_the_package(share):
    x, y = _clustered(1, [24])[0], _clustered(2, [16], share)[0] + share * _clustered(1, [24])[0][:, :16]
    orders = permutation.block_orders(P, K, seed=3)
    for kind, sim in (
        ("linear", lambda a, b: metrics.linear_cka(a.double(), b.double(), debiased=True)),
        ("rbf", lambda a, b: metrics.rbf_cka(a.double(), b.double(), debiased=True)),
    ):
        observed, null = permutation.gram_nulls(
            [permutation.normalised_gram(x, kind)], [permutation.normalised_gram(y, kind)], orders, M)
        assert observed[0, 0] == pytest.approx(sim(x, y), abs=1e-12)
        ours = permutation.calibrate(observed[0, 0], null[:, 0, 0], alpha=0.05)
        _same(ours, calibrated_similarity.calibrate(x.float(), y.float(), sim, K=K, alpha=0.05,
                                                    perm_fn=_perm_fn(orders, M)))


def test_best_layer_null_is_the_max_over_layers_and_matches_the_package():
    x = _clustered(4, [20])[0]
    ys = _clustered(5, [12, 16, 8], share=0.4)
    orders = permutation.block_orders(P, K, seed=6)
    observed, null = permutation.gram_nulls([permutation.normalised_gram(x)],
                                            [permutation.normalised_gram(y) for y in ys], orders, M)
    ours = permutation.calibrate(observed[0].max(), null[:, 0].max(axis=1), alpha=0.1)

    def sim(a, b):
        return metrics.linear_cka(a.double(), b.double(), debiased=True)

    _same(ours, calibrated_similarity.calibrate_layers([x.float()], [y.float() for y in ys], sim, agg="max", K=K,
                                                       alpha=0.1, perm_fn=_perm_fn(orders, M)))
    # the search over layers raises the threshold above each single layer's
    single = permutation.calibrate(observed[0, 0], null[:, 0, 0], alpha=0.1)
    assert ours["threshold"] >= single["threshold"]


def test_mutual_knn_null_matches_the_package():
    x, y = _clustered(7, [16, 16], share=0.8)
    orders = permutation.block_orders(P * M, K, seed=8)  # one row a prompt: every row is a block
    observed, null = permutation.knn_nulls(x, y, orders, k=5)
    assert observed == pytest.approx(metrics.mutual_knn(x, y, k=5), abs=1e-12)
    ours = permutation.calibrate(observed, null)
    _same(ours, calibrated_similarity.calibrate(x.float(), y.float(), lambda a, b: metrics.mutual_knn(a, b, k=5), K=K,
                                                perm_fn=_perm_fn(orders, 1)))


def test_identical_representations_calibrate_to_one_and_unrelated_ones_mostly_to_zero():
    x = _clustered(9, [24])[0]
    orders = permutation.block_orders(P, K, seed=0)
    gram = permutation.normalised_gram(x)
    observed, null = permutation.gram_nulls([gram], [gram], orders, M)
    record = permutation.calibrate(observed[0, 0], null[:, 0, 0])
    assert record["calibrated"] == 1.0 and record["p_value"] == pytest.approx(1 / (K + 1))
    zeros = 0
    for seed in range(20):  # unrelated pairs: the calibrated score is 0 about 1 - alpha of the time
        y = _clustered(100 + seed, [16])[0]
        observed, null = permutation.gram_nulls([gram], [permutation.normalised_gram(y)], orders, M)
        zeros += permutation.calibrate(observed[0, 0], null[:, 0, 0])["calibrated"] == 0
    assert zeros >= 16


def test_calibrate_rejects_bad_arguments_and_passes_an_unmeasured_value_through():
    with pytest.raises(ValueError, match="alpha must be in"):
        permutation.calibrate(0.5, [0.1], alpha=1.0)
    with pytest.raises(ValueError, match="at least 1 permutation"):
        permutation.calibrate(0.5, [])
    assert permutation.calibrate(float("nan"), [0.1, 0.2])["calibrated"] is None
