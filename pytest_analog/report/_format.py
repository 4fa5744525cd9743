"""What every view of the report must agree on.

The markdown, HTML and terminal renderers each print a criterion's status,
its value and its threshold, and order rows failures first. Doing that in one
place keeps the three views from disagreeing about the same report. Nothing
here knows about any output format.

The functions accept a report that was loaded back from ``fidelity.json``,
where NaN has become ``None``, as well as the in-memory dict.
"""

import math
from collections.abc import Mapping
from pathlib import PurePath

from pytest_analog.facts import METRICS

PASS = "pass"
FAIL = "fail"
INFO = "info"
# A gated criterion with no outcome, e.g. its value could not be computed.
UNKNOWN = "unknown"

_STATUS_ORDER = {FAIL: 0, UNKNOWN: 1, PASS: 2, INFO: 3}

# Top-level keys the renderers know; any other key is shown generically.
KNOWN_SECTIONS = frozenset(
    {
        "schema_version",
        "created",
        "tool",
        "verdict",
        "models",
        "environment",
        "config",
        "capture",
        "layers",
        "chance",
        "criteria",
        "summary",
        "error",
        "partial",
        "steering",
        "benchmarks",
        "massive",
    }
)

def as_list(value):
    """A list from a list, tuple or array; [] from None. (``x or []`` fails on numpy arrays.)"""
    return [] if value is None else list(value)


def criteria_of(report):
    """Return the report's criteria as a list (empty when absent)."""
    return list(report.get("criteria") or [])


def status(criterion):
    """Classify a criterion as PASS, FAIL, INFO or UNKNOWN.

    Args:
        criterion: One entry of ``report["criteria"]``.

    Returns:
        One of the module constants. Ungated criteria are INFO whatever
        ``passed`` says; a gated one with ``passed`` null is UNKNOWN.
    """
    if not criterion.get("gated"):
        return INFO
    passed = criterion.get("passed")
    if passed is True:
        return PASS
    if passed is False:
        return FAIL
    return UNKNOWN


def failures_first(criteria):
    """Sort criteria failures, unknowns, passes, informational; stable within each."""
    return sorted(criteria, key=lambda c: _STATUS_ORDER[status(c)])


def summary_counts(report):
    """Return gated/passed/failed/informational counts.

    The report's own ``summary`` wins; counts it lacks are computed from the
    criteria, so a hand-written or partial report still renders.
    """
    criteria = criteria_of(report)
    statuses = [status(c) for c in criteria]
    computed = {
        "gated": sum(s != INFO for s in statuses),
        "passed": statuses.count(PASS),
        "failed": statuses.count(FAIL),
        "informational": statuses.count(INFO),
    }
    given = report.get("summary")
    if isinstance(given, Mapping):
        for key in computed:
            if isinstance(given.get(key), int):
                computed[key] = given[key]
    return computed


def verdict_of(report):
    """Return the verdict string, computing it when the report has none."""
    verdict = report.get("verdict")
    if isinstance(verdict, str) and verdict:
        return verdict
    counts = summary_counts(report)
    if counts["gated"] == 0:
        return "no gated criteria"
    return "fail" if counts["failed"] else "pass"


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


def not_measured_line(report):
    """E.g. ``not measured (neither passed nor failed): a, b - needs the teacher``, or None."""
    missing = (report.get("summary") or {}).get("not_measured") or []
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
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{digits - 1}e}"


def fmt_threshold(criterion, *, ascii_only=False):
    """Format the threshold with its direction, e.g. ``"≥ 0.5"`` or ``"≥ 0.5 corrected"``; "" when ungated."""
    threshold = criterion.get("threshold")
    if threshold is None:
        return ""
    text = fmt_value(threshold) + (" corrected" if criterion.get("score") == "corrected" else "")
    if criterion.get("rule") == "lower_bound":  # judged at the interval's conservative end
        text += ", lower end" if criterion.get("direction") == "min" else ", upper end"
    direction = criterion.get("direction")
    if direction == "min":
        return (">= " if ascii_only else "≥ ") + text
    if direction == "max":
        return ("<= " if ascii_only else "≤ ") + text
    return text


FLAG_NOTES = {
    "too close to call": "its interval holds the threshold, so other prompts or items could turn the verdict",
    "few prompts": "fewer prompts than gates.cka.min_prompts: token-level CKA reads about 1/P too high",
}


