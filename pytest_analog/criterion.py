"""Criteria: what was measured, how it is gated, and the one judge of the two.

A `Criterion` pairs a `Measured` (value, interval, chance level) with a `Gate`
(direction, threshold, score, decision rule). Everything that follows from
them (the corrected score, whether it is gated, passed or too close to call)
is computed, never stored, so the suites, the reports, the terminal and the
leaderboard all read one verdict from `judge`, and a report's counts and overall
verdict from `summary` and `verdict`. What a metric is (`facts.Metric`) comes
from its suite: a criterion carries it, never looks it up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np

from pytest_analog.facts import Metric

RULES = ("point", "lower_bound")
SCORES = ("raw", "corrected")

# Values this close to a threshold count as at it: float rounding leaves a few units in the last
# place, e.g. (0.6 - 0.2) / 0.8 = 0.49999999999999994 must meet ">= 0.5". 1e-9 is far above that
# rounding and far below any difference a measurement resolves.
TOLERANCE = 1e-9

Pair = tuple[float, float]

# A gate's comparison, as a symbol and in ASCII, by direction.
SIGNS = {"min": ("≥", ">="), "max": ("≤", "<=")}


def chance_corrected(value, chance):
    """(value - c) / (1 - c) with c = max(chance, 0), elementwise on arrays: 0 at chance level, 1 for a
    perfect score, NaN where chance >= 1 or is not finite (a chance level of -inf was not measured, it
    is not 0). A float for floats.

    A chance level below 0 (a control whose debiased score is noise around 0, or a random
    direction that happened to move the behaviour the other way) is taken as 0: no control
    lacks structure more than none, and dividing by 1 - c > 1 would lift the corrected score
    above the raw one. So the corrected score never exceeds a raw score <= 1.
    """
    value = np.asarray(value, dtype=np.float64)
    chance = np.asarray(chance, dtype=np.float64)
    measured = np.isfinite(chance) & (chance < 1)
    chance = np.maximum(chance, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(measured, (value - chance) / (1 - chance), np.nan)
    return float(out) if out.ndim == 0 else out


def meets(value: float | None, threshold: float, direction: str) -> bool:
    """Whether ``value`` is at least (``direction="min"``) or at most (``"max"``) ``threshold``,
    within `TOLERANCE` (relative, absolute near 0). False for None or NaN."""
    if not _finite(value):
        return False
    if math.isclose(value, threshold, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
        return True
    return value >= threshold if direction == "min" else value <= threshold


def straddles(interval: Pair | None, threshold: float | None) -> bool:
    """Whether ``interval`` (low, high) holds ``threshold`` strictly inside, beyond `TOLERANCE` of either
    end (an end within it counts as at the threshold, as in `meets`): too close to call."""
    if not _finite_pair(interval) or threshold is None:
        return False
    inside = [not math.isclose(end, threshold, rel_tol=TOLERANCE, abs_tol=TOLERANCE) for end in interval]
    return all(inside) and interval[0] < threshold < interval[1]


@dataclass(frozen=True)
class Measured:
    """What was measured: a value, its interval, its chance level; ``reason`` says why there is no
    value, or what a check found."""

    value: float | None
    interval: Pair | None = None  # bootstrap (or paired) interval of the value
    chance: float | None = None  # the same metric for a control without learned structure
    chance_interval: Pair | None = None
    corrected_interval: Pair | None = None  # from paired replicates: not derivable from the two above
    reason: str | None = None

    def __post_init__(self):
        """Store numbers as floats and intervals as pairs of floats."""
        for name in ("value", "chance"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else float(value))
        for name in ("interval", "chance_interval", "corrected_interval"):
            pair = getattr(self, name)
            object.__setattr__(self, name, None if pair is None else (float(pair[0]), float(pair[1])))

    @property
    def corrected(self) -> float | None:
        """(value - chance) / (1 - chance): 0 at chance level, 1 perfect; None without both."""
        if self.value is None or self.chance is None:
            return None
        return chance_corrected(self.value, self.chance)

    def score(self, kind: str) -> tuple[float | None, Pair | None]:
        """The ``"raw"`` or ``"corrected"`` score and its interval."""
        return (self.corrected, self.corrected_interval) if kind == "corrected" else (self.value, self.interval)


@dataclass(frozen=True)
class Gate:
    """How a measurement is judged: at least (``"min"``) or at most (``"max"``) ``threshold``, on the
    raw or the chance-corrected ``score``, by the decision ``rule``. No threshold: informational."""

    direction: str | None = None
    threshold: float | None = None
    score: str = "raw"
    rule: str = "point"

    def __post_init__(self):
        """Refuse a half or unknown setting; store the threshold as a float."""
        if (self.direction is None) != (self.threshold is None):
            raise ValueError(f"a gate needs both a direction and a threshold, or neither; got {self.direction!r}, {self.threshold!r}")
        if self.direction not in (None, "min", "max"):
            raise ValueError(f"gate direction must be 'min' or 'max', got {self.direction!r}")
        if self.score not in SCORES:
            raise ValueError(f"gate score must be 'raw' or 'corrected', got {self.score!r}")
        if self.rule not in RULES:
            raise ValueError(f"gate rule must be 'point' or 'lower_bound', got {self.rule!r}")
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def gated(self) -> bool:
        """Whether it has a threshold: a gated criterion decides the verdict."""
        return self.threshold is not None

    def sign(self, ascii_only: bool = False) -> str:
        """The comparison: "≥" for a minimum, "≤" for a maximum (">=", "<=" with ``ascii_only``); "" ungated."""
        return SIGNS[self.direction][ascii_only] if self.gated else ""


def judge(measured: Measured, gate: Gate) -> bool | None:
    """The verdict: None when ungated; else whether the judged score meets the threshold.

    ``rule="point"`` judges the estimate. ``rule="lower_bound"`` asks the interval to clear the
    threshold: its lower end for a ``min``, its upper end for a ``max``; without an interval the
    estimate stands for it, as for the exact compliance checks, but an interval with a non-finite
    end was not measured and fails ((0.3, inf) must not pass on its estimate). No estimate fails
    either way.
    """
    if not gate.gated:
        return None
    judged, interval = measured.score(gate.score)
    if not _finite(judged):
        return False
    if gate.rule == "lower_bound" and interval is not None:
        if not _finite_pair(interval):
            return False
        judged = interval[0] if gate.direction == "min" else interval[1]
    return meets(judged, gate.threshold, gate.direction)


@dataclass(frozen=True)
class Criterion:
    """One row of ``criteria`` in fidelity.json: a measurement, its gate, and where it was measured."""

    id: str
    suite: str
    metric: str
    measured: Measured
    gate: Gate = Gate()
    details: dict[str, Any] = field(default_factory=dict)  # teacher_layer, task, behaviour, ...
    facts: Metric | None = field(default=None, compare=False, repr=False)  # what its metric is (its suite's)
    row_description: str = field(default="", compare=False, repr=False)  # a row's own, where no facts describe it

    def __post_init__(self):
        """A corrected gate without a chance level says why it has no score."""
        if self.gate.score == "corrected" and not _finite(self.measured.chance) and self.measured.reason is None:
            object.__setattr__(self, "measured", replace(self.measured, reason="no chance level was measured for the corrected score"))

    @property
    def description(self) -> str:
        """What was measured, one line: its metric's facts, else the description its row carried."""
        return self.facts.description if self.facts else self.row_description

    @property
    def passed(self) -> bool | None:
        """The verdict of `judge`: None when ungated."""
        return judge(self.measured, self.gate)

    @property
    def judged(self) -> float | None:
        """The number the threshold applies to."""
        return self.measured.score(self.gate.score)[0]

    @property
    def judged_interval(self) -> Pair | None:
        """The interval of the number the threshold applies to."""
        return self.measured.score(self.gate.score)[1]

    @property
    def too_close_to_call(self) -> bool:
        """A gated criterion whose interval holds its threshold: the data do not decide the verdict."""
        return self.gate.gated and straddles(self.judged_interval, self.gate.threshold)

    @property
    def above_chance(self) -> bool | None:
        """Whether the analog beats chance by more than noise: the corrected interval lies above 0."""
        interval = self.measured.corrected_interval
        return interval[0] > 0 if interval is not None and math.isfinite(interval[0]) else None

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON row: measured and gate fields, what follows from them, and the details."""
        m, g = self.measured, self.gate
        return {
            "id": self.id,
            "suite": self.suite,
            "metric": self.metric,
            "description": self.description,
            "value": _json(m.value),
            "interval": _json_pair(m.interval),
            "chance": _json(m.chance),
            "chance_interval": _json_pair(m.chance_interval),
            "corrected": _json(m.corrected),
            "corrected_interval": _json_pair(m.corrected_interval),
            "reason": m.reason,
            "direction": g.direction,
            "threshold": g.threshold,
            "score": g.score,
            "rule": g.rule,
            "gated": g.gated,
            "passed": self.passed,
            "above_chance": self.above_chance,
            "too_close_to_call": self.too_close_to_call,
            **self.details,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any], facts: Metric | None = None) -> Criterion:
        """The criterion a `to_dict` row holds, with its metric's ``facts``; what follows is recomputed, never read."""
        measured = Measured(**{k: _from_json(row.get(k)) for k in MEASURED_FIELDS})
        gate = Gate(row.get("direction"), row.get("threshold"), row.get("score", "raw"), row.get("rule", "point"))
        details = {k: v for k, v in row.items() if k not in ROW_FIELDS}
        return cls(row["id"], row["suite"], row["metric"], measured, gate, details, facts, row.get("description") or "")

    @property
    def message(self) -> str:
        """One line saying the value, the threshold and what a failure means."""
        m, g = self.measured, self.gate
        where = ""
        if "teacher_layer" in self.details:
            where = f" at teacher layer {self.details['teacher_layer']}"
            if "analog_layer" in self.details:
                where += f" (analog layer {self.details['analog_layer']})"
        if not _finite(m.value):
            return f"{self.metric}{where} has no value: {m.reason or 'not measured'}"
        head = f"{self.metric}{where} = {m.value:.4g}"
        if _finite(m.chance):
            head += f" (chance {m.chance:.3g}, corrected {m.corrected:.3g})"
        if not g.gated:
            return f"{head} (informational)"
        if not _finite(self.judged):
            return f"{head} fails: no {g.score} score ({m.reason or 'not measured'})"
        if g.rule == "lower_bound" and self.judged_interval is not None and not _finite_pair(self.judged_interval):
            return f"{head} fails: its {g.score} interval was not measured (a non-finite end), and rule lower_bound judges it"
        text = f"{head} {'passes' if self.passed else 'fails'} {g.sign(ascii_only=True)} {g.threshold:g}"
        text += " on the corrected score" if g.score == "corrected" else ""
        bounds = self.judged_interval
        if g.rule == "lower_bound" and _finite_pair(bounds):
            end = "lower" if g.direction == "min" else "upper"
            text += f" at its interval's {end} end {bounds[0] if end == 'lower' else bounds[1]:.4g}"
        if self.too_close_to_call:
            text += f" (too close to call: its interval [{bounds[0]:.4g}, {bounds[1]:.4g}] holds the threshold)"
        why = m.reason or (self.facts.failure if self.facts else None)
        return f"{text}: {why}" if not self.passed and why else text


