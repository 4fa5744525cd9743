"""What every view of the report must agree on.

The markdown, HTML and terminal renderers each print a criterion's status,
its value and its threshold, and order rows failures first. Doing that in one
place keeps the three views from disagreeing about the same report. Nothing
here knows about any output format, nor about any suite: what a metric is and
which report sections a suite adds come in with the suites the caller passes.

The renderers read the report's criteria rows as `criterion.Criterion` objects
(`criteria_of`), so the judged score, the verdict and the counts are those of
`criterion`, whether the report is the in-memory dict or one loaded back from
``fidelity.json`` (where NaN has become ``None``).
"""

import math
from collections.abc import Mapping
from pathlib import PurePath

from pytest_analog.criterion import Criterion, summary, verdict

PASS = "pass"
FAIL = "fail"
INFO = "info"

_STATUS_ORDER = {FAIL: 0, PASS: 1, INFO: 2}

# Top-level keys the generic renderers know; a suite's sections add theirs (`known_sections`),
# and any other key is shown generically.
GENERIC_SECTIONS = frozenset(
    {
        "schema_version",
        "created",
        "tool",
        "verdict",
        "models",
        "environment",
        "config",
        "chance",
        "criteria",
        "summary",
        "error",
        "partial",
    }
)


def known_sections(suites):
    """The top-level keys some renderer shows: the generic ones and those of the ``suites``' sections."""
    return GENERIC_SECTIONS | {key for suite in suites for section in suite.sections for key in section.keys}


def suite_metrics(suites):
    """What each metric of ``suites`` is (`facts.Metric`), by name."""
    return {name: metric for suite in suites for name, metric in suite.metrics.items()}


def suite_sections(suites, after_criteria):
    """The ``suites``' report sections that go before (or, ``after_criteria``, after) the criteria, in suite order."""
    return [section for suite in suites for section in suite.sections if section.after_criteria == after_criteria]


def as_list(value):
    """A list from a list, tuple or array; [] from None. (``x or []`` fails on numpy arrays.)"""
    return [] if value is None else list(value)


def criteria_of(report, metrics=None):
    """The report's criteria rows as `Criterion` objects, each with its metric's facts from ``metrics``."""
    metrics = metrics or {}
    return [Criterion.from_dict(row, metrics.get(row.get("metric"))) for row in report.get("criteria") or []]


def status(criterion):
    """PASS or FAIL for a gated criterion, INFO for an ungated one."""
    if not criterion.gate.gated:
        return INFO
    return PASS if criterion.passed else FAIL


def failures_first(criteria):
    """Sort criteria failures, passes, informational; stable within each."""
    return sorted(criteria, key=lambda c: _STATUS_ORDER[status(c)])


def summary_counts(report, criteria):
    """The report's ``summary``; what it lacks is computed from the criteria (`criterion.summary`).

    So a hand-written or partial report still renders.
    """
    computed = summary(criteria)
    given = report.get("summary")
    if isinstance(given, Mapping):
        computed.update({key: given[key] for key, value in computed.items() if isinstance(given.get(key), type(value))})
    return computed


def verdict_of(report, criteria):
    """The report's verdict; computed (`criterion.verdict`) when it has none."""
    given = report.get("verdict")
    if isinstance(given, str) and given:
        return given
    return verdict(criteria, report.get("error"), report.get("partial"))


def counts_sentence(counts):
    """Return e.g. ``"11/12 gated criteria passed, 1 failed, 20 informational"``."""
    if counts["gated"] == 0:
        return f"{counts['informational']} informational, none gated"
    return (
        f"{counts['passed']}/{counts['gated']} gated criteria passed, "
        f"{counts['failed']} failed, {counts['informational']} informational"
    )


def reference_line(report):
    """E.g. ``teacher reference 3f2a9c1e04b7 (file ref/)``: which teacher reference the run read, or None."""
    ref = report.get("reference")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("id"), str):
        return None
    where = f"file {ref['path']}" if ref.get("source") == "file" else "built from the teacher in this run"
    return f"teacher reference {ref['id'][:12]} ({where}; parts: {', '.join(ref.get('parts') or [])})"


def not_measured_line(counts):
    """E.g. ``not measured (neither passed nor failed): a, b - needs the teacher``, or None (``counts``: `summary_counts`)."""
    missing = counts.get("not_measured") or []
    if not missing:
        return None
    reasons = sorted({str(m.get("reason")) for m in missing})
    return f"not measured (neither passed nor failed): {', '.join(str(m.get('id')) for m in missing)} - {'; '.join(reasons)}"


