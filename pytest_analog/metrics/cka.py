"""Centred kernel alignment (Kornblith et al. 2019) between two representations.

Linear CKA is computed in feature space from d×d moments, so it streams over
any number of rows with memory independent of n; the debiased form uses the
unbiased HSIC estimator of Song et al. (2012), which those moments also
determine exactly. RBF CKA needs the n×n Gram matrices.
"""

from __future__ import annotations

import math

import torch

from pytest_analog.metrics._utils import as_float64, check_rows, nan_with_warning, warn_if_inflated

Stats = dict[str, torch.Tensor]


def _side(z: torch.Tensor, shift: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, Stats]:
    """One side's rows about its reference point (shifting first keeps the moments free of cancellation),
    their squared norms and the statistics of that side alone, keyed as in `_linear_cka_update` with
    ``name`` ('x' or 'y') for the side."""
    z = z - shift  # [b, d]
    r = z.square().sum(1)  # [b]
    return z, r, {f"s{name}": z.sum(0), name * 2: z.T @ z, f"{name}r{name}": z.T @ r, f"r{name}": r.sum(), f"r{name}{name}": r @ r}


def _linear_cka_update(x: torch.Tensor, y: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor, x_side=None) -> Stats:
    """Sufficient statistics of one batch, taken about the reference point (shift_x, shift_y).

    Keys: sx, sy column sums; xx, yy, xy cross moments XᵀX, YᵀY, XᵀY; with
    r_x = ‖x_i‖² and r_y = ‖y_i‖²: xrx = Xᵀr_x, xry = Xᵀr_y, yrx = Yᵀr_x,
    yry = Yᵀr_y, rx = Σr_x, ry = Σr_y, rxx = Σr_x², ryy = Σr_y², rxy = Σr_x r_y.
    ``x_side``: `_side` of x about shift_x, when already computed for another y.
    """
    x, rx, x_stats = x_side if x_side is not None else _side(x, shift_x, "x")
    y, ry, y_stats = _side(y, shift_y, "y")
    return x_stats | y_stats | {"xy": x.T @ y, "xry": x.T @ ry, "yrx": y.T @ rx, "rxy": rx @ ry}


def _shifted_r(n: int, sa: torch.Tensor, ra: torch.Tensor, da: torch.Tensor) -> torch.Tensor:
    """Σ‖a_i − da‖² from Σ‖a_i‖² and the column sum sa."""
    return ra - 2 * (da @ sa) + n * (da @ da)


def _shift_pair(n, sa, sb, ab, a_rb, b_ra, ra, rb, rab, da, db):
    """Re-express the cross statistics of sides A and B after a → a − da, b − db.

    Args are n, the column sums sa, sb, AᵀB, Aᵀr_B, Bᵀr_A, Σr_A, Σr_B, Σr_A r_B
    and the shifts; returns the new (AᵀB, Aᵀr_B, Bᵀr_A, Σr_A r_B). Used for the
    xx, yy and xy sides alike.
    """
    da2, db2 = da @ da, db @ db
    ra_new, rb_new = _shifted_r(n, sa, ra, da), _shifted_r(n, sb, rb, db)
    ab_db = ab @ db
    ab_new = ab - torch.outer(sa, db) - torch.outer(da, sb) + n * torch.outer(da, db)
    a_rb_new = a_rb - 2 * ab_db + db2 * sa - da * rb_new
    b_ra_new = b_ra - 2 * (da @ ab) + da2 * sb - db * ra_new
    rab_new = (
        rab - 2 * (db @ b_ra) + db2 * ra - 2 * (da @ a_rb) + 4 * (da @ ab_db)
        - 2 * db2 * (da @ sa) + da2 * rb - 2 * da2 * (db @ sb) + n * da2 * db2
    )  # fmt: skip
    return ab_new, a_rb_new, b_ra_new, rab_new


def _shift(s: Stats, n: int, dx: torch.Tensor, dy: torch.Tensor) -> Stats:
    """Re-express all statistics in the frame x → x − dx, y → y − dy (exact, O(d²))."""
    shift = {"x": dx, "y": dy}
    out = {
        "sx": s["sx"] - n * dx,
        "sy": s["sy"] - n * dy,
        "rx": _shifted_r(n, s["sx"], s["rx"], dx),
        "ry": _shifted_r(n, s["sy"], s["ry"], dy),
    }
    for a, b in ("xx", "yy", "xy"):  # key names: see _linear_cka_update
        out[a + b], out[f"{a}r{b}"], out[f"{b}r{a}"], out[f"r{a}{b}"] = _shift_pair(
            n, s[f"s{a}"], s[f"s{b}"], s[a + b], s[f"{a}r{b}"], s[f"{b}r{a}"],
            s[f"r{a}"], s[f"r{b}"], s[f"r{a}{b}"], shift[a], shift[b],
        )  # fmt: skip
    return out


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
    c = _shift(s, n, s["sx"] / n, s["sy"] / n)  # the centred frame: column sums vanish
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
    not: over the tokens of P prompts, two models that share nothing but an
    offset per prompt score above 0, about 1/P when the offsets are moderate
    and more when they dominate the tokens (pairs of tokens from one prompt
    read as agreement). Token-level CKA over few prompts is biased upward
    accordingly (`criteria.cka.min_prompts` in the config).

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
    stats = _linear_cka_update(x, y, x.mean(0), y.mean(0))
    return _linear_cka_compute(stats, n, debiased, stacklevel=3)


