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

import numpy as np
import torch

from pytest_analog.metrics._utils import as_float64, check_rows, unit_rows
from pytest_analog.metrics.cka import linear_gram, rbf_gram

_CHUNK_ELEMENTS = 1 << 17  # Gram entries per matrix in one chunk of the replicates' block sums (1 MB of float64)
_KNN_ELEMENTS = 1 << 21  # (replicate, row, neighbour) entries per model held at once by the kNN replicates


def resample_counts(n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_groups] counts: how often each group (prompt) is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)


def percentile_interval(replicates, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of finite replicates; (nan, nan) when none are."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def centre(replicates, estimate: float) -> np.ndarray:
    """Replicates moved so that their median (of the finite ones) is ``estimate``.

    A percentile interval need not hold its own estimate: near 0 the bootstrap
    distribution of a debiased CKA is skewed and sits above the full-data value.
    Taking that median offset as the bootstrap's bias and removing it
    (θ̂ + θ* − median θ*) keeps the interval's width and shape and puts the
    estimate inside the percentile interval at any confidence.
    """
    values = np.asarray(replicates, dtype=np.float64)
    finite = np.isfinite(values)
    return values + (estimate - np.median(values[finite])) if finite.any() else values


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
    return gram_cka_replicates_each(k, [l], groups, counts, debiased)[0]


def gram_cka_replicates_each(k, ls, groups, counts, debiased: bool = True) -> list[np.ndarray]:
    """`gram_cka_replicates` of ``k`` against each Gram matrix in ``ls`` (the analog's, the control's).

    ``k``'s own terms (its weighted products and HSIC with itself) are computed
    once and shared, which is most of the cost when ``ls`` has two entries.
    """
    k = _gram(k, "k")
    ls = [_gram(l, "l").to(k.device) for l in ls]  # noqa: E741
    groups = torch.as_tensor(np.asarray(groups), dtype=torch.long, device=k.device)
    omega = torch.as_tensor(np.asarray(counts), dtype=torch.float64, device=k.device)  # [B, P]
    hsic = _u_hsic if debiased else _v_hsic
    mats = {"k": k, **{f"l{j}": l for j, l in enumerate(ls)}}
    pairs = [("k", "k")] + [pair for j in range(len(ls)) for pair in (("k", f"l{j}"), (f"l{j}", f"l{j}"))]
    terms = _Terms(mats, pairs, groups, omega, zero_diagonal=debiased)
    for name, m in mats.items():  # a non-finite entry leaves its row's group sum non-finite, unless on the diagonal
        if not (bool(torch.isfinite(terms.group_sums[name]).all()) and bool(torch.isfinite(m.diagonal()).all())):
            raise ValueError(f"{name[0]} contains NaN or infinite values")
    kk = hsic(terms, "k", "k")
    out = []
    for j in range(len(ls)):
        kl, ll = hsic(terms, "k", f"l{j}"), hsic(terms, f"l{j}", f"l{j}")
        with np.errstate(invalid="ignore", divide="ignore"):
            cka = (kl / torch.sqrt(kk * ll)).cpu().numpy()
        cka[~((kk > 0) & (ll > 0)).cpu().numpy()] = np.nan
        out.append(cka)
    return out


class _Terms:
    """Weighted sums of Gram entries for every replicate at once.

    Row weights are powers of the prompt counts (w_i = ω_p for row i of prompt p),
    so every quadratic form aᵀ(A∘B)b reduces to P×P block sums of A∘B. Those
    block sums, for every pair in ``pairs``, and each Gram's [P, n] group sums
    are taken in float64 in one pass over chunks of rows (`_CHUNK_ELEMENTS`
    entries per Gram), so no n×n product or copy is ever made; ``zero_diagonal``
    zeroes each chunk's diagonal entries first (the U-statistic's Grams),
    leaving the given matrices as they are.
    """

    def __init__(self, mats, pairs, groups, omega, *, zero_diagonal: bool = False):
        self.groups, self.omega = groups, omega
        self.n_groups = omega.shape[1]
        self._powers, self._totals = {}, {}
        self._weights = {}
        self._products = {}
        self._triples = {}
        n = groups.shape[0]
        device = omega.device
        sums = {key: torch.zeros(self.n_groups, n, dtype=torch.float64, device=device)
                for key in [(a, "") for a in mats] + list(pairs)}
        step = max(1, _CHUNK_ELEMENTS // max(n, 1))
        for start in range(0, n, step):
            rows = {a: m[start:start + step].to(torch.float64, copy=True) for a, m in mats.items()}
            if zero_diagonal:
                for r in rows.values():
                    r.diagonal(offset=start).zero_()
            for (a, b), out in sums.items():
                out.index_add_(0, groups[start:start + step], rows[a] * rows[b] if b else rows[a])
        self.group_sums = {a: sums[a, ""] for a in mats}  # [P, n]: each Gram's rows summed per group
        self._blocks = {key: self._sum_groups(rows.T).T for key, rows in sums.items()}  # [P, P]

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
        return ((self.power(left) @ self._blocks[a, b]) * self.power(right)).sum(dim=1)

    def product(self, a: str, power: int) -> torch.Tensor:
        """A w^power for every replicate: [n, B]. Weights are constant within a prompt, so
        (A w)_i = Σ_p (Σ_{j in p} A_ij) ω_p: O(n·P·B) from the group sums, not O(n²·B)."""
        if (a, power) not in self._products:
            self._products[a, power] = self.group_sums[a].T @ self.power(power).T
        return self._products[a, power]

    def triple(self, a: str, b: str, powers: tuple[int, int, int]) -> torch.Tensor:
        """Σ over distinct i, j, q of w_i^p0 w_j^p1 w_q^p2 A_ij B_iq per replicate."""
        if (a, b, powers) not in self._triples:
            p0, p1, p2 = powers
            full = (self.weights(p0).T * self.product(a, p1) * self.product(b, p2)).sum(dim=0)
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
    cross = (t.weights(1).T * t.product(a, 1) * t.product(b, 1)).sum(dim=0)
    return (t.quadratic(a, b, 1, 1) - 2 * cross / n + t.quadratic(a, "", 1, 1) * t.quadratic(b, "", 1, 1) / n**2) / n**2


def linear_cka_replicates(x, y, groups, counts, debiased: bool = True) -> np.ndarray:
    """Linear CKA of each replicate; rows of ``x`` and ``y`` are aligned tokens, ``groups`` their prompts."""
    x, y = as_float64(x, "x"), as_float64(y, "y")
    y = y.to(x.device)
    check_rows(x, y, 4 if debiased else 2, "debiased linear CKA" if debiased else "linear CKA")
    return gram_cka_replicates(linear_gram(x), linear_gram(y), groups, counts, debiased)


def rbf_cka_replicates(x, y, counts, sigma_frac: float = 1.0, debiased: bool = False) -> np.ndarray:
    """RBF CKA of each replicate, one row per prompt; the bandwidths are those of the full data."""
    return rbf_cka_replicates_each(x, [y], counts, sigma_frac, debiased)[0]


def rbf_cka_replicates_each(x, ys, counts, sigma_frac: float = 1.0, debiased: bool = False) -> list[np.ndarray]:
    """`rbf_cka_replicates` of ``x`` against each of ``ys``, x's Gram matrix and terms computed once."""
    x = as_float64(x, "x")
    ys = [as_float64(y, "y").to(x.device) for y in ys]
    for y in ys:
        check_rows(x, y, 4 if debiased else 2, "RBF CKA")
    groups = np.arange(x.shape[0])
    grams = [rbf_gram(y, sigma_frac, "y") for y in ys]
    return gram_cka_replicates_each(rbf_gram(x, sigma_frac, "x"), grams, groups, counts, debiased)


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
    return mutual_knn_replicates_each(x, [y], counts, k)[0]


def mutual_knn_replicates_each(x, ys, counts, k: int = 10) -> list[np.ndarray]:
    """`mutual_knn_replicates` of ``x`` against each of ``ys``; x's neighbours in each replicate found once."""
    from pytest_analog.metrics.knn import mutual_knn_overlaps

    x = as_float64(x, "x")
    ys = [as_float64(y, "y").to(x.device) for y in ys]
    full = [float(mutual_knn_overlaps(x, y, k).mean()) for y in ys]  # also checks the rows and k
    x, ys = unit_rows(x, "x"), [unit_rows(y, "y") for y in ys]
    n = len(x)
    # each row's other rows, nearest first, once per model: a replicate's neighbours are the first k it drew
    orders = []
    for z in (x, *ys):
        sims = z @ z.T
        sims.fill_diagonal_(-torch.inf)
        orders.append(sims.argsort(dim=1, descending=True, stable=True)[:, :-1])  # [n, n - 1]: itself left out
    omega = torch.as_tensor(np.asarray(counts), dtype=torch.float64, device=x.device)  # [B, n]
    out = [[] for _ in ys]
    for block in omega.split(max(1, _KNN_ELEMENTS // (n * n))):  # replicates held at once
        drawn, b = block > 0, len(block)
        chosen = []  # [b, n, n - 1]: whether each row's r-th nearest is one of its k nearest drawn
        for order in orders:
            in_order = drawn[:, order]
            chosen.append(in_order & (in_order.cumsum(dim=2, dtype=torch.int32) <= k))
        in_x = torch.zeros(b, n, n, dtype=torch.bool, device=x.device).scatter_(2, orders[0].expand(b, -1, -1), chosen[0])
        for reps, order, in_y in zip(out, orders[1:], chosen[1:]):
            overlap = (in_x.gather(2, order.expand(b, -1, -1)) & in_y).sum(dim=2) / k  # [b, n]
            reps.append((block * overlap).sum(dim=1) / block.sum(dim=1))
    replicates = [torch.cat(reps).cpu().numpy() for reps in out]
    return [r + (value - r.mean()) for r, value in zip(replicates, full)]
