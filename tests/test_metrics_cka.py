"""CKA metrics against independent numpy Gram-matrix references, plus their invariances."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

from pytest_analog.errors import AnalogWarning
from pytest_analog.metrics import PairedMoments, StreamingLinearCKA, best_match, cka_matrix, linear_cka, rbf_cka

# --- independent references (numpy, float64, Gram form) -------------------------------


def ref_h_center(gram):
    n = gram.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return h @ gram @ h


def ref_u_center(gram):
    """U-centring: zero the diagonal, subtract (n−2)/(n−1)-corrected means, zero the diagonal."""
    n = gram.shape[0]
    g = gram.copy()
    np.fill_diagonal(g, 0.0)
    g = (
        g
        - g.sum(axis=1, keepdims=True) / (n - 2)
        - g.sum(axis=0, keepdims=True) / (n - 2)
        + g.sum() / ((n - 1) * (n - 2))
    )
    np.fill_diagonal(g, 0.0)
    return g


def ref_gram_cka(k, l, debiased):  # noqa: E741
    center = ref_u_center if debiased else ref_h_center
    k, l = center(k), center(l)  # noqa: E741
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))


def ref_linear_cka(x, y, debiased):
    # centring the columns first is the same HKH mathematically and keeps the reference accurate
    x, y = x - x.mean(0), y - y.mean(0)
    return ref_gram_cka(x @ x.T, y @ y.T, debiased)


def ref_song_hsic(k, l):  # noqa: E741
    """Song et al. (2012) unbiased HSIC written out term by term."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    ones = np.ones(n)
    return (
        np.trace(kt @ lt)
        + (ones @ kt @ ones) * (ones @ lt @ ones) / ((n - 1) * (n - 2))
        - 2 * (ones @ kt @ lt @ ones) / (n - 2)
    ) / (n * (n - 3))


def ref_rbf_gram(x, sigma_frac):
    dist = pdist(x)  # condensed: each pair i < j once
    sigma = sigma_frac * np.median(dist)
    return np.exp(-squareform(dist) ** 2 / (2 * sigma**2))


def correlated(rng, n, d_x, d_y, offset=0.0, noise=1.0):
    x = rng.normal(size=(n, d_x)) * rng.uniform(0.5, 3, size=d_x)
    y = np.tanh(x @ rng.normal(size=(d_x, d_y)) / np.sqrt(d_x)) + noise * rng.normal(size=(n, d_y))
    return x + offset * rng.normal(size=d_x), y + offset * rng.normal(size=d_y)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


MODES = pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])


# --- linear_cka -------------------------------------------------------------------------


@MODES
def test_linear_cka_matches_gram_reference(rng, debiased):
    x, y = correlated(rng, 400, 24, 31)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(ref_linear_cka(x, y, debiased), abs=1e-12)


def test_debiased_reference_is_song_estimator(rng):
    # the two references agree, so the U-centred form is the Song et al. estimator
    x, y = correlated(rng, 60, 5, 7, offset=3.0)
    k, l = x @ x.T, y @ y.T  # noqa: E741  raw (uncentred) Grams: HSIC_u is translation invariant
    song = ref_song_hsic(k, l) / np.sqrt(ref_song_hsic(k, k) * ref_song_hsic(l, l))
    assert linear_cka(x, y, debiased=True) == pytest.approx(song, abs=1e-10)
    assert ref_gram_cka(k, l, debiased=True) == pytest.approx(song, abs=1e-10)


def test_linear_cka_accepts_torch_float32(rng):
    x, y = correlated(rng, 300, 8, 8)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    expected = ref_linear_cka(xt.double().numpy(), yt.double().numpy(), debiased=True)
    assert linear_cka(xt, yt, debiased=True) == pytest.approx(expected, abs=1e-12)


@MODES
def test_linear_cka_of_self_is_one(rng, debiased):
    x = rng.normal(size=(200, 12))
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@MODES
@pytest.mark.parametrize("transform", ["orthogonal", "scale", "translate"])
def test_linear_cka_invariances(rng, debiased, transform):
    x, y = correlated(rng, 300, 16, 16)
    if transform == "orthogonal":
        q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
        y2 = y @ q
    elif transform == "scale":
        y2 = 37.5 * y
    else:
        y2 = y + 1e3 * rng.normal(size=16)
    base = linear_cka(x, y, debiased=debiased)
    assert linear_cka(x, y2, debiased=debiased) == pytest.approx(base, abs=1e-10)


