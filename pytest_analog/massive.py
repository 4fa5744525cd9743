"""Massive activations (Sun et al. 2024): the few rows whose teacher hidden state dwarfs the rest.

Rule: at a gated teacher layer, an aligned row is massive when its teacher norm
exceeds ``multiple`` x the median teacher row norm of that layer. A row massive
at any gated layer is one row set, left out (``positions.massive: exclude``) of
every token-level metric at every layer, for the analog and the control alike.

Streaming stays exact: the metrics accumulate every row, and the left-out rows'
contributions are subtracted at the end. For that `TopRows` keeps one float per
row and gated layer (the teacher norm, for the exact median) and the
activations of a bounded candidate set: at each gated layer the ``cap + m``
rows of largest teacher norm, m = ceil(0.1 % of the rows) and cap = max(8, m),
stored at every layer read. Massive rows are among them as long as they number
at most ``cap``; more than that are a feature of the layers, not a handful of
tokens, and are kept (the report says so). The influence figure leaves out, on
top, the m rows of largest teacher norm among those kept, which the candidates
also hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

INFLUENCE_FRACTION = 0.001  # the influence figure leaves out this fraction of rows, by teacher norm
FEW = 8  # massive rows are left out when they number at most max(FEW, 0.1 % of the rows)


@dataclass
class Found:
    """Rows found by `TopRows.finish`, as capture-order row indices."""

    massive: dict[int, np.ndarray]  # gated layer -> its massive rows
    rows: np.ndarray  # the union over gated layers, sorted
    excluded: bool  # whether `rows` are left out of the token-level metrics
    medians: dict[int, float]  # gated layer -> median teacher row norm
    influence: dict[int, np.ndarray]  # gated layer -> the m largest-norm rows among those kept
    note: str | None = None  # why massive rows were kept although `exclude` was asked for


class TopRows:
    """The teacher row norms of every gated layer and the activations of the rows that may be left out.

    Args:
        layers: gated teacher layers.
        n_rows: aligned rows the capture will yield.
        fraction: the influence fraction (m = ceil(fraction x n_rows), at least 1).
    """

    def __init__(self, layers, n_rows: int, fraction: float = INFLUENCE_FRACTION):
        self.layers = list(layers)
        self.m = max(1, math.ceil(fraction * n_rows))
        self.cap = max(FEW, self.m)  # the most massive rows that are left out
        self.norms = {i: np.zeros(n_rows) for i in self.layers}
        self._top = {i: np.zeros(0, dtype=np.int64) for i in self.layers}
        self._kept: dict[int, dict] = {}  # row -> {key: activation row}

    def update(self, row_start: int, norms: dict[int, np.ndarray], gather) -> None:
        """Add one batch: ``norms`` per gated layer [b]; ``gather(local rows)`` -> {key: [k, d]} of those rows."""
        b = len(next(iter(norms.values())))
        new = np.arange(row_start, row_start + b)
        for i in self.layers:
            self.norms[i][new] = norms[i]
            candidates = np.concatenate([self._top[i], new])
            keep = min(self.cap + self.m, len(candidates))
            self._top[i] = candidates[np.argpartition(-self.norms[i][candidates], keep - 1)[:keep]]
        wanted = set(np.concatenate(list(self._top.values())).tolist())
        self._kept = {r: v for r, v in self._kept.items() if r in wanted}
        local = np.asarray(sorted(r - row_start for r in wanted if r >= row_start), dtype=np.int64)
        if len(local):
            rows = gather(torch.from_numpy(local))
            for k, r in enumerate(local + row_start):
                self._kept[int(r)] = {key: value[k] for key, value in rows.items()}

    def stacked(self, rows, key) -> torch.Tensor:
        """The stored activations of ``rows`` (capture order) under ``key``, [len(rows), d]."""
        return torch.stack([self._kept[int(r)][key] for r in rows])

    def finish(self, multiple: float, exclude: bool) -> Found:
        """Apply the rule to the exact medians; with ``exclude``, also choose each layer's influence rows."""
        medians = {i: float(np.median(self.norms[i])) for i in self.layers}
        massive = {i: np.flatnonzero(self.norms[i] > multiple * medians[i]) for i in self.layers}
        rows = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *massive.values()]))
        note = None
        if exclude and len(rows) > self.cap:
            note = (f"{len(rows)} rows exceed {multiple:g} x the median norm, more than {self.cap}: "
                    "a feature of the layers rather than a few tokens, so they are kept")
            exclude = False
        dropped = rows if exclude else np.zeros(0, dtype=np.int64)
        influence = {}
        for i in self.layers:
            top = self._top[i][~np.isin(self._top[i], dropped)]
            influence[i] = np.sort(top[np.argsort(-self.norms[i][top], kind="stable")[: self.m]])
        return Found(massive, rows, exclude, medians, influence, note)
