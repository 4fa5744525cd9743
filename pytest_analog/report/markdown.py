"""The markdown summary: short enough for a CI log, formatted for a pull-request comment.

The page is the generic sections (verdict, models, criteria, next steps,
footer) with each suite's sections (`suite.Section.markdown`) placed before or
after the criteria. A suite's section builds its markdown with `cell`, `code`
and `table`. Top-level keys no renderer knows are named at the end, so nothing
in the JSON goes unmentioned.
"""

from pytest_analog.report.formatting import (
    FAIL,
    FLAG_NOTES,
    INFO,
    PASS,
    calibration_sentence,
    counts_sentence,
    criteria_of,
    failures_first,
    flags,
    fmt_count,
    fmt_fraction,
    fmt_score,
    fmt_threshold,
    fmt_value,
    is_per_layer,
    known_sections,
    layer_metric_summary,
    not_measured_line,
    reference_line,
    next_steps,
    per_layer_groups,
    score_columns,
    short_sha,
    status,
    suite_metrics,
    suite_sections,
    summary_counts,
    verdict_of,
)

ICON = {PASS: "✅", FAIL: "❌", INFO: "ℹ️"}
_VERDICT_ICON = {"pass": "✅", "fail": "❌"}


def cell(text):
    """Escape text for a table cell: no pipes, no raw HTML, one line."""
    text = " ".join(str(text).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def code(text, *, in_table=True):
    """Wrap text in a code span; inside a table cell its pipes are escaped too."""
    text = " ".join(str(text).split())
    if in_table:
        text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def table(header, rows):
    """A markdown table of ``rows`` (lists of cell text) under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _heading(report, criteria):
    """The verdict with its counts, as the page's heading."""
    verdict = verdict_of(report, criteria)
    icon = _VERDICT_ICON.get(verdict, "➖")
    return f"## {icon} Analog fidelity: {cell(verdict.upper())} ({counts_sentence(summary_counts(report, criteria))})"


def _error(report, criteria):
    """The session's error, why the run is partial, the teacher reference and what was not measured, quoted."""
    notes = [f"> **{label}:** {cell(report[key])}" for key, label in (("error", "Error"), ("partial", "Partial run")) if report.get(key)]
    lines = (reference_line(report), not_measured_line(summary_counts(report, criteria)))
    notes += [f"> {cell(line)}" for line in lines if line]
    return "\n>\n".join(notes) or None


def _models(report):
    """The two models side by side, and whether they share a tokenizer."""
    models = report.get("models")
    if not models:
        return None
    rows = []
    for role, label in (("teacher", "teacher"), ("analog", "analog")):
        m = models.get(role) or {}
        params = fmt_count(m.get("parameters"))
        if role == "analog" and models.get("parameter_fraction") is not None:
            params += f" ({fmt_fraction(models['parameter_fraction'])} of teacher)"
        rows.append(
            [
                label,
                code(m.get("id", "n/a")),
                params,
                cell(m.get("num_layers", "n/a")),
                cell(m.get("hidden_size", "n/a")),
                code(short_sha(m.get("sha256"))),
            ]
        )
    out = [table(["", "model", "parameters", "layers", "hidden", "weights sha256"], rows)]
    same = models.get("same_tokenizer")
    tokenizers = [(models.get(r) or {}).get("tokenizer") or {} for r in ("teacher", "analog")]
    if same is True:
        t = tokenizers[0]
        name = code(t.get("name", "n/a"), in_table=False)
        out.append(f"Tokenizer: shared ({name}, vocabulary {fmt_value(t.get('vocab_size'))}).")
    elif same is False:
        described = ", ".join(
            f"{role} {code(t.get('name', 'n/a'), in_table=False)} ({fmt_value(t.get('vocab_size'))})"
            for role, t in zip(("teacher", "analog"), tokenizers)
        )
        out.append(f"Tokenizers differ: {described}.")
    return "\n\n".join(out)


def _criterion_row(c, columns):
    """One criterion's table row: id, scores, threshold, status with its flags."""
    scores = [fmt_score(c, kind) for _, kind in columns]
    return [code(c.id), *scores, fmt_threshold(c) or "—", ICON[status(c)] + "".join(f" ⚠️ {f}" for f in flags(c))]


def _layer_metric_row(metric, rows, columns):
    """One row standing for all of a per-layer metric's criteria, e.g. ``cka, 31 layers``."""
    summary = layer_metric_summary(rows)
    n = summary["layers"]
    name = f"{code(metric)}, {n} layer{'s' if n != 1 else ''}"
    if summary["low"] is None:
        value = "n/a"
    else:
        value = f"min {fmt_value(summary['low'])} @ {summary['low_layer']}"
        if n > 1:
            value += f", max {fmt_value(summary['high'])} @ {summary['high_layer']}"
    if summary["missing"]:
        value += f", {summary['missing']} n/a"
    if summary["corrected"]:
        value += " (corrected)"
    if not summary["gated"]:
        verdict = ICON[INFO]
    else:
        verdict = f"{ICON[FAIL] if summary['failed'] else ICON[PASS]} {summary['passed']}/{summary['gated']}"
        if summary["too_close"]:
            verdict += f" ⚠️ {summary['too_close']} too close to call"
    extra = []
    if len(columns) > 1:  # raw and chance
        above = [c.above_chance for c in rows]
        extra = ["—", f"{above.count(True)}/{len(rows)} layers above chance" if any(a is not None for a in above) else "—"]
    return [name, value, *extra, summary["threshold"] or "—", verdict]


def _criteria(criteria):
    """Failures, single criteria and one line per per-layer metric; the full table folded below.

    A 30-layer model gives about a hundred per-layer rows, which would bury a
    failure in a pull-request comment, so they are summarised per metric and
    listed in full inside a <details> block.
    """
    if not criteria:
        return "_No criteria were recorded._"
    ordered = failures_first(criteria)
    groups = per_layer_groups(criteria)
    columns = score_columns(criteria)
    header = ["criterion", *(name for name, _ in columns), "threshold", "status"]
    note = (
        "\n\nscore: the number the threshold applies to, the corrected score where the threshold says "
        "corrected, else the raw value; chance: the same metric between the teacher and a control without "
        "learned structure; corrected = (raw − chance) / (1 − chance), 0 at chance and 1 for a perfect match; "
        "[brackets]: bootstrap interval over prompts."
    ) if len(columns) > 1 else ""
    flagged = sorted({f for c in criteria for f in flags(c)})
    note += "".join(f"\n\n⚠️ {flag}: {FLAG_NOTES[flag]}." for flag in flagged)
    calibration = calibration_sentence(criteria)
    note += f"\n\n{calibration}" if calibration else ""
    if not groups:
        return table(header, [_criterion_row(c, columns) for c in ordered]) + note
    failing = [c for c in ordered if status(c) == FAIL]
    rows = [_criterion_row(c, columns) for c in failing]
    rows += [_criterion_row(c, columns) for c in ordered if status(c) in (PASS, INFO) and not is_per_layer(c)]
    rows += [_layer_metric_row(metric, group, columns) for metric, group in groups.items()]
    full = table(header, [_criterion_row(c, columns) for c in ordered])
    return (
        table(header, rows) + note
        + f"\n\n<details><summary>All {len(criteria)} criteria</summary>\n\n{full}\n\n</details>"
    )


# Failing criteria named per metric in "What to do next"; the rest are counted.
_NEXT_STEP_IDS = 3


def _next_steps(criteria):
    """Per failing metric: what the failure means for the analog and what usually helps."""
    steps = next_steps(criteria)
    if not steps:
        return None
    lines = []
    for step in steps:
        ids = ", ".join(code(i, in_table=False) for i in step["ids"][:_NEXT_STEP_IDS])
        if len(step["ids"]) > _NEXT_STEP_IDS:
            ids += f" and {len(step['ids']) - _NEXT_STEP_IDS} more"
        lines.append(f"- {code(step['metric'], in_table=False)} ({ids}): {cell(step['failure'])}. "
                     f"Usually helps: {cell(step['remedy'])}.")
    return "**What to do next**\n\n" + "\n".join(lines)


def _footer(report, known):
    """The tool and date, and the top-level keys no renderer showed (not in ``known``)."""
    extra = [key for key in report if key not in known]
    tool = report.get("tool") or {}
    line = f"_{cell(tool.get('name', 'pytest-analog'))} {cell(tool.get('version', ''))}".rstrip()
    if report.get("created"):
        line += f", {cell(report['created'])}"
    line += ". Full details in fidelity.html and fidelity.json."
    if extra:
        line += " Also in fidelity.json: " + ", ".join(cell(k) for k in extra) + "."
    return line + "_"


def _suite_parts(report, suites, after_criteria):
    """The markdown of the ``suites``' sections that go before (or after) the criteria."""
    return [section.markdown(report) for section in suite_sections(suites, after_criteria) if section.markdown]


def render_markdown(report, suites=()):
    """Render the report as a markdown summary.

    Args:
        report: The report document (see `pytest_analog.report.schema`).
        suites: The `suite.Suite` objects whose sections and metric facts the page shows, in report order.

    Returns:
        Markdown text ending in a newline: a verdict heading with counts, a
        models table, the suites' sections before the criteria, a criteria
        table with failures first, what to do next, the suites' sections after
        the criteria, and a footer naming the keys no section showed.
    """
    criteria = criteria_of(report, suite_metrics(suites))
    parts = [
        _heading(report, criteria),
        _error(report, criteria),
        _models(report),
        *_suite_parts(report, suites, after_criteria=False),
        _criteria(criteria),
        _next_steps(criteria),
        *_suite_parts(report, suites, after_criteria=True),
        _footer(report, known_sections(suites)),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"
