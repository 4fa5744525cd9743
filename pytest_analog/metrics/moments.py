"""Streamed float64 sums of paired rows (x_i, y_i): the one accumulator behind streaming CKA and the steering maps.

`PairedMoments` keeps n, the column sums and XᵀX, XᵀY (and, with ``norms``,
YᵀY and the squared-row-norm moments linear CKA needs) taken about a
reference point, the first batch's column means, so that large activation
means (1e2–1e3) cause no cancellation. `update` adds rows, `merge` adds
another accumulator's rows and `subtract` removes rows it holds, all exact up
to float64 rounding whatever the other's reference point; `compute` gives the
centred sums. Memory O(d²), independent of the number of rows.
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


class PairedMoments:
    """Streamed float64 sums of paired rows x [n, d_x], y [n, d_y]: n, Σx, Σy, XᵀX, XᵀY (see the module).

    Args:
        norms: also keep YᵀY and the squared-row-norm moments (what linear CKA needs).
        products: the dtype each batch's XᵀX, XᵀY (and YᵀY) are multiplied in, after its rows are shifted
            in float64. float32 takes about half the time for wide rows; each batch's products then carry
            float32 rounding (about 1e-7 relative to the batch's largest terms), while the shifts, norms
            and accumulators stay float64.

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
        self._n = 0
        self._widths: tuple[int, int] | None = None
        self._ref: tuple[torch.Tensor, torch.Tensor] | None = None  # reference point (x, y)
        self._stats: Stats | None = None

    @property
    def n(self) -> int:
        """Number of rows accumulated."""
        return self._n

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
        for a wide teacher) are the same for all of them.

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
            if moments._ref is None:
                moments._ref = (x.mean(0), y.mean(0))
            key = (moments._ref[0].device, moments._ref[0].cpu().numpy().tobytes(), moments._norms, moments._products)
            if key not in shared:
                shared[key] = _side(x, moments._ref[0], "x", moments._norms, moments._products)
            moments._add(batch_sums(x, y, *moments._ref, moments._norms, x_side=shared[key], products=moments._products), b)

    def _add(self, batch: Stats, b: int) -> None:
        if self._stats is None:
            self._stats = {key: value.clone() for key, value in batch.items()}  # x's part may be shared
        else:
            for key, value in batch.items():
                self._stats[key] += value
        self._n += b

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
        if isinstance(other, PairedMoments) and other._n > self._n:
            raise ValueError(f"cannot remove {other._n} rows from {self._n}")
        return self._combine(other, -1)

    def remove(self, x, y) -> PairedMoments:
        """Remove rows that were added before, given again; returns self. As `subtract` with an accumulator of
        just those rows, but their sums are taken about this one's reference point: O(b·d²), no change of frame.

        Raises:
            ValueError: bad shapes or values, other widths, or more rows than this accumulator holds.
        """
        if self._n == 0:
            raise ValueError("no rows accumulated yet: nothing to remove")
        x = as_float64(x, "x", device=self._ref[0].device)
        y, b = self._pair(x, y, "a removal")
        if b > self._n:
            raise ValueError(f"cannot remove {b} rows from {self._n}")
        if b:
            batch = batch_sums(x, y, *self._ref, self._norms, products=self._products)
            self._add({key: -value for key, value in batch.items()}, -b)
        return self

    def _combine(self, other: PairedMoments, sign: int) -> PairedMoments:
        if type(other) is not type(self) or other._norms != self._norms:
            raise TypeError(f"other must be a {type(self).__name__} of the same kind, got {type(other).__name__}")
        if other._widths is not None:
            self._check_widths(other._widths)
        if other._n == 0:
            return self
        if self._n == 0:
            self._ref = (other._ref[0].clone(), other._ref[1].clone())
            self._stats = {key: sign * value.clone() for key, value in other._stats.items()}
        else:
            device = self._ref[0].device
            stats = {key: value.to(device) for key, value in other._stats.items()}
            dx = self._ref[0] - other._ref[0].to(device)
            dy = self._ref[1] - other._ref[1].to(device)
            for key, value in shifted(stats, other._n, dx, dy).items():
                self._stats[key] += sign * value
        self._n += sign * other._n
        return self

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, Stats]:
        """(mean x, mean y, the sums in the centred frame), where Σx = Σy = 0: xx, xy are the centred XᵀX, XᵀY.

        Raises:
            ValueError: no rows yet.
        """
        if self._n == 0:
            raise ValueError("no rows accumulated yet: call update() first")
        mean_x, mean_y = self._stats["sx"] / self._n, self._stats["sy"] / self._n
        centred = shifted(self._stats, self._n, mean_x, mean_y)
        return self._ref[0] + mean_x, self._ref[1] + mean_y, centred
