"""Bootstrap replicates over prompts: whole sequences are resampled, never single tokens.

Tokens of one prompt are strongly correlated, so resampling tokens would give
intervals far too narrow. Each replicate draws the prompts with replacement
(multinomial counts) and every token of a drawn prompt counts as often as its
prompt was drawn.

A duplicated prompt must not pair with its own copy: for the debiased CKA the
pair (token, its copy) adds ‖x‖²‖y‖² to the HSIC numerator, which for d-wide
activations and P prompts inflates the estimate by about d/P (≈ 2 at d = 576,
P = 300). The debiased replicates here are weighted U-statistics over tuples of
distinct original rows; mutual kNN finds each replicate's neighbours among
the distinct prompts it drew. With every count 1 each replicate equals the
full-data metric.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from pytest_analog.criterion import chance_corrected
from pytest_analog.metrics._utils import as_float64, check_rows, unit_rows
from pytest_analog.metrics.cka import linear_cka, linear_gram, rbf_gram
from pytest_analog.metrics.knn import check_k

_CHUNK_ELEMENTS = 1 << 19  # Gram entries per matrix in one chunk of the replicates' block sums (4 MB of float64)
_KNN_ELEMENTS = 1 << 21  # (replicate, row, neighbour) entries per model held at once by the kNN replicates


def resample_counts(n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_groups] counts: how often each group (prompt) is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)


def percentile_interval(replicates, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of the replicates; (nan, nan) when any replicate is not finite.

    A degenerate replicate is part of the bootstrap distribution: dropping it
    would report an interval of the replicates that happened to be defined, so
    the interval is not measured instead (a gate on it then fails, saying so).
    """
    values = np.asarray(replicates, dtype=np.float64)
    if not values.size or not np.isfinite(values).all():
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def centre(replicates, estimate: float) -> np.ndarray:
    """Replicates moved so that their median (of the finite ones) is ``estimate``.

    Right for a statistic whose replicates are offset by an artefact of
    resampling rather than by the estimator's own bias (mutual kNN: a
    replicate's smaller pool of distinct prompts). Not for CKA over tokens:
    centring discards the bias that prompt clustering gives the estimate, and
    the interval then misses the truth from above (`bias_corrected_interval`).
    """
    values = np.asarray(replicates, dtype=np.float64)
    finite = np.isfinite(values)
    return values + (estimate - np.median(values[finite])) if finite.any() else values


def interval_counts(n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples + n_groups + 1, n_groups] counts for `bias_corrected_interval`: the bootstrap draws
    (`resample_counts`), then each group left out once (the cluster jackknife), then every group once."""
    draws = resample_counts(n_groups, n_resamples, seed)
    return np.concatenate([draws, 1 - np.eye(n_groups, dtype=draws.dtype), np.ones((1, n_groups), dtype=draws.dtype)])


def same_group_share(sizes, counts=None):
    """The share of pairs of distinct rows that lie in one group (prompt), Σ ω_p² n_p(n_p − 1) / (N² − Σ ω_p² n_p)
    with N = Σ ω_p n_p: of the data (every ω_p = 1; a float), or of each replicate (``counts`` [B, P]; [B]).

    The debiased CKA's bias under prompt clustering is proportional to it (`bias_corrected_interval`).
    ``sizes``: [P] rows per group.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    omega = np.ones((1, len(sizes))) if counts is None else np.asarray(counts, dtype=np.float64)
    total, squares = omega @ sizes, omega**2 @ sizes
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (omega**2 @ (sizes * (sizes - 1))) / (total**2 - squares)
    return float(share[0]) if counts is None else share


def _adjusted(values, estimate: float, counts, sizes, share) -> tuple[float, np.ndarray]:
    """(the estimate less its bias, the bootstrap replicates each less its own), for the counts of `interval_counts`.

    The bias is c·f, f a data set's `same_group_share`; c is the cluster-jackknife bias
    (P − 1)(mean of the leave-one-out values − the replicated data's value) over that data's f. Without
    same-group pairs (one row per group) the jackknife bias itself is removed from the estimate.
    """
    values, counts = np.asarray(values, dtype=np.float64), np.asarray(counts)
    n_groups = counts.shape[1]
    boot = values[: -n_groups - 1]
    bias = (n_groups - 1) * (values[-n_groups - 1 : -1].mean() - values[-1])
    sizes = np.ones(n_groups) if sizes is None else np.asarray(sizes, dtype=np.float64)
    own = same_group_share(sizes)
    if not own > 0:
        return estimate - bias, boot
    per_share = bias / own
    share = own if share is None else share
    return estimate - per_share * share, boot - per_share * same_group_share(sizes, counts[: -n_groups - 1])


