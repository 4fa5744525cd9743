"""Intervals under prompt clustering: the public `cka_interval` and the pieces the gate builds it from.

The full coverage tables are benchmarks/bench_coverage.py; these runs are small.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_analog import metrics


def _issue_data(rng, n_prompts=40, tokens=20, r=8, dx=48, dy=32):
    """The issue's reproduction: x and y unrelated (population CKA 0), tokens clustered by prompt."""
    a, b = np.random.default_rng(5).normal(size=(r, dx)), np.random.default_rng(99).normal(size=(r, dy))
    g = np.repeat(np.arange(n_prompts), tokens)

    def latent():
        return np.sqrt(0.5) * rng.normal(size=(n_prompts, r))[g] + np.sqrt(0.5) * rng.normal(size=(len(g), r))

    x = latent() @ a + 2 * rng.normal(size=(n_prompts, dx))[g] + 3 * rng.normal(size=(len(g), dx))
    y = latent() @ b + 2 * rng.normal(size=(n_prompts, dy))[g] + 3 * rng.normal(size=(len(g), dy))
    return x, y, g


def test_cka_interval_covers_the_population_value_under_prompt_clustering():
    # the centred percentile interval covered 0 of 100 here (every estimate about 0.07 above the truth, 0)
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(10):
        x, y, g = _issue_data(rng)
        result = metrics.cka_interval(x, y, g, replicates=100, seed=i)
        assert result.estimate == pytest.approx(metrics.linear_cka(x, y, debiased=True), abs=1e-12)
        assert result.level == 0.95
        hits += result.low <= 0.0 <= result.high
    assert hits >= 8


def test_cka_interval_checks_its_groups_and_samples_rows_like_the_gate():
    rng = np.random.default_rng(2)
    x, y, g = _issue_data(rng, n_prompts=12)
    with pytest.raises(ValueError, match=r"groups must give one prompt per row of x: shape \(240,\)"):
        metrics.cka_interval(x, y, g[:-1])
    sampled = metrics.cka_interval(x, y, [f"prompt {p}" for p in g], replicates=30, rows=100)
    assert sampled.estimate == metrics.cka_interval(x, y, g, replicates=30).estimate  # every row, whatever the sample
    assert sampled.low < sampled.high


def test_same_group_share_of_data_and_replicates():
    assert metrics.same_group_share([3, 1]) == pytest.approx(6 / 12)
    assert metrics.same_group_share(np.ones(5)) == 0.0
    counts = np.array([[2, 0], [1, 1]])
    # drawn twice: 6 rows, pairs of distinct rows (30, less the 3 copies of each row: 24); in one prompt 4·3·2 = 24
    np.testing.assert_allclose(metrics.same_group_share([3, 1], counts), [24 / (36 - 12), 6 / 12])


def test_interval_counts_layout_and_the_corrected_interval():
    counts = metrics.interval_counts(4, 5, seed=0)
    assert counts.shape == (10, 4) and (counts[:5].sum(1) == 4).all()
    np.testing.assert_array_equal(counts[5:9], 1 - np.eye(4, dtype=int))
    assert (counts[-1] == 1).all()
    values = np.r_[np.linspace(0.45, 0.55, 5), np.full(5, 0.5)]  # jackknife and full data at 0.5: no bias
    chance = np.full(10, 0.2)
    with pytest.raises(ValueError, match="paired"):
        metrics.corrected_interval(values, chance[:-1], 0.5, 0.2, counts)
    assert np.isnan(metrics.corrected_interval(values, np.r_[chance[:-1], np.nan], 0.5, 0.2, counts)).all()
    assert np.isnan(metrics.bias_corrected_interval(np.r_[values[:-1], np.inf], 0.5, counts)).all()
    low, high = metrics.corrected_interval(values, chance, 0.5, 0.2, counts)
    assert low < (0.5 - 0.2) / 0.8 < high
    assert metrics.bias_corrected_interval(values, 0.5, counts) == pytest.approx(metrics.percentile_interval(values[:5]))
