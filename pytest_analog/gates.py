"""The kinds of gate a config holds under ``gates.<key>``, and how each becomes a criterion's `Gate`.

A suite names the kind of each of its gates (`suite.Suite.gates`); the config
loader reads ``gates.<key>`` into it, and `Gates.gate` turns it into the
`criterion.Gate` a criterion is judged by. ``rule`` null follows ``gates.rule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pytest_analog.criterion import Gate

Rule = Literal["point", "lower_bound"]  # the decision rule: see `criterion.judge`


@dataclass(frozen=True)
class AtLeast:
    """A higher-is-better criterion, gated when ``min`` is set."""

    min: float | None
    rule: Rule | None

    def gate(self, metric: str, value: Any, details: dict[str, Any], rule: str) -> Gate:
        score = getattr(self, "score", "raw")  # `Scored` has one
        return Gate("min", self.min, score, self.rule or rule) if self.min is not None else self.ungated(rule)

    def ungated(self, rule: str) -> Gate:
        """Its gate when it is reported, not gated."""
        return Gate(score=getattr(self, "score", "raw"), rule=getattr(self, "rule", None) or rule)


@dataclass(frozen=True)
class AtMost:
    """A lower-is-better criterion, gated when ``max`` is set."""

    max: float | None
    rule: Rule | None

    def gate(self, metric: str, value: Any, details: dict[str, Any], rule: str) -> Gate:
        return Gate("max", self.max, rule=self.rule or rule) if self.max is not None else self.ungated(rule)

    ungated = AtLeast.ungated


@dataclass(frozen=True)
class Scored(AtLeast):
    """A criterion with a chance level: ``min`` applies to the raw or the chance-corrected score."""

    score: Literal["raw", "corrected"]


@dataclass(frozen=True)
class Range:
    """A quantity gated on both sides, one criterion each (the ``bound`` detail says which; null: not gated there)."""

    min: float | None
    max: float | None

    def gate(self, metric: str, value: Any, details: dict[str, Any], rule: str) -> Gate:
        bound = details["bound"]
        threshold = getattr(self, bound)
        return Gate(bound, threshold, rule=rule) if threshold is not None else Gate(rule=rule)

    ungated = AtLeast.ungated


@dataclass(frozen=True)
class Required:
    """A yes/no check, gated when ``required``."""

    required: bool

    def gate(self, metric: str, value: Any, details: dict[str, Any], rule: str) -> Gate:
        return Gate("min", 1.0, rule=rule) if self.required else Gate(rule=rule)

    ungated = AtLeast.ungated


class Gates:
    """Base of the config's ``gates`` section, whose fields are ``rule`` and each suite's gates."""

    rule: str
    judged_under: ClassVar[dict[str, str]] = {}  # metric -> the gates key it is judged under, where not its own name

    def gate(self, metric: str, value: float | None = None, **details: Any) -> Gate:
        """The gate of a suite's criterion, the one its tests record and the leaderboard checks.

        ``details`` select among a metric's gates (``bound`` of a range, ``task`` of a benchmark).
        A criterion that ``needs_teacher`` and has no value (a teacher reference cannot measure
        it) is reported, not gated.
        """
        entry = getattr(self, self.judged_under.get(metric, metric))
        if value is None and details.get("needs_teacher"):
            return entry.ungated(self.rule)
        return entry.gate(metric, value, details, self.rule)
