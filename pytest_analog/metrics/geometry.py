"""Global geometry of token (un)embedding matrices (Lee et al. 2025, arXiv 2503.21073).

Two models that share a tokenizer can be compared row by row on their
embedding or lm_head matrices: if their pairwise cosine similarities over the
same token ids correlate, the analog kept the teacher's token geometry.
"""

from __future__ import annotations

import numpy as np
import torch

from pytest_analog.metrics._utils import as_float64, check_rows, nan_with_warning, self_product, unit_rows


def _pair_sums(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ over pairs i < j of (aᵢ·aⱼ)(bᵢ·bⱼ) for unit rows, via ‖aᵀb‖²_F = Σ over all i, j."""
    moments = self_product(a.T) if a is b else a.T @ b  # aᵀa is symmetric: its upper blocks suffice
    return (moments.square().sum() - a.shape[0]) / 2  # each diagonal term is 1·1


def embedding_geometry_pearson(e_t, e_s, max_rows: int | None = None, seed: int = 0) -> float:
    """Pearson r between the two models' pairwise cosine-similarity matrices.

    Row i of both matrices must belong to the same token id. The correlation
    is taken over the off-diagonal upper triangles, but no n×n matrix is
    formed: the needed sums come from d×d moments (e.g. Σ_{i<j} cᵢⱼ² =
    (‖ÊᵀÊ‖²_F − n)/2), so a full vocabulary (n ≈ 50k) costs O(n·d²) time and
    O(n·d + d²) memory, in float64.

    Args:
        e_t: teacher matrix [n, d_t] (embedding or lm_head rows).
        e_s: analog matrix [n, d_s] for the same token ids; d_s may differ.
        max_rows: if set and smaller than n, use this many rows drawn
            without replacement (the same rows in both).
        seed: seed of the numpy generator that draws the rows.

    Returns:
        Pearson r in [−1, 1].

    Raises:
        ValueError: bad shapes or values, all-zero rows, max_rows < 3.

    Warns:
        AnalogWarning: all similarities in one matrix are equal (r undefined; NaN).
    """
    e_t, e_s = as_float64(e_t, "e_t"), as_float64(e_s, "e_s")
    e_s = e_s.to(e_t.device)
    n = check_rows(e_t, e_s, 3, "embedding geometry Pearson r")
    if max_rows is not None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 3:
            raise ValueError(f"max_rows must be None or an integer >= 3, got {max_rows!r}")
        if max_rows < n:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
            index = torch.from_numpy(rows).to(e_t.device)
            e_t, e_s, n = e_t[index], e_s[index], max_rows
    a, b = unit_rows(e_t, "e_t"), unit_rows(e_s, "e_s")
    pairs = n * (n - 1) / 2
    sum_a = (a.sum(0).square().sum() - n) / 2  # Σ_{i<j} aᵢ·aⱼ
    sum_b = (b.sum(0).square().sum() - n) / 2
    cov = _pair_sums(a, b) - sum_a * sum_b / pairs
    var_a = _pair_sums(a, a) - sum_a**2 / pairs
    var_b = _pair_sums(b, b) - sum_b**2 / pairs
    if not (var_a > 0 and var_b > 0):
        return nan_with_warning("embedding geometry Pearson r is undefined: all cosine similarities are equal")
    return float(cov / (var_a * var_b).sqrt())