def verdict(criteria: Iterable[Criterion], error: str | None = None, partial: str | None = None) -> str:
    """The report's verdict: "fail" (a gated criterion fails, or ``error``), "partial", "pass" or "no gated criteria"."""
    gated = [c for c in criteria if c.gate.gated]
    if error or not all(c.passed for c in gated):
        return "fail"
    if partial:
        return "partial"
    return "pass" if gated else "no gated criteria"


def summary(criteria: Iterable[Criterion]) -> dict[str, Any]:
    """The report's ``summary``: gated, passed, failed and informational counts, and the criteria not measured."""
    criteria = list(criteria)
    gated = [c for c in criteria if c.gate.gated]
    failed = sum(not c.passed for c in gated)
    return {
        "gated": len(gated),
        "passed": len(gated) - failed,
        "failed": failed,
        "informational": len(criteria) - len(gated),
        "not_measured": [  # ungated for lack of what measures them (the teacher, in reference mode)
            {"id": c.id, "reason": c.measured.reason} for c in criteria
            if not c.gate.gated and c.measured.value is None and c.measured.reason
        ],
    }


MEASURED_FIELDS = ("value", "interval", "chance", "chance_interval", "corrected_interval", "reason")


def _finite(value) -> bool:
    """Whether ``value`` is a finite number (not None, NaN or infinite)."""
    return value is not None and math.isfinite(value)


def _finite_pair(pair) -> bool:
    """Whether ``pair`` is an interval with two finite ends."""
    return pair is not None and all(_finite(v) for v in pair)


def _json(value: float | None) -> float | None:
    """A number as JSON holds it: null for NaN and infinities."""
    return value if _finite(value) else None


def _json_pair(pair: Pair | None) -> list | None:
    """An interval as JSON holds it: each non-finite end null."""
    return None if pair is None else [_json(v) for v in pair]


def _from_json(value):
    """A JSON null inside an interval stands for a non-finite end."""
    if isinstance(value, list):
        return tuple(math.nan if v is None else v for v in value)
    return value


ROW_FIELDS = frozenset(Criterion(id="", suite="", metric="", measured=Measured(None)).to_dict())