def bias_corrected_interval(values, estimate: float, counts, sizes=None, *, share: float | None = None,
                            confidence: float = 0.95) -> tuple[float, float]:
    """The interval of a CKA ``estimate`` from replicates over the counts of `interval_counts`.

    Debiased CKA over tokens clustered by prompt is biased upward: the unbiased
    HSIC assumes independent rows, and pairs of tokens from one prompt read as
    agreement, by an amount c·f proportional to the share f of such pairs
    (`same_group_share`, about 1/P). The cluster jackknife estimates c; the
    interval is centred on the estimate less c·f, and its width and shape are
    those of the bootstrap replicates, each less its own c·f_b (a replicate
    draws prompts 0, 1, 2... times, so its f_b varies about 2f) and reflected
    about their median (as the basic interval).

    Chosen by simulation (benchmarks/bench_coverage.py has the tables). At
    40 prompts with half the variance at prompt level, true CKA 0 and 0.2,
    the 95 % interval centred on the estimate (the former gate) covered 0 % of
    80 data sets; the basic interval [2θ̂ − q_hi, 2θ̂ − q_lo], whose bias is
    the bootstrap's own (about 75 % of the true one), 92-95 %, every miss from
    above; the jackknife bias with a t interval 92-94 %; the jackknife bias
    with the raw bootstrap spread 99-100 % (the replicates' varying f_b
    widens it 2-3x at CKA 0); this construction 95 % at both.

    Args:
        values: [B + P + 1] replicates over the counts of `interval_counts`.
        estimate: the value on every row.
        counts: those counts [B + P + 1, P].
        sizes: [P] rows per prompt in the replicated data; None: one row per prompt (pooled metrics),
            where only the jackknife bias is removed.
        share: `same_group_share` of the estimate's data, when the replicates use a row sample and the
            estimate every row; None: the replicated data's.
        confidence: the interval's level.

    Returns:
        (low, high); (nan, nan) when a replicate or the estimate is not finite.
    """
    values = np.asarray(values, dtype=np.float64)
    if not (np.isfinite(values).all() and np.isfinite(estimate)):
        return (float("nan"), float("nan"))
    centre_, boot = _adjusted(values, estimate, counts, sizes, share)
    return percentile_interval(centre_ + np.median(boot) - boot, confidence)


def corrected_interval(value_replicates, chance_replicates, value: float, chance: float, counts, sizes=None, *,
                       share: float | None = None, confidence: float = 0.95) -> tuple[float, float]:
    """The interval of the chance-corrected score (value − c) / (1 − c), c = max(chance, 0), from paired
    replicates over the counts of `interval_counts` (the analog's and the control's values in the same
    draws, so their correlation is carried).

    The value and the chance level, and each of their replicates, are corrected for their own bias as in
    `bias_corrected_interval` (same arguments) before the corrected score is formed; the corrected score's
    bootstrap spread is reflected about its median. When the chance level varies beyond the prompts
    (several control seeds), pass chance replicates drawn with that variation too (bootstrap replicate b's
    chance from seed b mod S; the leave-one-out and last entries from every seed's mean): the interval
    then carries it.

    Returns:
        (low, high); (nan, nan) when a replicate or an estimate is not finite.

    Raises:
        ValueError: the value and chance replicates differ in shape.
    """
    v, c = np.asarray(value_replicates, dtype=np.float64), np.asarray(chance_replicates, dtype=np.float64)
    if v.shape != c.shape:
        raise ValueError(f"value and chance replicates must be paired: shapes {v.shape} and {c.shape}")
    if not (np.isfinite(v).all() and np.isfinite(c).all() and np.isfinite(value) and np.isfinite(chance)):
        return (float("nan"), float("nan"))
    value_centre, value_boot = _adjusted(v, value, counts, sizes, share)
    chance_centre, chance_boot = _adjusted(c, chance, counts, sizes, share)
    boot = chance_corrected(value_boot, chance_boot)
    return percentile_interval(chance_corrected(value_centre, chance_centre) + np.median(boot) - boot, confidence)


