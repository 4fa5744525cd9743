"""Top-k logit fidelity (what a teacher reference keeps) against explicit numpy loops and the exact metric."""

import numpy as np
import pytest
import torch

from pytest_analog.metrics import (
    StreamingLogitFidelity,
    StreamingTopKLogitFidelity,
    logit_fidelity,
    teacher_top_k,
    top_k_logit_fidelity,
)
from tests.test_metrics_other import logits_pair


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def ref_top_k(t, s, targets, k):
    """Explicit per-token loops in float64: the teacher's top k tokens and one bucket for the rest."""
    kl, agree, nll_t, nll_s = [], [], [], []
    for i in range(len(t)):
        p = np.exp(t[i] - t[i].max())
        p /= p.sum()
        q = np.exp(s[i] - s[i].max())
        q /= q.sum()
        top = np.argsort(-p, kind="stable")[:k]
        rest = np.setdiff1d(np.arange(len(p)), top)
        terms = [p[v] * np.log(p[v] / q[v]) for v in top]
        if len(rest):
            terms.append(p[rest].sum() * np.log(p[rest].sum() / q[rest].sum()))
        kl.append(sum(terms))
        agree.append(top[0] == np.argmax(q))
        nll_t.append(-np.log(p[targets[i]]))
        nll_s.append(-np.log(q[targets[i]]))
    return {
        "kl": np.mean(kl), "top1_agreement": np.mean(agree), "n_tokens": len(t),
        "perplexity_teacher": np.exp(np.mean(nll_t)), "perplexity_analog": np.exp(np.mean(nll_s)),
        "perplexity_ratio": np.exp(np.mean(nll_s) - np.mean(nll_t)),
    }  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("k", [1, 5, 29])
def test_top_k_matches_explicit_loops(rng, dtype, k):
    t, s, targets = logits_pair(rng)
    teacher = teacher_top_k(torch.from_numpy(t).to(dtype), k, torch.from_numpy(targets))
    got = top_k_logit_fidelity(teacher, torch.from_numpy(s).to(dtype), torch.from_numpy(targets))
    expected = ref_top_k(t, s, targets, k)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12 if dtype == torch.float64 else 1e-5), key


def test_top_k_with_k_equal_vocabulary_is_the_exact_kl(rng):
    t, s, targets = logits_pair(rng)
    got = top_k_logit_fidelity(teacher_top_k(t, t.shape[1], targets), s, targets)
    exact = logit_fidelity(t, s, targets)
    assert torch.isinf(teacher_top_k(t, t.shape[1])["tail"]).all()  # nothing is left for the tail
    for key, value in exact.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_top_k_kl_is_a_lower_bound_that_rises_with_k(rng):
    t, s, targets = logits_pair(rng, n=60, vocab=40)
    exact = logit_fidelity(t, s)["kl"]
    per_k = [top_k_logit_fidelity(teacher_top_k(t, k), s)["kl"] for k in (1, 2, 4, 8, 16, 32, 40)]
    assert all(kl <= exact + 1e-12 for kl in per_k)  # data-processing inequality
    assert per_k == sorted(per_k)  # a finer partition never loses information
    assert per_k[0] < 0.8 * exact and per_k[-1] == pytest.approx(exact, rel=1e-12)
    # one row at a time: the bound holds position by position, not only on average
    for i in range(len(t)):
        row = slice(i, i + 1)
        assert top_k_logit_fidelity(teacher_top_k(t[row], 3), s[row])["kl"] <= logit_fidelity(t[row], s[row])["kl"] + 1e-12


def test_top_k_identical_models_and_top1(rng):
    t = rng.normal(size=(20, 50)).astype(np.float32)
    targets = rng.integers(0, 50, size=20)
    got = top_k_logit_fidelity(teacher_top_k(t, 4, targets), t.copy(), targets)
    assert (got["kl"], got["top1_agreement"], got["perplexity_ratio"]) == (0.0, 1.0, 1.0)
    shuffled = top_k_logit_fidelity(teacher_top_k(t, 4), t[:, ::-1].copy())
    assert shuffled["kl"] > 0.1 and shuffled["top1_agreement"] == logit_fidelity(t, t[:, ::-1].copy())["top1_agreement"]


def test_streaming_top_k_batches_chunks_and_merge(rng, monkeypatch):
    from pytest_analog.metrics import logits as logits_module

    monkeypatch.setattr(logits_module, "_CHUNK_ELEMENTS", 7 * 30)  # chunks of 7 rows
    t, s, targets = logits_pair(rng, n=60)
    teacher = teacher_top_k(t, 6, targets)
    rows = [slice(0, 25), slice(25, 40), slice(40, 60)]
    a, b = StreamingTopKLogitFidelity(), StreamingTopKLogitFidelity()
    a.update({k: v[rows[0]] for k, v in teacher.items()}, s[rows[0]], targets[rows[0]])
    for r in rows[1:]:
        b.update({k: v[r] for k, v in teacher.items()}, s[r], targets[r])
    a.merge(b)
    whole = top_k_logit_fidelity(teacher, s, targets)
    assert a.compute() == pytest.approx(whole, rel=1e-12)
    assert a.compute() == pytest.approx(ref_top_k(t, s, targets, 6), rel=1e-12)
    with pytest.raises(TypeError, match="must be a StreamingTopKLogitFidelity, got StreamingLogitFidelity"):
        a.merge(StreamingLogitFidelity())


def test_top_k_errors(rng):
    t, s, targets = logits_pair(rng, n=5, vocab=8)
    teacher = teacher_top_k(t, 3, targets)
    with pytest.raises(ValueError, match="do not match 4 analog rows"):
        top_k_logit_fidelity(teacher, s[:4])
    with pytest.raises(ValueError, match=r"ids must be token ids in \[0, 6\)"):
        top_k_logit_fidelity(teacher_top_k(np.pad(t, ((0, 0), (0, 2)), constant_values=9.0), 3), s[:, :6])
    with pytest.raises(ValueError, match="holds no 'target'"):
        top_k_logit_fidelity(teacher_top_k(t, 3), s, targets)
    with pytest.raises(ValueError, match=r"targets must be 5 token ids in \[0, 8\)"):
        top_k_logit_fidelity(teacher, s, targets + 8)
    with pytest.raises(ValueError, match="analog_logits contains NaN"):
        top_k_logit_fidelity(teacher, np.full((5, 8), np.nan))
