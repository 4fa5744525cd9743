"""Chance levels and bootstrap intervals: the metrics' replicates, the control models, the criteria."""

from __future__ import annotations

import html

import numpy as np
import pytest
import torch

from pytest_analog import registry
from pytest_analog import metrics
from pytest_analog.config import load_config
from pytest_analog.criterion import Criterion, Gate, Measured, chance_corrected
from pytest_analog.errors import AnalogError
from tests.conftest import write_yaml


def _grouped(rng, n_prompts, d, *, tokens=(3, 9)):
    sizes = rng.integers(*tokens, size=n_prompts)
    return np.repeat(np.arange(n_prompts), sizes), rng.normal(size=(sizes.sum(), d))


def _expand(groups, counts_row):
    """Row indices of the resampled data: every row of prompt p repeated counts_row[p] times."""
    return np.concatenate([np.flatnonzero(groups == p) for p, c in enumerate(counts_row) for _ in range(c)])


def _weighted_u_hsic(k, l, w):  # noqa: E741
    """Reference: the HSIC kernel averaged over ordered 4-tuples of distinct rows, weighted by w_i w_j w_q w_r."""
    n = len(w)
    i, j, q, r = (a.ravel() for a in np.meshgrid(*[np.arange(n)] * 4, indexing="ij"))
    distinct = (i != j) & (i != q) & (i != r) & (j != q) & (j != r) & (q != r)
    i, j, q, r = i[distinct], j[distinct], q[distinct], r[distinct]
    h = k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
    weight = w[i] * w[j] * w[q] * w[r]
    return (weight * h).sum() / weight.sum()


def _weighted_u_cka(x, y, w):
    k, l = x @ x.T, y @ y.T  # noqa: E741
    return _weighted_u_hsic(k, l, w) / np.sqrt(_weighted_u_hsic(k, k, w) * _weighted_u_hsic(l, l, w))


# -- replicates against independent computations ------------------------------------------


@pytest.mark.parametrize("debiased", [True, False])
def test_a_replicate_of_every_prompt_once_is_the_full_data_cka(debiased):
    rng = np.random.default_rng(0)
    groups, x = _grouped(rng, 30, 12)
    y = x @ rng.normal(size=(12, 7)) + rng.normal(size=(len(x), 7))
    ones = np.ones((1, 30), dtype=int)
    got = metrics.linear_cka_replicates(x, y, groups, ones, debiased=debiased)[0]
    assert got == pytest.approx(metrics.linear_cka(x, y, debiased=debiased), abs=1e-12)


def test_biased_replicates_equal_cka_of_the_resampled_rows():
    rng = np.random.default_rng(1)
    groups, x = _grouped(rng, 25, 6)
    y = np.tanh(x) + 0.5 * rng.normal(size=x.shape)
    counts = metrics.resample_counts(25, 4, seed=3)
    got = metrics.linear_cka_replicates(x, y, groups, counts, debiased=False)
    for b, row in enumerate(counts):
        idx = _expand(groups, row)
        assert got[b] == pytest.approx(metrics.linear_cka(x[idx], y[idx], debiased=False), abs=1e-10)


def test_debiased_replicates_are_the_weighted_u_statistic_over_distinct_rows():
    rng = np.random.default_rng(2)
    groups, x = _grouped(rng, 5, 4, tokens=(2, 4))
    y = x[:, :3] + rng.normal(size=(len(x), 3))
    counts = metrics.resample_counts(5, 3, seed=4)
    got = metrics.linear_cka_replicates(x, y, groups, counts)
    for b, row in enumerate(counts):
        assert got[b] == pytest.approx(_weighted_u_cka(x, y, row[groups].astype(float)), abs=1e-10)


def test_replicates_do_not_depend_on_where_the_features_are_centred():
    rng = np.random.default_rng(8)
    groups, x = _grouped(rng, 12, 5)
    y = np.sin(x) + rng.normal(size=x.shape)
    counts = metrics.resample_counts(12, 5, seed=1)
    shifted = x + 40.0  # the U-statistic is translation invariant; a Gram of uncentred rows gives the same
    got = metrics.gram_cka_replicates(shifted @ shifted.T, y @ y.T, groups, counts)
    want = metrics.linear_cka_replicates(x, y, groups, counts)
    np.testing.assert_allclose(got, want, atol=1e-8)


