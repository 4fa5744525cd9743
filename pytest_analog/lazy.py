"""`Lazy`: a function or class named by "module:name" (``name`` may be dotted), imported on its first call.

Modules that pytest imports on every run (the plugin, the suites' definitions and
fixtures) name their heavy work this way, so that a pytest run that gates nothing
never imports torch, transformers or lm-eval.
"""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any


class Lazy:
    """Calls ``module:name`` (imported on the first call) with the arguments it is given."""

    def __init__(self, name: str):
        self.name = name
        self._target = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._target is None:
            module, _, attribute = self.name.partition(":")
            self._target = functools.reduce(getattr, attribute.split("."), importlib.import_module(module))
        return self._target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Lazy({self.name!r})"


def module_file(name: str) -> Path:
    """The file of the module ``name``: the imported one's, else where importing it would read (no import)."""
    module = sys.modules.get(name) or find_spec(name)
    return Path(getattr(module, "__file__", None) or module.origin).resolve()
