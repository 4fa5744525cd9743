"""The HTML report: one self-contained page an auditor can open offline.

Everything is inline: CSS in a <style> block, plots as base64 PNG data URIs,
no scripts, fonts or links to anywhere. A Content-Security-Policy meta tag
forbids everything but inline styles and data: images, so even a string that
slipped past escaping could not load or run anything. Every string from the
report goes through `esc`.

The page is the generic sections (banner, next steps, models, per-layer
curves, criteria, environment, configuration, footer) with each suite's
sections (`suite.Section.html`) placed before or after the criteria. A suite's
section builds its fragment with `esc`, `section`, `kv_table`, `value_html`
and `png_img`. Top-level keys no renderer knows are shown as JSON by
`_unknown_sections`.
"""

import base64
import html
import json

from pytest_analog.report import plots
from pytest_analog.report.formatting import (
    FAIL,
    FLAG_NOTES,
    INFO,
    PASS,
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
    known_sections,
    layer_pair,
    next_steps,
    not_measured_line,
    reference_line,
    score_columns,
    status,
    suite_metrics,
    suite_sections,
    summary_counts,
    to_jsonable,
    verdict_of,
)

STATUS_LABEL = {PASS: "PASS", FAIL: "FAIL", INFO: "info"}

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


def section(title, body, anchor):
    """A titled ``<section>`` with the id ``anchor`` around the HTML ``body``."""
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def value_html(value):
    """Render a scalar as escaped text, a list or dict as compact JSON."""
    if isinstance(value, (dict, list, tuple)):
        return f"<code>{esc(json.dumps(to_jsonable(value), ensure_ascii=False))}</code>"
    if value is None:
        return '<span class="note">n/a</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    return esc(fmt_value(value) if is_number(value) else value)


def kv_table(mapping, labels=None):
    """A two-column table of a mapping's entries, known keys labelled, unknown ones as-is."""
    labels = labels or {}
    rows = "\n".join(
        f"<tr><th>{esc(labels.get(key, key))}</th><td>{value_html(value)}</td></tr>"
        for key, value in mapping.items()
    )
    return f"<table>\n{rows}\n</table>"


def png_img(draw, *args, alt):
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


def _banner(report, criteria):
    """The verdict, counts and models, the session's error, and the failing criteria by name."""
    verdict = verdict_of(report, criteria)
    counts = summary_counts(report, criteria)
    css = verdict if verdict in ("pass", "fail") else "none"
    models = report.get("models") or {}
    teacher = (models.get("teacher") or {}).get("id", "n/a")
    analog = (models.get("analog") or {}).get("id", "n/a")
    failing = [c for c in failures_first(criteria) if status(c) == FAIL]
    items = "".join(f"<li>{_failure_text(c)}</li>" for c in failing[:_BANNER_FAILURES])
    if len(failing) > _BANNER_FAILURES:
        items += f"<li>… and {len(failing) - _BANNER_FAILURES} more, listed under Criteria</li>"
    return (
        "<header>\n<h1>Analog fidelity report</h1>\n"
        f'<div class="banner {css}"><div class="verdict">{esc(verdict.upper())}</div>'
        f"<div>{esc(counts_sentence(counts))}</div>"
        f"<div>teacher <code>{esc(teacher)}</code> → analog <code>{esc(analog)}</code></div>"
        + (f"<p><strong>Error:</strong> {esc(report['error'])}</p>" if report.get("error") else "")
        + (f"<p><strong>Partial run:</strong> {esc(report['partial'])}</p>" if report.get("partial") else "")
        + "".join(f"<p>{esc(line)}</p>" for line in (reference_line(report), not_measured_line(counts)) if line)
        + (f"<ul>{items}</ul>" if items else "")
        + "</div>\n</header>"
    )


def _failure_text(c):
    """E.g. ``<code>behaviour::test_kl</code>: 0.31, needs ≤ 0.2``; a corrected score with its raw value and chance."""
    needs = fmt_threshold(c)
    return f"<code>{esc(c.id)}</code>: {esc(fmt_headline(c))}" + (f", needs {esc(needs)}" if needs else "")


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
    """A nested mapping's leaves by dotted key."""
    flat = {}
    for key, value in (mapping or {}).items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _models(report):
    """Both models' records side by side, and what follows from them."""
    models = report.get("models")
    if not models:
        return None
    teacher, analog = _flatten(models.get("teacher")), _flatten(models.get("analog"))
    keys = list(dict.fromkeys([*_MODEL_LABELS, *teacher, *analog]))
    rows = []
    for key in keys:
        if key not in teacher and key not in analog:
            continue
        cells = []
        for values in (teacher, analog):
            value = values.get(key)
            if key == "parameters" and is_number(value):
                cells.append(f'<td>{esc(fmt_count(value))} <span class="note">({value:,})</span></td>')
            elif key.endswith("sha256") and value:
                cells.append(f"<td><code>{esc(value)}</code></td>")
            else:
                cells.append(f"<td>{value_html(value)}</td>")
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
        body += "\n" + kv_table(other)
    return section("Models", body, "models")


def _score_cell(criterion, kind):
    """A score with its [interval] on a line of its own below, so intervals do not widen the table."""
    value, bracket, interval = fmt_score(criterion, kind).partition(" [")
    below = f'<span class="ci">[{esc(interval)}</span>' if bracket else ""
    return f'<td class="num">{esc(value)}{below}</td>'


