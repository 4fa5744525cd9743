"""Which layers are compared: the gated teacher layers and the analog layer matched to each.

Layer i is ``hidden_states[i]`` (`LAYER_CONVENTION`). A model with L blocks has
layers 0..L. Two models of different depths are matched at the same relative
depth (`same_depth`) or, from a measured CKA matrix, at the analog block output
most similar to each teacher layer (`best_block_match`).
"""

from __future__ import annotations

import numpy as np

from pytest_analog.errors import AnalogError
from pytest_analog.lazy import Lazy

# the metrics import torch; the plugin imports this module on every run
best_match = Lazy("pytest_analog.metrics:best_match")

LAYER_CONVENTION = "layer i = hidden_states[i]: 0 is the embedding output, i >= 1 the output of block i-1"


def same_depth(layer: int, depth: int, other_depth: int) -> int:
    """The layer of a model ``other_depth`` blocks deep at the relative depth of ``layer`` in one ``depth`` deep.

    Python's ``round``: a tie goes to the even layer (round(0.5) == 0, round(1.5) == 2).
    """
    return round(layer * other_depth / depth)


def proportional_map(layers, depth: int, other_depth: int, *, lowest: int = 0) -> dict[int, int]:
    """Each of ``layers`` -> `same_depth` layer in the other model, never below ``lowest``."""
    return {i: max(lowest, same_depth(i, depth, other_depth)) for i in layers}


def gated_layers(config, num_layers: int) -> list[int]:
    """The teacher layers with one criterion each, checked against the model's depth."""
    wanted = config.layers.teacher
    if wanted == "all":
        return list(range(num_layers + 1))
    if isinstance(wanted, int):  # that many layers, evenly spaced from the embedding output to the last
        return sorted({int(i) for i in np.round(np.linspace(0, num_layers, min(wanted, num_layers + 1)))})
    bad = [i for i in wanted if not 0 <= i <= num_layers]
    if bad:
        raise AnalogError(f"layers.teacher lists {bad}, but the teacher has layers 0..{num_layers} ({LAYER_CONVENTION})")
    return sorted(set(wanted))


def layer_map(config, teacher_layers: list[int], teacher_depth: int, analog_depth: int) -> dict[int, int]:
    """The analog layer compared with each gated teacher layer."""
    mapping = config.layers.map
    if mapping == "proportional":
        return proportional_map(teacher_layers, teacher_depth, analog_depth)
    missing = [i for i in teacher_layers if i not in mapping]
    if missing:
        raise AnalogError(f"layers.map has no analog layer for teacher layer(s) {missing}; add them or use 'proportional'")
    bad = {i: j for i, j in mapping.items() if not 0 <= j <= analog_depth}
    if bad:
        raise AnalogError(f"layers.map points to analog layers {sorted(set(bad.values()))}, but the analog has layers 0..{analog_depth}")
    return {i: mapping[i] for i in teacher_layers}


def best_block_match(cka_matrix) -> list[int]:
    """Per teacher layer, the analog layer >= 1 of highest CKA: a vector is never read off the embedding output,
    whose only content is the token identity."""
    matrix = np.nan_to_num(np.asarray(cka_matrix, dtype=np.float64), nan=-np.inf)
    return [int(j) + 1 for j in best_match(matrix[:, 1:])]
