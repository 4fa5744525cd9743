"""Steering on the real SmolLM2-135M-Instruct: a shipped behaviour set whose native vector clearly moves the teacher."""

import pytest

from pytest_analog.models import load_model
from pytest_analog.steering import (
    dose_response,
    extract,
    load_behaviour,
    random_direction,
)

pytestmark = pytest.mark.slow


def test_native_sentiment_vector_moves_the_behaviour_well_beyond_an_equal_norm_random_vector(smollm2_gguf):
    model = load_model(str(smollm2_gguf), device="cpu", dtype="float32")
    behaviour = load_behaviour("sentiment")
    train, items = behaviour.train[:24], behaviour.eval[:12]
    layer = 10  # the suite's default: a third of the depth
    vector = extract(model, [i.positive for i in train], [i.negative for i in train], layer)
    curve = dose_response(model, items, layer, {"native": vector, "random": random_direction(576, 0)}, [-0.1, 0.0, 0.1])
    down, _, up = curve["effect"]["native"]
    random = max(abs(e) for e in curve["effect"]["random"])
    assert up > 0.1 and down < -0.1, curve["effect"]  # both directions, by a clear margin
    assert random < 0.5 * min(up, -down), curve["effect"]  # an equal-norm random direction moves it far less