@MODES
def test_linear_cka_changes_under_ill_conditioned_map(rng, debiased):
    x = rng.normal(size=(400, 16))
    u, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    v, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    a = u @ np.diag(np.logspace(0, -3, 16)) @ v  # invertible, condition number 1000
    assert linear_cka(x, x @ a, debiased=debiased) < 0.8


def test_debiased_removes_small_sample_inflation():
    n, d = 100, 20
    biased, debiased = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        with pytest.warns(AnalogWarning, match="inflated"):
            biased.append(linear_cka(x, y))
        debiased.append(linear_cka(x, y, debiased=True))
    assert np.mean(biased) == pytest.approx(d / (n + d), rel=0.15)
    assert abs(np.mean(debiased)) < 0.02


def test_linear_cka_warns_small_n_only_for_biased(rng):
    x, y = rng.normal(size=(50, 10)), rng.normal(size=(50, 3))
    with pytest.warns(AnalogWarning, match=r"n=50 rows < 10·d=100.*debiased=True"):
        linear_cka(x, y)
    linear_cka(x, y, debiased=True)  # no warning: AnalogWarning is an error in this suite


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "match"),
    [
        (np.ones((10, 3)), np.ones((11, 3)), {}, "same number of rows.*10 and 11"),
        (np.ones(10), np.ones((10, 3)), {}, r"x must have 2 dimensions \[n, d\], got shape \(10,\)"),
        (np.ones((3, 2)), np.ones((3, 2)), {"debiased": True}, "at least 4 rows, got 3"),
        (np.full((5, 2), np.nan), np.ones((5, 2)), {}, "x contains NaN or infinite"),
        (np.ones((5, 2)), np.full((5, 2), np.inf), {"debiased": True}, "y contains NaN or infinite"),
    ],
    ids=["rows", "ndim", "too-few-debiased", "nan", "inf"],
)
def test_linear_cka_rejects_bad_input(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        linear_cka(x, y, **kwargs)


def test_linear_cka_constant_input_is_nan_with_warning(rng):
    with pytest.warns(AnalogWarning, match="no variance"):
        assert np.isnan(linear_cka(np.ones((40, 2)), rng.normal(size=(40, 2)), debiased=True))


# --- StreamingLinearCKA ----------------------------------------------------------------


def feed(metric, x, y, cuts):
    for part in np.split(np.arange(len(x)), cuts):
        metric.update(x[part], y[part])
    return metric


@MODES
def test_streaming_equals_full_batch_with_large_offsets(rng, debiased):
    x, y = correlated(rng, 600, 20, 13, offset=1e3)
    full = linear_cka(x, y, debiased=debiased)
    metric = feed(StreamingLinearCKA(), x, y, [1, 4, 70, 71, 333])  # first batch: one row
    assert metric.n == 600
    assert metric.compute(debiased=debiased) == pytest.approx(full, abs=1e-9)
    assert full == pytest.approx(ref_linear_cka(x, y, debiased), abs=1e-9)


@MODES
def test_streaming_merge_of_different_splits(rng, debiased):
    x, y = correlated(rng, 500, 12, 9, offset=1e3)
    a = feed(StreamingLinearCKA(), x[:180], y[:180], [3, 100])
    b = feed(StreamingLinearCKA(), x[180:] + 0, y[180:], [250, 251])  # its own, different shift
    a.merge(b)
    assert a.n == 500
    assert a.compute(debiased=debiased) == pytest.approx(linear_cka(x, y, debiased=debiased), abs=1e-9)
    empty = StreamingLinearCKA()
    empty.merge(b)  # merging into an empty state copies it
    assert empty.compute(debiased=debiased) == pytest.approx(
        linear_cka(x[180:], y[180:], debiased=debiased), abs=1e-9
    )


def test_streaming_merge_copies_instead_of_aliasing(rng):
    x, y = correlated(rng, 200, 4, 4)
    a, b = StreamingLinearCKA(), feed(StreamingLinearCKA(), x[:100], y[:100], [])
    a.merge(b)
    a.update(x[100:], y[100:])
    assert b.n == 100
    assert b.compute(debiased=True) == pytest.approx(linear_cka(x[:100], y[:100], debiased=True), abs=1e-12)


@MODES
def test_streaming_each_shares_x_and_equals_one_stream_per_pair(rng, debiased):
    x, y = correlated(rng, 400, 10, 6, offset=1e3)
    z = rng.normal(size=(400, 5)) + 50.0
    pairs = [StreamingLinearCKA(), StreamingLinearCKA()]
    for part in np.split(np.arange(400), [1, 90, 91, 300]):
        StreamingLinearCKA.update_each(pairs, x[part], [y[part], z[part]])
    for stream, other in zip(pairs, (y, z)):  # x's shared sums are no alias: each stream adds its own copy
        alone = feed(StreamingLinearCKA(), x, other, [1, 90, 91, 300])
        assert stream.n == 400
        assert stream.compute(debiased=debiased) == alone.compute(debiased=debiased)
        assert stream.compute(debiased=debiased) == pytest.approx(ref_linear_cka(x, other, debiased), abs=1e-9)
    with pytest.raises(ValueError, match="one y per accumulator: got 2 accumulators and 1 ys"):
        StreamingLinearCKA.update_each(pairs, x, [y])


def test_paired_moments_are_the_centred_sums_through_merge_and_subtract(rng):
    # the one streamed-sum accumulator behind streaming CKA and the steering maps, against numpy written out
    x, y = correlated(rng, 300, 7, 4, offset=1e3)
    whole, first, rest = PairedMoments(), PairedMoments(), PairedMoments()
    feed(whole, x, y, [1, 120])
    feed(first, x[:100], y[:100], [40])
    feed(rest, x[100:] + 0, y[100:], [7])
    merged = PairedMoments().merge(first).merge(rest)
    without = feed(PairedMoments(), x, y, [50]).subtract(first)
    removed = feed(PairedMoments(), x, y, [50]).remove(x[:100], y[:100])
    for moments, rows in ((whole, slice(None)), (merged, slice(None)), (without, slice(100, None)), (removed, slice(100, None))):
        mean_x, mean_y, centred = moments.compute()
        xc, yc = x[rows] - x[rows].mean(0), y[rows] - y[rows].mean(0)
        np.testing.assert_allclose(mean_x.numpy(), x[rows].mean(0), rtol=1e-12)
        np.testing.assert_allclose(mean_y.numpy(), y[rows].mean(0), rtol=1e-12)
        np.testing.assert_allclose(centred["xx"].numpy(), xc.T @ xc, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(centred["xy"].numpy(), xc.T @ yc, rtol=1e-9, atol=1e-6)
        assert "yy" not in centred  # the maps need no YᵀY; CKA's accumulator keeps it
    with pytest.raises(TypeError, match="other must be a PairedMoments of the same kind, got StreamingLinearCKA"):
        whole.merge(feed(StreamingLinearCKA(), x, y, []))
    with pytest.raises(ValueError, match="cannot remove 300 rows from 100"):
        first.subtract(whole)
    with pytest.raises(ValueError, match="cannot remove 300 rows from 100"):
        first.remove(x, y)
    with pytest.raises(ValueError, match="nothing to remove"):
        PairedMoments().remove(x, y)
    with pytest.raises(ValueError, match="no rows accumulated yet"):
        PairedMoments().compute()


def test_streaming_torch_float32_batches(rng):
    x, y = correlated(rng, 300, 6, 5, offset=500.0)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    metric = StreamingLinearCKA()
    for part in (slice(0, 7), slice(7, 300)):
        metric.update(xt[part], yt[part])
    expected = ref_linear_cka(xt.double().numpy(), yt.double().numpy(), debiased=True)
    assert metric.compute(debiased=True) == pytest.approx(expected, abs=1e-9)


@MODES
def test_streaming_float32_products_stay_near_float64_and_keep_their_own_x_side(rng, debiased):
    # float32 rows with large offsets: the shift is taken in float64 first, so float32 products lose little;
    # a float64 stream beside it in one update_each computes x's sums apart and stays exact
    x, y = correlated(rng, 2000, 48, 16, offset=500.0)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    fast, exact = StreamingLinearCKA(products=torch.float32), StreamingLinearCKA()
    for part in (slice(0, 700), slice(700, 2000)):
        StreamingLinearCKA.update_each([fast, exact], xt[part], [yt[part], yt[part]])
    expected = ref_linear_cka(xt.double().numpy(), yt.double().numpy(), debiased)
    assert exact.compute(debiased=debiased) == pytest.approx(expected, abs=1e-10)
    assert fast.compute(debiased=debiased) == pytest.approx(expected, abs=1e-6)
    assert fast.compute(debiased=debiased) != exact.compute(debiased=debiased)  # the products did run in float32


def test_streaming_state_size_is_independent_of_rows(rng):
    def state_floats(rows):
        metric = StreamingLinearCKA()
        for _ in range(rows // 50):
            metric.update(rng.normal(size=(50, 7)), rng.normal(size=(50, 3)))
        return sum(t.numel() for t in metric._stats.values()), metric.n

    assert state_floats(100) == (7 * 7 + 3 * 3 + 7 * 3 + 3 * (7 + 3) + 5, 100)
    assert state_floats(2000)[0] == state_floats(100)[0]


def test_streaming_compute_before_update_warns_and_is_nan():
    with pytest.warns(AnalogWarning, match="before any update"):
        assert np.isnan(StreamingLinearCKA().compute())


def test_streaming_width_mismatch(rng):
    metric = StreamingLinearCKA()
    metric.update(rng.normal(size=(5, 4)), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match=r"widths \(d_x, d_y\) must stay \(4, 2\).*got \(4, 3\)"):
        metric.update(rng.normal(size=(5, 4)), rng.normal(size=(5, 3)))
    other = StreamingLinearCKA()
    other.update(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="must stay"):
        metric.merge(other)
    with pytest.raises(TypeError, match="StreamingLinearCKA"):
        metric.merge(object())


def test_streaming_small_n(rng):
    metric = StreamingLinearCKA()
    metric.update(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))
    with pytest.raises(ValueError, match="at least 4 rows, got 3"):
        metric.compute(debiased=True)
    with pytest.warns(AnalogWarning, match="inflated"):
        metric.compute()
    with pytest.warns(AnalogWarning, match="inflated"):  # also when the value is cached
        metric.compute()


def test_streaming_cache_and_reset(rng):
    x, y = correlated(rng, 400, 5, 5)
    metric = feed(StreamingLinearCKA(), x[:200], y[:200], [])
    first = metric.compute(debiased=True)
    assert metric.compute(debiased=True) == first
    metric.update(x[200:], y[200:])
    assert metric.compute(debiased=True) == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-12)
    assert metric.compute(debiased=True) != first
    metric.reset()
    assert metric.n == 0
    metric.update(x[:200], y[:200] + 1)
    assert metric.compute(debiased=True) == pytest.approx(first, abs=1e-12)


# --- rbf_cka ---------------------------------------------------------------------------


@MODES
@pytest.mark.parametrize("sigma_frac", [0.5, 1.0, 2.0])
def test_rbf_cka_matches_reference(rng, debiased, sigma_frac):
    # n = 152 gives an even number of pairs, so the median averages the two middle distances
    x, y = correlated(rng, 152, 6, 9)
    expected = ref_gram_cka(ref_rbf_gram(x, sigma_frac), ref_rbf_gram(y, sigma_frac), debiased)
    assert rbf_cka(x, y, sigma_frac=sigma_frac, debiased=debiased) == pytest.approx(expected, abs=1e-10)


@MODES
def test_rbf_cka_self_and_rotation(rng, debiased):
    x, y = correlated(rng, 150, 8, 8)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert rbf_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(x, y @ q + 5.0, debiased=debiased) == pytest.approx(rbf_cka(x, y, debiased=debiased), abs=1e-10)
    assert rbf_cka(x, y, debiased=debiased) < 0.99


def test_rbf_cka_errors(rng):
    x = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="sigma_frac must be a finite number > 0, got 0"):
        rbf_cka(x, x, sigma_frac=0)
    dup = np.zeros((20, 3))
    dup[0] = 1.0  # most pairs are identical rows: median distance 0
    with pytest.raises(ValueError, match="median pairwise distance of y is 0"):
        rbf_cka(x, dup)