def as_float(value):
    """Return ``value`` as a float, NaN for None or anything non-numeric."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def is_number(value):
    """True for ints and floats (not bools), NaN included."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt_value(value, *, distinct_from=None):
    """Format a metric value compactly.

    Args:
        value: A number, None, or anything a user metric returned.
        distinct_from: A number that must not print the same as ``value``
            unless equal, e.g. the threshold: 0.49996 against 0.5 prints as
            "0.49996", not "0.5", so a failure never looks like a tie.

    Returns:
        The text; "n/a" for None and for NaN alike, so a report reloaded
        from JSON (where NaN became null) renders the same as the original.
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1_000 else str(value)
    if not isinstance(value, float):
        try:
            value = float(value)  # numpy scalars
        except (TypeError, ValueError):
            text = str(value)
            return text if len(text) <= 40 else text[:39] + "…"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    digits = 4
    text = _fmt_float(value, digits)
    if is_number(distinct_from) and math.isfinite(distinct_from) and value != distinct_from:
        while digits < 17 and text == _fmt_float(float(distinct_from), digits):
            digits += 1
            text = _fmt_float(value, digits)
    return text


def _fmt_float(value, digits):
    """``value`` with ``digits`` significant digits, in exponent form when very small or large."""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{digits - 1}e}"


def fmt_threshold(criterion, *, ascii_only=False):
    """Format the threshold with its direction, e.g. ``"≥ 0.5"`` or ``"≥ 0.5 corrected"``; "" when ungated."""
    gate = criterion.gate
    if not gate.gated:
        return ""
    text = fmt_value(gate.threshold) + (" corrected" if gate.score == "corrected" else "")
    if gate.rule == "lower_bound":  # judged at the interval's conservative end
        text += ", lower end" if gate.direction == "min" else ", upper end"
    return f"{gate.sign(ascii_only)} {text}"


FLAG_NOTES = {
    "too close to call": "its interval holds the threshold, so other prompts or items could turn the verdict",
    "few prompts": "fewer prompts than gates.cka.min_prompts: token-level CKA reads about 1/P too high",
}


def flags(criterion):
    """Short warnings a reader must see beside a criterion's status (keys of `FLAG_NOTES`)."""
    return [flag for flag, raised in (("too close to call", criterion.too_close_to_call),
                                      ("few prompts", criterion.details.get("few_prompts"))) if raised]


def score_columns(criteria):
    """The score columns of a criteria table, as (header, kind) pairs for `fmt_score`: the judged score first,
    then the raw value and the chance level, or the raw value alone where no criterion has a chance level."""
    if not has_chance(criteria):
        return [("value", "raw")]
    return [("score", "judged"), ("raw", "raw"), ("chance", "chance")]


def fmt_headline(criterion):
    """The judged score with its interval, then raw and chance where they differ from it:
    ``0.35 [0.3, 0.4] corrected (raw 0.3997, chance 0.077)``."""
    text = fmt_score(criterion, "judged")
    if criterion.gate.score == "corrected":
        m = criterion.measured
        text += f" corrected (raw {fmt_value(m.value)}, chance {fmt_value(m.chance)})"
    return text


def fmt_score(criterion, kind, *, dash="—", with_interval=True):
    """Format a criterion's ``kind`` of score ("judged", "raw", "corrected" or "chance"), with its interval.

    The number the threshold applies to never prints the same as the threshold
    unless equal (see `fmt_value`). ``dash`` when the criterion has no such
    number, "n/a" for a raw value it lacks.
    """
    kind = criterion.gate.score if kind == "judged" else kind
    m = criterion.measured
    number, interval = (m.chance, m.chance_interval) if kind == "chance" else m.score(kind)
    if number is None and kind != "raw":
        return dash
    judged = kind == criterion.gate.score and criterion.gate.gated
    text = fmt_value(number, distinct_from=criterion.gate.threshold if judged else None)
    if with_interval and interval and all(math.isfinite(v) for v in interval):
        text += f" [{fmt_value(interval[0])}, {fmt_value(interval[1])}]"
    return text


def has_chance(criteria):
    """True when any criterion stands beside a chance level (the tables then show it)."""
    return any(c.measured.chance is not None for c in criteria)


def fmt_count(n):
    """Format a parameter count: 134515008 -> "134.5M"."""
    if not is_number(n):
        return "n/a" if n is None else str(n)
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(n)


def fmt_fraction(x):
    """Format 0.5 as "50.0%"."""
    return f"{x * 100:.1f}%" if is_number(x) and math.isfinite(x) else "n/a"


def short_sha(digest, n=12):
    """First ``n`` hex digits of a digest, or "n/a"."""
    return str(digest)[:n] if digest else "n/a"


def layer_pair(criterion):
    """Return "12 → 6" for a per-layer criterion, "12" with no analog layer, else ""."""
    teacher = criterion.details.get("teacher_layer")
    if teacher is None:
        return ""
    analog = criterion.details.get("analog_layer")
    return f"{teacher}" if analog is None else f"{teacher} → {analog}"


def is_per_layer(criterion):
    """True when a criterion belongs to a teacher layer."""
    return is_number(criterion.details.get("teacher_layer"))