@pytest.mark.parametrize("rows_per_chunk", [None, 7])
@pytest.mark.parametrize("zero_diagonal", [False, True])
def test_replicate_sums_from_prompt_block_sums_equal_the_direct_sums_over_rows(monkeypatch, rows_per_chunk, zero_diagonal):
    # the shortcut: weights are constant within a prompt, so A w and the weighted sums of A∘B come from
    # per-prompt sums, taken in one pass over chunks of rows (several chunks with rows_per_chunk, the last one
    # short); checked against the O(n²·B) sums written out, with prompts drawn several times
    from pytest_analog.metrics import bootstrap
    from pytest_analog.metrics.bootstrap import _Terms

    rng = np.random.default_rng(11)
    groups, x = _grouped(rng, 15, 6)
    y = rng.normal(size=(len(x), 4))
    a, b = x @ x.T, y @ y.T
    if rows_per_chunk:
        assert len(x) % rows_per_chunk
        monkeypatch.setattr(bootstrap, "_CHUNK_ELEMENTS", rows_per_chunk * len(x))
    counts = metrics.resample_counts(15, 6, seed=1)
    assert (counts > 1).any()
    grams = {"a": torch.from_numpy(a.copy()), "b": torch.from_numpy(b.copy())}
    terms = _Terms(torch.from_numpy(groups), torch.from_numpy(counts).double(), zero_diagonal=zero_diagonal)
    terms.read(grams, [("a", "b"), ("b", "b")])
    np.testing.assert_array_equal(grams["a"].numpy(), a)  # the given Grams are left as they are
    if zero_diagonal:
        np.fill_diagonal(a, 0.0)
        np.fill_diagonal(b, 0.0)
    w = counts[:, groups].astype(float)  # [B, n] row weights
    for power in (1, 2):
        np.testing.assert_allclose(terms.product("a", power).numpy(), (w**power) @ a.T, rtol=1e-12)
    for left, right in ((1, 1), (2, 1), (3, 1), (2, 2)):
        direct = np.einsum("bi,bj,ij->b", w**left, w**right, a * b)
        np.testing.assert_allclose(terms.quadratic("a", "b", left, right).numpy(), direct, rtol=1e-12)
        direct = np.einsum("bi,bj,ij->b", w**left, w**right, b * b)
        np.testing.assert_allclose(terms.quadratic("b", "b", left, right).numpy(), direct, rtol=1e-12)
    np.testing.assert_allclose(terms.quadratic("a", "", 1, 1).numpy(), np.einsum("bi,bj,ij->b", w, w, a), rtol=1e-12)


@pytest.mark.parametrize("debiased", [True, False])
@pytest.mark.parametrize("where", ["off the diagonal", "on the diagonal"])
def test_replicates_reject_a_gram_with_a_non_finite_entry(debiased, where):
    rng = np.random.default_rng(13)
    groups, x = _grouped(rng, 8, 4)
    k, l = x @ x.T, np.tanh(x) @ np.tanh(x).T  # noqa: E741
    l[3, 3 if where == "on the diagonal" else 5] = np.nan
    with pytest.raises(ValueError, match="l contains NaN or infinite values"):
        metrics.gram_cka_replicates(k, l, groups, metrics.resample_counts(8, 3, seed=1), debiased)
    k[2, 1] = np.inf
    with pytest.raises(ValueError, match="k contains NaN or infinite values"):
        metrics.gram_cka_replicates(k, l, groups, metrics.resample_counts(8, 3, seed=1), debiased)


@pytest.mark.parametrize("debiased", [True, False])
def test_replicates_of_many_pairs_equal_each_pair_alone(debiased):
    # teacher layers against an analog and a control, where several teacher layers map to one analog layer:
    # each Gram is made once and dropped after its last pair, and every replicate is that of its pair alone
    rng = np.random.default_rng(9)
    groups, x = _grouped(rng, 10, 6)
    grams = {("t", i): metrics.linear_gram(np.tanh(x * (i + 1))) for i in range(3)}
    grams.update({(name, j): metrics.linear_gram(rng.normal(size=(len(x), 4)) + (x[:, :4] if name == "a" else 0))
                  for name in ("a", "c") for j in range(2)})
    pairs = [(("t", i), (name, min(i, 1))) for i in range(3) for name in ("a", "c")]
    made = []
    counts = metrics.resample_counts(10, 7, seed=2)
    got = metrics.gram_cka_replicates_pairs(pairs, lambda key: made.append(key) or grams[key], groups, counts, debiased)
    assert sorted(made) == sorted(grams)  # each Gram made once
    for (a, b), reps in zip(pairs, got):
        np.testing.assert_allclose(reps, metrics.gram_cka_replicates(grams[a], grams[b], groups, counts, debiased),
                                   rtol=1e-12)
    assert not np.allclose(got[0], got[1])


