"""Criteria: one measured value, its threshold, and whether it passed.

Every built-in suite test and every user test that uses the ``fidelity_record``
fixture produces one `Criterion`; the report lists them all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# metric -> what it is, and what a low (or high) value means for the analog
METRICS = {
    "cka": (
        "debiased linear CKA over aligned tokens (Kornblith et al. 2019)",
        "the analog's layer shares little linear structure with the teacher's (0 = unrelated, 1 = identical up to rotation and scale)",
    ),
    "rbf_cka": (
        "RBF-kernel CKA over mean-pooled sequences",
        "the two layers arrange whole prompts differently",
    ),
    "mutual_knn": (
        "mutual k-nearest-neighbour overlap over mean-pooled sequences (Huh et al. 2024)",
        "prompts that are neighbours in the teacher are not neighbours in the analog",
    ),
    "embedding_geometry": (
        "Pearson r of the pairwise cosine similarities of shared token rows of the input embeddings (Lee et al. 2025)",
        "the analog's token embeddings are not arranged like the teacher's, so directions found in one need not carry over",
    ),
    "unembedding_geometry": (
        "Pearson r of the pairwise cosine similarities of shared token rows of the unembeddings (Lee et al. 2025)",
        "the analog reads tokens out of its residual stream along directions unlike the teacher's",
    ),
    "kl": (
        "mean KL(teacher || analog) per token, nats",
        "the analog's next-token distributions are far from the teacher's",
    ),
    "top1_agreement": (
        "fraction of positions where both models predict the same next token",
        "the analog often predicts a different next token than the teacher",
    ),
    "perplexity_ratio": (
        "analog perplexity / teacher perplexity on the prompts' own next tokens",
        "the analog models the text much worse than the teacher",
    ),
}


@dataclass
class Criterion:
    """One row of ``criteria`` in fidelity.json."""

    id: str
    suite: str
    metric: str
    value: float | None
    threshold: float | None
    direction: str | None  # "min": value must be >= threshold; "max": <=; None: informational
    gated: bool
    passed: bool | None
    description: str = ""
    reason: str | None = None  # why there is no value, when there is none
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("details"))
        if data["value"] is not None and not math.isfinite(data["value"]):
            data["value"] = None
        return data

    @property
    def message(self) -> str:
        """One line saying the value, the threshold and what a failure means."""
        where = ""
        if "teacher_layer" in self.details:
            where = f" at teacher layer {self.details['teacher_layer']}"
            if "student_layer" in self.details:
                where += f" (analog layer {self.details['student_layer']})"
        if self.value is None or not math.isfinite(self.value):
            return f"{self.metric}{where} has no value: {self.reason or 'not measured'}"
        head = f"{self.metric}{where} = {self.value:.4g}"
        if not self.gated:
            return f"{head} (informational)"
        op = ">=" if self.direction == "min" else "<="
        verdict = "passes" if self.passed else "fails"
        text = f"{head} {verdict} {op} {self.threshold:g}"
        meaning = METRICS.get(self.metric, (None, None))[1]
        return f"{text}: {meaning}" if not self.passed and meaning else text


def make_criterion(
    id: str,
    suite: str,
    metric: str,
    value: float | None,
    *,
    min: float | None = None,
    max: float | None = None,
    description: str | None = None,
    reason: str | None = None,
    **details: Any,
) -> Criterion:
    """Judge ``value`` against at most one of ``min`` / ``max``; with neither it is informational."""
    if min is not None and max is not None:
        raise ValueError(f"criterion {id}: give min or max, not both")
    threshold = min if min is not None else max
    direction = "min" if min is not None else "max" if max is not None else None
    gated = threshold is not None
    value = None if value is None else float(value)
    passed = None
    if gated:
        finite = value is not None and math.isfinite(value)
        passed = finite and (value >= threshold if direction == "min" else value <= threshold)
    if description is None:
        description = METRICS.get(metric, ("",))[0]
    return Criterion(id, suite, metric, value, threshold, direction, gated, passed, description, reason, details)
