"""Centred kernel alignment (Kornblith et al. 2019) between two representations.

Linear CKA is computed in feature space from d×d moments, so it streams over
any number of rows with memory independent of n; the debiased form uses the
unbiased HSIC estimator of Song et al. (2012), which those moments also
determine exactly. RBF CKA needs the n×n Gram matrices.
"""

from __future__ import annotations

import math

import torch

from pytest_analog.metrics._utils import as_float64, check_rows, nan_with_warning, self_product, warn_if_inflated
from pytest_analog.metrics.moments import PairedMoments, Stats, batch_sums, shifted


def _hsic_u(ab: torch.Tensor, ra, rb, rab, n: int) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012) from centred-frame statistics.

    With centred data and K̃ the Gram matrix with zeroed diagonal, K̃1 = −r, so
    1ᵀK̃1 = −Σr, 1ᵀK̃L̃1 = Σr_a r_b and Tr(K̃L̃) = ‖AᵀB‖²_F − Σr_a r_b.
    """
    trace = ab.square().sum() - rab
    return (trace + ra * rb / ((n - 1) * (n - 2)) - 2 * rab / (n - 2)) / (n * (n - 3))


def _linear_cka_compute(s: Stats, n: int, debiased: bool, stacklevel: int) -> float:
    """Linear CKA from the statistics of n rows, evaluated in the centred frame.

    `stacklevel` counts from this function to the user's frame, for warnings.
    """
    d = max(s["sx"].numel(), s["sy"].numel())
    if debiased and n < 4:
        raise ValueError(f"debiased linear CKA needs at least 4 rows, got {n}")
    if not debiased:
        if n < 2:
            raise ValueError(f"linear CKA needs at least 2 rows, got {n}")
        warn_if_inflated(n, d, "linear CKA", stacklevel=stacklevel + 1)
    c = shifted(s, n, s["sx"] / n, s["sy"] / n)  # the centred frame: column sums vanish
    if debiased:
        num = _hsic_u(c["xy"], c["rx"], c["ry"], c["rxy"], n)
        hsic_xx = _hsic_u(c["xx"], c["rx"], c["rx"], c["rxx"], n)
        den2 = hsic_xx * _hsic_u(c["yy"], c["ry"], c["ry"], c["ryy"], n)
    else:
        num = c["xy"].square().sum()
        den2 = c["xx"].square().sum() * c["yy"].square().sum()
    if not den2 > 0:
        return nan_with_warning("linear CKA is undefined: x or y has no variance", stacklevel=stacklevel + 1)
    return float(num / den2.sqrt())


def linear_cka(x, y, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same n examples.

    CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred data; with
    ``debiased=True`` the HSIC terms use the unbiased estimator, which removes
    the upward bias of the plain form when n is not ≫ d. Time O(n·d²),
    memory O(n·d + d²), all in float64.

    The unbiased estimator assumes independent rows. Tokens of one prompt are
    not: over the tokens of P prompts (20 each), two unrelated representations
    scored on average 0.7/P, 2.5/P and 4.2/P with 20 %, 38 % and 50 % of the
    variance at prompt level (pairs of tokens from one prompt read as
    agreement; benchmarks/bench_coverage.py). Token-level CKA over few prompts
    is biased upward accordingly; `bootstrap.cka_interval` (the gate's interval) takes
    the bias out of its interval.

    Args:
        x: array or tensor [n, d_x].
        y: array or tensor [n, d_y]; the width may differ from x.
        debiased: use the unbiased HSIC estimator (needs n ≥ 4).

    Returns:
        CKA in [0, 1] (the debiased value can be slightly negative).

    Raises:
        ValueError: inputs are not 2-D, have different row counts, too few
            rows or non-finite values.

    Warns:
        AnalogWarning: biased form with n < 10·max(d_x, d_y), or constant input.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(1000, 8))
        >>> round(linear_cka(x, 2 * x + 1), 6)
        1.0
    """
    x, y = as_float64(x, "x"), as_float64(y, "y")
    y = y.to(x.device)
    n = check_rows(x, y, 4 if debiased else 2, "debiased linear CKA" if debiased else "linear CKA")
    stats = batch_sums(x, y, x.mean(0), y.mean(0), norms=True)
    return _linear_cka_compute(stats, n, debiased, stacklevel=3)