def test_rbf_and_knn_replicates_of_many_pairs_equal_each_pair_alone():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(40, 8))
    rows = {("t", i): np.tanh(x * (i + 1)) for i in range(3)}
    rows.update({("a", j): x @ rng.normal(size=(8, 5)) + 0.5 * rng.normal(size=(40, 5)) for j in range(2)})
    rows.update({("c", j): rng.normal(size=(40, 6)) for j in range(2)})
    pairs = [(("t", i), (name, min(i, 1))) for i in range(3) for name in ("a", "c")]
    counts = metrics.resample_counts(40, 30, seed=3)
    knn = metrics.mutual_knn_replicates_pairs(pairs, rows.__getitem__, counts, k=4)
    rbf = metrics.rbf_cka_replicates_pairs(pairs, rows.__getitem__, counts, debiased=True)
    for (a, b), got_knn, got_rbf in zip(pairs, knn, rbf):
        np.testing.assert_array_equal(got_knn, metrics.mutual_knn_replicates(rows[a], rows[b], counts, k=4))
        np.testing.assert_allclose(got_rbf, metrics.rbf_cka_replicates(rows[a], rows[b], counts, debiased=True),
                                   rtol=1e-12)
    assert not np.allclose(knn[0], knn[1])


@pytest.mark.parametrize("draws", ["usual", "few distinct prompts"])
def test_knn_replicates_equal_a_plain_neighbour_search_in_each_replicate(monkeypatch, draws):
    # usual draws: each row's k nearest drawn lie in the front of its ranking that is read first; few distinct
    # prompts: the front must be read further, and a replicate of 3 prompts leaves fewer than k neighbours;
    # replicates in blocks of 7, the last one short
    from pytest_analog.metrics import bootstrap

    monkeypatch.setattr(bootstrap, "_KNN_ELEMENTS", 7 * 30 * 16)
    rng = np.random.default_rng(21)
    x = rng.normal(size=(30, 6))
    y = x @ rng.normal(size=(6, 4)) + 0.7 * rng.normal(size=(30, 4))
    counts = metrics.resample_counts(30, 25, seed=8)
    k = 4
    if draws != "usual":
        for b, distinct in enumerate((3, 5, 6, 6, 8)):
            counts[b] = 0
            counts[b, rng.choice(30, size=distinct, replace=False)] = rng.multinomial(30 - distinct, np.ones(distinct) / distinct) + 1

    def neighbours(z, i, drawn):  # the k most cosine-similar drawn rows to row i, itself excluded
        u = z / np.linalg.norm(z, axis=1, keepdims=True)
        others = [j for j in np.flatnonzero(drawn) if j != i]
        return set(np.asarray(others)[np.argsort(-(u[others] @ u[i]), kind="stable")[:k]])

    plain = []
    for c in counts:
        drawn = c > 0
        overlaps = [len(neighbours(x, i, drawn) & neighbours(y, i, drawn)) / k for i in np.flatnonzero(drawn)]
        plain.append(np.average(overlaps, weights=c[drawn]))
    plain = np.asarray(plain) + (metrics.mutual_knn(x, y, k=k) - np.mean(plain))  # moved as the function moves them
    np.testing.assert_allclose(metrics.mutual_knn_replicates(x, y, counts, k=k), plain, rtol=0, atol=1e-12)


def test_debiased_replicates_of_unrelated_data_stay_at_zero_where_naive_resampling_does_not():
    # d = 200 activations over 40 prompts: a copy of a prompt paired with itself would add about d/P.
    rng = np.random.default_rng(3)
    groups, x = _grouped(rng, 40, 200)
    y = rng.normal(size=(len(x), 200))
    counts = metrics.resample_counts(40, 60, seed=5)
    reps = metrics.linear_cka_replicates(x, y, groups, counts)
    assert abs(np.mean(reps)) < 0.03
    naive = [metrics.linear_cka(x[_expand(groups, r)], y[_expand(groups, r)], debiased=True) for r in counts[:5]]
    assert np.mean(naive) > 0.3


