"""The suites a run knows: the built-in ones, those of installed packages, those of conftest files.

Built-in suites are the packages named in `BUILT_IN` (``pytest_analog.suites.<name>``,
each exposing ``SUITE``). An installed package adds suites through the entry point
group ``pytest_analog.suites`` (an object that is a `Suite` or a sequence of them);
a ``conftest.py`` or plugin returns them from the ``pytest_analog_suites`` hook
(`hookspec`). Everything that needs a suite's parts asks this module.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import Iterable

from pytest_analog.errors import AnalogError
from pytest_analog.facts import Metric
from pytest_analog.runs import Run
from pytest_analog.suite import Suite

# The built-in suites, in report order: one line each.
BUILT_IN = (
    "representation",
    "embeddings",
    "logits",
    "steering",
    "benchmarks",
    "compliance",
)
ENTRY_POINTS = "pytest_analog.suites"


@functools.cache
def built_in() -> tuple[Suite, ...]:
    """The built-in suites."""
    return tuple(importlib.import_module(f"pytest_analog.suites.{name}").SUITE for name in BUILT_IN)


@functools.cache
def installed() -> tuple[Suite, ...]:
    """The built-in suites and those installed packages add (entry point group ``pytest_analog.suites``)."""
    found = []
    for point in entry_points(group=ENTRY_POINTS):
        try:
            loaded = point.load()
        except Exception as exc:  # a broken package is named, never a traceback
            raise AnalogError(f"suite entry point {point.name!r} ({point.value}) failed to load: {type(exc).__name__}: {exc}") from None
        found += _suites(loaded, f"entry point {point.name!r} ({point.value})")
    return checked(built_in() + tuple(found))


def gathered(hook_results: Iterable) -> tuple[Suite, ...]:
    """The installed suites and those ``pytest_analog_suites`` hook implementations returned."""
    found = [suite for result in hook_results for suite in _suites(result, "a pytest_analog_suites hook")]
    return checked(installed() + tuple(found))


def checked(suites: tuple[Suite, ...]) -> tuple[Suite, ...]:
    """``suites``, refusing two of one name, two runs of one name and one metric claimed by two suites."""
    names, runs, metrics = set(), {}, {}
    for suite in suites:
        if suite.name in names:
            raise AnalogError(f"two suites are named {suite.name!r}; rename one (suite names name config sections and criteria)")
        names.add(suite.name)
        if suite.run is not None and runs.setdefault(suite.run.name, suite.run) is not suite.run:
            raise AnalogError(f"suite {suite.name!r} brings a second run named {suite.run.name!r}; give its run another name")
        for metric in suite.metrics:
            owner = metrics.setdefault(metric, suite.name)
            if owner != suite.name:
                raise AnalogError(f"suites {owner!r} and {suite.name!r} both describe the metric {metric!r}; rename one")
    return suites


def runs(suites: Iterable[Suite]) -> dict[str, Run]:
    """The cached runs of ``suites``, by name."""
    return {suite.run.name: suite.run for suite in suites if suite.run is not None}


def metrics(suites: Iterable[Suite]) -> dict[str, Metric]:
    """What each metric of ``suites`` is, by name."""
    return {name: metric for suite in suites for name, metric in suite.metrics.items()}


def _suites(value, where: str) -> list[Suite]:
    found = [value] if isinstance(value, Suite) else list(value) if isinstance(value, (list, tuple)) else None
    if found is None or not all(isinstance(s, Suite) for s in found):
        raise AnalogError(f"{where} gave {type(value).__name__}, not a pytest_analog.Suite or a list of them")
    return found
