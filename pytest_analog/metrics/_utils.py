"""Input checks shared by the metrics: numpy or torch in, float64 torch out.

Every metric accepts numpy arrays and torch tensors of any real dtype; the
math runs in float64 on the input's device so that half-precision
activations with large means lose no digits.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from pytest_analog.errors import AnalogWarning


def as_float64(x, name: str, device: torch.device | None = None, *, check_finite: bool = True) -> torch.Tensor:
    """Convert `x` to a finite 2-D float64 tensor [n, d].

    Args:
        x: numpy array, torch tensor or nested sequence of numbers.
        name: argument name used in error messages.
        device: target device; defaults to the input's own (CPU for numpy).
        check_finite: False where the caller checks finiteness itself, more cheaply.

    Returns:
        A float64 tensor; a fresh copy unless `x` already was float64 on `device`.

    Raises:
        ValueError: not 2-D, or non-finite values.
    """
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions [n, d], got shape {tuple(t.shape)}")
    t = t.detach().to(device=device if device is not None else t.device, dtype=torch.float64)
    if check_finite and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):  # a finite sum: all finite
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def self_product(x: torch.Tensor, blocks: int | None = None) -> torch.Tensor:
    """x xᵀ from its row blocks on and above the diagonal, the others mirrored (x xᵀ is symmetric):
    (blocks + 1) / (2 blocks) of the multiplications of one product. By default one block per 192 rows,
    at most 8: smaller blocks cost more in calls than they save (one product below 384 rows); rows
    narrower than 256 are one product, as writing the n² entries then costs more than the multiplications."""
    n = x.shape[0]
    blocks = blocks or (min(8, max(1, n // 192)) if x.shape[1] >= 256 else 1)
    out = torch.empty(n, n, dtype=x.dtype, device=x.device)
    edges = [n * b // blocks for b in range(blocks + 1)]
    for a in range(blocks):
        for b in range(a, blocks):
            rows, cols = slice(edges[a], edges[a + 1]), slice(edges[b], edges[b + 1])
            torch.mm(x[rows], x[cols].T, out=out[rows, cols])
            if b != a:
                out[cols, rows] = out[rows, cols].T
    return out


def check_rows(x: torch.Tensor, y: torch.Tensor, minimum: int, why: str) -> int:
    """Check that `x` and `y` have the same number of rows, at least `minimum`.

    Args:
        x: first representation, shape [n, d_x].
        y: second representation, shape [n, d_y].
        minimum: smallest allowed n.
        why: what needs `minimum` rows, for the error message.

    Returns:
        The common number of rows n.

    Raises:
        ValueError: row counts differ or are below `minimum`.
    """
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(
            f"x and y must have the same number of rows (one per example), got {n} and {y.shape[0]}"
        )
    if n < minimum:
        raise ValueError(f"{why} needs at least {minimum} rows, got {n}")
    return n


def warn_if_inflated(n: int, d: int, what: str, stacklevel: int = 3) -> None:
    """Warn that biased CKA is inflated when n < 10·d.

    Args:
        n: number of rows.
        d: the larger of the two widths.
        what: name of the metric, for the message.
        stacklevel: passed to `warnings.warn`, counted from this function.
    """
    if n < 10 * d:
        warnings.warn(
            f"{what} (biased) with n={n} rows < 10·d={10 * d}: the value is inflated "
            f"(about d/(n+d)={d / (n + d):.2f} for unrelated data); "
            "use debiased=True or more rows",
            AnalogWarning,
            stacklevel=stacklevel,
        )


def nan_with_warning(message: str, stacklevel: int = 3) -> float:
    """Warn with `message` and return NaN, for degenerate (e.g. constant) inputs.

    Args:
        message: why the value is undefined.
        stacklevel: passed to `warnings.warn`, counted from this function.

    Returns:
        float('nan').
    """
    warnings.warn(message, AnalogWarning, stacklevel=stacklevel)
    return float("nan")


def unit_rows(z: torch.Tensor, name: str) -> torch.Tensor:
    """L2-normalise the rows of `z`, for cosine similarities.

    Args:
        z: float tensor of shape [n, d].
        name: argument name used in error messages.

    Returns:
        A new tensor whose rows have unit norm.

    Raises:
        ValueError: some row is all zeros, so its cosine similarity is undefined.
    """
    norms = torch.linalg.vector_norm(z, dim=1)
    zero = torch.nonzero(norms == 0).flatten()
    if zero.numel():
        raise ValueError(
            f"{name} has {zero.numel()} all-zero rows (first: row {int(zero[0])}); "
            "cosine similarity is undefined for them, drop those rows"
        )
    return z / norms[:, None]
