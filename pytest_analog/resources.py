"""Where the fixture data are (prompt sets, behaviours, corpus, benchmark tasks).

They ship inside the installed package (``pytest_analog/fixtures``), mapped from
the top-level ``fixtures/`` folder of the source tree. Python run from the root
of a checkout imports ``pytest_analog`` from the tree itself, where that folder
sits beside the package instead; that checkout's folder wins over that of
another (editable) install.
"""

from importlib.util import find_spec
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def shipped(name: str) -> Path:
    """The folder of ``pytest_analog.<name>`` (``fixtures``)."""
    if (_ROOT / "pyproject.toml").is_file() and (_ROOT / name / "__init__.py").is_file():
        return _ROOT / name  # imported from a checkout
    spec = find_spec(f"pytest_analog.{name}")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return _ROOT / name
