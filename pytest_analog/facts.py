"""What a metric is: its description, its direction, what a failure means and what helps.

Each suite gives one `Metric` per metric name (`suite.Suite.metrics`); the criteria,
the config's threshold checks, the reports and the leaderboard read them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_ANY = (-math.inf, math.inf)


@dataclass(frozen=True)
class Metric:
    """What the report says about a metric, and the values it can take."""

    description: str  # what is measured, one line (the criterion's "description")
    explanation: str  # for a reader of the report: scale and direction
    failure: str  # what a failing value means for the analog
    remedy: str  # what usually helps when it fails
    # The raw values the metric can take. A threshold outside them can never pass, or never fail,
    # so the config refuses it; a corrected score (value - chance) / (1 - chance) is at most 1.
    bounds: tuple[float, float] = _ANY
    # "min": higher is better (a threshold is a minimum); "max": lower is better; None: set per
    # criterion (a size or date range is gated on both sides; a benchmark delta follows its task's metric).
    direction: str | None = "min"
    own_chance: bool = False  # its chance level is its own (random directions), not the chance.control model's
    judged_under: str | None = None  # the ``gates`` key it is judged under, where not its own name
