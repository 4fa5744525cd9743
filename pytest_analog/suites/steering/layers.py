"""Which layers the steering suite steers: the teacher's, and the analog layer paired with each."""

from __future__ import annotations

from pytest_analog.errors import AnalogError
from pytest_analog.layers import proportional_map


LAYER_RULES = {
    "best_match": "the analog block output (layer >= 1) with the highest CKA to the teacher layer; "
                  "the embedding output (layer 0) is never chosen",
    "proportional": "the analog block output (layer >= 1) at the same relative depth",
    "config": "named in steering.analog_layers",
}


def layer_rule(settings) -> str:
    """Which rule chose the analog layer of each steered teacher layer, in words."""
    mapping = settings.analog_layers
    return LAYER_RULES[mapping if isinstance(mapping, str) else "config"]


def steered_teacher_layers(settings, teacher_depth: int) -> list[int]:
    """The teacher layers steered, from ``steering.teacher_layers`` and the teacher's depth alone (never the analog)."""
    wanted = settings.teacher_layers
    teacher = [max(1, round(teacher_depth / 3))] if wanted == "auto" else sorted(set(wanted))
    bad = [i for i in teacher if not 0 <= i < teacher_depth]
    if bad:
        raise AnalogError(f"steering.teacher_layers lists {bad}, but the teacher's steerable layers are 0..{teacher_depth - 1}")
    return teacher


def steering_layers(settings, teacher_depth: int, analog_depth: int, *, best_match=None) -> dict[int, int]:
    """Teacher layer -> analog layer from the ``steering`` config (``best_match``: `layers.best_block_match` of the CKA matrix)."""
    teacher = steered_teacher_layers(settings, teacher_depth)
    mapping = settings.analog_layers
    if mapping == "best_match":
        if best_match is None:
            raise AnalogError("steering.analog_layers is best_match, but no CKA best match was measured")
        return {i: int(best_match[i]) for i in teacher}
    if mapping == "proportional":  # a block output, never the embedding output
        return proportional_map(teacher, teacher_depth, analog_depth, lowest=1)
    missing = [i for i in teacher if i not in mapping]
    if missing:
        raise AnalogError(f"steering.analog_layers has no analog layer for teacher layer(s) {missing}")
    bad = sorted({mapping[i] for i in teacher if not 0 <= mapping[i] <= analog_depth})
    if bad:
        raise AnalogError(f"steering.analog_layers points to analog layers {bad}, but the analog has layers 0..{analog_depth}")
    return {i: mapping[i] for i in teacher}