def flags(criterion):
    """Short warnings a reader must see beside a criterion's status (keys of `FLAG_NOTES`)."""
    return [flag for flag, key in (("too close to call", "too_close_to_call"), ("few prompts", "few_prompts"))
            if criterion.get(key)]


def judged_key(criterion):
    """The key of the number the threshold applies to: "corrected" where ``score: corrected``, else "value"."""
    return "corrected" if criterion.get("score") == "corrected" else "value"


def score_columns(criteria):
    """The score columns of a criteria table: the judged score first, then the raw value and the chance level.

    Returns:
        (header, key) pairs; ``key`` None stands for each criterion's `judged_key`.
    """
    if not has_chance(criteria):
        return [("value", "value")]
    return [("score", None), ("raw", "value"), ("chance", "chance")]


def fmt_headline(criterion):
    """The judged score with its interval, then raw and chance where they differ from it:
    ``0.35 [0.3, 0.4] corrected (raw 0.3997, chance 0.077)``."""
    key = judged_key(criterion)
    text = fmt_score(criterion, key)
    if key == "corrected":
        text += f" corrected (raw {fmt_value(criterion.get('value'))}, chance {fmt_value(criterion.get('chance'))})"
    return text


def fmt_score(criterion, key):
    """Format ``value``, ``chance`` or ``corrected`` of a criterion, with its interval when there is one.

    The number the threshold applies to never prints the same as the threshold
    unless equal (see `fmt_value`). "—" when the criterion has no such number.
    """
    number = criterion.get(key)
    if number is None and key != "value":
        return "—"
    threshold = criterion.get("threshold")
    text = fmt_value(number, distinct_from=threshold if key == judged_key(criterion) and is_number(threshold) else None)
    interval = criterion.get({"value": "interval"}.get(key, f"{key}_interval"))
    if interval and all(is_number(v) for v in interval):
        text += f" [{fmt_value(interval[0])}, {fmt_value(interval[1])}]"
    return text


def has_chance(criteria):
    """True when any criterion stands beside a chance level (the tables then show it)."""
    return any(c.get("chance") is not None for c in criteria)


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
    teacher = criterion.get("teacher_layer")
    if teacher is None:
        return ""
    student = criterion.get("analog_layer")
    return f"{teacher}" if student is None else f"{teacher} → {student}"


def is_per_layer(criterion):
    """True when a criterion belongs to a teacher layer."""
    return is_number(criterion.get("teacher_layer"))


def per_layer_groups(criteria):
    """Group per-layer criteria by metric, each group sorted by teacher layer.

    Returns:
        A dict metric -> list of criteria, metrics in first-seen order.
    """
    groups = {}
    for c in criteria:
        if is_per_layer(c):
            groups.setdefault(str(c.get("metric", "?")), []).append(c)
    for rows in groups.values():
        rows.sort(key=lambda c: c["teacher_layer"])
    return groups


def layer_metric_summary(rows):
    """Summarise one per-layer metric's criteria (one `per_layer_groups` entry).

    Returns:
        A dict with ``layers`` (count), ``low``/``low_layer`` and
        ``high``/``high_layer`` of the judged scores (`judged_key`; None when
        none is finite), ``corrected`` (every row judged on the corrected score), ``missing``
        (rows without a finite value), ``gated``, ``passed``, ``failed``,
        ``threshold``: the formatted threshold shared by the gated rows,
        "varies" when they differ, "" when none is gated, and ``too_close``:
        how many are too close to call.
    """
    values = [(as_float(c.get(judged_key(c))), c["teacher_layer"]) for c in rows]
    finite = [(v, t) for v, t in values if math.isfinite(v)]
    statuses = [status(c) for c in rows]
    thresholds = {fmt_threshold(c) for c in rows if c.get("gated") and c.get("threshold") is not None}
    close = sum("too close to call" in flags(c) for c in rows)
    low = min(finite) if finite else (None, None)
    high = max(finite) if finite else (None, None)
    return {
        "layers": len(rows),
        "low": low[0],
        "low_layer": low[1],
        "high": high[0],
        "high_layer": high[1],
        "missing": len(values) - len(finite),
        "gated": len(rows) - statuses.count(INFO),
        "passed": statuses.count(PASS),
        "failed": statuses.count(FAIL) + statuses.count(UNKNOWN),
        "threshold": thresholds.pop() if len(thresholds) == 1 else ("varies" if thresholds else ""),
        "too_close": close,
        "corrected": all(judged_key(c) == "corrected" for c in rows),
    }