class StreamingLinearCKA(PairedMoments):
    """Exact linear CKA accumulated over batches of rows.

    The `PairedMoments` of the rows with their norm moments (XᵀX, YᵀY, XᵀY,
    column sums, squared row norms and their moments; float64, on the device
    of the first input, about the first batch's column means), so `update`,
    `update_each`, `merge` and `subtract` are those of any paired sums; both
    the biased and the debiased value equal `linear_cka` on all rows to about
    1e-12; with ``products=torch.float32`` (each batch's cross moments
    multiplied in float32 after the float64 shift: half the time for wide
    rows; the accumulators stay float64) to about 1e-8. Massive rows are kept
    apart from the sums (`PairedMoments`), so they neither round the float32
    products nor cancel the float64 sums when `remove` takes them out.

    Memory: d_x² + d_y² + d_x·d_y + O(d) floats, independent of the number of
    rows, and at most 8 MB of massive rows kept apart. Time: `update` is O(b·d²) for a batch of b rows; `merge` and
    `compute` are O(d²).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(1000, 8))
        >>> m = StreamingLinearCKA()
        >>> m.update(x[:300], x[:300] @ np.eye(8)[::-1])
        >>> m.update(x[300:], x[300:] @ np.eye(8)[::-1])
        >>> round(m.compute(debiased=True), 6)
        1.0
    """

    higher_is_better = True

    def __init__(self, products: torch.dtype = torch.float64) -> None:
        super().__init__(norms=True, products=products)

    def _changed(self) -> None:
        self._cache: dict[bool, float] = {}

    def compute(self, debiased: bool = False) -> float:
        """Linear CKA over all rows seen.

        Args:
            debiased: use the unbiased HSIC estimator (needs n ≥ 4).

        Returns:
            CKA as a float; NaN (with a warning) before any update.

        Raises:
            ValueError: too few rows for the requested form.

        Warns:
            AnalogWarning: no update yet, biased form with n < 10·d, or constant input.
        """
        if self.n == 0:
            return nan_with_warning("StreamingLinearCKA.compute() called before any update(); returning NaN")
        if debiased not in self._cache:
            self._cache[debiased] = _linear_cka_compute(PairedMoments.compute(self)[2], self.n, debiased, stacklevel=3)
        elif not debiased:
            warn_if_inflated(self.n, max(self._widths), "linear CKA")
        return self._cache[debiased]


def linear_gram(x, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The Gram matrix of column-centred rows (centring for precision; CKA does not depend on it), centred in
    float64 and multiplied in ``dtype`` (float32: half the time, for bootstrap replicates, which are moved
    onto the exact estimate; about 1e-7 relative rounding per entry)."""
    x = as_float64(x, "x")
    return self_product((x - x.mean(dim=0)).to(dtype))



def center_gram_(k: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Centre a Gram matrix in place: HKH, or U-centring (Song et al. 2012) if debiased."""
    n = k.shape[0]
    if debiased:
        k.fill_diagonal_(0)
        total = k.sum()
        rows, cols = k.sum(1) / (n - 2), k.sum(0) / (n - 2)
        k.sub_(rows[:, None]).sub_(cols[None, :]).add_(total / ((n - 1) * (n - 2)))
        k.fill_diagonal_(0)
    else:
        rows, cols = k.mean(1), k.mean(0)
        k.sub_(rows[:, None]).sub_(cols[None, :]).add_(rows.mean())
    return k


def _median(values: torch.Tensor) -> torch.Tensor:
    """Median of a 1-D tensor, averaging the two middle values for even length."""
    m = values.numel()
    upper = torch.kthvalue(values, m // 2 + 1).values
    return upper if m % 2 else (upper + torch.kthvalue(values, m // 2).values) / 2


def rbf_gram(x: torch.Tensor, sigma_frac: float, name: str) -> torch.Tensor:
    """Gaussian-kernel Gram matrix [n, n] with the median-distance bandwidth."""
    n = x.shape[0]
    gram = linear_gram(x)  # centred rows keep ‖x_i‖² + ‖x_j‖² − 2x_i·x_j accurate
    norms = gram.diagonal()
    sq = (norms[:, None] + norms[None, :]).sub_(gram, alpha=2).clamp_(min=0).fill_diagonal_(0)
    # off-diagonal entries without a mask: drop the first element, rows of n+1 start on a diagonal
    off_diagonal = sq.flatten()[1:].view(n - 1, n + 1)[:, :n].sqrt()
    sigma = sigma_frac * _median(off_diagonal.flatten())
    del off_diagonal
    if not sigma > 0:
        raise ValueError(f"RBF CKA: the median pairwise distance of {name} is 0 (mostly duplicate rows)")
    return sq.div_(-2 * sigma**2).exp_()


def _gram_cka(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> float:  # noqa: E741
    """Normalised inner product of the centred Gram matrices (centres both in place)."""
    k, l = center_gram_(k, debiased), center_gram_(l, debiased)  # noqa: E741
    den2 = (k * k).sum() * (l * l).sum()
    if not den2 > 0:
        return nan_with_warning("CKA is undefined: x or y has no variance", stacklevel=4)
    return float((k * l).sum() / den2.sqrt())


def rbf_cka(x, y, sigma_frac: float = 1.0, debiased: bool = False) -> float:
    """CKA with a Gaussian kernel, bandwidth from the median heuristic (Kornblith et al. 2019).

    Each representation gets its own bandwidth σ = sigma_frac × the median of
    its pairwise Euclidean distances (i < j). Memory O(n²): two n×n float64
    Gram matrices plus one temporary (n = 4096 → about 400 MB). Time O(n²·d).

    Args:
        x: array or tensor [n, d_x].
        y: array or tensor [n, d_y].
        sigma_frac: bandwidth as a fraction of the median distance, > 0.
        debiased: U-centre the Gram matrices (unbiased HSIC; needs n ≥ 4).

    Returns:
        RBF CKA as a float.

    Raises:
        ValueError: bad shapes or values, sigma_frac ≤ 0, or a zero median distance.
    """
    if not (isinstance(sigma_frac, (int, float)) and math.isfinite(sigma_frac) and sigma_frac > 0):
        raise ValueError(f"sigma_frac must be a finite number > 0, got {sigma_frac!r}")
    x, y = as_float64(x, "x"), as_float64(y, "y")
    y = y.to(x.device)
    check_rows(x, y, 4 if debiased else 2, "debiased RBF CKA" if debiased else "RBF CKA")
    return _gram_cka(rbf_gram(x, sigma_frac, "x"), rbf_gram(y, sigma_frac, "y"), debiased)