def teacher_layer(criterion):
    """The teacher layer of a per-layer criterion."""
    return criterion.details["teacher_layer"]


def per_layer_groups(criteria):
    """Group per-layer criteria by metric, each group sorted by teacher layer.

    Returns:
        A dict metric -> list of criteria, metrics in first-seen order.
    """
    groups = {}
    for c in criteria:
        if is_per_layer(c):
            groups.setdefault(c.metric, []).append(c)
    for rows in groups.values():
        rows.sort(key=teacher_layer)
    return groups


def layer_metric_summary(rows):
    """Summarise one per-layer metric's criteria (one `per_layer_groups` entry).

    Returns:
        A dict with ``layers`` (count), ``low``/``low_layer`` and
        ``high``/``high_layer`` of the judged scores (None when none is
        finite), ``corrected`` (every row judged on the corrected score),
        ``missing`` (rows without a finite value), ``gated``, ``passed`` and
        ``failed`` as `criterion.summary` counts them, ``threshold``: the
        formatted threshold shared by the gated rows, "varies" when they
        differ, "" when none is gated, and ``too_close``: how many are too
        close to call.
    """
    values = [(as_float(c.judged), teacher_layer(c)) for c in rows]
    finite = [(v, t) for v, t in values if math.isfinite(v)]
    thresholds = {fmt_threshold(c) for c in rows if c.gate.gated}
    low = min(finite) if finite else (None, None)
    high = max(finite) if finite else (None, None)
    counts = summary(rows)
    return {
        "layers": len(rows),
        "low": low[0],
        "low_layer": low[1],
        "high": high[0],
        "high_layer": high[1],
        "missing": len(values) - len(finite),
        "gated": counts["gated"],
        "passed": counts["passed"],
        "failed": counts["failed"],
        "threshold": thresholds.pop() if len(thresholds) == 1 else ("varies" if thresholds else ""),
        "too_close": sum(c.too_close_to_call for c in rows),
        "corrected": all(c.gate.score == "corrected" for c in rows),
    }


def describe_metric(metric, criteria):
    """The explanation of a metric: its facts' if a suite describes it, else a criterion's own description."""
    rows = [c for c in criteria if c.metric == metric]
    facts = next((c.facts for c in rows if c.facts), None)
    if facts:
        return facts.explanation
    return next((c.description for c in rows if c.description), "User-defined metric; no description was given.")


def next_steps(criteria):
    """What each failing metric means for the analog and what usually helps, once per metric.

    Returns:
        A list, in failures-first order, of dicts with ``metric``, ``ids`` (its
        failing gated criteria), ``failure`` and ``remedy`` (from the facts its
        suite gives the metric). Metrics without facts have no entry.
    """
    steps = {}
    for c in failures_first(criteria):
        if status(c) == FAIL and c.facts:
            step = steps.setdefault(c.metric, {"metric": c.metric, "ids": [], "failure": c.facts.failure, "remedy": c.facts.remedy})
            step["ids"].append(c.id)
    return list(steps.values())


def to_jsonable(obj, where="report"):
    """Return a copy of ``obj`` that `json.dumps` accepts with ``allow_nan=False``.

    NaN and infinities become None (JSON has no spelling for them), tuples
    become lists, numpy scalars and arrays become Python numbers and lists,
    paths become strings.

    Raises:
        TypeError: naming the key path of the first value that has no JSON form.
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist(), where)
    raise TypeError(
        f"{where}: expected a JSON value (str, number, bool, None, list, dict), "
        f"got {type(obj).__name__}: {obj!r:.80}"
    )


def calibration_sentence(criteria):
    """One sentence on the permutation null of the per-layer criteria (their ``calibration`` and
    ``best_match_calibration``), or None when none has one: per metric the range of calibrated scores over
    layers and the largest p-value."""
    parts, permutations = [], None
    for metric, rows in per_layer_groups(criteria).items():
        for key, label in (("calibration", metric), ("best_match_calibration", f"{metric} best match")):
            found = [(c.details[key], teacher_layer(c)) for c in rows if isinstance(c.details.get(key), Mapping)]
            scored = [(r["calibrated"], layer) for r, layer in found if is_number(r.get("calibrated"))]
            if not scored:
                continue
            permutations = found[0][0].get("permutations")
            (low, at_low), (high, at_high) = min(scored), max(scored)
            p = max(r["p_value"] for r, _ in found if is_number(r.get("p_value")))
            parts.append(f"{label} {fmt_value(low)} @ {at_low} to {fmt_value(high)} @ {at_high} (p ≤ {fmt_value(p)})")
    if not parts:
        return None
    return (f"Permutation null ({permutations} prompt permutations; calibrated score 0 at the null's 1 − α quantile, "
            f"1 for a perfect match; a best match against the null of the maximum over analog layers): "
            + "; ".join(parts) + ".")