@pytest.mark.parametrize("n", [1, 3, 8, 37])
def test_gram_from_its_upper_blocks_equals_the_full_product(rng, n):
    from pytest_analog.metrics._utils import self_product

    x = torch.from_numpy(rng.normal(size=(n, 5)) * 10.0 + 3.0)
    np.testing.assert_allclose(self_product(x).numpy(), (x @ x.T).numpy(), rtol=1e-13, atol=1e-12)


# --- cka_matrix and best_match ---------------------------------------------------------


@MODES
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_cka_matrix_entries_equal_linear_cka(rng, debiased, dtype, atol):
    # large means: the rows are centred in float64 before a float32 product
    xs = [rng.normal(size=(120, d)) + 100 for d in (4, 7, 5)]
    ys = [xs[1] @ rng.normal(size=(7, 7)), torch.from_numpy(xs[0] + rng.normal(size=(120, 4)))]
    m = cka_matrix(xs, ys, debiased=debiased, dtype=dtype)
    assert m.shape == (3, 2)
    expected = [[linear_cka(x, y, debiased=debiased) for y in ys] for x in xs]
    np.testing.assert_allclose(m, expected, atol=atol)


def test_cka_matrix_diagonal_of_identical_lists(rng):
    layers = [rng.normal(size=(60, 5)) for _ in range(4)]
    m = cka_matrix(layers, layers)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    assert best_match(m).tolist() == [0, 1, 2, 3]


