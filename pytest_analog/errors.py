"""Errors and warnings raised by pytest-analog.

Every message is one line that names what was wrong, what was expected and
what to do about it; the plugin turns `AnalogError` into a `pytest.UsageError`.
"""


class AnalogError(Exception):
    """A problem with the user's input: a model path, a config value, a prompt set."""


class AnalogWarning(UserWarning):
    """Base class of every warning pytest-analog emits."""
