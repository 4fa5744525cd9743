"""Mutual k-nearest-neighbour alignment (Huh et al. 2024, Platonic Representation Hypothesis).

Asks whether the two models put the same examples next to each other; it
ignores the global shape that CKA measures, so the two complement each other.
"""

from __future__ import annotations

import torch

from pytest_analog.metrics._utils import as_float64, check_rows, unit_rows

# similarity entries held at once per representation (32 MB of float64)
_CHUNK_ELEMENTS = 1 << 22


def _neighbours(z: torch.Tensor, start: int, stop: int, k: int) -> torch.Tensor:
    """Indices [stop − start, k] of the k most cosine-similar rows to rows start..stop, self excluded; ties
    go to the earlier row, as in the bootstrap replicates (a stable sort, not `topk`, whose order of ties
    is unspecified), so the value does not depend on row order beyond that."""
    sims = z[start:stop] @ z.T  # [c, n]; rows of z have unit norm
    rows = torch.arange(stop - start, device=z.device)
    sims[rows, rows + start] = -torch.inf
    return sims.argsort(dim=1, descending=True, stable=True)[:, :k]


def check_k(k, n: int) -> None:
    """Raise ValueError unless k is an integer with 1 <= k < n (neighbours among the n - 1 other rows)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k must be an integer with 1 <= k < n = {n}, got {k!r}")


def mutual_knn(x, y, k: int = 10) -> float:
    return float(mutual_knn_overlaps(x, y, k).mean())


def mutual_knn_overlaps(x, y, k: int = 10):
    """Mean fraction of shared k nearest neighbours between two representations.

    Rows are L2-normalised and neighbours ranked by cosine similarity, each
    row excluding itself; the score is the mean over rows of
    |N_x(i) ∩ N_y(i)| / k. Independent data scores about k/(n − 1); any
    rotated or rescaled copy scores 1. Similarities are computed in row
    chunks, so memory is O(n·d + n·min(n, 4M/n)) rather than O(n²);
    time O(n²·d).

    Args:
        x: array or tensor [n, d_x].
        y: array or tensor [n, d_y]; the width may differ from x.
        k: number of neighbours, 1 ≤ k < n (the paper uses 10).

    Returns:
        `mutual_knn`: the score in [0, 1]; `mutual_knn_overlaps`: the
        per-row overlaps |N_x(i) ∩ N_y(i)| / k as a numpy array [n], whose
        mean is the score.

    Raises:
        ValueError: bad shapes or values, all-zero rows, or k out of range.
    """
    x, y = as_float64(x, "x"), as_float64(y, "y")
    y = y.to(x.device)
    n = check_rows(x, y, 2, "mutual kNN")
    check_k(k, n)
    x, y = unit_rows(x, "x"), unit_rows(y, "y")
    chunk = max(1, _CHUNK_ELEMENTS // n)
    shared = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        in_x = torch.zeros(stop - start, n, dtype=torch.bool, device=x.device)
        in_x.scatter_(1, _neighbours(x, start, stop, k), True)
        shared.append(in_x.gather(1, _neighbours(y, start, stop, k)).sum(dim=1).cpu())
    return torch.cat(shared).double().numpy() / k
