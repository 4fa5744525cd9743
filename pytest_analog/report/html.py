"""The HTML report: one self-contained page an auditor can open offline.

Everything is inline: CSS in a <style> block, plots as base64 PNG data URIs,
no scripts, fonts or links to anywhere. A Content-Security-Policy meta tag
forbids everything but inline styles and data: images, so even a string that
slipped past escaping could not load or run anything. Every string from the
report goes through `esc`.

The page is a list of section renderers, each taking the report and
returning an HTML fragment (or None to skip). A later feature adds its
section by writing one function and appending it to `SECTIONS`; top-level
keys no renderer knows are shown as JSON by `_unknown_sections`.
"""

import base64
import html
import json

from pytest_analog.report import plots
from pytest_analog.report._format import (
    FAIL,
    FLAG_NOTES,
    INFO,
    KNOWN_SECTIONS,
    PASS,
    UNKNOWN,
    as_float,
    as_list,
    calibration_sentence,
    counts_sentence,
    criteria_of,
    describe_metric,
    failures_first,
    flags,
    fmt_count,
    fmt_fraction,
    fmt_headline,
    fmt_score,
    fmt_threshold,
    fmt_value,
    is_number,
    judged_key,
    layer_pair,
    massive_sentence,
    massive_tables,
    next_steps,
    score_columns,
    status,
    summary_counts,
    to_jsonable,
    verdict_of,
    not_measured_line,
    reference_line,
)

_STATUS_LABEL = {PASS: "PASS", FAIL: "FAIL", INFO: "info", UNKNOWN: "NO RESULT"}

_CSS = """
:root { --fail: #b71c1c; --pass: #1b5e20; --info: #455a64; --unknown: #e65100; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1200px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; margin-top: 2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
code, pre { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { overflow-wrap: anywhere; }
pre { background: #f6f8fa; padding: .75rem; overflow: auto; border-radius: 6px; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid var(--line); padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.banner { padding: 1rem 1.25rem; border-radius: 8px; color: #fff; background: var(--info); }
.banner.pass { background: var(--pass); }
.banner.fail { background: var(--fail); }
.banner .verdict { font-size: 1.8rem; font-weight: 700; letter-spacing: .03em; }
.banner code { color: inherit; }
.status { font-weight: 700; white-space: nowrap; }
tr.fail td { background: #ffebee; } tr.fail .status { color: var(--fail); }
tr.pass .status { color: var(--pass); }
tr.info .status { color: var(--info); font-weight: 400; }
tr.unknown td { background: #fff3e0; } tr.unknown .status { color: var(--unknown); }
.flag { display: block; font-weight: 400; font-size: 0.85em; color: var(--unknown); }
.note { color: #57606a; font-size: .9rem; }
.important { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .5rem .75rem; }
.scroll { overflow-x: auto; }
/* The criteria tables fit the page: ids wrap anywhere, an interval sits below its value. */
table.criteria { width: 100%; }
.ci { display: block; font-size: .8em; color: #57606a; }
.glossary { background: #f6f8fa; border-radius: 6px; padding: .5rem 1rem; font-size: .9rem; margin: 0;
            display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
.glossary dt { font-weight: 700; } .glossary dd { margin: 0; }
.banner ul { margin: .5rem 0 0; padding-left: 1.2rem; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
details { margin: .5rem 0; } summary { cursor: pointer; font-weight: 600; }
dl.next dt { margin-top: .5rem; } dl.next dd { margin: .15rem 0 0 1.2rem; }
footer { margin-top: 2rem; color: #57606a; font-size: .85rem; }
"""

# Forbid every fetch and every script: the page needs only its inline CSS and data: images.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value):
    """HTML-escape any value's text, quotes included."""
    return html.escape(str(value), quote=True)


def _section(title, body, anchor):
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def _value_html(value):
    """Render a scalar as escaped text, a list or dict as compact JSON."""
    if isinstance(value, (dict, list, tuple)):
        return f"<code>{esc(json.dumps(to_jsonable(value), ensure_ascii=False))}</code>"
    if value is None:
        return '<span class="note">n/a</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    return esc(fmt_value(value) if is_number(value) else value)


