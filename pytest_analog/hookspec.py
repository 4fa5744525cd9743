"""The plugin's own pytest hook: how a conftest.py or another plugin adds suites."""

import pytest


@pytest.hookspec
def pytest_analog_suites():
    """Return a `pytest_analog.Suite` or a list of them to run beside the built-in suites.

    Implement it in a ``conftest.py`` (loaded before the run starts: the rootdir's or
    one beside the tests named on the command line) or in a plugin.
    """
