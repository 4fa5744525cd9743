"""Layer-by-layer CKA heatmaps: which analog layer matches each teacher layer.

The Gram form is used because every layer pair shares one token sample: each
layer's centred Gram matrix is built once and every entry of the matrix is
then a single inner product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pytest_analog.metrics._utils import as_float64, nan_with_warning, warn_if_inflated
from pytest_analog.metrics.cka import center_gram_, linear_gram


def cka_matrix(xs: Sequence, ys: Sequence, debiased: bool = True, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Linear CKA between every layer in `xs` and every layer in `ys`.

    All layers hold the same n examples as rows. The centred Gram matrices of
    all `ys` are kept and the `xs` are streamed past them (each converted to
    float64 in its turn), so memory is about (len(ys) + 2)·n² float64
    (n = 4096, 31 layers: about 4.4 GB) and time
    O((len(xs) + len(ys))·n²·d + len(xs)·len(ys)·n²).

    Args:
        xs: sequence of arrays or tensors [n, d_i] (e.g. teacher layers).
        ys: sequence of arrays or tensors [n, d_j] (e.g. analog layers).
        debiased: U-centre the Gram matrices (unbiased HSIC; needs n ≥ 4).
        dtype: what the Gram matrices are multiplied in (`linear_gram`); float32
            takes about half the time, each entry then within about 1e-6 of
            the float64 value.

    Returns:
        Array [len(xs), len(ys)] of CKA values; entry (i, j) equals
        ``linear_cka(xs[i], ys[j], debiased)``.

    Raises:
        ValueError: empty layer lists, bad shapes or values, differing row counts.

    Warns:
        AnalogWarning: biased form with n < 10·d, or a constant layer (its row/column is NaN).
    """
    if not len(xs) or not len(ys):
        raise ValueError(f"xs and ys must each hold at least one layer, got {len(xs)} and {len(ys)}")
    shapes = {name: [tuple(np.shape(z)) for z in layers] for name, layers in (("xs", xs), ("ys", ys))}
    n = shapes["xs"][0][0] if shapes["xs"][0] else 0
    for name, layer_shapes in shapes.items():
        for i, shape in enumerate(layer_shapes):
            if len(shape) != 2:
                raise ValueError(f"{name}[{i}] must have 2 dimensions [n, d], got shape {shape}")
            if shape[0] != n:
                raise ValueError(f"every layer must have the same rows: xs[0] has {n}, {name}[{i}] has {shape[0]}")
    minimum = 4 if debiased else 2
    if n < minimum:
        raise ValueError(f"{'debiased ' if debiased else ''}CKA needs at least {minimum} rows, got {n}")
    if not debiased:
        warn_if_inflated(n, max(shape[1] for shape in shapes["xs"] + shapes["ys"]), "CKA matrix")

    device = xs[0].device if isinstance(xs[0], torch.Tensor) else None

    def centred_gram(z, name):
        return center_gram_(linear_gram(as_float64(z, name, device=device), dtype).double(), debiased).flatten()

    grams_y = torch.stack([centred_gram(y, f"ys[{j}]") for j, y in enumerate(ys)])
    norms_y = torch.linalg.vector_norm(grams_y, dim=1)  # [len(ys)]
    out = np.empty((len(xs), len(ys)))
    for i, x in enumerate(xs):
        gram_x = centred_gram(x, f"xs[{i}]")
        out[i] = (grams_y @ gram_x / (torch.linalg.vector_norm(gram_x) * norms_y)).cpu().numpy()
    if not np.isfinite(out).all():
        nan_with_warning("CKA matrix has NaN entries: some layers have no variance")
    return out


def best_match(matrix) -> np.ndarray:
    """For each teacher layer (row), the index of the best-matching analog layer (column).

    Args:
        matrix: array [n_teacher, n_analog], e.g. from `cka_matrix`; NaNs are skipped.

    Returns:
        Integer array [n_teacher] of column indices.

    Raises:
        ValueError: not a non-empty 2-D matrix, or a row that is all NaN.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] == 0:
        raise ValueError(f"matrix must be 2-D with at least one column, got shape {m.shape}")
    all_nan = np.flatnonzero(np.isnan(m).all(axis=1))
    if all_nan.size:
        raise ValueError(f"matrix rows {all_nan.tolist()} are all NaN; no best match exists")
    return np.nanargmax(m, axis=1)