def _kv_table(mapping, labels=None):
    """A two-column table of a mapping's entries, known keys labelled, unknown ones as-is."""
    labels = labels or {}
    rows = "\n".join(
        f"<tr><th>{esc(labels.get(key, key))}</th><td>{_value_html(value)}</td></tr>"
        for key, value in mapping.items()
    )
    return f"<table>\n{rows}\n</table>"


def _png_img(draw, *args, alt):
    """Embed the PNG that ``draw(*args)`` returns; a failing plot becomes a note, not a lost report."""
    try:
        png = draw(*args)
    except Exception as exc:  # a plot bug must not cost the auditor the rest of the page
        return f'<p class="note">Plot unavailable: {esc(type(exc).__name__)}: {esc(exc)}</p>'
    if png is None:
        return None
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


# Failures named in the banner; the rest are in the criteria table.
_BANNER_FAILURES = 15


def _banner(report):
    verdict = verdict_of(report)
    css = verdict if verdict in ("pass", "fail") else "none"
    models = report.get("models") or {}
    teacher = (models.get("teacher") or {}).get("id", "n/a")
    student = (models.get("analog") or {}).get("id", "n/a")
    failing = [c for c in failures_first(criteria_of(report)) if status(c) in (FAIL, UNKNOWN)]
    items = "".join(f"<li>{_failure_text(c)}</li>" for c in failing[:_BANNER_FAILURES])
    if len(failing) > _BANNER_FAILURES:
        items += f"<li>… and {len(failing) - _BANNER_FAILURES} more, listed under Criteria</li>"
    return (
        "<header>\n<h1>Analog fidelity report</h1>\n"
        f'<div class="banner {css}"><div class="verdict">{esc(verdict.upper())}</div>'
        f"<div>{esc(counts_sentence(summary_counts(report)))}</div>"
        f"<div>teacher <code>{esc(teacher)}</code> → analog <code>{esc(student)}</code></div>"
        + (f"<p><strong>Error:</strong> {esc(report['error'])}</p>" if report.get("error") else "")
        + (f"<p><strong>Partial run:</strong> {esc(report['partial'])}</p>" if report.get("partial") else "")
        + "".join(f"<p>{esc(line)}</p>" for line in (reference_line(report), not_measured_line(report)) if line)
        + (f"<ul>{items}</ul>" if items else "")
        + "</div>\n</header>"
    )


def _failure_text(c):
    """E.g. ``<code>behaviour::test_kl</code>: 0.31, needs ≤ 0.2``; a corrected score with its raw value and chance."""
    needs = fmt_threshold(c)
    return f"<code>{esc(c.get('id', '?'))}</code>: {esc(fmt_headline(c))}" + (f", needs {esc(needs)}" if needs else "")


_MODEL_LABELS = {
    "id": "id",
    "source": "loaded from",
    "architecture": "architecture",
    "model_type": "model type",
    "parameters": "parameters",
    "num_layers": "layers (blocks)",
    "hidden_size": "hidden size",
    "sha256": "weights sha256",
    "tokenizer.name": "tokenizer",
    "tokenizer.vocab_size": "vocabulary size",
    "tokenizer.sha256": "tokenizer sha256",
    "dtype": "dtype",
    "device": "device",
}


def _flatten(mapping, prefix=""):
    flat = {}
    for key, value in (mapping or {}).items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _models(report):
    models = report.get("models")
    if not models:
        return None
    teacher, student = _flatten(models.get("teacher")), _flatten(models.get("analog"))
    keys = list(dict.fromkeys([*_MODEL_LABELS, *teacher, *student]))
    rows = []
    for key in keys:
        if key not in teacher and key not in student:
            continue
        cells = []
        for values in (teacher, student):
            value = values.get(key)
            if key == "parameters" and is_number(value):
                cells.append(f'<td>{esc(fmt_count(value))} <span class="note">({value:,})</span></td>')
            elif key.endswith("sha256") and value:
                cells.append(f"<td><code>{esc(value)}</code></td>")
            else:
                cells.append(f"<td>{_value_html(value)}</td>")
        rows.append(f"<tr><th>{esc(_MODEL_LABELS.get(key, key))}</th>{''.join(cells)}</tr>")
    body = "<table>\n<tr><th></th><th>teacher</th><th>analog</th></tr>\n" + "\n".join(rows) + "\n</table>"
    facts = []
    if models.get("parameter_fraction") is not None:
        facts.append(f"The analog has {esc(fmt_fraction(models['parameter_fraction']))} of the teacher's parameters.")
    if models.get("same_tokenizer") is True:
        facts.append("Both models use the same tokenizer, so positions are compared token by token.")
    elif models.get("same_tokenizer") is False:
        facts.append("The tokenizers differ, so positions are compared word by word.")
    other = {k: v for k, v in models.items() if k not in ("teacher", "analog", "parameter_fraction", "same_tokenizer")}
    if facts:
        body += "\n<p>" + " ".join(facts) + "</p>"
    if other:
        body += "\n" + _kv_table(other)
    return _section("Models", body, "models")


