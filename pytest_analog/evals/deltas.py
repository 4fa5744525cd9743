"""Paired analog - teacher deltas from lm-eval's per-sample results.

Both models answer the same items, so the difference of their scores has a
paired standard error: the spread of per-item differences, not the two
models' errors added. For a mean metric (accuracy) with per-item values
t_i, a_i and d_i = a_i - t_i:

    delta = mean(d),  SE = sd(d, ddof=1) / sqrt(n)

A corpus-level metric over (log-likelihood, length) pairs, such as bits per
byte -sum(ll) / sum(bytes) / ln 2, is a function f of a ratio R = sum(x) / sum(w);
its standard error comes from the delta method, per-item influence
f'(R) (x_i - R w_i) / mean(w), differenced between the models item by item.

Everything returned is a plain dict: per task the metric, both scores with a
95 % interval, chance, the delta with its paired SE and interval, and the
retained fraction with its delta-method interval (a ratio of both scores).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

Z95 = NormalDist().inv_cdf(0.975)  # 1.96: two-sided 95 % normal interval

# Corpus-level lm-eval metrics over (x, w) pairs: value f(R) and f'(R), R = sum(x) / sum(w).
_RATIO_METRICS = {
    "bits_per_byte": (lambda r: -r / math.log(2), lambda r: -1 / math.log(2)),
    "word_perplexity": (lambda r: math.exp(-r), lambda r: -math.exp(-r)),
    "byte_perplexity": (lambda r: math.exp(-r), lambda r: -math.exp(-r)),
}


def influence(metric: str, values: list) -> tuple[float, np.ndarray] | None:
    """The metric over ``values`` and each item's linearised influence on it (mean zero).

    ``values`` are lm-eval's per-sample values: numbers for a mean metric, (x, w)
    pairs for the ratio metrics above. None for any other kind.
    """
    if values and all(isinstance(v, (int, float)) for v in values):
        x = np.asarray(values, dtype=np.float64)
        return float(x.mean()), x - x.mean()
    if metric in _RATIO_METRICS and values and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in values):
        f, df = _RATIO_METRICS[metric]
        x, w = np.asarray(values, dtype=np.float64).T
        r = x.sum() / w.sum()
        return float(f(r)), df(r) * (x - r * w) / w.mean()
    return None


def standard_error(effects: np.ndarray) -> float:
    """SE of a mean from per-item influences: sd(ddof=1) / sqrt(n)."""
    n = len(effects)
    return float(np.std(effects, ddof=1) / math.sqrt(n)) if n > 1 else math.nan


def paired_delta(metric: str, teacher: list, analog: list) -> dict[str, Any]:
    """analog - teacher on the same items, with its paired SE and 95 % interval.

    Returns:
        ``{"teacher", "analog", "delta", "delta_se", "delta_ci95", "teacher_se", "analog_se", "n"}``;
        the SEs are None when the metric has no per-item form here.
    """
    if len(teacher) != len(analog):
        raise ValueError(f"paired delta needs the same items: {len(teacher)} teacher values, {len(analog)} analog values")
    t, a = influence(metric, teacher), influence(metric, analog)
    if t is None or a is None:
        return _without_se(len(teacher))
    delta = a[0] - t[0]
    se = standard_error(a[1] - t[1])
    return {
        "n": len(teacher),
        "teacher": t[0],
        "analog": a[0],
        "teacher_se": standard_error(t[1]),
        "analog_se": standard_error(a[1]),
        "delta": delta,
        "delta_se": se,
        "delta_ci95": [delta - Z95 * se, delta + Z95 * se],
    }


def retained_fraction(teacher: float, analog: float, *, higher_is_better: bool, chance: float | None) -> float | None:
    """How much of the teacher's score the analog keeps.

    Higher-is-better: (analog - chance) / (teacher - chance), chance 0 when not
    multiple choice; lower-is-better (perplexity, bits per byte): teacher / analog.
    None when the teacher is not above chance (nothing to retain).
    """
    if not higher_is_better:
        return teacher / analog if analog > 0 else None
    floor = chance or 0.0
    return (analog - floor) / (teacher - floor) if teacher > floor else None


def retained_se(metric: str, teacher: list, analog: list, *, higher_is_better: bool, chance: float | None) -> float | None:
    """Delta-method standard error of the retained fraction over the same items.

    The fraction is a ratio of both models' scores, R = (A - c) / (T - c) (or T / A
    for a lower-is-better metric), so it moves with the teacher's score as much as
    with the analog's. Its per-item influence linearises R in both:
    (a_i - R t_i) / (T - c), or (t_i - R a_i) / A, where a_i, t_i are the items'
    influences on each score (`influence`). None without a per-item form or a fraction.
    """
    t, a = influence(metric, teacher), influence(metric, analog)
    if t is None or a is None:
        return None
    retained = retained_fraction(t[0], a[0], higher_is_better=higher_is_better, chance=chance)
    if retained is None:
        return None
    if higher_is_better:
        effects = (a[1] - retained * t[1]) / (t[0] - (chance or 0.0))
    else:
        effects = (t[1] - retained * a[1]) / a[0]
    return standard_error(effects)


def primary_metric(results: dict[str, Any], task: str) -> tuple[str, str]:
    """The task's first configured metric and the ``metric,filter`` key lm-eval reports it under."""
    metrics = [m["metric"] for m in results["configs"][task].get("metric_list") or []]
    keys = [k for k in results["results"][task] if "," in k and "_stderr," not in k]
    for metric in metrics:
        for key in keys:
            if key.split(",")[0] == metric:
                return metric, key
    if not keys:
        raise ValueError(f"lm-eval reported no metric for task {task}")
    return keys[0].split(",")[0], keys[0]


