"""Streamed float64 sums of paired rows (x_i, y_i): the one accumulator behind streaming CKA and the steering maps.

`PairedMoments` keeps n, the column sums and XᵀX, XᵀY (and, with ``norms``,
YᵀY and the squared-row-norm moments linear CKA needs) taken about a
reference point, the first batch's column means, so that large activation
means (1e2–1e3) cause no cancellation. `update` adds rows, `merge` adds
another accumulator's rows and `subtract` removes rows it holds, all exact up
to float64 rounding whatever the other's reference point; `compute` gives the
centred sums. Memory O(d²), independent of the number of rows, plus the few
rows far from the rest (massive activations), which are kept as rows so that
removing them is exact (`PairedMoments`).
"""

from __future__ import annotations

import torch

from pytest_analog.metrics._utils import as_float64, check_rows, self_product

Stats = dict[str, torch.Tensor]


def _side(z: torch.Tensor, shift: torch.Tensor, name: str, norms: bool, products: torch.dtype = torch.float64):
    """One side's rows about its reference point (shifting first keeps the moments free of cancellation):
    (those rows, the same in ``products``, the dtype the cross moments are multiplied in, their squared
    norms, the sums of that side alone, keyed as in `batch_sums` with ``name`` ('x' or 'y') for the side);
    without ``norms``, only x keeps its cross moment."""
    z = z - shift  # [b, d]
    zp = z.to(products)
    sums = {f"s{name}": z.sum(0)}
    if not norms:
        return z, zp, None, sums | ({"xx": self_product(zp.T).double()} if name == "x" else {})
    r = z.square().sum(1)  # [b]
    return z, zp, r, sums | {name * 2: self_product(zp.T).double(), f"{name}r{name}": z.T @ r, f"r{name}": r.sum(),
                             f"r{name}{name}": r @ r}


def batch_sums(x: torch.Tensor, y: torch.Tensor, shift_x, shift_y, norms: bool, x_side=None,
               products: torch.dtype = torch.float64) -> Stats:
    """The sums of one batch, taken about the reference point (shift_x, shift_y).

    Keys: sx, sy column sums; xx, xy cross moments XᵀX, XᵀY; with ``norms``
    also yy = YᵀY and, with r_x = ‖x_i‖² and r_y = ‖y_i‖²: xrx = Xᵀr_x,
    xry = Xᵀr_y, yrx = Yᵀr_x, yry = Yᵀr_y, rx = Σr_x, ry = Σr_y, rxx = Σr_x²,
    ryy = Σr_y², rxy = Σr_x r_y. ``x_side``: `_side` of x about shift_x, when
    already computed for another y. ``products``: the dtype XᵀX, XᵀY and YᵀY
    are multiplied in (everything else is float64).
    """
    x, xp, rx, x_sums = x_side if x_side is not None else _side(x, shift_x, "x", norms, products)
    y, yp, ry, y_sums = _side(y, shift_y, "y", norms, products)
    cross = {"xy": (xp.T @ yp).double()}
    if norms:
        cross |= {"xry": x.T @ ry, "yrx": y.T @ rx, "rxy": rx @ ry}
    return x_sums | y_sums | cross


def _shifted_r(n: int, sa: torch.Tensor, ra: torch.Tensor, da: torch.Tensor) -> torch.Tensor:
    """Σ‖a_i − da‖² from Σ‖a_i‖² and the column sum sa."""
    return ra - 2 * (da @ sa) + n * (da @ da)


def _shift_pair(n, sa, sb, ab, a_rb, b_ra, ra, rb, rab, da, db):
    """Re-express the cross sums of sides A and B after a → a − da, b − db.

    Args are n, the column sums sa, sb, AᵀB, Aᵀr_B, Bᵀr_A, Σr_A, Σr_B, Σr_A r_B
    and the shifts; returns the new (AᵀB, Aᵀr_B, Bᵀr_A, Σr_A r_B). Used for the
    xx, yy and xy sides alike.
    """
    da2, db2 = da @ da, db @ db
    ra_new, rb_new = _shifted_r(n, sa, ra, da), _shifted_r(n, sb, rb, db)
    ab_db = ab @ db
    ab_new = _shifted_cross(n, sa, sb, ab, da, db)
    a_rb_new = a_rb - 2 * ab_db + db2 * sa - da * rb_new
    b_ra_new = b_ra - 2 * (da @ ab) + da2 * sb - db * ra_new
    rab_new = (
        rab - 2 * (db @ b_ra) + db2 * ra - 2 * (da @ a_rb) + 4 * (da @ ab_db)
        - 2 * db2 * (da @ sa) + da2 * rb - 2 * da2 * (db @ sb) + n * da2 * db2
    )  # fmt: skip
    return ab_new, a_rb_new, b_ra_new, rab_new