_CAPTURE_LABELS = {
    "positions": "positions compared",
    "alignment": "alignment",
    "n_rows": "aligned positions (rows)",
    "prompt_set": "prompt set",
    "prompt_set_sha256": "prompt set sha256",
    "n_prompts": "prompts used",
    "n_prompts_dropped": "prompts dropped",
    "seconds": "capture time (s)",
    "cached": "from cache",
}


def _capture(report):
    capture = report.get("capture")
    if not capture:
        return None
    body = ""
    if capture.get("positions"):
        body += f'<p class="important"><strong>Positions compared:</strong> {esc(capture["positions"])}</p>\n'
    ordered = {k: capture[k] for k in _CAPTURE_LABELS if k in capture and k != "positions"}
    ordered.update({k: v for k, v in capture.items() if k not in _CAPTURE_LABELS})
    body += _kv_table(ordered, _CAPTURE_LABELS)
    return _section("Capture", body, "capture")


def _score_cell(criterion, key):
    """A score with its [interval] on a line of its own below, so intervals do not widen the table."""
    value, bracket, interval = fmt_score(criterion, key).partition(" [")
    below = f'<span class="ci">[{esc(interval)}</span>' if bracket else ""
    return f'<td class="num">{esc(value)}{below}</td>'


def _criteria_table(criteria, css):
    columns = score_columns(criteria)
    rows = []
    for c in criteria:
        s = status(c)
        title = f' title="{esc(c["description"])}"' if c.get("description") else ""
        scores = "".join(_score_cell(c, key or judged_key(c)) for _, key in columns)
        marks = "".join(f'<span class="flag" title="{esc(FLAG_NOTES[f])}">⚠ {esc(f)}</span>' for f in flags(c))
        rows.append(
            f'<tr class="{s}"><td class="status">{_STATUS_LABEL[s]}{marks}</td>'
            f'<td class="id"{title}><code>{esc(c.get("id", "?")).replace("[", "<wbr>[")}</code></td>'
            f"<td>{esc(c.get('metric', ''))}</td><td class=\"num\">{esc(layer_pair(c))}</td>"
            f'{scores}<td class="num">{esc(fmt_threshold(c))}</td></tr>'
        )
    header = (
        "<tr><th>status</th><th>criterion</th><th>metric</th><th>layer (teacher → analog)</th>"
        + "".join(f"<th>{name}</th>" for name, _ in columns) + "<th>threshold</th></tr>"
    )
    return f'<div class="scroll"><table class="criteria {css}">\n' + header + "\n" + "\n".join(rows) + "\n</table></div>"


def _criteria(report):
    criteria = criteria_of(report)
    if not criteria:
        return _section("Criteria", "<p>No criteria were recorded.</p>", "criteria")
    metrics = list(dict.fromkeys(str(c.get("metric", "?")) for c in criteria))
    glossary = "\n".join(f"<dt>{esc(m)}</dt><dd>{esc(describe_metric(m, criteria))}</dd>" for m in metrics)
    body = f'<h3>What the metrics mean</h3>\n<dl class="glossary">\n{glossary}\n</dl>'
    ordered = failures_first(criteria)
    gated = [c for c in ordered if status(c) != INFO]
    informational = [c for c in ordered if status(c) == INFO]
    if gated:
        body += "\n<h3>Gated criteria (decide the verdict), failures first</h3>\n" + _criteria_table(gated, "gated")
    if informational:
        body += "\n<h3>Informational criteria (reported, not gated)</h3>\n" + _criteria_table(informational, "informational")
    calibration = calibration_sentence(criteria)
    if calibration:
        body += f'\n<p class="note">{esc(calibration)}</p>'
    return _section("Criteria", body, "criteria")