def test_cka_matrix_errors(rng):
    with pytest.raises(ValueError, match="at least one layer, got 0 and 1"):
        cka_matrix([], [np.ones((5, 2))])
    with pytest.raises(ValueError, match=r"xs\[0\] has 6, ys\[1\] has 5"):
        cka_matrix([rng.normal(size=(6, 2))], [rng.normal(size=(6, 2)), rng.normal(size=(5, 2))])
    with pytest.raises(ValueError, match=r"ys\[0\] must have 2 dimensions"):
        cka_matrix([rng.normal(size=(6, 2))], [rng.normal(size=6)])
    with pytest.warns(AnalogWarning, match="CKA matrix \\(biased\\)"):
        cka_matrix([rng.normal(size=(6, 2))], [rng.normal(size=(6, 2))], debiased=False)


def test_best_match():
    m = np.array([[0.1, 0.9, 0.2], [0.8, np.nan, 0.3], [0.0, 0.1, 0.7]])
    assert best_match(m).tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match=r"rows \[1\] are all NaN"):
        best_match([[1.0, 2.0], [np.nan, np.nan]])
    with pytest.raises(ValueError, match="2-D with at least one column"):
        best_match([1.0, 2.0])


def test_debiased_cka_over_the_tokens_of_few_prompts_reads_high():
    # two models sharing nothing but an offset per prompt (tokens of one prompt are not independent rows):
    # about 1/P over P prompts (the caveat behind gates.cka.min_prompts)
    rng = np.random.default_rng(0)

    def unrelated(n_prompts, tokens=10, d=32):
        prompt = np.repeat(np.arange(n_prompts), tokens)
        x = 0.5 * rng.normal(size=(n_prompts, d))[prompt] + rng.normal(size=(len(prompt), d))
        y = 0.5 * rng.normal(size=(n_prompts, d))[prompt] + rng.normal(size=(len(prompt), d))
        return linear_cka(x, y, debiased=True)

    few, many = (np.mean([unrelated(p) for _ in range(10)]) for p in (10, 160))
    assert few == pytest.approx(1 / 10, abs=0.03) and many == pytest.approx(1 / 160, abs=0.005)


