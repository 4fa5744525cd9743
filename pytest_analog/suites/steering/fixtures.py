"""Fixtures of the steering suite: its cases, and ``steering_vector`` / ``steering_map`` for researchers' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_analog.errors import AnalogError
from pytest_analog.layers import best_block_match
from pytest_analog.lazy import Lazy
from pytest_analog.prompts import load_prompts
from pytest_analog.suites.steering import load_behaviour
from pytest_analog.suites.steering.layers import steering_layers
from pytest_analog.suites.steering.names import map_name, native_name

extract = Lazy("pytest_analog.steering.vectors:extract")
fit_maps, MapStates = Lazy("pytest_analog.steering.transfer:fit_maps"), Lazy("pytest_analog.steering.transfer:MapStates")


def steering_cases(session) -> list[tuple[str, int]]:
    """(behaviour, teacher layer) pairs of the steering suite; empty without models."""
    if not session.depths:
        return []
    s = session.analog_config.steering
    layers = steering_layers(s, *session.depths, best_match=[0] * (session.depths[0] + 1))  # checked before collection
    return [(Path(b).stem, i) for b in s.behaviours for i in layers]


@pytest.fixture(scope="session")
def steering_vector(analog_session):
    """``steering_vector(behaviour, layer, model="teacher")``: a steering vector [d] (float64), extracted once.

    ``behaviour`` is a shipped set name or a .jsonl path; ``layer`` is hidden_states[layer];
    ``model`` is "teacher" or "analog". Settings come from the config's ``steering`` section.
    """
    def vector(behaviour: str, layer: int, model: str = "teacher"):
        return analog_session.once(("steering vector", behaviour, layer, model), lambda: _vector(analog_session, behaviour, layer, model))

    return vector


@pytest.fixture(scope="session")
def steering_map(analog_session):
    """``steering_map(teacher_layer, analog_layer=None, kind=None)``: a fitted map from analog to teacher activations.

    Fitted once per arguments on the prompt set; ``analog_layer`` defaults to the CKA best match,
    ``kind`` to ``steering.map`` (ridge, procrustes or autoencoder). Call it on [n, d_analog] activations.
    """
    def fitted(teacher_layer: int, analog_layer: int | None = None, kind: str | None = None):
        if analog_layer is None:
            analog_layer = best_block_match(analog_session.run("representation").cka_matrix)[teacher_layer]
        kind = kind or analog_session.analog_config.steering.map
        return analog_session.once(("steering map", teacher_layer, analog_layer, kind),
                                   lambda: _map(analog_session, teacher_layer, analog_layer, kind))

    return fitted


def _vector(session, behaviour: str, layer: int, model: str):
    session.require()
    if model not in ("teacher", "analog"):
        raise AnalogError(f"steering_vector model must be 'teacher' or 'analog', got {model!r}")
    s = session.analog_config.steering
    loaded_behaviour = session.guarded(load_behaviour, behaviour)
    if model == "teacher" and not session.teacher_half.live:  # a teacher reference: its stored native vector
        tensors = session.part("steering").tensors
        name = native_name(loaded_behaviour.name, layer)
        if name not in tensors:
            _lacks(f"native vector of {loaded_behaviour.name!r} at teacher layer {layer}", "steering.behaviours and steering.teacher_layers")
        return tensors[name]
    loaded = session.analog_model() if model == "analog" else session.pair().teacher
    items = loaded_behaviour.train[: s.train_items]
    return session.guarded(
        extract, loaded, [i.positive for i in items], [i.negative for i in items], layer,
        position=s.position, method=s.method, batch_size=s.batch_size,
    )


def _map(session, teacher_layer: int, analog_layer: int, kind: str):
    session.require()
    s = session.analog_config.steering
    prompts = session.guarded(load_prompts, session.analog_config.prompts.set, s.map_prompts)
    teacher = None
    if not session.teacher_half.live:  # a teacher reference: its stored activations on the map prompts
        part = session.part("steering")
        if map_name(teacher_layer) not in part.tensors:
            _lacks(f"teacher activations at layer {teacher_layer} for steering maps", "steering.teacher_layers")
        teacher = MapStates({teacher_layer: part.tensors[map_name(teacher_layer)]}, part.meta["map_lengths"])
    fitted = session.guarded(
        fit_maps, session.pair_for("steering"), prompts.texts, [(teacher_layer, analog_layer)], kinds=(kind,), ridge=s.ridge,
        steps=s.autoencoder_steps, seed=s.seed, max_length=s.max_length, batch_size=s.batch_size, teacher=teacher,
    )
    return fitted[(teacher_layer, analog_layer)]["maps"][kind]


def _lacks(what: str, settings: str) -> None:
    """A fixture asks a teacher reference for what it does not hold: one line naming it."""
    raise AnalogError(f"the teacher reference's steering part holds no {what}; build the reference with {settings} including it")