def _next_steps(report):
    """Per failing metric: what the failure means for the analog and what usually helps."""
    steps = next_steps(criteria_of(report))
    if not steps:
        return None
    items = "\n".join(
        f'<dt><code>{esc(step["metric"])}</code> <span class="note">({len(step["ids"])} failing: '
        f'{esc(", ".join(step["ids"][:3]))}{" …" if len(step["ids"]) > 3 else ""})</span></dt>'
        f"<dd>{esc(step['failure'])}. <strong>Usually helps:</strong> {esc(step['remedy'])}.</dd>"
        for step in steps
    )
    return _section("What to do next", f'<dl class="next">\n{items}\n</dl>', "next")


def _compliance(report):
    """What each release-compliance check found, or what is missing and where it was looked for."""
    checks = [c for c in criteria_of(report) if c.get("suite") == "compliance"]
    if not checks:
        return None
    items = "\n".join(
        f'<li class="{status(c)}">{_STATUS_LABEL[status(c)]} <code>{esc(c.get("id", "?"))}</code>: '
        f'{esc(c.get("reason") or "")}</li>'
        for c in failures_first(checks)
    )
    return _section("Release compliance", f"<ul>\n{items}\n</ul>", "compliance")


def _layers(report):
    layers = report.get("layers")
    if not layers:
        return None
    parts = []
    if layers.get("convention"):
        parts.append(f'<p class="note">Layer convention: {esc(layers["convention"])}</p>')
    heatmap = _png_img(plots.cka_heatmap_png, layers, alt="CKA heatmap, teacher layers by analog layers")
    if heatmap:
        parts.append(
            "<p>Each cell is the debiased linear CKA between a teacher layer and an analog layer, on a sample "
            "of tokens (massive-activation rows left out as in the gated values); the cells the gated criteria "
            "compare hold the gated values themselves, computed on every kept token. "
            "A white ring marks the analog layer most similar to each teacher layer; a red cross marks "
            "the analog layer the gated criteria actually compare against."
            + (" Hatched cells are at or below chance: a control model without learned structure "
               "scores as high at that cell." if layers.get("chance_matrix") else "")
            + "</p>\n" + heatmap
        )
    parts.append(_layer_table(layers))
    return _section("Layer correspondence", "\n".join(p for p in parts if p), "layers")


def _layer_table(layers):
    teacher = as_list(layers.get("teacher"))
    best = as_list(layers.get("best_match"))
    mapped = as_list(layers.get("mapped"))
    if not teacher or not (best or mapped):
        return None
    student = as_list(layers.get("analog"))
    matrix = layers.get("cka_matrix")
    matrix = [] if matrix is None else list(matrix)

    def cka_at(i, s):
        if s not in student or i >= len(matrix):
            return ""
        row = matrix[i]
        j = student.index(s)
        return fmt_value(as_float(row[j])) if j < len(row) else ""

    rows = []
    for i, t in enumerate(teacher):
        b = best[i] if i < len(best) else None
        m = mapped[i] if i < len(mapped) else None
        css = ' class="unknown"' if b is not None and m is not None and b != m else ""
        rows.append(
            f'<tr{css}><td class="num">{esc(t)}</td><td class="num">{esc("" if b is None else b)}</td>'
            f'<td class="num">{esc(cka_at(i, b))}</td><td class="num">{esc("" if m is None else m)}</td>'
            f'<td class="num">{esc(cka_at(i, m))}</td></tr>'
        )
    sample = layers.get("matrix_rows")
    caption = f"CKA on a sample of {esc(fmt_value(sample))} tokens. " if sample else ""
    return (
        f"<details><summary>Layer map table</summary>\n<p class=\"note\">{caption}"
        "Highlighted rows: the mapped layer is not the best match.</p>\n<table>\n"
        "<tr><th>teacher layer</th><th>best match</th><th>CKA</th><th>mapped</th><th>CKA</th></tr>\n"
        + "\n".join(rows)
        + "\n</table></details>"
    )


