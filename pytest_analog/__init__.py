"""pytest-analog: a fidelity gate for analog language models.

Importing this package is light: torch, transformers and lm-eval load only
when a model or a metric is used.
"""

from pytest_analog.versions import package_version

__version__ = package_version("pytest-analog") or "0.0.0"  # 0.0.0: a source tree that was never installed
