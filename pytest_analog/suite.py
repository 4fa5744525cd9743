"""What a suite is: one kind of check, everything about it in one place.

A `Suite` names its tests (a module of pytest test functions, one criterion
each), the cached `runs.Run` they read (its teacher half, stored in
references, and its analog half), its config section and gates with their
defaults, what its metrics are (`facts.Metric`), its parts of the report and a
check of its inputs before any test runs. `registry` lists the suites: the
built-in ones, those of installed packages (entry point group
``pytest_analog.suites``) and those a ``conftest.py`` returns from the
``pytest_analog_suites`` hook. Nothing outside a suite names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from pytest_analog.facts import Metric
from pytest_analog.gates import AtLeast, AtMost, Range, Required, Scored
from pytest_analog.part import Part
from pytest_analog.runs import Inputs, Run

# What a suite's author needs, from one place: `docs/writing-a-suite.md`.
__all__ = ["AtLeast", "AtMost", "Inputs", "Metric", "Part", "Range", "Required", "Run", "Scored", "Section", "Suite"]


@dataclass(frozen=True)
class Section:
    """A part of the report a suite adds: the report keys it renders, as Markdown and as HTML.

    ``markdown`` and ``html`` take the report document and return a fragment, or None when the
    report holds nothing for them; ``after_criteria`` places the section after the criteria tables.
    """

    keys: tuple[str, ...]
    markdown: Callable[[dict[str, Any]], str | None] | None = None
    html: Callable[[dict[str, Any]], str | None] | None = None
    after_criteria: bool = False


@dataclass(frozen=True, eq=False)
class Suite:
    """One kind of check: its tests, the run they read, its settings, gates, facts and report sections."""

    name: str  # its --analog-suites name, its config section, the prefix of its criteria's ids
    tests: str  # the module of its test functions, by name (a conftest gives its own ``__name__``)
    run: Run | None = None  # the cached run its tests read; suites may share one
    settings: type | None = None  # the dataclass of its config section (``<name>:`` in the config)
    gates: Mapping[str, type] = field(default_factory=dict)  # ``gates.<key>`` -> its class (`gates.AtLeast`, ...)
    defaults: Mapping[str, Any] | Path | None = None  # its defaults, shaped as the config file: {name: ..., gates: ...}
    checks: Mapping[str, tuple[Callable[[Any], bool], str]] = field(default_factory=dict)  # dotted key -> (test, expected)
    metrics: Mapping[str, Metric] = field(default_factory=dict)  # what each of its metrics is
    sections: tuple[Section, ...] = ()  # its parts of the report
    plugin: str | None = None  # a module of fixtures and hooks, registered with pytest whenever the plugin runs
    check: Callable[[Any], None] | None = None  # (session) -> None: checks its inputs before any test (AnalogError)
    headline: str | None = None  # the metric whose mean is its score on the leaderboard; None: the share of gated passes

    def __post_init__(self):
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"a suite's name is a lower-case identifier (it names a config section), got {self.name!r}")