def _massive(report):
    section = report.get("massive")
    if not section:
        return None
    body = f'<p class="important">{esc(massive_sentence(section))}</p>'
    for note, columns, rows in massive_tables(section):
        body += (f"\n<p>{esc(note)}</p>" if note else "") + "\n" + _table(columns, rows)
    return _section("Massive activations", body, "massive")


_CELL = {"code": "<td><code>{}</code></td>", "num": '<td class="num">{}</td>', "text": "<td>{}</td>"}


def _table(columns, rows):
    """A table whose cells are marked up by their column's kind (see `massive_tables`)."""
    header = "<tr>" + "".join(f"<th>{esc(heading)}</th>" for heading, _ in columns) + "</tr>"
    lines = ["<tr>" + "".join(_CELL[kind].format(esc(v)) for (_, kind), v in zip(columns, row)) + "</tr>" for row in rows]
    return "<table>\n" + header + "\n" + "\n".join(lines) + "\n</table>"


def _curves(report):
    img = _png_img(plots.layer_curves_png, criteria_of(report), alt="per-layer metrics against teacher layer")
    if not img:
        return None
    text = (
        "<p>Each per-layer metric against teacher layer. The dashed line is the gated threshold; "
        "red crosses are failing layers; shaded bands are layers with no value.</p>\n"
    )
    return _section("Per-layer metrics", text + img, "per-layer")


_ENVIRONMENT_LABELS = {"device_name": "device"}