def describe_metric(metric, criteria=()):
    """Return the explanation of a metric: ours if known, else a criterion's own description."""
    if metric in METRICS:
        return METRICS[metric].explanation
    for c in criteria:
        if c.get("metric") == metric and c.get("description"):
            return str(c["description"])
    return "User-defined metric; no description was given."


def next_steps(criteria):
    """What each failing built-in metric means for the analog and what usually helps, once per metric.

    Returns:
        A list, in failures-first order, of dicts with ``metric``, ``ids`` (its
        failing or unmeasured gated criteria), ``failure`` and ``remedy``
        (from `pytest_analog.facts.METRICS`). User metrics have no entry.
    """
    steps = {}
    for c in failures_first(criteria):
        metric = c.get("metric")
        if status(c) in (FAIL, UNKNOWN) and metric in METRICS:
            facts = METRICS[metric]
            step = steps.setdefault(metric, {"metric": metric, "ids": [], "failure": facts.failure, "remedy": facts.remedy})
            step["ids"].append(str(c.get("id", "?")))
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


def massive_sentence(section):
    """What the report says about massive-activation rows, in one sentence (no markup)."""
    rows = as_list(section.get("rows"))
    rule = section.get("rule", "")
    if not rows:
        return f"Massive activations ({rule}): none found."
    layers = ", ".join(f"{n} at layer {layer}" for layer, n in (section.get("by_layer") or {}).items() if n)
    fate = ("left out of the token-level metrics (CKA, its interval, the layer matrix), for the analog and the "
            "control alike" if section.get("excluded") else "kept in the token-level metrics")
    note = f" {section['note']}." if section.get("note") else ""
    return f"Massive activations ({rule}): {len(rows)} row{'s' if len(rows) != 1 else ''} ({layers}), {fate}.{note}"


def massive_rows(section):
    """(token, prompt, position, "layer (ratio×), ...") per massive row."""
    out = []
    for r in as_list(section.get("rows")):
        ratios = r.get("norm_ratio") or {}
        where = ", ".join(f"{layer} ({fmt_value(as_float(ratio))}×)" for layer, ratio in ratios.items())
        out.append((str(r.get("token", "?")), fmt_value(r.get("prompt")), fmt_value(r.get("position")), where))
    return out


def influence_rows(section):
    """(teacher layer, rows left out, CKA without them, shift, corrected shift) per gated layer."""
    out = []
    for layer, f in (section.get("influence") or {}).items():
        shift = f.get("corrected_shift", f.get("shift"))
        out.append((str(layer), fmt_value(f.get("rows")), fmt_value(f.get("value")), fmt_value(f.get("shift")),
                    "—" if f.get("corrected_shift") is None else fmt_value(shift)))
    return out


# What the influence table shows, said the same in every report format.
INFLUENCE_NOTE = ("Influence: the gated CKA when, in addition, the top 0.1 % of its rows by teacher norm are "
                  "left out. A large shift means a few tokens decide the value.")


def massive_tables(section):
    """The massive-activations section's tables: the rows found, then their influence on the gated CKA.

    Returns:
        A list of (note, columns, rows), empty tables left out. ``note`` (or None) is prose that goes
        before the table; each column is (heading, kind), the kind ("code", "num" or "text") telling
        a renderer how to mark up that column's cells.
    """
    tables = []
    rows = massive_rows(section)
    if rows:
        columns = (("token", "code"), ("prompt", "num"), ("position", "num"), ("teacher layers (norm / median)", "text"))
        tables.append((None, columns, rows))
    influence = influence_rows(section)
    if influence:
        headings = ("teacher layer", "rows left out", "CKA without them", "shift", "corrected shift")
        tables.append((INFLUENCE_NOTE, tuple((h, "num") for h in headings), influence))
    return tables


def calibration_sentence(criteria):
    """One sentence on the permutation null of the per-layer criteria (their ``calibration`` and
    ``best_match_calibration``), or None when none has one: per metric the range of calibrated scores over
    layers and the largest p-value."""
    parts, permutations = [], None
    for metric, rows in per_layer_groups(criteria).items():
        for key, label in (("calibration", metric), ("best_match_calibration", f"{metric} best match")):
            found = [(c[key], c["teacher_layer"]) for c in rows if isinstance(c.get(key), Mapping)]
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