@pytest.mark.parametrize("offset", [500.0])
def test_streaming_removes_massive_rows_exactly_in_float32_and_far_from_the_reference(offset):
    # three rows at 100x the median norm, rows offset far from 0 (the case has 2e4 rows; 4096 here,
    # for time): float32 products then remove were off by up to 0.3 and float64 by 1e-2 at 2e4 rows (the
    # fourth moments cancelled); the rows are now kept apart
    rng = np.random.default_rng(0)
    n, d, massive = 4096, 576, [5, 1500, 3000]
    x = rng.normal(size=(n, d)) + offset
    y = 0.5 * x + rng.normal(size=(n, d)) + offset
    for z in (x, y):
        z[massive] *= 100 * np.median(np.linalg.norm(z, axis=1)) / np.linalg.norm(z[massive], axis=1, keepdims=True)
    exact = linear_cka(np.delete(x, massive, 0), np.delete(y, massive, 0), debiased=True)
    for products, tolerance in ((torch.float32, 1e-8), (torch.float64, 1e-12)):
        metric = feed(StreamingLinearCKA(products=products), x, y, np.arange(1024, n, 1024))
        kept = metric.compute(debiased=True)
        assert kept == pytest.approx(linear_cka(x, y, debiased=True), abs=tolerance * 100)
        assert metric.remove(x[massive], y[massive]).n == n - 3
        assert metric.compute(debiased=True) == pytest.approx(exact, abs=tolerance)
    near = x + 1e-3 * rng.normal(size=x.shape)  # X ≈ Y with the massive rows kept: the self-pair check
    assert feed(StreamingLinearCKA(products=torch.float32), x, near, np.arange(1024, n, 1024)).compute(debiased=True) >= 0.999


def test_kept_rows_merge_and_subtract_exactly(rng):
    x, y = correlated(rng, 400, 6, 5, offset=300.0)
    x[[3, 250]] *= 80.0
    y[[3, 250]] *= 80.0
    a = feed(StreamingLinearCKA(), x[:200], y[:200], [100])
    b = feed(StreamingLinearCKA(), x[200:], y[200:], [100])
    whole = StreamingLinearCKA().merge(a).merge(b)
    assert whole.n == 400 and whole.compute(debiased=True) == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-9)
    assert whole.subtract(b).compute(debiased=True) == pytest.approx(linear_cka(x[:200], y[:200], debiased=True), abs=1e-9)