class StreamingLinearCKA:
    """Exact linear CKA accumulated over batches of rows.

    Keeps float64 sufficient statistics (XᵀX, YᵀY, XᵀY, column sums, squared
    row norms and their moments) on the device of the first input, taken
    about the first batch's column means so that large activation means
    (1e2–1e3) cause no cancellation. Both the biased and the debiased value
    equal `linear_cka` on all rows to about 1e-12.

    Memory: d_x² + d_y² + d_x·d_y + O(d) floats, independent of the number of
    rows. Time: `update` is O(b·d²) for a batch of b rows; `merge` and
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

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all rows seen so far."""
        self._n = 0
        self._widths: tuple[int, int] | None = None
        self._ref: tuple[torch.Tensor, torch.Tensor] | None = None  # reference shift (x, y)
        self._stats: Stats | None = None
        self._cache: dict[bool, float] = {}

    @property
    def n(self) -> int:
        """Number of rows accumulated."""
        return self._n

    def _check_widths(self, widths: tuple[int, int]) -> None:
        if self._widths is None:
            self._widths = widths
        elif widths != self._widths:
            raise ValueError(
                f"widths (d_x, d_y) must stay {self._widths} across updates, got {widths}"
            )

    def update(self, x, y) -> None:
        """Add a batch of rows.

        Args:
            x: array or tensor [b, d_x].
            y: array or tensor [b, d_y] for the same b examples.

        Raises:
            ValueError: bad shapes, non-finite values, or widths that differ
                from earlier updates.
        """
        StreamingLinearCKA.update_each([self], x, [y])

    @staticmethod
    def update_each(streams: list[StreamingLinearCKA], x, ys) -> None:
        """`update` each of ``streams`` with the rows (x, its entry of ``ys``), x's own sums computed once.

        For one representation compared with several (a teacher layer with the
        analog and the chance control): the streams that saw the same x rows so
        far share x's reference point, so its statistics (XᵀX, the most costly
        for a wide teacher) are the same for all of them.

        Raises:
            ValueError: as `update`, or ``ys`` not one per stream.
        """
        if len(streams) != len(ys):
            raise ValueError(f"one y per stream: got {len(streams)} streams and {len(ys)} ys")
        x_checked = as_float64(x, "x")
        shared = {}  # x's reference point (device, bytes) -> its `_side`
        for stream, y in zip(streams, ys):
            x = x_checked.to(stream._ref[0].device) if stream._ref is not None else x_checked
            y = as_float64(y, "y", device=x.device)
            b = check_rows(x, y, 0, "an update")
            stream._check_widths((x.shape[1], y.shape[1]))
            if b == 0:
                continue
            if stream._ref is None:
                stream._ref = (x.mean(0), y.mean(0))
            key = (stream._ref[0].device, stream._ref[0].cpu().numpy().tobytes())
            if key not in shared:
                shared[key] = _side(x, stream._ref[0], "x")
            stream._add(_linear_cka_update(x, y, *stream._ref, x_side=shared[key]), b)

    def _add(self, batch: Stats, b: int) -> None:
        if self._stats is None:
            self._stats = {key: value.clone() for key, value in batch.items()}  # x's part may be shared
        else:
            for key, value in batch.items():
                self._stats[key] += value
        self._n += b
        self._cache.clear()

    def merge(self, other: StreamingLinearCKA) -> None:
        """Add the rows accumulated by `other` (exact, whatever its reference shift).

        Args:
            other: another StreamingLinearCKA with the same widths.

        Raises:
            TypeError: `other` is not a StreamingLinearCKA.
            ValueError: the widths differ.
        """
        self._combine(other, 1)

    def subtract(self, other: StreamingLinearCKA) -> None:
        """Remove rows that were added to this metric and also to `other` (exact up to float64 rounding).

        Args:
            other: a StreamingLinearCKA that accumulated some of this one's rows.

        Raises:
            TypeError: `other` is not a StreamingLinearCKA.
            ValueError: the widths differ, or `other` holds more rows than this one.
        """
        if isinstance(other, StreamingLinearCKA) and other._n > self._n:
            raise ValueError(f"cannot remove {other._n} rows from {self._n}")
        self._combine(other, -1)

    def _combine(self, other: StreamingLinearCKA, sign: int) -> None:
        if not isinstance(other, StreamingLinearCKA):
            raise TypeError(f"other must be a StreamingLinearCKA, got {type(other).__name__}")
        if other._widths is not None:
            self._check_widths(other._widths)
        if other._n == 0:
            return
        if self._n == 0:
            self._ref = (other._ref[0].clone(), other._ref[1].clone())
            self._stats = {key: value.clone() for key, value in other._stats.items()}
        else:
            device = self._ref[0].device
            stats = {key: value.to(device) for key, value in other._stats.items()}
            dx = self._ref[0] - other._ref[0].to(device)
            dy = self._ref[1] - other._ref[1].to(device)
            for key, value in _shift(stats, other._n, dx, dy).items():
                self._stats[key] += sign * value
        self._n += sign * other._n
        self._cache.clear()

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
        if self._n == 0:
            return nan_with_warning("StreamingLinearCKA.compute() called before any update(); returning NaN")
        if debiased not in self._cache:
            self._cache[debiased] = _linear_cka_compute(self._stats, self._n, debiased, stacklevel=3)
        elif not debiased:
            warn_if_inflated(self._n, max(self._widths), "linear CKA")
        return self._cache[debiased]


def linear_gram(x) -> torch.Tensor:
    """The float64 Gram matrix of column-centred rows (centring for precision; CKA does not depend on it)."""
    x = as_float64(x, "x")
    x = x - x.mean(dim=0)
    return x @ x.T


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


def _rbf_gram(x: torch.Tensor, sigma_frac: float, name: str) -> torch.Tensor:
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
    return _gram_cka(_rbf_gram(x, sigma_frac, "x"), _rbf_gram(y, sigma_frac, "y"), debiased)