def _shifted_cross(n, sa, sb, ab, da, db):
    """AᵀB after a → a − da, b − db."""
    return ab - torch.outer(sa, db) - torch.outer(da, sb) + n * torch.outer(da, db)


def shifted(s: Stats, n: int, dx: torch.Tensor, dy: torch.Tensor) -> Stats:
    """Re-express all sums in the frame x → x − dx, y → y − dy (exact, O(d²))."""
    shift = {"x": dx, "y": dy}
    out = {"sx": s["sx"] - n * dx, "sy": s["sy"] - n * dy}
    norms = "rx" in s
    if norms:
        out["rx"], out["ry"] = _shifted_r(n, s["sx"], s["rx"], dx), _shifted_r(n, s["sy"], s["ry"], dy)
    for a, b in ("xx", "yy", "xy") if norms else ("xx", "xy"):  # key names: see batch_sums
        if not norms:
            out[a + b] = _shifted_cross(n, s[f"s{a}"], s[f"s{b}"], s[a + b], shift[a], shift[b])
            continue
        out[a + b], out[f"{a}r{b}"], out[f"{b}r{a}"], out[f"r{a}{b}"] = _shift_pair(
            n, s[f"s{a}"], s[f"s{b}"], s[a + b], s[f"{a}r{b}"], s[f"{b}r{a}"],
            s[f"r{a}"], s[f"r{b}"], s[f"r{a}{b}"], shift[a], shift[b],
        )  # fmt: skip
    return out


# A row whose distance from the reference point exceeds this multiple of its batch's median distance (in x or
# in y) is kept as a row, not in the sums: see `PairedMoments`.
OUTLIER_MULTIPLE = 10.0
OUTLIER_MIN_BATCH = 32  # smaller batches have no robust median: all their rows go into the sums
_STORE_ELEMENTS = 1 << 20  # floats of kept rows per accumulator (8 MB); beyond, the oldest are folded into the sums