def test_rbf_and_knn_replicates_match_the_full_metric_and_their_null():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 10))
    y = x + 0.3 * rng.normal(size=x.shape)
    ones = np.ones((1, 60), dtype=int)
    for debiased in (True, False):
        got = metrics.rbf_cka_replicates(x, y, ones, debiased=debiased)[0]
        assert got == pytest.approx(metrics.rbf_cka(x, y, debiased=debiased), abs=1e-12)
    assert metrics.mutual_knn_replicates(x, y, ones, k=5)[0] == pytest.approx(metrics.mutual_knn(x, y, k=5))
    # unrelated rows: replicates stay at the null k/(n-1), not at that of the fewer distinct prompts drawn
    z = rng.normal(size=(60, 10))
    counts = metrics.resample_counts(60, 100, seed=6)
    assert np.mean(metrics.mutual_knn_replicates(x, z, counts, k=5)) == pytest.approx(5 / 59, abs=0.03)
    assert abs(np.mean(metrics.rbf_cka_replicates(x, z, counts, debiased=True))) < 0.03


def test_mutual_knn_intervals_cover_at_about_their_nominal_rate():
    # prompts share a latent structure both models see through noise; the truth is the
    # metric's mean over many independent prompt sets of the same size
    rng = np.random.default_rng(0)
    n, k, latent = 60, 4, rng.normal(size=(2, 4, 16))

    def prompts():
        z = rng.normal(size=(n, 4))
        return z @ latent[0] + rng.normal(size=(n, 16)), z @ latent[1] + rng.normal(size=(n, 16))

    truth = np.mean([metrics.mutual_knn(*prompts(), k=k) for _ in range(200)])
    covered = []
    for seed in range(60):
        x, y = prompts()
        low, high = metrics.percentile_interval(
            metrics.mutual_knn_replicates(x, y, metrics.resample_counts(n, 100, seed=seed), k=k))
        covered.append(low <= truth <= high)
    assert 0.9 <= np.mean(covered) <= 1.0, np.mean(covered)  # 0.95 nominal; resampling only the overlaps: 0.8


def test_interval_covers_the_full_data_value_and_narrows_with_more_prompts():
    rng = np.random.default_rng(5)
    widths = []
    for n_prompts in (40, 320):
        groups, x = _grouped(rng, n_prompts, 16)
        y = x @ rng.normal(size=(16, 16)) + 2.0 * rng.normal(size=x.shape)
        full = metrics.linear_cka(x, y, debiased=True)
        low, high = metrics.percentile_interval(
            metrics.linear_cka_replicates(x, y, groups, metrics.resample_counts(n_prompts, 200, seed=7))
        )
        assert low < full < high
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]  # about 1/sqrt(8) in theory


def test_percentile_interval_is_not_measured_with_a_non_finite_replicate_or_none():
    assert metrics.percentile_interval([1.0, 2.0, 3.0], 0.5) == (1.5, 2.5)
    assert all(np.isnan(metrics.percentile_interval([np.nan, 1.0, 2.0, 3.0], 0.5)))  # not dropped silently
    assert all(np.isnan(metrics.percentile_interval([])))


# -- criteria --------------------------------------------------------------------------------


def _criterion(metric, measured, *args):
    """A criterion of ``measured`` under ``Gate(*args)``."""
    return Criterion("a", "s", metric, measured, Gate(*args))


def test_a_criterion_can_gate_on_the_corrected_score():
    # raw 0.6 against chance 0.45: corrected (0.6 - 0.45) / 0.55 = 0.27
    raw = _criterion("cka", Measured(0.6, chance=0.45), "min", 0.5)
    corrected = _criterion("cka", Measured(0.6, chance=0.45, corrected_interval=(0.1, 0.4)), "min", 0.5, "corrected")
    assert raw.passed and not corrected.passed
    assert corrected.measured.corrected == pytest.approx(0.15 / 0.55)
    assert corrected.to_dict()["corrected"] == pytest.approx(0.15 / 0.55)
    assert corrected.to_dict()["above_chance"] is True
    assert "on the corrected score" in corrected.message and "chance 0.45" in corrected.message
    missing = _criterion("cka", Measured(0.9), "min", 0.5, "corrected")
    assert not missing.passed and "no corrected score" in missing.message


