"""The markdown summary: short enough for a CI log, formatted for a pull-request comment.

The page is a list of section renderers, each taking the report and
returning markdown (or None to skip). A later feature adds its section by
writing one function and appending it to `SECTIONS`. Top-level keys no
renderer knows are named at the end, so nothing in the JSON goes unmentioned.
"""

from pytest_analog.report._format import (
    FAIL,
    FLAG_NOTES,
    INFO,
    KNOWN_SECTIONS,
    PASS,
    UNKNOWN,
    as_list,
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
    judged_key,
    layer_metric_summary,
    not_measured_line,
    reference_line,
    massive_sentence,
    massive_tables,
    next_steps,
    per_layer_groups,
    score_columns,
    short_sha,
    status,
    summary_counts,
    verdict_of,
)

_ICON = {PASS: "✅", FAIL: "❌", INFO: "ℹ️", UNKNOWN: "⚠️"}
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


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _heading(report):
    verdict = verdict_of(report)
    icon = _VERDICT_ICON.get(verdict, "➖")
    return f"## {icon} Analog fidelity: {cell(verdict.upper())} ({counts_sentence(summary_counts(report))})"


def _error(report):
    notes = [f"> **{label}:** {cell(report[key])}" for key, label in (("error", "Error"), ("partial", "Partial run")) if report.get(key)]
    notes += [f"> {cell(line)}" for line in (reference_line(report), not_measured_line(report)) if line]
    return "\n>\n".join(notes) or None


def _models(report):
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
    out = [_table(["", "model", "parameters", "layers", "hidden", "weights sha256"], rows)]
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


def _capture(report):
    capture = report.get("capture")
    if not capture:
        return None
    what = []  # e.g. "5,123 aligned positions from 256 prompts (`default`, 0 dropped)"
    if capture.get("n_rows") is not None:
        what.append(f"{fmt_value(capture['n_rows'])} aligned positions")
    if capture.get("n_prompts") is not None:
        prompts = f"from {fmt_value(capture['n_prompts'])} prompts"
        details = []
        if capture.get("prompt_set"):
            details.append(code(capture["prompt_set"], in_table=False))
        if capture.get("n_prompts_dropped") is not None:
            details.append(f"{fmt_value(capture['n_prompts_dropped'])} dropped")
        if details:
            prompts += f" ({', '.join(details)})"
        what.append(prompts)
    parts = [" ".join(what)] if what else []
    if capture.get("alignment"):
        parts.append(f"{cell(capture['alignment'])} alignment")
    line = "**Compared:** " + (", ".join(parts) or "see fidelity.json")
    if capture.get("positions"):
        line += f". Positions: {cell(capture['positions'])}"
    if capture.get("seconds") is not None:
        line += f". Capture took {fmt_value(capture['seconds'])} s" + (" (cached)" if capture.get("cached") else "")
    return line + "."


def _criterion_row(c, columns):
    scores = [fmt_score(c, key or judged_key(c)) for _, key in columns]
    return [code(c.get("id", "?")), *scores, fmt_threshold(c) or "—", _ICON[status(c)] + "".join(f" ⚠️ {f}" for f in flags(c))]


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
        verdict = _ICON[INFO]
    else:
        verdict = f"{_ICON[FAIL] if summary['failed'] else _ICON[PASS]} {summary['passed']}/{summary['gated']}"
        if summary["too_close"]:
            verdict += f" ⚠️ {summary['too_close']} too close to call"
    extra = []
    if len(columns) > 1:  # raw and chance
        above = [c.get("above_chance") for c in rows]
        extra = ["—", f"{above.count(True)}/{len(rows)} layers above chance" if any(a is not None for a in above) else "—"]
    return [name, value, *extra, summary["threshold"] or "—", verdict]


def _criteria(report):
    """Failures, single criteria and one line per per-layer metric; the full table folded below.

    A 30-layer model gives about a hundred per-layer rows, which would bury a
    failure in a pull-request comment, so they are summarised per metric and
    listed in full inside a <details> block.
    """
    criteria = criteria_of(report)
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
        return _table(header, [_criterion_row(c, columns) for c in ordered]) + note
    failing = [c for c in ordered if status(c) in (FAIL, UNKNOWN)]
    rows = [_criterion_row(c, columns) for c in failing]
    rows += [_criterion_row(c, columns) for c in ordered if status(c) in (PASS, INFO) and not is_per_layer(c)]
    rows += [_layer_metric_row(metric, group, columns) for metric, group in groups.items()]
    full = _table(header, [_criterion_row(c, columns) for c in ordered])
    return (
        _table(header, rows) + note
        + f"\n\n<details><summary>All {len(criteria)} criteria</summary>\n\n{full}\n\n</details>"
    )


# Failing criteria named per metric in "What to do next"; the rest are counted.
_NEXT_STEP_IDS = 3


def _next_steps(report):
    """Per failing metric: what the failure means for the analog and what usually helps."""
    steps = next_steps(criteria_of(report))
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


