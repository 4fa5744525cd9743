"""Criteria: one measured value, its threshold, and whether it passed.

Every built-in suite test and every user test that uses the ``fidelity_record``
fixture produces one `Criterion`; the report lists them all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

@dataclass(frozen=True)
class Metric:
    """What the report says about a built-in metric."""

    description: str  # what is measured, one line (the criterion's "description")
    explanation: str  # for a reader of the report: scale and direction
    failure: str  # what a failing value means for the analog


METRICS = {
    "cka": Metric(
        "debiased linear CKA over aligned tokens (Kornblith et al. 2019)",
        "Debiased linear CKA between teacher and analog hidden states at the same token positions. "
        "1 means the two representations agree up to rotation and uniform scaling; about 0 means "
        "unrelated. Higher is better.",
        "the analog's layer shares little linear structure with the teacher's (0 = unrelated, 1 = identical up to rotation and scale)",
    ),
    "rbf_cka": Metric(
        "RBF-kernel CKA over mean-pooled prompts",
        "CKA with a Gaussian (RBF) kernel over one mean-pooled vector per prompt: like linear CKA but "
        "sensitive to local, non-linear neighbourhood structure. Higher is better.",
        "the two layers arrange whole prompts differently",
    ),
    "mutual_knn": Metric(
        "mutual k-nearest-neighbour overlap over mean-pooled prompts (Huh et al. 2024)",
        "Mutual k-nearest neighbours over one mean-pooled vector per prompt: for each prompt, the "
        "fraction of its k nearest prompts (cosine) in the teacher that are also among its k nearest "
        "in the analog. Unrelated representations score about k/(n-1). Higher is better.",
        "prompts that are neighbours in the teacher are not neighbours in the analog",
    ),
    "embedding_geometry": Metric(
        "Pearson r of the pairwise cosine similarities of shared token rows of the input embeddings (Lee et al. 2025)",
        "Pearson correlation between the pairwise cosine similarities of the teacher's and the analog's "
        "input embedding rows, over a sample of token ids both vocabularies hold. Higher is better.",
        "the analog's token embeddings are not arranged like the teacher's, so directions found in one need not carry over",
    ),
    "unembedding_geometry": Metric(
        "Pearson r of the pairwise cosine similarities of shared token rows of the unembeddings (Lee et al. 2025)",
        "The same for the output (unembedding, lm_head) rows. Higher is better.",
        "the analog reads tokens out of its residual stream along directions unlike the teacher's",
    ),
    "kl": Metric(
        "mean KL(teacher || analog) per token, nats",
        "Mean KL(teacher || analog) between next-token distributions at the compared positions, in "
        "nats. 0 means identical predictions. Lower is better.",
        "the analog's next-token distributions are far from the teacher's",
    ),
    "top1_agreement": Metric(
        "fraction of positions where both models predict the same next token",
        "Fraction of compared positions where the teacher's and the analog's most likely next token "
        "are the same. Higher is better.",
        "the analog often predicts a different next token than the teacher",
    ),
    "perplexity_ratio": Metric(
        "analog perplexity / teacher perplexity on the prompts' own next tokens",
        "Analog perplexity divided by teacher perplexity on the prompt set. 1 means equally good; "
        "above 1 means the analog predicts the text worse.",
        "the analog models the text much worse than the teacher",
    ),
    "benchmark_retained": Metric(
        "fraction of the teacher's lm-eval score the analog keeps, chance-corrected for multiple choice",
        "On an lm-evaluation-harness task, (analog - chance) / (teacher - chance) for multiple choice, "
        "analog / teacher for other higher-is-better scores, teacher / analog for perplexity and bits per "
        "byte. 1 means the analog keeps all of the teacher's skill, 0 that it guesses. Higher is better.",
        "the analog keeps too little of the teacher's skill on this task",
    ),
    "benchmark_delta": Metric(
        "analog - teacher lm-eval score, paired over the task's items",
        "The analog's lm-evaluation-harness score minus the teacher's on the same items, with a paired "
        "standard error. 0 means equally good; the sign follows the task's metric.",
        "the analog scores too far below the teacher on this task",
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
        metric = METRICS.get(self.metric)
        return f"{text}: {metric.failure}" if not self.passed and metric else text


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
        description = METRICS[metric].description if metric in METRICS else ""
    return Criterion(id, suite, metric, value, threshold, direction, gated, passed, description, reason, details)