def test_a_chance_level_below_zero_never_lifts_the_corrected_score_above_the_raw_one():
    rng = np.random.default_rng(0)
    value, chance = rng.uniform(-1, 1, 500), rng.uniform(-1, 0.99, 500)
    floor = np.where(chance > 0, chance, 0.0)  # written out: chance is clipped at 0
    assert np.allclose(chance_corrected(value, chance), (value - floor) / (1 - floor))
    assert np.all(chance_corrected(value, chance) <= value + 1e-15)
    assert chance_corrected(0.5, -0.2) == 0.5
    lifted = _criterion("cka", Measured(0.45, chance=-0.2), "min", 0.5, "corrected")
    assert lifted.measured.corrected == 0.45 and not lifted.passed  # (0.45 + 0.2) / 1.2 = 0.54 would pass


def test_a_score_exactly_at_its_threshold_passes_despite_float_rounding():
    assert (0.6 - 0.2) / 0.8 < 0.5  # what a naive comparison sees
    assert _criterion("cka", Measured(0.6, chance=0.2), "min", 0.5, "corrected").passed
    assert _criterion("kl", Measured(0.1 + 0.2), "max", 0.3).passed  # 0.30000000000000004
    assert not _criterion("cka", Measured(0.6, chance=0.2001), "min", 0.5, "corrected").passed
    assert not _criterion("kl", Measured(0.3001), "max", 0.3).passed


@pytest.mark.parametrize(
    ("bound", "value", "interval", "point", "lower_bound", "close"),
    [
        (("min", 0.5), 0.6, (0.45, 0.7), True, False, True),  # estimate clears it, the interval does not
        (("min", 0.5), 0.6, (0.55, 0.7), True, True, False),
        (("min", 0.5), 0.45, (0.4, 0.55), False, False, True),
        (("max", 0.25), 0.2, (0.1, 0.3), True, False, True),  # a max is judged at the interval's upper end
        (("max", 0.25), 0.2, (0.1, 0.24), True, True, False),
        (("min", 0.5), 0.6, None, True, True, False),  # no interval: the estimate stands for it
    ],
)
def test_the_decision_rule_and_too_close_to_call(bound, value, interval, point, lower_bound, close):
    made = {rule: _criterion("m", Measured(value, interval), *bound, "raw", rule) for rule in ("point", "lower_bound")}
    assert (made["point"].passed, made["lower_bound"].passed) == (point, lower_bound)
    assert made["point"].too_close_to_call is close and made["point"].to_dict()["too_close_to_call"] is close
    assert ("too close to call" in made["lower_bound"].message) is close
    assert made["lower_bound"].to_dict()["rule"] == "lower_bound"
    measured = Measured(0.7, (0.65, 0.75), chance=0.1, corrected_interval=(0.4, 0.7))
    corrected = _criterion("cka", measured, "min", 0.5, "corrected", "lower_bound")
    assert not corrected.passed and corrected.too_close_to_call  # the corrected interval is the one judged
    assert not _criterion("m", Measured(0.2, (0.1, 0.3))).too_close_to_call  # ungated
    with pytest.raises(ValueError, match="gate rule must be 'point' or 'lower_bound'"):
        Gate("min", 0.5, rule="upper")


def test_corrected_score_needs_a_control(tmp_path):
    path = write_yaml(tmp_path / "a.yaml", {"chance": {"control": "none"}})
    with pytest.raises(AnalogError, match="score: corrected, which needs a chance level"):
        load_config(path)
    path = write_yaml(tmp_path / "b.yaml", {"chance": {"control": "none"}, "gates": {
        m: {"score": "raw"} for m in ("cka", "rbf_cka", "mutual_knn")}})
    assert load_config(path).chance.control == "none"


# -- control models and the measurement --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair(tiny_dir):
    from pytest_analog.models import load_pair, resolve_source

    source = resolve_source(str(tiny_dir))
    return load_pair(source, source, device="cpu", dtype="float32")