def _criteria_table(criteria, css):
    """The criteria as a table of status, id, metric, layers, scores and threshold."""
    columns = score_columns(criteria)
    rows = []
    for c in criteria:
        s = status(c)
        title = f' title="{esc(c.description)}"' if c.description else ""
        scores = "".join(_score_cell(c, kind) for _, kind in columns)
        marks = "".join(f'<span class="flag" title="{esc(FLAG_NOTES[f])}">⚠ {esc(f)}</span>' for f in flags(c))
        rows.append(
            f'<tr class="{s}"><td class="status">{STATUS_LABEL[s]}{marks}</td>'
            f'<td class="id"{title}><code>{esc(c.id).replace("[", "<wbr>[")}</code></td>'
            f"<td>{esc(c.metric)}</td><td class=\"num\">{esc(layer_pair(c))}</td>"
            f'{scores}<td class="num">{esc(fmt_threshold(c))}</td></tr>'
        )
    header = (
        "<tr><th>status</th><th>criterion</th><th>metric</th><th>layer (teacher → analog)</th>"
        + "".join(f"<th>{name}</th>" for name, _ in columns) + "<th>threshold</th></tr>"
    )
    return f'<div class="scroll"><table class="criteria {css}">\n' + header + "\n" + "\n".join(rows) + "\n</table></div>"


def _criteria(criteria):
    """What each metric means, then the gated and the informational criteria tables."""
    if not criteria:
        return section("Criteria", "<p>No criteria were recorded.</p>", "criteria")
    metrics = list(dict.fromkeys(c.metric for c in criteria))
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
    return section("Criteria", body, "criteria")


def _next_steps(criteria):
    """Per failing metric: what the failure means for the analog and what usually helps."""
    steps = next_steps(criteria)
    if not steps:
        return None
    items = "\n".join(
        f'<dt><code>{esc(step["metric"])}</code> <span class="note">({len(step["ids"])} failing: '
        f'{esc(", ".join(step["ids"][:3]))}{" …" if len(step["ids"]) > 3 else ""})</span></dt>'
        f"<dd>{esc(step['failure'])}. <strong>Usually helps:</strong> {esc(step['remedy'])}.</dd>"
        for step in steps
    )
    return section("What to do next", f'<dl class="next">\n{items}\n</dl>', "next")


def _curves(criteria):
    """Each per-layer metric against teacher layer, as one plot."""
    img = png_img(plots.layer_curves_png, criteria, alt="per-layer metrics against teacher layer")
    if not img:
        return None
    text = (
        "<p>Each per-layer metric against teacher layer. The dashed line is the gated threshold; "
        "red crosses are failing layers; shaded bands are layers with no value.</p>\n"
    )
    return section("Per-layer metrics", text + img, "per-layer")


_ENVIRONMENT_LABELS = {"device_name": "device"}


def _environment(report):
    """Library versions and hardware."""
    environment = report.get("environment")
    if not environment:
        return None
    return section("Environment", kv_table(environment, _ENVIRONMENT_LABELS), "environment")


def _dump(value):
    """Pretty text for a config or an unknown section: YAML when PyYAML is there, else JSON."""
    value = to_jsonable(value)
    try:
        import yaml
    except ImportError:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)


def _config(report):
    """The effective configuration, folded."""
    if "config" not in report:
        return None
    return section(
        "Configuration",
        f"<details><summary>Effective configuration</summary>\n<pre>{esc(_dump(report['config']))}</pre></details>",
        "config",
    )


def _unknown_sections(report, known):
    """Every top-level key not in ``known``, as YAML or JSON."""
    extra = [key for key in report if key not in known]
    if not extra:
        return None
    blocks = "\n".join(
        f"<details open><summary>{esc(key)}</summary>\n<pre>{esc(_dump(report[key]))}</pre></details>" for key in extra
    )
    note = '<p class="note">Sections this version of the report renderer has no dedicated view for.</p>\n'
    return section("Other sections", note + blocks, "other")


def _footer(report):
    """The tool, the date and the schema version."""
    tool = report.get("tool") or {}
    parts = [f"{tool.get('name', 'pytest-analog')} {tool.get('version', '')}".strip()]
    if report.get("created"):
        parts.append(f"created {report['created']}")
    if report.get("schema_version") is not None:
        parts.append(f"schema version {report['schema_version']}")
    return "<footer>" + esc(", ".join(parts)) + "</footer>"


def _suite_parts(report, suites, after_criteria):
    """The HTML of the ``suites``' sections that go before (or after) the criteria."""
    return [part.html(report) for part in suite_sections(suites, after_criteria) if part.html]


def render_html(report, suites=()):
    """Render the report as one self-contained HTML page.

    Args:
        report: The report document (see `pytest_analog.report.schema`).
        suites: The `suite.Suite` objects whose sections and metric facts the page shows, in report order.

    Returns:
        The page: verdict banner listing the failures, what to do next,
        models, the suites' sections before the criteria, the per-layer
        curves, a metric glossary and the criteria tables, the suites'
        sections after them, environment, the configuration in a <details>
        block and the keys no section showed.
    """
    tool = report.get("tool") or {}
    criteria = criteria_of(report, suite_metrics(suites))
    parts = [
        _banner(report, criteria),
        _next_steps(criteria),
        _models(report),
        *_suite_parts(report, suites, after_criteria=False),
        _curves(criteria),
        _criteria(criteria),
        *_suite_parts(report, suites, after_criteria=True),
        _environment(report),
        _config(report),
        _unknown_sections(report, known_sections(suites)),
        _footer(report),
    ]
    title = f"Analog fidelity: {verdict_of(report, criteria).upper()}"
    body = "\n".join(part for part in parts if part)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="{esc(tool.get("name", "pytest-analog"))}">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
