"""Criteria: one measured value, its threshold, and whether it passed.

Every built-in suite test and every user test that uses the ``fidelity_record``
fixture produces one `Criterion`; the report lists them all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def chance_corrected(value, chance):
    """(value - c) / (1 - c) with c = max(chance, 0), elementwise on arrays: 0 at chance level, 1 for a
    perfect score, NaN where chance >= 1. A float for floats.

    A chance level below 0 (a control whose debiased score is noise around 0, or a random
    direction that happened to move the behaviour the other way) is taken as 0: no control
    lacks structure more than none, and dividing by 1 - c > 1 would lift the corrected score
    above the raw one. So the corrected score never exceeds a raw score <= 1.
    """
    value = np.asarray(value, dtype=np.float64)
    chance = np.maximum(np.asarray(chance, dtype=np.float64), 0.0)  # NaN stays NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(chance < 1, (value - chance) / (1 - chance), np.nan)
    return float(out) if out.ndim == 0 else out


_ANY = (-math.inf, math.inf)

GATES = ("point", "lower_bound")

# Values this close to a threshold count as at it: float rounding leaves a few units in the last
# place, e.g. (0.6 - 0.2) / 0.8 = 0.49999999999999994 must meet ">= 0.5". 1e-9 is far above that
# rounding and far below any difference a measurement resolves.
TOLERANCE = 1e-9


def meets(value: float | None, threshold: float, direction: str) -> bool:
    """Whether ``value`` is at least (``direction="min"``) or at most (``"max"``) ``threshold``,
    within `TOLERANCE` (relative, absolute near 0). False for None or NaN."""
    if value is None or not math.isfinite(value):
        return False
    if math.isclose(value, threshold, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
        return True
    return value >= threshold if direction == "min" else value <= threshold


def judge(judged: float | None, threshold: float, direction: str, interval=None, gate: str = "point") -> bool:
    """The verdict of a gated criterion, shared by the suites, the reports and the leaderboard.

    ``gate="point"`` judges the estimate ``judged``. ``gate="lower_bound"`` asks the
    interval to clear the threshold: its lower end for a ``min``, its upper end for a
    ``max``; without a (finite) interval the estimate stands for it, as for the exact
    compliance checks. No estimate fails either way.
    """
    if judged is None or not math.isfinite(judged):
        return False
    if gate == "lower_bound" and interval is not None and all(math.isfinite(v) for v in interval):
        judged = interval[0] if direction == "min" else interval[1]
    return meets(judged, threshold, direction)


def straddles(interval, threshold: float | None) -> bool:
    """Whether ``interval`` (low, high) holds ``threshold`` strictly inside: too close to call."""
    if interval is None or threshold is None or not all(math.isfinite(v) for v in interval):
        return False
    return interval[0] < threshold < interval[1]


@dataclass(frozen=True)
class Metric:
    """What the report says about a built-in metric, and the values it can take."""

    description: str  # what is measured, one line (the criterion's "description")
    explanation: str  # for a reader of the report: scale and direction
    failure: str  # what a failing value means for the analog
    remedy: str  # what usually helps when it fails
    # The raw values the metric can take. A threshold outside them can never pass, or never fail,
    # so the config refuses it; a corrected score (value - chance) / (1 - chance) is at most 1.
    bounds: tuple[float, float] = _ANY


METRICS = {
    "cka": Metric(
        "debiased linear CKA over aligned tokens (Kornblith et al. 2019)",
        "Debiased linear CKA between teacher and analog hidden states at the same token positions. "
        "1 means the two representations agree up to rotation and uniform scaling; about 0 means "
        "unrelated. Higher is better.",
        "the analog's layer shares little linear structure with the teacher's (0 = unrelated, 1 = identical up to rotation and scale)",
        "distil on more tokens (a larger --corpus), add hidden-state alignment (analog-distill --align cosine), or map this "
        "teacher layer to a better-matching analog layer (layers.map; the heatmap rings the best match)",
        (-1.0, 1.0),
    ),
    "rbf_cka": Metric(
        "RBF-kernel CKA over mean-pooled prompts",
        "CKA with a Gaussian (RBF) kernel over one mean-pooled vector per prompt: like linear CKA but "
        "sensitive to local, non-linear neighbourhood structure. Higher is better.",
        "the two layers arrange whole prompts differently",
        "distil on more tokens and add hidden-state alignment (analog-distill --align cosine)",
        (-1.0, 1.0),
    ),
    "mutual_knn": Metric(
        "mutual k-nearest-neighbour overlap over mean-pooled prompts (Huh et al. 2024)",
        "Mutual k-nearest neighbours over one mean-pooled vector per prompt: for each prompt, the "
        "fraction of its k nearest prompts (cosine) in the teacher that are also among its k nearest "
        "in the analog. Unrelated representations score about k/(n-1). Higher is better.",
        "prompts that are neighbours in the teacher are not neighbours in the analog",
        "distil on more tokens and add hidden-state alignment (analog-distill --align cosine)",
        (0.0, 1.0),
    ),
    "embedding_geometry": Metric(
        "Pearson r of the pairwise cosine similarities of shared token rows of the input embeddings (Lee et al. 2025)",
        "Pearson correlation between the pairwise cosine similarities of the teacher's and the analog's "
        "input embedding rows, over a sample of token ids both vocabularies hold. Higher is better.",
        "the analog's token embeddings are not arranged like the teacher's, so directions found in one need not carry over",
        "initialise the analog from the teacher (analog-distill --init pruned copies the embedding rows) or give it a larger --fraction",
        (-1.0, 1.0),
    ),
    "unembedding_geometry": Metric(
        "Pearson r of the pairwise cosine similarities of shared token rows of the unembeddings (Lee et al. 2025)",
        "The same for the output (unembedding, lm_head) rows. Higher is better.",
        "the analog reads tokens out of its residual stream along directions unlike the teacher's",
        "initialise the analog from the teacher (analog-distill --init pruned copies the output head) or give it a larger --fraction",
        (-1.0, 1.0),
    ),
    "kl": Metric(
        "mean KL(teacher || analog) per token, nats",
        "Mean KL(teacher || analog) between next-token distributions at the compared positions, in "
        "nats. 0 means identical predictions. Lower is better.",
        "the analog's next-token distributions are far from the teacher's",
        "distil longer on more tokens (--max-steps, a larger --corpus) or give the analog a larger --fraction",
        (0.0, math.inf),
    ),
    "top1_agreement": Metric(
        "fraction of positions where both models predict the same next token",
        "Fraction of compared positions where the teacher's and the analog's most likely next token "
        "are the same. Higher is better.",
        "the analog often predicts a different next token than the teacher",
        "distil longer on more tokens (--max-steps, a larger --corpus) or give the analog a larger --fraction",
        (0.0, 1.0),
    ),
    "perplexity_ratio": Metric(
        "analog perplexity / teacher perplexity on the prompts' own next tokens",
        "Analog perplexity divided by teacher perplexity on the prompt set. 1 means equally good; "
        "above 1 means the analog predicts the text worse.",
        "the analog models the text much worse than the teacher",
        "distil on more tokens, add cross-entropy on the corpus (--ce-weight) or give the analog a larger --fraction",
        (0.0, math.inf),
    ),
    # The compliance suite (pytest_analog/compliance.py): yes/no checks score 1 (met) or 0 (not met).
    "parameter_fraction": Metric(
        "analog parameters / teacher parameters",
        "The analog's parameter count as a fraction of the teacher's; the policy proposal "
        "(arXiv 2510.14053) releases analogs at 0.5-5 % of the teacher.",
        "the analog's size is outside the range the release policy allows",
        "distil at a --fraction inside the configured bounds",
        (0.0, math.inf),
    ),
    "same_family": Metric(
        "same architecture family as the teacher (config model_type)",
        "1 when the analog's config names the teacher's model_type, 0 otherwise.",
        "the analog is not of the teacher's architecture family",
        "distil from the teacher's own architecture (analog-distill keeps it)",
        (0.0, 1.0),
    ),
    "safetensors": Metric(
        "every weight file is safetensors",
        "1 when all the analog's weight files are .safetensors, 0 otherwise.",
        "the analog's weights are not all in safetensors",
        "save the weights as safetensors (save_pretrained(..., safe_serialization=True))",
        (0.0, 1.0),
    ),
    "model_card": Metric(
        "model card with architecture, training setup, training data and intended use",
        "1 when the analog's model card has a section on each required topic, 0 otherwise.",
        "the analog's model card lacks a required section",
        "add the missing sections to the card (analog-distill writes a card with all four)",
        (0.0, 1.0),
    ),
    "license": Metric(
        "permissive licence (model card metadata or LICENSE file)",
        "1 when the analog's licence is one of the allowed permissive licences, 0 otherwise.",
        "the analog's licence is missing or not permissive",
        "put license: in the card's front matter, or add a LICENSE file",
        (0.0, 1.0),
    ),
    "training_code": Metric(
        "distillation or training scripts, or their documentation, in the release",
        "1 when the release holds training code or a config, or its model card documents it, 0 otherwise.",
        "the release does not show how the analog was trained",
        "add the distillation script or config to the release (analog-distill writes distill_config.json)",
        (0.0, 1.0),
    ),
    "release_lag": Metric(
        "months from the teacher's release to the analog's",
        "Months between the two release dates given in the config (a month is 365.25/12 days).",
        "the analog's release date is outside the lag the release policy allows",
        "release the analog inside the configured window after the teacher",
    ),
    "transfer_ratio": Metric(
        "transferred effect / native effect on the teacher, at the dose where the native effect is half its maximum",
        "The analog's steering vector, mapped into the teacher, moves the teacher's behaviour by this fraction of "
        "what the teacher's own vector does at the same norm-relative dose. 1 means it transfers fully. Higher is better.",
        "a steering vector found on the analog does not move the teacher as the teacher's own vector does",
        "add hidden-state alignment (analog-distill --align cosine), distil on more tokens, or carry the vector "
        "from another analog layer (steering.analog_layers)",
    ),
    "transfer_gap": Metric(
        "1 - transfer ratio",
        "The share of the native steering effect lost in transfer; 0 is a full transfer. Lower is better.",
        "much of the native steering effect is lost in transfer",
        "add hidden-state alignment (analog-distill --align cosine), distil on more tokens, or carry the vector "
        "from another analog layer (steering.analog_layers)",
    ),
    "spearman": Metric(
        "Spearman rho between dose and behaviour for the transferred vector",
        "Rank correlation between the norm-relative dose α of the transferred vector and p(matching answer); "
        "1 means a monotonic dose response. Higher is better.",
        "the transferred vector's dose response is not monotonic: more of it does not consistently mean more behaviour",
        "measure on more held-out items (steering.eval_items) and add hidden-state alignment at the steered layer",
        (-1.0, 1.0),
    ),
    "random_control": Metric(
        "largest |effect| of an equal-norm random vector / largest |effect| of the native vector",
        "How much a random direction of the same norm moves the behaviour, relative to the native vector. Near 0 "
        "means the effect is specific to the behaviour direction. Lower is better.",
        "a random vector of the same norm moves the behaviour about as much: the measured effect is not specific",
        "use smaller doses (steering.alphas): at large α any direction disrupts the teacher",
        (0.0, math.inf),
    ),
    "map_fvu": Metric(
        "held-out fraction of variance unexplained of the analog -> teacher activation map",
        "Residual variance of the mapped analog activations against the teacher's on held-out prompts, over the "
        "teacher's total variance. 0 is a perfect map. Lower is better.",
        "the analog's activations do not predict the teacher's at this layer pair",
        "fit the map on more prompts (steering.map_prompts), add hidden-state alignment, or pair another analog layer",
        (0.0, math.inf),
    ),
    "map_cosine": Metric(
        "held-out mean cosine between mapped analog activations and teacher activations",
        "Mean cosine similarity between mapped analog activations and the teacher's, per token on held-out "
        "prompts. Higher is better.",
        "mapped analog activations point elsewhere than the teacher's",
        "fit the map on more prompts (steering.map_prompts), add hidden-state alignment, or pair another analog layer",
        (-1.0, 1.0),
    ),
    "benchmark_retained": Metric(
        "fraction of the teacher's lm-eval score the analog keeps, chance-corrected for multiple choice",
        "On an lm-evaluation-harness task, (analog - chance) / (teacher - chance) for multiple choice, "
        "analog / teacher for other higher-is-better scores, teacher / analog for perplexity and bits per "
        "byte. 1 means the analog keeps all of the teacher's skill, 0 that it guesses. Higher is better.",
        "the analog keeps too little of the teacher's skill on this task",
        "distil on more tokens of text like the task's, or give the analog a larger --fraction",
    ),
    "benchmark_delta": Metric(
        "analog - teacher lm-eval score, paired over the task's items",
        "The analog's lm-evaluation-harness score minus the teacher's on the same items, with a paired "
        "standard error. 0 means equally good; the sign follows the task's metric.",
        "the analog scores too far below the teacher on this task",
        "distil on more tokens of text like the task's, or give the analog a larger --fraction",
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
    reason: str | None = None  # why there is no value, or what a check found (shown when it fails)
    details: dict[str, Any] = field(default_factory=dict)
    # Against chance (issue: every score beside its chance level); None where not measured.
    interval: tuple[float, float] | None = None  # bootstrap interval of the value
    chance: float | None = None  # the same metric for a control without learned structure
    chance_interval: tuple[float, float] | None = None
    corrected: float | None = None  # (value - chance) / (1 - chance): 0 at chance, 1 perfect
    corrected_interval: tuple[float, float] | None = None
    score: str = "raw"  # what the threshold applies to: "raw" (value) or "corrected"
    gate: str = "point"  # decision rule: "point" (the estimate) or "lower_bound" (the interval's far end)

    @property
    def judged(self) -> float | None:
        """The number the threshold applies to."""
        return self.corrected if self.score == "corrected" else self.value

    @property
    def judged_interval(self) -> tuple[float, float] | None:
        """The interval of the number the threshold applies to."""
        return self.corrected_interval if self.score == "corrected" else self.interval

    @property
    def too_close_to_call(self) -> bool:
        """A gated criterion whose interval holds its threshold: the data do not decide the verdict."""
        return self.gated and straddles(self.judged_interval, self.threshold)

    @property
    def above_chance(self) -> bool | None:
        """Whether the analog beats chance by more than noise: the corrected interval lies above 0."""
        if self.corrected_interval is None or not math.isfinite(self.corrected_interval[0]):
            return None
        return self.corrected_interval[0] > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("details"))
        for key in ("value", "chance", "corrected"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None
        for key in ("interval", "chance_interval", "corrected_interval"):
            if data[key] is not None:
                data[key] = [v if math.isfinite(v) else None for v in data[key]]
        data["above_chance"] = self.above_chance
        data["too_close_to_call"] = self.too_close_to_call
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
        if self.chance is not None and math.isfinite(self.chance):
            head += f" (chance {self.chance:.3g}, corrected {self.corrected:.3g})"
        if not self.gated:
            return f"{head} (informational)"
        if self.judged is None or not math.isfinite(self.judged):
            return f"{head} fails: no {self.score} score ({self.reason or 'not measured'})"
        op = ">=" if self.direction == "min" else "<="
        verdict = "passes" if self.passed else "fails"
        text = f"{head} {verdict} {op} {self.threshold:g}" + (" on the corrected score" if self.score == "corrected" else "")
        bounds = self.judged_interval
        if self.gate == "lower_bound" and bounds is not None and all(math.isfinite(v) for v in bounds):
            end = "lower" if self.direction == "min" else "upper"
            text += f" at its interval's {end} end {bounds[0] if end == 'lower' else bounds[1]:.4g}"
        if self.too_close_to_call:
            text += f" (too close to call: its interval [{bounds[0]:.4g}, {bounds[1]:.4g}] holds the threshold)"
        metric = METRICS.get(self.metric)
        why = self.reason or (metric.failure if metric else None)
        return f"{text}: {why}" if not self.passed and why else text


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
    interval=None,
    chance: float | None = None,
    chance_interval=None,
    corrected_interval=None,
    score: str = "raw",
    gate: str = "point",
    **details: Any,
) -> Criterion:
    """Judge ``value`` (or, with ``score="corrected"``, its chance-corrected score) against at most
    one of ``min`` / ``max``; with neither it is informational.

    ``chance`` is the same metric for a control without learned structure; the
    corrected score (value - chance) / (1 - chance) is computed from it.
    Intervals are (low, high) pairs, e.g. from a bootstrap. ``gate`` is the decision rule
    (`judge`): "point" judges the estimate, "lower_bound" the interval's conservative end.
    """
    if min is not None and max is not None:
        raise ValueError(f"criterion {id}: give min or max, not both")
    if score not in ("raw", "corrected"):
        raise ValueError(f"criterion {id}: score must be 'raw' or 'corrected', got {score!r}")
    if gate not in GATES:
        raise ValueError(f"criterion {id}: gate must be 'point' or 'lower_bound', got {gate!r}")
    threshold = min if min is not None else max
    direction = "min" if min is not None else "max" if max is not None else None
    gated = threshold is not None
    value = None if value is None else float(value)
    chance = None if chance is None else float(chance)
    corrected = None
    if value is not None and chance is not None:
        corrected = chance_corrected(value, chance)
    if score == "corrected" and chance is None and reason is None:
        reason = "no chance level was measured for the corrected score"
    judged = corrected if score == "corrected" else value
    judged_interval = _pair(corrected_interval if score == "corrected" else interval)
    passed = judge(judged, threshold, direction, judged_interval, gate) if gated else None
    if description is None:
        description = METRICS[metric].description if metric in METRICS else ""
    return Criterion(
        id, suite, metric, value, threshold, direction, gated, passed, description, reason, details,
        _pair(interval), chance, _pair(chance_interval), corrected, _pair(corrected_interval), score, gate,
    )


def _pair(interval) -> tuple[float, float] | None:
    return None if interval is None else (float(interval[0]), float(interval[1]))