def test_controls_keep_the_shape_and_lose_the_weights(tiny_pair):
    from pytest_analog.controls import control_model

    student = tiny_pair.analog
    for kind in ("random", "permuted"):
        control = control_model(student, kind, seed=5)
        again = control_model(student, kind, seed=5)
        for (name, p), q, r in zip(student.model.named_parameters(), control.model.parameters(), again.model.parameters()):
            assert p.shape == q.shape and torch.equal(q, r), name  # seeded
            if p.numel() > 1 and p.std() > 0:
                assert not torch.equal(p, q), name
            if kind == "permuted":
                assert torch.equal(p.flatten().sort().values, q.flatten().sort().values), name
        assert control.info["kind"] == kind and control.info["seed"] == 5


def test_a_model_against_itself_scores_corrected_one_beside_a_lower_chance(tiny_pair):
    from pytest_analog.suites.representation.analog import measure
    from pytest_analog.prompts import load_prompts
    from pytest_analog.controls import control_model
    from pytest_analog.suites.representation.teacher import teacher_part

    config = load_config(**{"prompts.max_prompts": 40, "layers.teacher": "all", "chance.resamples": 50})
    control = control_model(tiny_pair.analog, "random", config.chance.seed)
    prompts = load_prompts("default", 40)
    m = measure(tiny_pair, teacher_part(tiny_pair.teacher, config, prompts=prompts), prompts, config, control=control)
    for layer in m.teacher_layers:
        for metric in ("cka", "rbf_cka", "mutual_knn"):
            measured = m.measured(metric, layer)
            crit = Criterion("x", "s", metric, measured)
            assert measured.value == getattr(m, metric)[layer] == pytest.approx(1.0)
            assert measured.chance < 0.99 and measured.corrected == pytest.approx(1.0)
            assert measured.interval[0] == pytest.approx(1.0) and crit.above_chance
            null = m.calibrated(metric, layer)  # the permutation null: 1 exactly, the smallest p-value
            assert null["calibrated"] == 1.0 and null["p_value"] == pytest.approx(1 / (config.chance.permutations + 1))
    for layer in range(len(m.cka_matrix)):  # every best match, calibrated for the search over analog layers
        assert m.calibrated("best_match", layer)["layer"] == layer and m.calibrated("best_match", layer)["calibrated"] == 1.0
    assert m.calibration["rows"] == m.calibration["prompts"] * config.chance.block_rows > 0
    assert m.control["kind"] == "random" and len(m.chance_matrix) == len(m.cka_matrix)
    assert m.chance["embedding_geometry"] < 0.5


def test_chance_is_the_mean_over_control_seeds_and_its_interval_carries_their_spread(tiny_pair):
    from pytest_analog.suites.representation.analog import measure
    from pytest_analog.prompts import load_prompts
    from pytest_analog.controls import control_models
    from pytest_analog.suites.representation.teacher import teacher_part

    config = load_config(**{"prompts.max_prompts": 40, "layers.teacher": "all", "chance.resamples": 100,
                            "chance.permutations": 0})
    prompts = load_prompts("default", 40)
    part = teacher_part(tiny_pair.teacher, config, prompts=prompts)
    controls = control_models(tiny_pair.analog, "random", config.chance.seed, 4)
    assert [c.info["seed"] for c in controls] == [config.chance.seed + s for s in range(4)]
    one, several = (measure(tiny_pair, part, prompts, config, control=cs) for cs in (controls[:1], controls))
    assert several.control["seeds"] == [c.info["seed"] for c in controls] and one.control["seeds"] == [config.chance.seed]
    wider = []
    for metric in ("cka", "rbf_cka", "mutual_knn"):
        for layer in several.teacher_layers:
            each = several.chance_seeds[metric][layer]
            assert len(each) == 4 and each[0] == pytest.approx(one.chance[metric][layer], abs=1e-12)
            assert several.chance[metric][layer] == pytest.approx(np.mean(each), abs=1e-12)
            spread = max(each) - min(each)
            width = np.diff(several.intervals[metric][layer]["chance"])[0]
            wider.append(width - np.diff(one.intervals[metric][layer]["chance"])[0])
            assert width > 0.25 * spread  # the seeds' spread is in the interval, not only the prompts'
    assert np.mean(wider) > 0


