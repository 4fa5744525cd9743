"""pytest-analog: a fidelity gate for analog language models.

Importing this package is light: torch, transformers and lm-eval load only
when a model or a metric is used.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-analog")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
