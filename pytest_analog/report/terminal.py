"""The table pytest prints in its terminal summary.

A model with 30 layers and three per-layer metrics yields about a hundred
criteria; printing them all would bury the one that failed. So every failure
gets its own row, each per-layer metric gets one summary line, and the
remaining single criteria fill what is left of the line budget. ASCII only,
since terminals on CI runners do not all speak UTF-8.
"""

from pytest_analog.report.formatting import (
    FAIL,
    INFO,
    PASS,
    counts_sentence,
    criteria_of,
    flags,
    failures_first,
    fmt_score,
    fmt_threshold,
    fmt_value,
    is_per_layer,
    layer_metric_summary,
    not_measured_line,
    per_layer_groups,
    reference_line,
    score_columns,
    status,
    summary_counts,
    verdict_of,
)

_LABEL = {PASS: "PASS", FAIL: "FAIL", INFO: "info"}
# Longer criterion ids are cut in the middle, keeping the parametrization at the end.
_MAX_ID = 60


def _shorten(text, width=_MAX_ID):
    """``text`` cut to ``width`` characters in the middle."""
    if len(text) <= width:
        return text
    keep = width - 3
    return text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2):]


def _row(c, columns):
    """A criterion's cells: id, its scores (the judged one, then raw and chance), threshold and status."""
    scores = [fmt_score(c, kind, dash="-", with_interval=False) for _, kind in columns]
    label = _LABEL[status(c)] + "".join(f" ({flag})" for flag in flags(c))
    return (_shorten(c.id), *scores, fmt_threshold(c, ascii_only=True), label)


def _metric_line(metric, rows):
    """E.g. ``cka: 31 layers, min 0.41 @ layer 17, max 0.97 @ layer 24, 30/31 pass``."""
    summary = layer_metric_summary(rows)
    n = summary["layers"]
    parts = [f"{metric}{' (corrected)' if summary['corrected'] else ''}: {n} layer{'s' if n != 1 else ''}"]
    if summary["low"] is not None:
        parts.append(f"min {fmt_value(summary['low'])} @ layer {summary['low_layer']}")
        parts.append(f"max {fmt_value(summary['high'])} @ layer {summary['high_layer']}")
    if summary["missing"]:
        parts.append(f"{summary['missing']} without a value")
    parts.append(f"{summary['passed']}/{summary['gated']} pass" if summary["gated"] else "informational")
    if summary["too_close"]:
        parts.append(f"{summary['too_close']} too close to call")
    return ", ".join(parts)


def _head(report, criteria):
    """The verdict line with its counts, then the error, why the run is partial, the reference and what was not measured."""
    counts = summary_counts(report, criteria)
    head = [f"analog fidelity: {verdict_of(report, criteria).upper()} - {counts_sentence(counts)}"]
    if report.get("error"):
        head.append(f"  error: {report['error']}")
    if report.get("partial"):
        head.append(f"  partial run: {report['partial']}")
    return head + [f"  {line}" for line in (reference_line(report), not_measured_line(counts)) if line]


def terminal_lines(report, max_lines=40):
    """Render a compact summary table for pytest's terminal summary.

    Args:
        report: The report document (see `pytest_analog.report.schema`).
        max_lines: Line budget. Every failure is listed even past it;
            passing and informational single criteria are dropped first.

    Returns:
        Lines without trailing newlines: a verdict line, a table of
        criterion / score (with raw and chance when measured) / threshold / status, and one range line per
        per-layer metric.
    """
    criteria = criteria_of(report)
    head = _head(report, criteria)
    if not criteria:
        return head

    groups = per_layer_groups(criteria)
    ordered = failures_first(criteria)
    failing = [c for c in ordered if status(c) == FAIL]
    singles = [c for c in ordered if status(c) in (PASS, INFO) and not is_per_layer(c)]
    summaries = [_metric_line(metric, rows) for metric, rows in groups.items()]

    # Verdict (and error) lines, table header, failures and per-metric lines are always shown.
    room = max(0, max_lines - len(head) - 1 - len(failing) - len(summaries))
    shown = singles if len(singles) <= room else singles[: max(0, room - 1)]
    hidden = len(singles) - len(shown)

    columns = score_columns(criteria)
    rows = [_row(c, columns) for c in failing + shown]
    header = ("criterion", *(name for name, _ in columns), "threshold", "status")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        """A row's cells, padded to the columns' widths."""
        scores = "".join(f"  {v:>{w}}" for v, w in zip(r[1:-2], widths[1:-2]))
        return f"  {r[0]:<{widths[0]}}{scores}  {r[-2]:<{widths[-2]}}  {r[-1]}".rstrip()

    lines = head + [line(header)] + [line(r) for r in rows]
    if hidden:
        lines.append(f"  ... {hidden} more passing or informational criteria in fidelity.md")
    lines += [f"  {s}" for s in summaries]
    return lines
