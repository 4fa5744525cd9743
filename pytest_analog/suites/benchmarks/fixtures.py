"""Fixtures of the benchmarks suite, for its tests and researchers' own."""

import pytest

from pytest_analog.plugin import session_key
from pytest_analog.suites.benchmarks import tasks


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``benchmark_task`` runs once per lm-eval task of the benchmarks suite."""
    if "benchmark_task" in metafunc.fixturenames:
        session = metafunc.config.stash[session_key]
        names = tasks(session).names if session.depths else []
        metafunc.parametrize("benchmark_task", names, ids=names)


@pytest.fixture(scope="session")
def analog_benchmarks(analog_session):
    """Per-task lm-eval scores of both models and their paired deltas (plain dicts), run once per session."""
    return analog_session.run("benchmarks")