class Interval(NamedTuple):
    """An estimate and its bootstrap interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float


def cka_interval(x, y, groups, *, replicates: int = 200, seed: int = 0, level: float = 0.95,
                 rows: int | None = 2048, debiased: bool = True) -> Interval:
    """Linear CKA of every row with the bootstrap interval over prompts that the gate reports.

    The estimate is `linear_cka` on every row. The replicates resample whole
    prompts (``groups``) on a random sample of at most ``rows`` rows, as the
    gate does (``chance.rows``; None: every row), with each prompt left out
    once besides; `bias_corrected_interval` removes the bias that prompt
    clustering gives a debiased CKA over few prompts (most of its error),
    carried from the sample to every row by their shares of same-prompt pairs.

    Args:
        x: [n, d_x] rows (tokens).
        y: [n, d_y] the same tokens in the other model.
        groups: [n] each row's prompt (any sortable labels).
        replicates: bootstrap replicates.
        seed: seed of the row sample and the prompt draws.
        level: the interval's confidence.
        rows: most rows the replicates use (n² time and memory); None for all.
        debiased: the unbiased HSIC estimator (as the gate).

    Returns:
        An `Interval`; nan bounds when a replicate is degenerate.

    Raises:
        ValueError: bad shapes or values, or ``groups`` not one per row.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x, groups = rng.normal(size=(400, 6)), np.repeat(np.arange(40), 10)
        >>> r = cka_interval(x, x @ rng.normal(size=(6, 6)) + rng.normal(size=(400, 6)), groups, replicates=50)
        >>> bool(r.low <= r.estimate <= r.high)
        True
    """
    x, y = as_float64(x, "x"), as_float64(y, "y")
    y = y.to(x.device)
    groups = np.asarray(groups)
    if groups.shape != (len(x),):
        raise ValueError(f"groups must give one prompt per row of x: shape ({len(x)},), got {groups.shape}")
    estimate = linear_cka(x, y, debiased=debiased)
    codes = np.unique(groups, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(x), size=rows, replace=False)) if rows is not None and rows < len(x) else np.arange(len(x))
    present, sampled = np.unique(codes[keep], return_inverse=True)  # the prompts with a sampled row
    counts = interval_counts(len(present), replicates, int(rng.integers(2**32)))
    index = torch.from_numpy(keep)
    values = linear_cka_replicates(x[index], y[index], sampled, counts, debiased)
    low, high = bias_corrected_interval(values, estimate, counts, np.bincount(sampled),
                                        share=same_group_share(np.bincount(codes)), confidence=level)
    return Interval(estimate, low, high, level)


def gram_cka_replicates(k, l, groups, counts, debiased: bool = True) -> np.ndarray:  # noqa: E741
    """CKA of each replicate from the Gram matrices of the full sample.

    Args:
        k, l: [n, n] Gram matrices (linear: x xᵀ of centred rows; or a kernel).
        groups: [n] the prompt (0..P-1) of each row.
        counts: [B, P] draws per prompt (`resample_counts`).
        debiased: the unbiased HSIC (Song et al. 2012) of the resampled data as a
            weighted U-statistic over tuples of distinct original rows (a row is
            never paired with its own copy); otherwise the biased (V-statistic)
            HSIC of the resampled data.

    Returns:
        [B] CKA values (NaN where a replicate is degenerate).
    """
    return gram_cka_replicates_pairs([("k", "l")], {"k": k, "l": l}.__getitem__, groups, counts, debiased)[0]


def gram_cka_replicates_pairs(pairs, gram, groups, counts, debiased: bool = True) -> list[np.ndarray]:
    """`gram_cka_replicates` of each pair (a, b) of keys in ``pairs``; ``gram(key)`` makes that key's Gram matrix.

    For one teacher layer after another against the analog and the control at
    the layers they map to: every Gram is made once and its own terms (group
    sums, products, HSIC with itself) computed once, however many pairs hold
    it; consecutive pairs with the same ``a`` share one pass over the rows;
    a Gram is dropped after the last pair that needs it.
    """
    groups = np.asarray(groups)
    last = {key: index for index, pair in enumerate(pairs) for key in pair}
    hsic = _u_hsic if debiased else _v_hsic
    terms, own, out = None, {}, []
    for start, stop in _runs([a for a, _ in pairs]):
        a, bs = pairs[start][0], [b for _, b in pairs[start:stop]]
        new = {key: _gram(gram(key), str(key)) for key in dict.fromkeys([a, *bs]) if key not in own}
        if terms is None:
            device = next(iter(new.values())).device
            terms = _Terms(torch.as_tensor(groups, dtype=torch.long, device=device),
                           torch.as_tensor(np.asarray(counts), dtype=torch.float64, device=device), zero_diagonal=debiased)
        terms.read(new, [(key, key) for key in new] + [(a, b) for b in bs])
        own.update({key: hsic(terms, key, key) for key in new})
        for b in bs:
            kk, ll = own[a], own[b]
            with np.errstate(invalid="ignore", divide="ignore"):
                cka = (hsic(terms, a, b) / torch.sqrt(kk * ll)).cpu().numpy()
            cka[~((kk > 0) & (ll > 0)).cpu().numpy()] = np.nan
            out.append(cka)
        for key in [key for key in own if last[key] < stop]:
            terms.forget(key)
            del own[key]
    return out


def _runs(keys: list) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive ``keys``."""
    edges = [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
    return list(zip([0, *edges], [*edges, len(keys)]))


class _Terms:
    """Weighted sums of Gram entries for every replicate at once.

    Row weights are powers of the prompt counts (w_i = ω_p for row i of prompt p),
    so every quadratic form aᵀ(A∘B)b reduces to P×P block sums of A∘B. `read`
    takes Gram matrices by key and the pairs whose block sums are wanted, and
    computes those block sums and each new Gram's [P, n] group sums in float64
    in one pass over chunks of rows (`_CHUNK_ELEMENTS` entries per Gram), so no
    n×n product or copy is ever made; ``zero_diagonal`` zeroes each chunk's
    diagonal entries first (the U-statistic's Grams), leaving the given
    matrices as they are. `forget` drops a Gram and every term that holds it.
    """

    def __init__(self, groups, omega, *, zero_diagonal: bool = False):
        self.groups, self.omega, self.zero_diagonal = groups, omega, zero_diagonal
        self.n_groups = omega.shape[1]
        self.mats, self.group_sums, self._blocks = {}, {}, {}
        self._powers, self._weights, self._totals = {}, {}, {}
        self._products, self._pointwise, self._triples, self._quadratics = {}, {}, {}, {}

    def read(self, new: dict, pairs: list) -> None:
        """Hold the Grams in ``new`` (keyed) and compute their group sums and the block sums of ``pairs``."""
        n = self.groups.shape[0]
        for key, m in new.items():
            if m.shape != (n, n):
                raise ValueError(f"{key} must be an [n, n] Gram matrix with n = {n} rows, got shape {tuple(m.shape)}")
        self.mats.update({key: m.to(self.omega.device) for key, m in new.items()})
        pairs = list(dict.fromkeys(pairs))
        needed = list(dict.fromkeys([*new, *(key for pair in pairs for key in pair)]))
        sums = {key: torch.zeros(self.n_groups, n, dtype=torch.float64, device=self.omega.device)
                for key in [(a, "") for a in new] + pairs}
        step = max(1, _CHUNK_ELEMENTS // max(n, 1))
        for start in range(0, n, step):
            rows = {a: self.mats[a][start:start + step].to(torch.float64, copy=True) for a in needed}
            if self.zero_diagonal:
                for r in rows.values():
                    r.diagonal(offset=start).zero_()
            for (a, b), out in sums.items():
                out.index_add_(0, self.groups[start:start + step], rows[a] * rows[b] if b else rows[a])
        for a in new:  # a non-finite entry leaves its row's group sum non-finite, unless on the diagonal
            self.group_sums[a] = sums[a, ""]  # [P, n]: the Gram's rows summed per group
            if not (bool(torch.isfinite(self.group_sums[a]).all()) and bool(torch.isfinite(self.mats[a].diagonal()).all())):
                raise ValueError(f"{a} contains NaN or infinite values")
        self._blocks.update({key: self._sum_groups(rows.T).T for key, rows in sums.items()})  # [P, P]

    def forget(self, key) -> None:
        """Drop the Gram ``key`` and every term computed from it."""
        self.mats.pop(key, None)
        self.group_sums.pop(key, None)
        for entry in [entry for entry in self._products if entry[0] == key]:  # keyed (a, power)
            del self._products[entry]
        for cache in (self._blocks, self._pointwise, self._triples, self._quadratics):  # keyed (a, b, ...)
            for entry in [entry for entry in cache if key in entry[:2]]:
                del cache[entry]

    def power(self, power: int) -> torch.Tensor:
        """[B, P]: the prompt counts to ``power``."""
        if power not in self._powers:
            self._powers[power] = self.omega**power
        return self._powers[power]

    def weights(self, power: int) -> torch.Tensor:
        """[B, n]: each row's weight (its prompt's count) to ``power``, per replicate."""
        if power not in self._weights:
            self._weights[power] = self.power(power)[:, self.groups]
        return self._weights[power]

    def total(self, power: int) -> torch.Tensor:
        """[B]: the sum of the rows' weights to ``power``."""
        if power not in self._totals:
            self._totals[power] = self.weights(power).sum(dim=1)
        return self._totals[power]

    def _sum_groups(self, m: torch.Tensor) -> torch.Tensor:
        """[P, n]: the rows of ``m`` summed within each group."""
        out = torch.zeros(self.n_groups, m.shape[1], dtype=m.dtype, device=m.device)
        return out.index_add_(0, self.groups, m)

    def quadratic(self, a: str, b: str, left: int, right: int) -> torch.Tensor:
        """Σ_ij w_i^left w_j^right A_ij B_ij per replicate (A, B: Gram names; b '' for A alone)."""
        if (a, b, left, right) not in self._quadratics:
            self._quadratics[a, b, left, right] = ((self.power(left) @ self._blocks[a, b]) * self.power(right)).sum(dim=1)
        return self._quadratics[a, b, left, right]

    def product(self, a: str, power: int) -> torch.Tensor:
        """A w^power for every replicate: [B, n]. Weights are constant within a prompt, so
        (A w)_i = Σ_p (Σ_{j in p} A_ij) ω_p: O(n·P·B) from the group sums, not O(n²·B)."""
        if (a, power) not in self._products:
            self._products[a, power] = self.power(power) @ self.group_sums[a]
        return self._products[a, power]

    def triple(self, a: str, b: str, powers: tuple[int, int, int]) -> torch.Tensor:
        """Σ over distinct i, j, q of w_i^p0 w_j^p1 w_q^p2 A_ij B_iq per replicate."""
        if (a, b, powers) not in self._triples:
            p0, p1, p2 = powers
            if (a, b, p1, p2) not in self._pointwise:  # (A w^p1)_i (B w^p2)_i, shared by the triples of any p0
                self._pointwise[a, b, p1, p2] = self.product(a, p1) * self.product(b, p2)
            full = (self.weights(p0) * self._pointwise[a, b, p1, p2]).sum(dim=1)
            self._triples[a, b, powers] = full - self.quadratic(a, b, p0, p1 + p2)  # less the terms with j = q
        return self._triples[a, b, powers]


def _gram(m, name: str) -> torch.Tensor:
    """A Gram matrix as given when float32 or float64 (`_Terms` widens each chunk to float64 as it reads it),
    else as float64; its finiteness is checked on the block sums (an n×n pass less)."""
    if isinstance(m, torch.Tensor) and m.dtype in (torch.float32, torch.float64) and m.ndim == 2:
        return m.detach()
    return as_float64(m, name, check_finite=False)


def _u_hsic(t: _Terms, a: str, b: str) -> torch.Tensor:
    """Weighted unbiased HSIC: the average of the HSIC kernel over 4-tuples of distinct rows,
    each weighted by the product of its rows' weights (the diagonals are already zero)."""
    p1, p2, p3, p4 = (t.total(m) for m in (1, 2, 3, 4))
    pairs = (
        (p1**2 - p2) * t.quadratic(a, b, 1, 1) - 4 * p1 * t.quadratic(a, b, 2, 1)
        + 4 * t.quadratic(a, b, 3, 1) + 2 * t.quadratic(a, b, 2, 2)
    )
    quadruples = t.quadratic(a, "", 1, 1) * t.quadratic(b, "", 1, 1) - 4 * t.triple(a, b, (2, 1, 1)) - 2 * t.quadratic(a, b, 2, 2)
    triples = p1 * t.triple(a, b, (1, 1, 1)) - t.triple(a, b, (2, 1, 1)) - t.triple(a, b, (1, 2, 1)) - t.triple(a, b, (1, 1, 2))
    n4 = p1**4 - 6 * p1**2 * p2 + 3 * p2**2 + 8 * p1 * p3 - 6 * p4
    return (pairs + quadruples - 2 * triples) / n4


def _v_hsic(t: _Terms, a: str, b: str) -> torch.Tensor:
    """Biased HSIC tr(KHLH)/N² of the resampled data, copies included."""
    n = t.total(1)
    cross = (t.weights(1) * t.product(a, 1) * t.product(b, 1)).sum(dim=1)
    return (t.quadratic(a, b, 1, 1) - 2 * cross / n + t.quadratic(a, "", 1, 1) * t.quadratic(b, "", 1, 1) / n**2) / n**2


def linear_cka_replicates(x, y, groups, counts, debiased: bool = True) -> np.ndarray:
    """Linear CKA of each replicate; rows of ``x`` and ``y`` are aligned tokens, ``groups`` their prompts."""
    x, y = as_float64(x, "x"), as_float64(y, "y")
    y = y.to(x.device)
    check_rows(x, y, 4 if debiased else 2, "debiased linear CKA" if debiased else "linear CKA")
    return gram_cka_replicates(linear_gram(x), linear_gram(y), groups, counts, debiased)


def rbf_cka_replicates(x, y, counts, sigma_frac: float = 1.0, debiased: bool = False) -> np.ndarray:
    """RBF CKA of each replicate, one row per prompt; the bandwidths are those of the full data."""
    return rbf_cka_replicates_pairs([("x", "y")], {"x": x, "y": y}.__getitem__, counts, sigma_frac, debiased)[0]


def rbf_cka_replicates_pairs(pairs, rows, counts, sigma_frac: float = 1.0, debiased: bool = False) -> list[np.ndarray]:
    """`rbf_cka_replicates` of each pair (a, b) of keys in ``pairs``; ``rows(key)`` gives that key's rows
    [n, d]. Each Gram matrix and its own terms are computed once (`gram_cka_replicates_pairs`)."""
    minimum = 4 if debiased else 2

    def gram(key):
        z = as_float64(rows(key), str(key))
        if len(z) < minimum:
            raise ValueError(f"RBF CKA needs at least {minimum} rows, got {len(z)}")
        return rbf_gram(z, sigma_frac, str(key))

    return gram_cka_replicates_pairs(pairs, gram, np.arange(np.asarray(counts).shape[1]), counts, debiased)


def mutual_knn_replicates(x, y, counts, k: int = 10) -> np.ndarray:
    """Mutual kNN of each replicate, one row per prompt.

    Neighbours are found anew in each replicate, among the distinct prompts it
    drew (a prompt's own copies are not its neighbours), and the drawn prompts'
    overlaps are averaged with their counts as weights. Finding neighbours once
    on all prompts and resampling only the overlaps leaves out how the neighbour
    sets move with the sample: intervals about 30 % too narrow (coverage 0.83 at
    n = 320, k = 10). The smaller pool of a replicate (about 0.63 n distinct
    prompts) raises every overlap by about the same amount, so the replicates
    are moved by (full-data value - their mean) to sit on the full-data value;
    in simulation the intervals then cover at about their nominal rate.
    """
    return mutual_knn_replicates_pairs([("x", "y")], {"x": x, "y": y}.__getitem__, counts, k)[0]


def mutual_knn_replicates_pairs(pairs, rows, counts, k: int = 10) -> list[np.ndarray]:
    """`mutual_knn_replicates` of each pair (a, b) of keys in ``pairs``; ``rows(key)`` gives that key's rows [n, d].

    Each model's neighbour order is ranked once, and in each replicate its k
    nearest drawn rows are read from the front of that order (`_Nearest`), so a
    model in several pairs costs once and a replicate O(n·k) per row, not O(n²).
    The full-data value is that of one more replicate which draws every row once.
    """
    counts = np.asarray(counts)
    n = counts.shape[1]
    check_k(k, n)
    omega = torch.as_tensor(np.concatenate([counts, np.ones((1, n), dtype=counts.dtype)]), dtype=torch.float64)
    last = {key: index for index, pair in enumerate(pairs) for key in pair}
    nearest, out = {}, []
    for index, pair in enumerate(pairs):
        for key in pair:
            if key not in nearest:
                z = as_float64(rows(key), str(key))
                if len(z) != n:
                    raise ValueError(f"{key} has {len(z)} rows; the counts are over {n}")
                nearest[key] = _Nearest(unit_rows(z, str(key)), omega.to(z.device), k)
        reps = nearest[pair[1]].overlaps(nearest[pair[0]])
        out.append(reps[:-1] + (reps[-1] - reps[:-1].mean()))
        for key in [key for key in nearest if last[key] <= index]:
            del nearest[key]
    return out


class _Nearest:
    """One model's k nearest drawn rows in every replicate.

    Each row's other rows are ranked once, nearest first (cosine, ties in row
    order); a replicate's k nearest neighbours of a row are the first k drawn
    in that ranking. Only the front of the ranking is read: its first L
    entries, with L doubled from 4k until every row of every replicate has k
    drawn among them (a replicate draws about 63 % of the rows, so L = 4k
    almost always holds).
    """

    def __init__(self, z: torch.Tensor, omega: torch.Tensor, k: int):
        n = len(z)
        sims = z @ z.T
        sims.fill_diagonal_(-torch.inf)
        self.order = sims.argsort(dim=1, descending=True, stable=True)[:, :-1]  # [n, n - 1]: itself left out
        self.rank = torch.full((n, n), n, dtype=torch.long, device=z.device)  # rank[i, j]: j's place in i's ranking
        self.rank.scatter_(1, self.order, torch.arange(n - 1, device=z.device).expand(n, -1).contiguous())
        self.omega, self.k = omega, k
        self.chosen, self.kth = [], []  # per block of replicates: [b, n, L] which ranked rows are chosen; [b, n] the k-th's place
        for block in omega.split(max(1, _KNN_ELEMENTS // (n * min(n - 1, 4 * k)))):
            drawn, length = block > 0, min(n - 1, 4 * k)
            while True:
                ranked = drawn[:, self.order[:, :length]]  # [b, n, L]
                seen = ranked.cumsum(dim=2, dtype=torch.int32)
                if length == n - 1 or bool((seen[..., -1] >= k).all()):
                    break
                length = min(n - 1, 2 * length)
            self.chosen.append(ranked & (seen <= k))
            self.kth.append((seen < k).sum(dim=2))  # fewer than k drawn: every drawn row is a neighbour

    def overlaps(self, other: _Nearest) -> np.ndarray:
        """[B]: each replicate's count-weighted mean of |N_self(i) ∩ N_other(i)| / k over its drawn rows."""
        out = []
        for block, chosen, kth in zip(self.omega.split(len(self.chosen[0])), self.chosen, other.kth):
            place = other.rank.gather(1, self.order[:, : chosen.shape[2]])  # [n, L]: self's ranked rows in other's ranking
            shared = (chosen & (place <= kth[:, :, None])).sum(dim=2) / self.k  # [b, n]
            out.append((block * shared).sum(dim=1) / block.sum(dim=1))
        return torch.cat(out).cpu().numpy()
