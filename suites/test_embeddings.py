"""Embedding suite: is the analog's token geometry the teacher's (Lee et al. 2025)?"""

import pytest


@pytest.mark.parametrize("metric", ["embedding_geometry", "unembedding_geometry"])
def test_geometry(metric, analog_measurements, analog_config, fidelity_record):
    criterion = getattr(analog_config.criteria, metric)
    fidelity_record(
        metric,
        getattr(analog_measurements, metric),
        min=criterion.min,
        score=criterion.score,
        gate=criterion.gate,
        **analog_measurements.against_chance(metric),
        reason=analog_measurements.notes.get(metric),
    )
