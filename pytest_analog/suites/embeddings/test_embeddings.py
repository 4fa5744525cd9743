"""Embedding suite: is the analog's token geometry the teacher's (Lee et al. 2025)?"""

import pytest


@pytest.mark.parametrize("metric", ["embedding_geometry", "unembedding_geometry"])
def test_geometry(metric, analog_measurements, fidelity_record):
    fidelity_record.configured(metric, analog_measurements.measured(metric))