def compare(teacher: dict[str, Any], analog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task: both scores, chance, the paired delta and the retained fraction (plain dicts).

    Scores are lm-eval's own aggregates; the per-item values give the intervals.
    """
    out = {}
    for task in teacher["results"]:
        if task not in teacher["samples"]:
            continue  # a group's aggregate row: its tasks are compared one by one
        metric, key = primary_metric(teacher, task)
        filt = key.split(",", 1)[1]
        rows_t = _by_doc(teacher["samples"][task], filt)
        rows_a = _by_doc(analog["samples"][task], filt)
        if rows_t.keys() != rows_a.keys():
            raise ValueError(f"task {task}: the teacher and the analog were scored on different items")
        docs = sorted(rows_t)
        paired = paired_delta(metric, [rows_t[d][metric] for d in docs], [rows_a[d][metric] for d in docs])
        score_t, score_a = teacher["results"][task][key], analog["results"][task][key]
        higher = bool(teacher["higher_is_better"][task].get(metric, True))
        chance = _chance([rows_t[d] for d in docs])
        note = None
        if "teacher" in paired and not (math.isclose(paired["teacher"], score_t, rel_tol=1e-9, abs_tol=1e-12)):
            paired = _without_se(len(docs))
            note = f"lm-eval aggregates {metric} in a way without a per-item form here: no paired standard error"
        delta = score_a - score_t
        teacher_ci = _interval(score_t, paired["teacher_se"])
        retained = retained_fraction(score_t, score_a, higher_is_better=higher, chance=chance)
        if chance is not None and (teacher_ci is None or teacher_ci[0] <= chance):
            retained = None  # nothing above chance to retain (or no interval to tell)
            note = note or (
                f"the teacher is not above chance ({chance:.3g}) beyond its 95 % interval, "
                "so the task shows nothing the analog could retain"
            )
        se = None if retained is None or paired["delta_se"] is None else retained_se(
            metric, [rows_t[d][metric] for d in docs], [rows_a[d][metric] for d in docs], higher_is_better=higher, chance=chance)
        out[task] = {
            "metric": metric,
            "filter": filt,
            "higher_is_better": higher,
            "n": paired["n"],
            "chance": chance,
            "teacher": score_t,
            "analog": score_a,
            "teacher_ci95": teacher_ci,
            "analog_ci95": _interval(score_a, paired["analog_se"]),
            "delta": delta,
            "delta_se": paired["delta_se"],
            "delta_ci95": paired["delta_ci95"],
            "retained": retained,
            "retained_ci95": _interval(retained, se),
            "note": note,
        }
    return out


def _without_se(n: int) -> dict[str, Any]:
    return {"n": n, "teacher_se": None, "analog_se": None, "delta_se": None, "delta_ci95": None}


def _by_doc(rows: list[dict[str, Any]], filt: str) -> dict[Any, dict[str, Any]]:
    return {row["doc_id"]: row for row in rows if row.get("filter", filt) == filt}


def _chance(rows: list[dict[str, Any]]) -> float | None:
    """Expected accuracy of a uniform guess: mean of 1 / number of choices (multiple choice only)."""
    counts = [row["n_choices"] for row in rows if "n_choices" in row]
    return float(np.mean([1 / c for c in counts])) if counts and len(counts) == len(rows) else None


def _interval(value: float, se: float | None) -> list[float] | None:
    return None if se is None or not math.isfinite(se) else [value - Z95 * se, value + Z95 * se]
