"""Permutation nulls of similarity scores: p-values and calibrated scores (arXiv 2602.14486).

A random-init control says what an unrelated model of the analog's shape scores;
a permutation null says what the metric reads when the pairing of prompts
between the two models is broken, which is the inflation from width, depth and
(with ``agg="max"``) from searching over layers. Prompts are permuted as
blocks, never tokens: the tokens of one prompt are correlated, and permuting
them would make a null too narrow.

Every metric here is a normalised inner product of two centred Gram matrices
(linear and RBF CKA) or of two neighbour matrices (mutual kNN). A block
permutation of Y's rows only reindexes Y's matrix, so each Gram matrix, its
centring and its norm are computed once and each permutation costs one gather
and one inner product, never a rerun of the metric over the rows.

The threshold, p-value and calibrated score follow the authors' package
(`calibrated_similarity.calibrate`): the threshold is the ⌈(1 − α)(K + 1)⌉-th
smallest of the observed value and the K null values, the p-value
(1 + #{null ≥ observed}) / (K + 1), and the calibrated score
clip((observed − threshold) / (1 − threshold), 0, 1): 0 at the null's 1 − α
quantile, 1 for a perfect match (rounded to 12 digits).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pytest_analog.metrics.cka import center_gram_, linear_gram, rbf_gram

__all__ = [
    "block_orders",
    "block_rows",
    "calibrate",
    "gram_nulls",
    "knn_nulls",
    "normalised_gram",
]


def calibrate(observed: float, null, alpha: float = 0.05) -> dict[str, float | None]:
    """The calibrated score, add-one p-value and threshold of ``observed`` against ``null`` (K values).

    Returns:
        {"value", "threshold", "p_value", "calibrated", "permutations"}; a non-finite ``observed`` (a constant
        representation) gives None for the value and the three derived figures.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    null = np.asarray(null, dtype=np.float64)
    k = len(null)
    if k < 1:
        raise ValueError("a permutation null needs at least 1 permutation, got 0")
    record = {"value": None, "threshold": None, "p_value": None, "calibrated": None, "permutations": k}
    if not math.isfinite(observed):
        return record
    record["value"] = float(observed)
    combined = np.sort(np.append(null, observed))
    threshold = float(combined[min(max(math.ceil((1 - alpha) * (k + 1)) - 1, 0), k)])
    record["threshold"] = threshold
    record["p_value"] = float((1 + np.sum(null >= observed)) / (k + 1))
    # rounded to 12 digits: the float64 sums of n² products leave ~1e-15, and an identical pair must read 1
    record["calibrated"] = round(float(np.clip((observed - threshold) / max(1 - threshold, 1e-12), 0.0, 1.0)), 12)
    return record


def block_orders(n_blocks: int, permutations: int, seed: int) -> np.ndarray:
    """``permutations`` seeded random orders of ``n_blocks`` blocks (prompts) [K, n_blocks]."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_blocks) for _ in range(permutations)]) if permutations else np.zeros((0, n_blocks), int)


def block_rows(order: np.ndarray, size: int) -> np.ndarray:
    """The row permutation that moves consecutive blocks of ``size`` rows as the block ``order`` says."""
    return (np.asarray(order)[:, None] * size + np.arange(size)).reshape(-1)


def normalised_gram(x, kind: str = "linear", *, debiased: bool = True, sigma_frac: float = 1.0) -> torch.Tensor:
    """The centred (U-centred if ``debiased``) Gram matrix of ``x`` divided by its Frobenius norm, float64: the
    CKA of two representations is the inner product of theirs. A constant representation gives NaN entries."""
    gram = linear_gram(x) if kind == "linear" else rbf_gram(torch.as_tensor(x, dtype=torch.float64), sigma_frac, "x")
    gram = center_gram_(gram, debiased)
    return gram / gram.norm()


def gram_nulls(xs: list[torch.Tensor], ys: list[torch.Tensor], orders: np.ndarray, size: int = 1):
    """CKA of every X against every Y, observed and under each block permutation of Y's rows.

    Args:
        xs, ys: `normalised_gram` matrices [n, n] of the same n rows, n = blocks × ``size``, each block's rows
            consecutive.
        orders: block orders [K, blocks] (`block_orders`); one order moves every Y alike, so the maximum over Y
            layers of a permuted matrix is the null of a best-layer search (``agg="max"``).
        size: rows per block.

    Returns:
        (observed [len(xs), len(ys)], null [K, len(xs), len(ys)]) as float64 numpy arrays.
    """
    n = len(xs[0])
    x = np.stack([np.asarray(g, dtype=np.float64) for g in xs]).reshape(len(xs), -1)
    y = np.stack([np.asarray(g, dtype=np.float64) for g in ys]).reshape(len(ys), -1)
    observed = x @ y.T
    # the null in float32 (numpy: its gathers are far cheaper than torch's): a permuted inner product moves by
    # about 1e-7, far below the null's own spread; each permutation is one gather of every Y's flattened entries
    x, y = x.astype(np.float32), np.ascontiguousarray(y.astype(np.float32))
    null = np.empty((len(orders), len(xs), len(ys)))
    for k, order in enumerate(np.asarray(orders, dtype=np.int64)):
        rows = block_rows(order, size)
        null[k] = x @ np.take(y, (rows[:, None] * n + rows).ravel(), axis=1).T
    return observed, null


def _neighbour_matrix(z: torch.Tensor, k: int) -> torch.Tensor:
    """[n, n] float64 indicator of each row's k most cosine-similar other rows (ties: lower index first)."""
    z = torch.as_tensor(z, dtype=torch.float64)
    z = z / z.norm(dim=1, keepdim=True)
    sims = z @ z.T
    sims.fill_diagonal_(-torch.inf)
    index = torch.sort(-sims, dim=1, stable=True).indices[:, :k]
    return torch.zeros_like(sims).scatter_(1, index, 1.0)


def knn_nulls(x, y, orders: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Mutual kNN of ``x`` and ``y`` (one row per prompt), observed and with ``y``'s rows in each order [K]:
    permuting rows only relabels y's neighbour sets, so each permutation reads y's neighbour matrix at x's n·k
    neighbour pairs."""
    a, b = _neighbour_matrix(x, k).numpy(), _neighbour_matrix(y, k).numpy()
    n = len(a)
    observed = float((a * b).sum() / (n * k))
    rows, cols = np.nonzero(a)
    null = np.array([b[order[rows], order[cols]].sum() / (n * k) for order in np.asarray(orders, dtype=np.int64)])
    return observed, null