class PairedMoments:
    """Streamed float64 sums of paired rows x [n, d_x], y [n, d_y]: n, Σx, Σy, XᵀX, XᵀY (see the module).

    Rows far from the rest (distance from the reference point above
    `OUTLIER_MULTIPLE` times their batch's median, in x or y; massive
    activations) are kept as rows beside the sums, up to 8 MB of them, and
    enter only at `compute`, taken about the final mean. Inside the sums such a
    row would dominate: multiplied in float32 inside its batch its rounding
    could not be taken out again, and subtracting its fourth moments (Σ‖x‖⁴,
    about 1e24 for a row 100x the median norm of rows offset by 500) cancels
    every digit of the other rows'. Kept apart, `remove` of it is exact.

    Args:
        norms: also keep YᵀY and the squared-row-norm moments (what linear CKA needs).
        products: the dtype each batch's XᵀX, XᵀY (and YᵀY) are multiplied in, after its rows are shifted
            in float64. float32 takes about half the time for wide rows; each batch's products then carry
            float32 rounding (about 1e-7 relative to the batch's largest terms, at most 100x its median
            squared distance), while the shifts, norms and accumulators stay float64.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(100, 3)) + 500
        >>> m = PairedMoments()
        >>> m.update(x[:40], 2 * x[:40])
        >>> m.update(x[40:], 2 * x[40:])
        >>> mean_x, mean_y, centred = m.compute()
        >>> bool(torch.allclose(centred["xy"], 2 * centred["xx"]))
        True
    """

    def __init__(self, norms: bool = False, products: torch.dtype = torch.float64) -> None:
        self._norms, self._products = norms, products
        self.reset()

    def reset(self) -> None:
        """Forget all rows seen so far."""
        self._n = 0  # rows in the sums
        self._widths: tuple[int, int] | None = None
        self._ref: tuple[torch.Tensor, torch.Tensor] | None = None  # reference point (x, y)
        self._stats: Stats | None = None
        self._kept: tuple[torch.Tensor, torch.Tensor] | None = None  # rows kept apart (x [m, d_x], y [m, d_y])
        self._changed()

    def _changed(self) -> None:
        """Called after every change of the rows held (subclasses drop their caches)."""

    @property
    def n(self) -> int:
        """Number of rows accumulated."""
        return self._n + self._n_kept

    @property
    def _n_kept(self) -> int:
        return 0 if self._kept is None else len(self._kept[0])

    def _pair(self, x: torch.Tensor, y, why: str) -> tuple[torch.Tensor, int]:
        """(y as float64 on x's device, the row count), checked against x (a checked float64 tensor) and the
        widths so far: the checks `update_each` and `remove` share."""
        y = as_float64(y, "y", device=x.device)
        b = check_rows(x, y, 0, why)
        self._check_widths((x.shape[1], y.shape[1]))
        return y, b

    def _check_widths(self, widths: tuple[int, int]) -> None:
        if self._widths is None:
            self._widths = widths
        elif widths != self._widths:
            raise ValueError(f"widths (d_x, d_y) must stay {self._widths} across updates, got {widths}")

    def update(self, x, y) -> None:
        """Add a batch of rows.

        Args:
            x: array or tensor [b, d_x].
            y: array or tensor [b, d_y] for the same b examples.

        Raises:
            ValueError: bad shapes, non-finite values, or widths that differ
                from earlier updates.
        """
        PairedMoments.update_each([self], x, [y])

    @staticmethod
    def update_each(accumulators: list[PairedMoments], x, ys) -> None:
        """`update` each of ``accumulators`` with the rows (x, its entry of ``ys``), x's own sums computed once.

        For one representation compared with several (a teacher layer with the
        analog and the chance control): accumulators that saw the same x rows
        so far share x's reference point, so x's sums (XᵀX, the most costly
        for a wide teacher) are the same for all of them that keep the same
        rows of the batch apart (a massive teacher row is kept apart by all).

        Raises:
            ValueError: as `update`, or ``ys`` not one per accumulator.
        """
        if len(accumulators) != len(ys):
            raise ValueError(f"one y per accumulator: got {len(accumulators)} accumulators and {len(ys)} ys")
        x_checked = as_float64(x, "x")
        shared = {}  # (x's reference point, norms) -> its `_side`
        for moments, y in zip(accumulators, ys):
            x = x_checked.to(moments._ref[0].device) if moments._ref is not None else x_checked
            y, b = moments._pair(x, y, "an update")
            if b == 0:
                continue
            far = _far(x, y, moments._ref)
            if moments._ref is None:
                moments._ref = (x[~far].mean(0), y[~far].mean(0))
            if far.any():
                moments._keep(x[far], y[far])
                x, y = x[~far], y[~far]
                if not len(x):
                    continue
            # x's sums depend on its reference point and on which rows were kept apart (far in x, the same for
            # every accumulator, or in this y): accumulators that agree on both share them
            key = (moments._ref[0].device, moments._ref[0].cpu().numpy().tobytes(), moments._norms, moments._products,
                   far.cpu().numpy().tobytes())
            if key not in shared:
                shared[key] = _side(x, moments._ref[0], "x", moments._norms, moments._products)
            moments._add(batch_sums(x, y, *moments._ref, moments._norms, x_side=shared[key], products=moments._products), len(x))

    def _add(self, batch: Stats, b: int) -> None:
        if self._stats is None:
            self._stats = {key: value.clone() for key, value in batch.items()}  # x's part may be shared
        else:
            for key, value in batch.items():
                self._stats[key] += value
        self._n += b
        self._changed()

    def _keep(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Keep rows apart; past `_STORE_ELEMENTS`, fold the oldest into the sums (in float64)."""
        self._kept = (x, y) if self._kept is None else (torch.cat([self._kept[0], x]), torch.cat([self._kept[1], y]))
        excess = self._n_kept - max(1, _STORE_ELEMENTS // sum(self._widths))
        if excess > 0:
            (fx, kx), (fy, ky) = (side.split([excess, len(side) - excess]) for side in self._kept)
            self._kept = (kx, ky)
            self._add(batch_sums(fx, fy, *self._ref, self._norms), excess)
        self._changed()

    def merge(self, other: PairedMoments) -> PairedMoments:
        """Add the rows accumulated by ``other`` (exact, whatever its reference point); returns self.

        Raises:
            TypeError: ``other`` is not of this accumulator's type and kind.
            ValueError: the widths differ.
        """
        return self._combine(other, 1)

    def subtract(self, other: PairedMoments) -> PairedMoments:
        """Remove rows that were added to this accumulator and also to ``other``; returns self.

        Raises:
            TypeError: ``other`` is not of this accumulator's type and kind.
            ValueError: the widths differ, or ``other`` holds more rows than this one.
        """
        if isinstance(other, PairedMoments) and other.n > self.n:
            raise ValueError(f"cannot remove {other.n} rows from {self.n}")
        return self._combine(other, -1)

    def remove(self, x, y) -> PairedMoments:
        """Remove rows that were added before, given again; returns self. Rows kept apart (see the class) are
        dropped exactly; the others' sums are taken about this one's reference point in float64: O(b·d²).

        Raises:
            ValueError: bad shapes or values, other widths, or more rows than this accumulator holds.
        """
        if self.n == 0:
            raise ValueError("no rows accumulated yet: nothing to remove")
        x = as_float64(x, "x", device=self._ref[0].device)
        y, b = self._pair(x, y, "a removal")
        if b > self.n:
            raise ValueError(f"cannot remove {b} rows from {self.n}")
        x, y = self._drop_kept(x, y)
        if len(x):
            batch = batch_sums(x, y, *self._ref, self._norms)
            self._add({key: -value for key, value in batch.items()}, -len(x))
        return self

    def _drop_kept(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop the kept rows equal to rows of (x, y), one each; return the rows of (x, y) not found there."""
        if self._kept is None or not len(x):
            return x, y
        kx, ky = self._kept
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        left = torch.ones(len(kx), dtype=torch.bool, device=kx.device)
        same = (x[:, None, :] == kx[None]).all(-1) & (y[:, None, :] == ky[None]).all(-1)  # [b, m]
        for i, j in same.nonzero().tolist():
            if not found[i] and left[j]:
                found[i], left[j] = True, False
        self._kept = (kx[left], ky[left])
        self._changed()
        return x[~found], y[~found]

    def _combine(self, other: PairedMoments, sign: int) -> PairedMoments:
        if type(other) is not type(self) or other._norms != self._norms:
            raise TypeError(f"other must be a {type(self).__name__} of the same kind, got {type(other).__name__}")
        if other._widths is not None:
            self._check_widths(other._widths)
        if other.n == 0:
            return self
        if sign > 0 and other._kept is not None:
            self._kept = tuple(side.clone() for side in other._kept) if self._kept is None else (
                torch.cat([self._kept[0], other._kept[0].to(self._kept[0].device)]),
                torch.cat([self._kept[1], other._kept[1].to(self._kept[1].device)]))
        if other._n:
            if self._ref is None:
                self._ref = (other._ref[0].clone(), other._ref[1].clone())
            if self._stats is None:
                self._stats = {key: sign * value.clone() for key, value in other._stats.items()}
            else:
                device = self._ref[0].device
                stats = {key: value.to(device) for key, value in other._stats.items()}
                dx = self._ref[0] - other._ref[0].to(device)
                dy = self._ref[1] - other._ref[1].to(device)
                for key, value in shifted(stats, other._n, dx, dy).items():
                    self._stats[key] += sign * value
            self._n += sign * other._n
        elif self._ref is None:
            self._ref = (other._ref[0].clone(), other._ref[1].clone())
        if sign < 0 and other._kept is not None:
            x, y = self._drop_kept(*(side.to(self._ref[0].device) for side in other._kept))
            if len(x):  # folded here, or added in a smaller batch: taken out of the sums
                batch = batch_sums(x, y, *self._ref, self._norms)
                self._add({key: -value for key, value in batch.items()}, -len(x))
        self._changed()
        return self

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, Stats]:
        """(mean x, mean y, the sums in the centred frame), where Σx = Σy = 0: xx, xy are the centred XᵀX, XᵀY.

        The kept rows' sums are taken about the mean of every row and added to the others' there.

        Raises:
            ValueError: no rows yet.
        """
        if self.n == 0:
            raise ValueError("no rows accumulated yet: call update() first")
        kx, ky = self._kept if self._kept is not None else (None, None)
        sx = self._stats["sx"] if self._n else 0
        sy = self._stats["sy"] if self._n else 0
        if self._n_kept:
            sx, sy = sx + (kx - self._ref[0]).sum(0), sy + (ky - self._ref[1]).sum(0)
        mean_x, mean_y = self._ref[0] + sx / self.n, self._ref[1] + sy / self.n
        centred = shifted(self._stats, self._n, mean_x - self._ref[0], mean_y - self._ref[1]) if self._n else None
        if self._n_kept:
            kept = batch_sums(kx, ky, mean_x, mean_y, self._norms)
            centred = kept if centred is None else {key: value + kept[key] for key, value in centred.items()}
        return mean_x, mean_y, centred


def _far(x: torch.Tensor, y: torch.Tensor, ref) -> torch.Tensor:
    """[b] rows whose distance from the reference point (else the batch's coordinate-wise median) exceeds
    `OUTLIER_MULTIPLE` times the batch's median distance, in x or in y; none in a batch of fewer than
    `OUTLIER_MIN_BATCH` rows."""
    far = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    if len(x) < OUTLIER_MIN_BATCH:
        return far
    for side, z in enumerate((x, y)):
        centre = z.median(dim=0).values if ref is None else ref[side]
        distance = (z - centre).norm(dim=1)
        far |= distance > OUTLIER_MULTIPLE * distance.median()
    return far