def test_the_report_carries_chance_and_renders_it():
    from pytest_analog.report import render_html, render_markdown

    null = {"value": 0.5, "threshold": 0.1, "p_value": 0.005, "permutations": 199}
    criteria = [
        Criterion(f"representation::test_cka[teacher_layer={i}]", "representation", "cka",
                  Measured(0.5 + i / 10, (0.4, 0.7), 0.1, (0.05, 0.15), (0.3, 0.6)), Gate("min", 0.5, "corrected"),
                  {"teacher_layer": i, "analog_layer": i, "calibration": {**null, "calibrated": 0.2 + i / 10},
                   "best_match_calibration": {**null, "calibrated": 0.1, "layer": i}}).to_dict()
        for i in range(3)
    ]
    report = {"schema_version": 2, "verdict": "fail", "criteria": criteria,
              "layers": {"teacher": [0, 1, 2], "analog": [0, 1, 2], "cka_matrix": np.eye(3).tolist(),
                         "chance_matrix": np.full((3, 3), 0.5).tolist(), "best_match": [0, 1, 2], "mapped": [0, 1, 2]}}
    md = render_markdown(report, registry.built_in())
    assert "| criterion | score | raw | chance | threshold | status |" in md
    assert "0.5 [0.4, 0.7]" in md and "≥ 0.5 corrected" in md
    line = ("Permutation null (199 prompt permutations; calibrated score 0 at the null's 1 − α quantile, 1 for a perfect "
            "match; a best match against the null of the maximum over analog layers): cka 0.2 @ 0 to 0.4 @ 2 (p ≤ 0.005); "
            "cka best match 0.1 @ 0 to 0.1 @ 2 (p ≤ 0.005).")
    assert line in md
    page = render_html(report, registry.built_in())
    assert "<th>chance</th>" in page and "Hatched cells are at or below chance" in page
    assert html.escape(line) in page


# -- steering and benchmarks in the same form ---------------------------------------------------


def test_the_transfer_ratio_stands_beside_the_random_vectors_ratio():
    rng = np.random.default_rng(0)
    alphas, base = [-0.2, 0.0, 0.1, 0.2], rng.uniform(0.3, 0.7, 24)

    def items(slope):
        return [list(base + slope * a + rng.normal(0, 0.02, len(base))) for a in alphas]

    per_item = {"native": items(1.5), "transferred": items(1.2), "random": items(0.1)}
    per_item = {name: [base.tolist() if a == 0 else ps[k] for k, a in enumerate(alphas)] for name, ps in per_item.items()}
    out, effect = _criteria_of_items(alphas, base, per_item)
    chance = out["transfer_ratio_chance"]
    assert out["transfer_ratio"] == pytest.approx(effect["transferred"] / effect["native"])
    assert chance["chance"] == pytest.approx(effect["random"] / effect["native"])
    assert chance["interval"][0] < out["transfer_ratio"] < chance["interval"][1]
    assert chance["chance_interval"][0] < chance["chance"] < chance["chance_interval"][1]
    criterion = _criterion("transfer_ratio", Measured(out["transfer_ratio"], **chance), "min", 0.9)
    assert criterion.above_chance and not criterion.passed  # 0.8 transfers, beats chance, misses the 0.9 gate


def _criteria_of_items(alphas, base, per_item):
    """`transfer_criteria` of a dose response given per eval item, and each vector's mean effect at its half-max dose."""
    from pytest_analog.steering.transfer import transfer_criteria

    probability = {name: [float(np.mean(p)) for p in ps] for name, ps in per_item.items()}
    curve = {"alphas": alphas, "baseline": float(base.mean()), "probability": probability,
             "effect": {name: [p - base.mean() for p in ps] for name, ps in probability.items()},
             "baseline_items": base.tolist(), "item_probability": per_item}
    out = transfer_criteria(curve, min_native_effect=0.05)
    k = alphas.index(out["half_max_alpha"])
    return out, {name: np.mean(np.asarray(ps[k]) - base) for name, ps in per_item.items()}


