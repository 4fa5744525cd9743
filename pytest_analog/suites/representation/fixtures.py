"""Fixtures of the representation suite, for its tests (and the embeddings and logits suites') and researchers' own."""

import pytest


@pytest.fixture(scope="session")
def analog_measurements(analog_session):
    """Every representation metric of the pair (`analog.Measurements`), measured once per session."""
    return analog_session.run("representation")
