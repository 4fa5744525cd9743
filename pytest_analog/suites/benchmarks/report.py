"""The benchmarks suite's part of the report: both models' lm-evaluation-harness scores per task, their
paired delta and the retained fraction, with bars in the HTML page."""

import math

from pytest_analog.report import plots
from pytest_analog.report.formatting import as_float, fmt_value
from pytest_analog.report.html import esc, png_img, section, value_html
from pytest_analog.report.markdown import cell, code, table
from pytest_analog.suite import Section

_HEADER = ("task", "metric", "teacher", "analog", "delta [95 % CI]", "chance", "retained")


def _delta(row, missing):
    """The delta with its paired 95 % interval, ``missing`` standing for no delta."""
    text = missing if row.get("delta") is None else fmt_value(row["delta"])
    if row.get("delta_ci95"):
        text += " [" + ", ".join(fmt_value(v) for v in row["delta_ci95"]) + "]"
    return text


def benchmarks_markdown(report):
    """One row per task: metric, both scores, delta, chance and retained fraction."""
    found = report.get("benchmarks")
    if not found or not found.get("tasks"):
        return None

    def shown(value):
        """A score, "—" where there is none."""
        return "—" if value is None else fmt_value(value)

    rows = [[code(task), cell(row.get("metric", "")), shown(row.get("teacher")), shown(row.get("analog")),
             _delta(row, "—"), shown(row.get("chance")), shown(row.get("retained"))]
            for task, row in found["tasks"].items()]
    title = (
        f"**Benchmarks** (lm-evaluation-harness {cell(found.get('lm_eval_version'))}; "
        "delta = analog − teacher with a paired 95 % interval; retained is chance-corrected):\n\n"
    )
    return title + table(list(_HEADER), rows)


def benchmarks_html(report):
    """What was run, the bars per task, and one table row per task."""
    found = report.get("benchmarks")
    if not found or not found.get("tasks"):
        return None
    img = png_img(benchmark_bars_png, found, alt="teacher and analog score per lm-eval task")
    rows = []
    for task, row in found["tasks"].items():
        cells = [task, row.get("metric"), row.get("teacher"), row.get("analog"), _delta(row, "n/a"), row.get("chance"), row.get("retained")]
        rows.append("<tr>" + "".join(f"<td>{value_html(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in _HEADER)
    text = (
        f"<p>lm-evaluation-harness {esc(found.get('lm_eval_version'))} on both models"
        + (" (read from the cache)" if found.get("cached") else "")
        + ". Bars are lm-eval's scores with 95 % intervals; the delta (analog − teacher) has a paired "
        "interval over the same items; retained is chance-corrected for multiple choice.</p>\n"
    )
    body = f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"
    return section("Benchmarks", text + (img or "") + "\n" + body, "benchmarks")


def benchmark_bars_png(benchmarks):
    """Teacher and analog score per lm-eval task with 95 % intervals, one panel per task.

    Args:
        benchmarks: The report's ``benchmarks`` section (may be None).

    Returns:
        PNG bytes, or None when it has no tasks.
    """
    tasks = (benchmarks or {}).get("tasks") or {}
    if not tasks:
        return None
    columns = min(4, len(tasks))
    rows = math.ceil(len(tasks) / columns)
    fig = plots.figure(2.6 * columns + 0.6, 2.8 * rows + 0.4)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (task, row) in zip(axes, tasks.items()):
        _task_panel(ax, task, row)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if any(row.get("chance") is not None for row in tasks.values()) and "chance" not in labels:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], linestyle="--", color="0.25"))
        labels.append("chance")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), columns), frameon=False)
    return plots.to_png(fig)


def _task_panel(ax, task, row):
    """One task: a bar per model with its interval, and the chance level as a dashed line."""
    colors = (plots.LINE_COLORS[0], plots.LINE_COLORS[3])
    for x, role in enumerate(("teacher", "analog")):
        value = as_float(row.get(role))
        interval = row.get(f"{role}_ci95")
        error = None
        if interval and math.isfinite(value):
            low, high = (as_float(v) for v in interval)
            error = [[max(0.0, value - low)], [max(0.0, high - value)]]
        ax.bar(x, value if math.isfinite(value) else 0.0, color=colors[x], yerr=error, capsize=6, width=0.6, label=role)
    if row.get("chance") is not None:
        ax.axhline(as_float(row["chance"]), linestyle="--", linewidth=1.2, color="0.25", label="chance")
    ax.set_xticks([0, 1], labels=["teacher", "analog"])
    direction = "higher is better" if row.get("higher_is_better", True) else "lower is better"
    ax.set_ylabel(f"{row.get('metric', '')} ({direction})", fontsize="small")
    ax.set_title(task, fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)


SECTIONS = (Section(("benchmarks",), markdown=benchmarks_markdown, html=benchmarks_html, after_criteria=True),)
