"""Where the built-in suites and fixture data are.

They ship inside the installed package (``pytest_analog/suites``,
``pytest_analog/fixtures``), mapped from the top-level ``suites/`` and
``fixtures/`` folders of the source tree. Python run from the root of a
checkout imports ``pytest_analog`` from the tree itself, where those folders
sit beside the package instead.
"""

from importlib.util import find_spec
from pathlib import Path


def shipped(name: str) -> Path:
    """The folder of ``pytest_analog.<name>`` (``suites`` or ``fixtures``)."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name  # imported from a source tree: its own folders, not another install's
    spec = find_spec(f"pytest_analog.{name}")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / name