def test_a_random_vector_pushing_the_other_way_is_no_lower_chance_level():
    rng = np.random.default_rng(1)
    alphas, base = [0.0, 0.1, 0.2], rng.uniform(0.3, 0.7, 30)
    slopes = {"native": 1.5, "transferred": 0.9, "random": -0.6}
    per_item = {name: [list(base + slope * a + (a > 0) * rng.normal(0, 0.01, 30)) for a in alphas]
                for name, slope in slopes.items()}
    out, effect = _criteria_of_items(alphas, base, per_item)
    chance = out["transfer_ratio_chance"]
    assert chance["chance"] == pytest.approx(abs(effect["random"]) / effect["native"])  # about 0.4, not -0.4
    made = Measured(out["transfer_ratio"], **chance)
    assert made.corrected < made.value  # 0.6 raw; a chance of -0.4 would have made it 0.71
    assert chance["corrected_interval"][1] <= chance["interval"][1]


def test_the_transfer_ratio_chance_is_the_mean_over_random_vectors_and_resamples_them():
    rng = np.random.default_rng(2)
    alphas, base = [0.0, 0.1, 0.2], rng.uniform(0.3, 0.7, 30)
    slopes = {"native": 1.5, "transferred": 0.9, "random": 0.05, "random:1": -0.4, "random:2": 0.2, "random:3": 0.6}
    per_item = {name: [list(base + slope * a + (a > 0) * rng.normal(0, 0.01, 30)) for a in alphas]
                for name, slope in slopes.items()}
    out, effect = _criteria_of_items(alphas, base, per_item)
    chance = out["transfer_ratio_chance"]
    randoms = [effect[name] for name in slopes if name.startswith("random")]
    assert chance["chance"] == pytest.approx(np.mean(np.abs(randoms)) / effect["native"])
    one, _ = _criteria_of_items(alphas, base, {name: per_item[name] for name in ("native", "transferred", "random")})
    low, high = chance["chance_interval"]
    assert low < chance["chance"] < high
    # the vectors' spread (0.03 to 0.4 of the native effect) is in the interval; the items' alone is far narrower
    assert high - low > 0.15 > 3 * np.diff(one["transfer_ratio_chance"]["chance_interval"])[0]


def test_the_retained_fraction_stands_beside_chance_zero():
    from pytest_analog.suites.benchmarks.analog import criterion

    row = {"metric": "acc", "teacher": 0.85, "analog": 0.55, "delta": -0.30, "delta_ci95": [-0.36, -0.24],
           "chance": 0.25, "retained": 0.5, "retained_ci95": [0.41, 0.59], "higher_is_better": True, "note": None}
    metric, measured, details = criterion(row, by_delta=False)
    assert metric == "benchmark_retained" and measured.value == 0.5
    assert measured.chance == 0.0 and details["chance_accuracy"] == 0.25
    assert measured.interval == measured.corrected_interval == (0.41, 0.59)
    gate = load_config().gates.gate(metric, measured.value, task="t", higher_is_better=True)
    made = Criterion("b", "benchmarks", metric, measured, gate, details)
    assert gate == Gate("min", 0.5) and made.passed
    assert made.measured.corrected == pytest.approx(0.5) and made.above_chance
    bits = {**row, "metric": "bits_per_byte", "chance": None, "retained": 0.8, "higher_is_better": False}
    assert criterion(bits, by_delta=False)[1].chance is None


def test_replicates_of_pairs_refuse_rows_that_do_not_fit_the_counts():
    rng = np.random.default_rng(14)
    counts = metrics.resample_counts(10, 4, seed=1)
    rows = {"x": rng.normal(size=(10, 3)), "short": rng.normal(size=(9, 3)), "tiny": rng.normal(size=(3, 3))}
    with pytest.raises(ValueError, match=r"^short has 9 rows; the counts are over 10$"):
        metrics.mutual_knn_replicates_pairs([("x", "short")], rows.__getitem__, counts, k=3)
    with pytest.raises(ValueError, match=r"^short must be an \[n, n\] Gram matrix with n = 10 rows, got shape \(9, 9\)$"):
        metrics.rbf_cka_replicates_pairs([("x", "short")], rows.__getitem__, counts)
    with pytest.raises(ValueError, match=r"^RBF CKA needs at least 4 rows, got 3$"):
        metrics.rbf_cka_replicates_pairs([("x", "tiny")], rows.__getitem__, metrics.resample_counts(3, 2, seed=1), debiased=True)
    with pytest.raises(ValueError, match=r"^k must be an integer with 1 <= k < n = 10, got 10$"):
        metrics.mutual_knn_replicates_pairs([("x", "x")], rows.__getitem__, counts, k=10)
