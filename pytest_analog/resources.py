"""Where the built-in suites and fixture data are.

They ship inside the installed package (``pytest_analog/suites``,
``pytest_analog/fixtures``), mapped from the top-level ``suites/`` and
``fixtures/`` folders of the source tree. Python run from the root of a
checkout imports ``pytest_analog`` from the tree itself, where those folders
sit beside the package instead; they win there even when another checkout is
installed in editable mode (whose import finder would map them to its own tree).
"""

from importlib.util import find_spec
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def shipped(name: str) -> Path:
    """The folder of ``pytest_analog.<name>`` (``suites`` or ``fixtures``)."""
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / name / "__init__.py").is_file():
        return _CHECKOUT / name
    spec = find_spec(f"pytest_analog.{name}")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return _CHECKOUT / name