def _layers(report):
    layers = report.get("layers")
    if not layers:
        return None
    teacher = as_list(layers.get("teacher"))
    best = as_list(layers.get("best_match"))
    mapped = as_list(layers.get("mapped"))
    if not teacher or not (best or mapped):
        return None
    labelled = [("teacher", teacher), ("best", best), ("mapped", mapped)]
    labelled = [(name, values) for name, values in labelled if values]
    labelled = [(name, ["-" if v is None else str(v) for v in values]) for name, values in labelled]
    width = max(len(v) for _, values in labelled for v in values)
    lines = [f"{name:<7} " + " ".join(f"{v:>{width}}" for v in values) for name, values in labelled]
    text = "**Layer map** (analog layer per teacher layer; best = highest CKA, mapped = what gated criteria use):\n\n"
    text += "```\n" + "\n".join(lines) + "\n```"
    if best and mapped:
        differ = [str(t) for t, b, m in zip(teacher, best, mapped) if b != m]
        agree = min(len(teacher), len(best), len(mapped)) - len(differ)
        text += f"\n\nBest match and mapped agree on {agree}/{min(len(teacher), len(best), len(mapped))} teacher layers"
        text += f"; they differ at teacher layers {', '.join(differ)}." if differ else "."
    return text


# Cell markup by column kind (see `massive_tables`).
_CELL = {"code": code, "num": str, "text": cell}


def _massive(report):
    section = report.get("massive")
    if not section:
        return None
    text = f"**{cell(massive_sentence(section))}**"
    for note, columns, rows in massive_tables(section):
        text += (f"\n\n{note}" if note else "") + "\n\n" + _table(
            [heading for heading, _ in columns],
            [[_CELL[kind](v) for (_, kind), v in zip(columns, row)] for row in rows])
    return text


def _compliance(report):
    """What each release-compliance check found, or what is missing and where it was looked for."""
    checks = [c for c in criteria_of(report) if c.get("suite") == "compliance"]
    if not checks:
        return None
    lines = [f"- {_ICON[status(c)]} {code(c.get('id', '?'), in_table=False)}: {cell(c.get('reason') or '')}" for c in failures_first(checks)]
    return "**Release compliance**\n\n" + "\n".join(lines)


def _steering(report):
    steering = report.get("steering")
    if not steering or not steering.get("behaviours"):
        return None
    rows = [
        [cell(name), f"{layer} ← {case.get('analog_layer')}", fmt_value(case.get("baseline")),
         fmt_value(case.get("native_max_effect")), fmt_value(case.get("transfer_ratio")),
         fmt_value((case.get("spearman") or {}).get("transferred")), fmt_value(case.get("random_control"))]
        for name, layers in steering["behaviours"].items()
        for layer, case in layers.items()
    ]
    header = ["behaviour", "teacher ← analog layer", "p(matching)", "max native effect", "transfer ratio",
              "Spearman ρ", "random / native"]
    rule = f"\n\nAnalog layer: {cell(steering['layer_rule'])}." if steering.get("layer_rule") else ""
    return (f"**Steering transfer** ({cell(steering.get('map', '?'))} map; dose-response plots in fidelity.html):\n\n"
            + _table(header, rows) + rule)


def _benchmarks(report):
    section = report.get("benchmarks")
    if not section or not section.get("tasks"):
        return None

    def shown(value):
        return "—" if value is None else fmt_value(value)

    rows = []
    for task, row in section["tasks"].items():
        delta = shown(row.get("delta"))
        if row.get("delta_ci95"):
            delta += " [" + ", ".join(fmt_value(v) for v in row["delta_ci95"]) + "]"
        rows.append([code(task), cell(row.get("metric", "")), shown(row.get("teacher")), shown(row.get("analog")),
                     delta, shown(row.get("chance")), shown(row.get("retained"))])
    title = (
        f"**Benchmarks** (lm-evaluation-harness {cell(section.get('lm_eval_version'))}; "
        "delta = analog − teacher with a paired 95 % interval; retained is chance-corrected):\n\n"
    )
    return title + _table(["task", "metric", "teacher", "analog", "delta [95 % CI]", "chance", "retained"], rows)


def _footer(report):
    extra = [key for key in report if key not in KNOWN_SECTIONS]
    tool = report.get("tool") or {}
    line = f"_{cell(tool.get('name', 'pytest-analog'))} {cell(tool.get('version', ''))}".rstrip()
    if report.get("created"):
        line += f", {cell(report['created'])}"
    line += ". Full details in fidelity.html and fidelity.json."
    if extra:
        line += " Also in fidelity.json: " + ", ".join(cell(k) for k in extra) + "."
    return line + "_"


# Section renderers in page order: report -> markdown text, or None to skip.
SECTIONS = [_heading, _error, _models, _capture, _criteria, _next_steps, _compliance, _layers, _massive, _steering, _benchmarks, _footer]


def render_markdown(report):
    """Render the report as a markdown summary.

    Args:
        report: The report document (see `pytest_analog.report.schema`).

    Returns:
        Markdown text ending in a newline: a verdict heading with counts, a
        models table, the compared positions, a criteria table with failures
        first, and a compact layer map when the report has layers.
    """
    parts = (section(report) for section in SECTIONS)
    return "\n\n".join(p for p in parts if p) + "\n"
