"""Mutual kNN, embedding geometry and logit fidelity against explicit numpy/scipy references."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from pytest_analog.errors import AnalogWarning
from pytest_analog.metrics import (
    StreamingLogitFidelity,
    embedding_geometry_pearson,
    logit_fidelity,
    mutual_knn,
)
from pytest_analog.metrics import knn as knn_module


@pytest.fixture
def rng():
    return np.random.default_rng(99)


def rotation(rng, d):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


# --- mutual_knn ------------------------------------------------------------------------


def ref_mutual_knn(x, y, k):
    def neighbour_sets(z):
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        sims = z @ z.T
        sets = []
        for i in range(len(z)):
            order = [j for j in np.argsort(-sims[i]) if j != i]
            sets.append(set(order[:k]))
        return sets

    return float(np.mean([len(a & b) / k for a, b in zip(neighbour_sets(x), neighbour_sets(y))]))


@pytest.mark.parametrize("k", [1, 5, 10])
def test_mutual_knn_matches_explicit_neighbour_sets(rng, k):
    x = rng.normal(size=(120, 6))
    y = x[:, :5] + 0.3 * rng.normal(size=(120, 5))  # partly shared neighbourhoods
    expected = ref_mutual_knn(x, y, k)
    assert 0.05 < expected < 0.95
    assert mutual_knn(x, y, k=k) == pytest.approx(expected, abs=1e-12)


def test_mutual_knn_row_chunks(rng, monkeypatch):
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 5))
    monkeypatch.setattr(knn_module, "_CHUNK_ELEMENTS", 7 * 50)  # chunks of 7 rows, last one short
    assert mutual_knn(x, y, k=4) == pytest.approx(ref_mutual_knn(x, y, 4), abs=1e-12)


def test_mutual_knn_rotated_scaled_copy_is_one(rng):
    x = rng.normal(size=(200, 16))
    assert mutual_knn(x, 4.2 * x @ rotation(rng, 16), k=10) == 1.0
    assert mutual_knn(torch.from_numpy(x).float(), x @ rotation(rng, 16), k=10) == 1.0


def test_mutual_knn_independent_data_near_chance():
    n, k = 400, 10
    scores = [
        mutual_knn(rng.normal(size=(n, 8)), rng.normal(size=(n, 8)), k=k)
        for rng in map(np.random.default_rng, range(3))
    ]
    assert np.mean(scores) == pytest.approx(k / (n - 1), rel=0.25)


@pytest.mark.parametrize("k", [0, 10, 11, 2.5, True])
def test_mutual_knn_rejects_bad_k(rng, k):
    x = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match=r"k must be an integer with 1 <= k < n = 10"):
        mutual_knn(x, x, k=k)


def test_mutual_knn_rejects_zero_rows(rng):
    x = rng.normal(size=(10, 3))
    y = x.copy()
    y[4] = 0.0
    with pytest.raises(ValueError, match="y has 1 all-zero rows \\(first: row 4\\)"):
        mutual_knn(x, y, k=3)


# --- embedding_geometry_pearson --------------------------------------------------------


def ref_geometry(e_t, e_s):
    def cosines(e):
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return e @ e.T

    upper = np.triu_indices(len(e_t), k=1)
    return pearsonr(cosines(e_t)[upper], cosines(e_s)[upper]).statistic


def test_geometry_matches_scipy_pearson(rng):
    common = rng.normal(size=16)  # a shared direction, as in real embeddings (anisotropy)
    e_t = rng.normal(size=(300, 16)) + 2 * common
    e_s = e_t[:, :10] @ rng.normal(size=(10, 12)) + rng.normal(size=(300, 12))
    expected = ref_geometry(e_t, e_s)
    assert 0.2 < expected < 0.95
    assert embedding_geometry_pearson(e_t, e_s) == pytest.approx(expected, abs=1e-10)
    assert embedding_geometry_pearson(torch.from_numpy(e_t), e_s, max_rows=300) == pytest.approx(expected, abs=1e-10)


def test_geometry_rotation_is_one_and_subsample_uses_same_rows(rng):
    e_t = rng.normal(size=(400, 8))
    e_s = 3.0 * e_t @ rotation(rng, 8)
    assert embedding_geometry_pearson(e_t, e_s) == pytest.approx(1.0, abs=1e-12)
    # r stays 1 only if both matrices are subsampled at the same rows
    assert embedding_geometry_pearson(e_t, e_s, max_rows=40, seed=3) == pytest.approx(1.0, abs=1e-12)


def test_geometry_subsample_is_seeded(rng):
    e_t, e_s = rng.normal(size=(200, 6)), rng.normal(size=(200, 6))
    first = embedding_geometry_pearson(e_t, e_s, max_rows=30, seed=1)
    assert embedding_geometry_pearson(e_t, e_s, max_rows=30, seed=1) == first
    assert embedding_geometry_pearson(e_t, e_s, max_rows=30, seed=2) != first
    assert abs(embedding_geometry_pearson(e_t, e_s)) < 0.1  # independent matrices


def test_geometry_errors(rng):
    e = rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match="max_rows must be None or an integer >= 3, got 2"):
        embedding_geometry_pearson(e, e, max_rows=2)
    with pytest.raises(ValueError, match="same number of rows"):
        embedding_geometry_pearson(e, e[:9])
    with pytest.raises(ValueError, match="at least 3 rows, got 2"):
        embedding_geometry_pearson(e[:2], e[:2])
    with pytest.raises(ValueError, match="e_t has 1 all-zero rows"):
        embedding_geometry_pearson(np.vstack([e, np.zeros((1, 4))]), np.vstack([e, e[:1]]))


def test_geometry_equal_similarities_warns(rng):
    e_t = np.eye(4)  # every pair has cosine 0
    with pytest.warns(AnalogWarning, match="all cosine similarities are equal"):
        assert np.isnan(embedding_geometry_pearson(e_t, rng.normal(size=(4, 3))))


# --- logit fidelity --------------------------------------------------------------------


def ref_logit_fidelity(t, s, targets):
    """Explicit per-token loops in float64."""
    kl, agree, nll_t, nll_s = [], [], [], []
    for i in range(len(t)):
        p = np.exp(t[i] - t[i].max())
        p /= p.sum()
        q = np.exp(s[i] - s[i].max())
        q /= q.sum()
        kl.append(sum(p[v] * (np.log(p[v]) - np.log(q[v])) for v in range(len(p))))
        agree.append(np.argmax(t[i]) == np.argmax(s[i]))
        if targets is not None:
            nll_t.append(-np.log(p[targets[i]]))
            nll_s.append(-np.log(q[targets[i]]))
    out = {"kl": np.mean(kl), "top1_agreement": np.mean(agree), "n_tokens": len(t)}
    if targets is not None:
        out |= {
            "perplexity_teacher": np.exp(np.mean(nll_t)),
            "perplexity_analog": np.exp(np.mean(nll_s)),
            "perplexity_ratio": np.exp(np.mean(nll_s)) / np.exp(np.mean(nll_t)),
        }
    return out


def logits_pair(rng, n=40, vocab=30):
    t = 2.0 * rng.normal(size=(n, vocab))
    s = t + rng.normal(size=(n, vocab))
    return t, s, rng.integers(0, vocab, size=n)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_logit_fidelity_matches_explicit_loops(rng, dtype):
    t, s, targets = logits_pair(rng)
    got = logit_fidelity(torch.from_numpy(t).to(dtype), torch.from_numpy(s).to(dtype), torch.from_numpy(targets))
    expected = ref_logit_fidelity(t, s, targets)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert got.keys() == {
        "kl", "top1_agreement", "perplexity_teacher", "perplexity_analog", "perplexity_ratio", "n_tokens"
    }  # fmt: skip
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=tol), key
    assert 0.05 < got["kl"] and 0.2 < got["top1_agreement"] < 1.0


def test_streaming_logit_fidelity_batches_chunks_and_merge(rng, monkeypatch):
    from pytest_analog.metrics import logits as logits_module

    monkeypatch.setattr(logits_module, "_CHUNK_ELEMENTS", 7 * 30)  # chunks of 7 rows
    t, s, targets = logits_pair(rng, n=60)
    expected = ref_logit_fidelity(t, s, targets)
    a, b = StreamingLogitFidelity(), StreamingLogitFidelity()
    a.update(t[:25], s[:25], targets[:25])
    b.update(t[25:40], s[25:40], targets[25:40])
    b.update(t[40:], s[40:], targets[40:])
    a.merge(b)
    got = a.compute()
    assert a.n == got["n_tokens"] == 60
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_logit_fidelity_identical_models(rng):
    t = rng.normal(size=(20, 50)).astype(np.float32)
    got = logit_fidelity(t, t.copy(), rng.integers(0, 50, size=20))
    assert got["kl"] == 0.0
    assert got["top1_agreement"] == 1.0
    assert got["perplexity_ratio"] == 1.0


def test_logit_kl_is_nonnegative_and_forward(rng):
    t, s, _ = logits_pair(rng)
    assert all(logit_fidelity(t[i : i + 1], s[i : i + 1])["kl"] >= 0 for i in range(len(t)))
    # a peaked teacher against a flat analog: KL(t‖s) and KL(s‖t) differ a lot
    peaked, flat = np.array([[8.0, 0.0, 0.0, 0.0]]), np.zeros((1, 4))
    forward, reverse = logit_fidelity(peaked, flat)["kl"], logit_fidelity(flat, peaked)["kl"]
    assert forward == pytest.approx(ref_logit_fidelity(peaked, flat, None)["kl"], rel=1e-12)
    assert reverse == pytest.approx(ref_logit_fidelity(flat, peaked, None)["kl"], rel=1e-12)
    assert reverse - forward > 1.0  # about 4.6 vs 1.4 nats


def test_logit_fidelity_masked_vocabulary_entries():
    t = np.array([[2.0, 1.0, -np.inf]])  # teacher gives the last token zero mass
    s = np.array([[1.0, 2.0, 0.0]])
    expected = ref_logit_fidelity(t[:, :2], np.array([[1.0, 2.0]]), None)["kl"] + np.log(
        np.exp([1.0, 2.0, 0.0]).sum() / np.exp([1.0, 2.0]).sum()
    )
    assert logit_fidelity(t, s)["kl"] == pytest.approx(expected, rel=1e-12)


def test_logit_fidelity_without_targets_has_nan_perplexity(rng):
    t, s, _ = logits_pair(rng)
    got = logit_fidelity(t, s)
    assert np.isnan(got["perplexity_teacher"]) and np.isnan(got["perplexity_ratio"])
    assert got["n_tokens"] == len(t)


def test_logit_fidelity_errors(rng):
    t, s, targets = logits_pair(rng, n=5, vocab=8)
    with pytest.raises(ValueError, match=r"vocabularies differ \(V = 8 vs 9\).*one tokenizer"):
        logit_fidelity(t, np.zeros((5, 9)))
    with pytest.raises(ValueError, match="teacher_logits has 5 rows but analog_logits has 4"):
        logit_fidelity(t, s[:4])
    with pytest.raises(ValueError, match=r"targets must be token ids in \[0, 8\)"):
        logit_fidelity(t, s, targets + 8)
    with pytest.raises(ValueError, match="targets must be an integer tensor of shape"):
        logit_fidelity(t, s, targets.astype(float))
    with pytest.raises(ValueError, match="teacher_logits contains NaN"):
        logit_fidelity(np.full((5, 8), np.nan), s)
    metric = StreamingLogitFidelity()
    metric.update(t, s)
    with pytest.raises(ValueError, match="vocabulary size changed from 8 to 9.*one tokenizer"):
        metric.update(np.zeros((2, 9)), np.zeros((2, 9)))


def test_logit_fidelity_compute_before_update_warns():
    with pytest.warns(AnalogWarning, match="before any update"):
        got = StreamingLogitFidelity().compute()
    assert np.isnan(got["kl"]) and got["n_tokens"] == 0


def test_mutual_knn_breaks_ties_as_its_replicates_do(rng):
    # 6 directions for 40 rows: most similarities tie; topk broke them one way, the replicates' stable sort another
    from pytest_analog.metrics import mutual_knn_replicates

    x = np.repeat(rng.normal(size=(6, 5)), 7, axis=0)[:40]
    y = np.repeat(rng.normal(size=(8, 4)), 5, axis=0)
    full = mutual_knn_replicates(x, y, np.ones((1, 40), dtype=int), k=5)[0]  # the replicate path's full-data value
    assert mutual_knn(x, y, k=5) == pytest.approx(full, abs=1e-6)


def test_percentile_interval_does_not_drop_non_finite_replicates():
    from pytest_analog.metrics import percentile_interval

    assert np.isnan(percentile_interval([0.1, 0.2, np.inf, 0.3])).all()
    assert np.isnan(percentile_interval([])).all()
    assert percentile_interval(np.linspace(0, 1, 101), 0.9) == pytest.approx((0.05, 0.95))