def _benchmarks(report):
    section = report.get("benchmarks")
    if not section or not section.get("tasks"):
        return None
    img = _png_img(plots.benchmark_bars_png, section, alt="teacher and analog score per lm-eval task")
    rows = []
    for task, row in section["tasks"].items():
        delta = fmt_value(row.get("delta"))
        if row.get("delta_ci95"):
            delta += " [" + ", ".join(fmt_value(v) for v in row["delta_ci95"]) + "]"
        cells = [task, row.get("metric"), row.get("teacher"), row.get("analog"), delta, row.get("chance"), row.get("retained")]
        rows.append("<tr>" + "".join(f"<td>{_value_html(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("task", "metric", "teacher", "analog", "delta [95 % CI]", "chance", "retained"))
    text = (
        f"<p>lm-evaluation-harness {esc(section.get('lm_eval_version'))} on both models"
        + (" (read from the cache)" if section.get("cached") else "")
        + ". Bars are lm-eval's scores with 95 % intervals; the delta (analog − teacher) has a paired "
        "interval over the same items; retained is chance-corrected for multiple choice.</p>\n"
    )
    table = f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"
    return _section("Benchmarks", text + (img or "") + "\n" + table, "benchmarks")


def _environment(report):
    environment = report.get("environment")
    if not environment:
        return None
    return _section("Environment", _kv_table(environment, _ENVIRONMENT_LABELS), "environment")


def _dump(value):
    """Pretty text for a config or an unknown section: YAML when PyYAML is there, else JSON."""
    value = to_jsonable(value)
    try:
        import yaml
    except ImportError:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)


def _config(report):
    if "config" not in report:
        return None
    return _section(
        "Configuration",
        f"<details><summary>Effective configuration</summary>\n<pre>{esc(_dump(report['config']))}</pre></details>",
        "config",
    )


def _unknown_sections(report):
    extra = [key for key in report if key not in KNOWN_SECTIONS]
    if not extra:
        return None
    blocks = "\n".join(
        f"<details open><summary>{esc(key)}</summary>\n<pre>{esc(_dump(report[key]))}</pre></details>" for key in extra
    )
    note = '<p class="note">Sections this version of the report renderer has no dedicated view for.</p>\n'
    return _section("Other sections", note + blocks, "other")


def _footer(report):
    tool = report.get("tool") or {}
    parts = [f"{tool.get('name', 'pytest-analog')} {tool.get('version', '')}".strip()]
    if report.get("created"):
        parts.append(f"created {report['created']}")
    if report.get("schema_version") is not None:
        parts.append(f"schema version {report['schema_version']}")
    return "<footer>" + esc(", ".join(parts)) + "</footer>"


def _steering(report):
    steering = report.get("steering")
    if not steering:
        return None
    parts = [
        "<p>Each behaviour is measured on the teacher as p(matching answer) / (p(A) + p(B)) over held-out "
        "items, while a vector is added at the teacher layer with α × the mean residual norm there: the "
        "teacher's own vector (native), the analog's vector carried through the "
        f"<code>{esc(steering.get('map', '?'))}</code> map (transferred), and a random vector of equal norm. "
        "The dotted line is the α where the native effect reaches half its maximum; the transfer ratio is "
        "read there.</p>",
        f"<p>Analog layer: {esc(steering['layer_rule'])}.</p>" if steering.get("layer_rule") else "",
        _png_img(plots.dose_response_png, steering, alt="dose-response curves per behaviour") or "",
    ]
    rows = []
    for name, layers in (steering.get("behaviours") or {}).items():
        for layer, case in layers.items():
            rho = (case.get("spearman") or {}).get("transferred")
            rows.append(
                f"<tr><td>{esc(name)}</td><td class=\"num\">{esc(layer)} ← {esc(case.get('analog_layer'))}</td>"
                + "".join(
                    f'<td class="num">{esc(fmt_value(v))}</td>'
                    for v in (case.get("baseline"), case.get("native_max_effect"), case.get("transfer_ratio"),
                              rho, case.get("random_control"), case.get("cosine_native_transferred"))
                )
                + "</tr>"
            )
    if rows:
        parts.append(
            "<table>\n<tr><th>behaviour</th><th>teacher ← analog layer</th><th>p(matching), unsteered</th>"
            "<th>max native effect</th><th>transfer ratio</th><th>Spearman ρ (transferred)</th>"
            "<th>random / native</th><th>cosine native vs transferred</th></tr>\n" + "\n".join(rows) + "\n</table>"
        )
    maps = steering.get("maps") or {}
    if maps:
        kinds = [k for k in ("ridge", "procrustes", "autoencoder") if k in next(iter(maps.values()))]
        head = "".join(f"<th>{esc(k)} FVU</th><th>{esc(k)} cosine</th>" for k in kinds)
        body = "\n".join(
            f'<tr><td class="num">{esc(i)} ← {esc(m.get("analog_layer"))}</td><td class="num">{esc(fmt_value((m.get("rows") or {}).get("heldout")))}</td>'
            + "".join(f'<td class="num">{esc(fmt_value(m[k].get("fvu")))}</td><td class="num">{esc(fmt_value(m[k].get("cosine")))}</td>' for k in kinds)
            + "</tr>"
            for i, m in maps.items()
        )
        parts.append(
            "<h3>Maps, analog layer → teacher layer (held-out prompts)</h3>\n<p class=\"note\">Fraction of variance "
            "unexplained (0 is perfect) and mean cosine of mapped analog activations against the teacher's.</p>\n"
            f"<table>\n<tr><th>teacher ← analog layer</th><th>held-out rows</th>{head}</tr>\n{body}\n</table>"
        )
    passes = steering.get("forward_passes")
    if passes:
        parts.append(f'<p class="note">Forward passes: {esc(", ".join(f"{k} {v}" for k, v in passes.items()))}.</p>')
    return _section("Steering transfer", "\n".join(p for p in parts if p), "steering")


# Section renderers in page order: report -> HTML fragment, or None to skip.
SECTIONS = [
    _banner,
    _next_steps,
    _models,
    _capture,
    _layers,
    _massive,
    _curves,
    _steering,
    _criteria,
    _compliance,
    _benchmarks,
    _environment,
    _config,
    _unknown_sections,
    _footer,
]


def render_html(report):
    """Render the report as one self-contained HTML page.

    Args:
        report: The report document (see `pytest_analog.report.schema`).

    Returns:
        The page: verdict banner listing the failures, models, capture
        (positions compared), the CKA heatmap and per-layer curves as
        embedded PNGs, a metric glossary and the criteria tables,
        environment, and the configuration in a <details> block.
    """
    tool = report.get("tool") or {}
    title = f"Analog fidelity: {verdict_of(report).upper()}"
    body = "\n".join(part for part in (section(report) for section in SECTIONS) if part)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="{esc(tool.get("name", "pytest-analog"))}">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
