"""PNG plots for the HTML report.

matplotlib is imported inside the functions, so importing the report package
costs nothing until a plot is drawn. The figures are built with
`matplotlib.figure.Figure` and never go through pyplot: the caller's backend
is left alone (a user's test session may use an interactive one), nothing is
registered in pyplot's figure list, and a figure is freed as soon as its last
reference is dropped. ``savefig(format="png")`` renders with Agg whatever the
process-wide backend is, so there is no need to call ``matplotlib.use``.
"""

import io
import math

from pytest_analog.report._format import (
    FAIL, as_float, as_list, fmt_value, is_number, judged_key, per_layer_groups, status,
)

# Fixed resolution, so the same report always gives the same image size.
DPI = 100

_FAIL_COLOR = "#c62828"
_MAPPED_COLOR = "#ff1744"
_LINE_COLORS = ("#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#4e342e")
# At most this many tick labels per axis; layer numbers in between are skipped.
_MAX_TICKS = 16


def _figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("the HTML report's plots need matplotlib: pip install matplotlib") from exc
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _to_png(fig):
    buffer = io.BytesIO()
    # Software=None drops the version stamp, so identical reports give identical bytes.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return buffer.getvalue()


def _ticks(n):
    step = max(1, math.ceil(n / _MAX_TICKS))
    return list(range(0, n, step))


def cka_heatmap_png(layers):
    """Draw the teacher x analog CKA matrix with the best and mapped layer marked.

    Cells at or below chance (the control's CKA at the same cell, from the
    ``chance_matrix``) are hatched.

    Args:
        layers: The report's ``layers`` section (may be None).

    Returns:
        PNG bytes, or None when there is no non-empty ``cka_matrix``.
    """
    import numpy as np

    rows = (layers or {}).get("cka_matrix")
    if rows is None or len(rows) == 0:
        return None
    matrix = _padded(rows)
    if matrix.size == 0:
        return None
    n_teacher, n_analog = matrix.shape
    teacher = as_list(layers.get("teacher"))
    analog = as_list(layers.get("analog"))
    if len(teacher) != n_teacher:
        teacher = list(range(n_teacher))
    if len(analog) != n_analog:
        analog = list(range(n_analog))
    column_of = {layer: j for j, layer in enumerate(analog)}

    fig = _figure(min(max(5.0, 0.32 * n_analog + 2.6), 14.0), min(max(4.0, 0.24 * n_teacher + 2.2), 16.0))
    ax = fig.add_subplot()
    _draw_matrix(fig, ax, matrix)
    _mark_layers(ax, layers, column_of, n_teacher, _marker_size(fig, matrix.shape))
    chance = _at_or_below_chance(matrix, layers.get("chance_matrix"))
    _hatch(ax, chance)
    _label_heatmap(ax, teacher, analog, layers.get("matrix_rows"))
    _heatmap_legend(fig, chance=bool(chance), missing=not np.isfinite(matrix).all())
    return _to_png(fig)


# The layer-map markers: report key, legend label, style (shared by the cells and the legend).
_LAYER_MARKS = (
    ("best_match", "best match",
     dict(marker="o", markerfacecolor="none", markeredgecolor="white", markeredgewidth=1.6)),
    ("mapped", "mapped (gated)", dict(marker="x", color=_MAPPED_COLOR, markeredgewidth=2.0)),
)
_CHANCE_HATCH = dict(hatch="///", edgecolor="white")
_NO_VALUE_COLOR = "#bdbdbd"


def _padded(rows, shape=None):
    """Nested rows (lists or a 2-d array) as a float array, short rows padded with NaN, cut to ``shape`` if given."""
    import numpy as np

    rows = [[as_float(v) for v in row] for row in rows]
    if shape is None:
        shape = (len(rows), max(len(row) for row in rows))
    matrix = np.full(shape, np.nan)
    for i, row in enumerate(rows[: shape[0]]):
        row = row[: shape[1]]
        matrix[i, : len(row)] = row
    return matrix


def _draw_matrix(fig, ax, matrix):
    """The cells in viridis from min(0, lowest value) to 1, cells without a value grey, with a colorbar."""
    import numpy as np
    from matplotlib import colormaps

    finite = matrix[np.isfinite(matrix)]
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        cmap=colormaps["viridis"].with_extremes(bad=_NO_VALUE_COLOR),
        vmin=min(0.0, float(finite.min())) if finite.size else 0.0,
        vmax=1.0,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, label="debiased linear CKA", shrink=0.9)


def _marker_size(fig, shape):
    """Marker size in points that follows the cell size, so markers stay inside cells."""
    n_teacher, n_analog = shape
    cell = min(fig.get_figwidth() * 0.75 / n_analog, fig.get_figheight() * 0.8 / n_teacher) * 72
    return max(3.0, min(12.0, 0.6 * cell))


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=3.0, foreground="black")]


def _mark_layers(ax, layers, column_of, n_teacher, size):
    """Mark each teacher layer's best-matching and mapped analog layer; layers not in the matrix are skipped."""
    for key, _, style in _LAYER_MARKS:
        marks = [(column_of[a], i) for i, a in enumerate(as_list(layers.get(key))[:n_teacher]) if a in column_of]
        if marks:
            xs, ys = zip(*marks)
            ax.plot(xs, ys, linestyle="none", markersize=size, path_effects=_outline(), **style)


def _at_or_below_chance(matrix, chance_rows):
    """(teacher, analog) cells whose CKA does not exceed the control's CKA at the same cell."""
    import numpy as np

    if not chance_rows:
        return []
    with np.errstate(invalid="ignore"):
        return [tuple(ij) for ij in np.argwhere(matrix <= _padded(chance_rows, matrix.shape))]


def _hatch(ax, cells):
    """Hatch the (teacher, analog) cells."""
    from matplotlib.patches import Rectangle

    for i, j in cells:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=0, alpha=0.55, **_CHANCE_HATCH))


def _label_heatmap(ax, teacher, analog, sample):
    """Layer numbers on the axes (at most ``_MAX_TICKS`` each), axis labels and a title with the sample size."""
    ax.set_xticks(_ticks(len(analog)), labels=[str(analog[j]) for j in _ticks(len(analog))])
    ax.set_yticks(_ticks(len(teacher)), labels=[str(teacher[i]) for i in _ticks(len(teacher))])
    ax.set_xlabel("analog layer")
    ax.set_ylabel("teacher layer")
    ax.set_title("CKA, teacher × analog layers" + (f" ({fmt_value(sample)} tokens)" if sample else ""))


def _heatmap_legend(fig, *, chance, missing):
    """The legend below the heatmap: the markers, and the hatched and grey cells where there are any."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    handles = [Line2D([], [], linestyle="none", markersize=8, path_effects=_outline(), label=label, **style)
               for _, label, style in _LAYER_MARKS]
    if chance:
        handles.append(Rectangle((0, 0), 1, 1, facecolor="#5b5b5b", label="at or below chance", **_CHANCE_HATCH))
    if missing:
        handles.append(Line2D([], [], linestyle="none", marker="s", markersize=8, color=_NO_VALUE_COLOR,
                              label="no value"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)


def layer_curves_png(criteria):
    """Plot each per-layer metric against teacher layer, one panel per metric.

    Gated thresholds are dashed lines, failing points are red crosses, and
    layers whose value is missing (NaN or null) are shaded. Where criteria
    carry them, bootstrap intervals are shaded around the values and the chance
    level is a dotted grey line with its own interval. Where the threshold
    reads the corrected score, the corrected score is the main line (the raw
    value a faint one), so the threshold line and the points it judges agree.

    Args:
        criteria: The report's criteria; only those with a ``teacher_layer`` are drawn.

    Returns:
        PNG bytes, or None when no criterion is per-layer.
    """
    from matplotlib.ticker import MaxNLocator

    groups = per_layer_groups(criteria)
    if not groups:
        return None
    fig = _figure(8.0, 1.0 + 2.3 * len(groups))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for k, (ax, (metric, rows)) in enumerate(zip(axes, groups.items())):
        _metric_panel(ax, metric, rows, _LINE_COLORS[k % len(_LINE_COLORS)])
    layers = sorted({c["teacher_layer"] for rows in groups.values() for c in rows})
    # Half a layer of margin keeps a single layer from getting fractional ticks.
    axes[-1].set_xlim(layers[0] - 0.5, layers[-1] + 0.5)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes[-1].set_xlabel("teacher layer")
    axes[0].set_title("Per-layer metrics against teacher layer")
    return _to_png(fig)


def _metric_panel(ax, metric, rows, color):
    """One metric's panel: its judged values, chance, threshold, and the failing and missing layers."""
    x = [c["teacher_layer"] for c in rows]
    y = _plot_values(ax, metric, x, rows, color)
    _plot_chance(ax, x, rows)
    gated = _plot_threshold(ax, rows)
    _mark_failures(ax, x, y, rows)
    ax.set_ylabel(metric if gated else f"{metric}\n(informational)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", framealpha=0.85)


def _plot_values(ax, metric, x, rows, color):
    """The score the threshold reads, with its interval; a corrected score gets the raw value as a faint line.

    Returns:
        The plotted score per layer (NaN where missing).
    """
    corrected = all(judged_key(c) == "corrected" for c in rows)  # the threshold reads the corrected score
    y = [as_float(c.get(judged_key(c))) for c in rows]
    ax.plot(x, y, marker="o", markersize=4, linewidth=1.5, color=color,
            label=f"{metric}, corrected" if corrected else metric)
    _band(ax, x, [c.get("corrected_interval" if corrected else "interval") for c in rows], color, 0.18, "interval")
    if corrected:
        ax.plot(x, [as_float(c.get("value")) for c in rows], linewidth=1.0, color=color, alpha=0.45, label="raw")
    return y


def _band(ax, x, intervals, color, alpha, label):
    """Shade (low, high) intervals along x; layers without one are left out."""
    points = [(t, as_float(i[0]), as_float(i[1])) for t, i in zip(x, intervals) if i and len(i) == 2]
    points = [p for p in points if math.isfinite(p[1]) and math.isfinite(p[2])]
    if points:
        xs, lows, highs = zip(*points)
        ax.fill_between(xs, lows, highs, color=color, alpha=alpha, linewidth=0, label=label)


def _plot_chance(ax, x, rows):
    """The chance level as a dotted grey line with its interval, where the criteria carry one."""
    chance = [as_float(c.get("chance")) for c in rows]
    if any(math.isfinite(v) for v in chance):
        ax.plot(x, chance, linestyle=":", marker=".", linewidth=1.5, color="0.35", label="chance")
        _band(ax, x, [c.get("chance_interval") for c in rows], "0.5", 0.2, "chance interval")


def _plot_threshold(ax, rows):
    """The gated layers' threshold as a dashed line, stepped where it differs by layer.

    Returns:
        Whether any layer has a gated, finite threshold.
    """
    gated = [(c["teacher_layer"], c.get("threshold"), c.get("direction")) for c in rows if c.get("gated")]
    gated = [(t, float(v), d) for t, v, d in gated if v is not None and math.isfinite(as_float(v))]
    if not gated:
        return False
    if len({v for _, v, _ in gated}) == 1:
        sign = {"min": "≥ ", "max": "≤ "}.get(gated[0][2], "")
        ax.axhline(gated[0][1], linestyle="--", linewidth=1.2, color="0.25",
                   label=f"threshold {sign}{fmt_value(gated[0][1])}")
    else:
        ax.plot([t for t, _, _ in gated], [v for _, v, _ in gated], linestyle="--",
                drawstyle="steps-mid", linewidth=1.2, color="0.25", label="threshold")
    return True


def _mark_failures(ax, x, y, rows):
    """Red crosses on failing layers; a shaded band on each layer without a value, red where it fails."""
    failing = [(t, v) for t, v, c in zip(x, y, rows) if status(c) == FAIL and math.isfinite(v)]
    if failing:
        ax.plot(*zip(*failing), linestyle="none", marker="X", markersize=11, color=_FAIL_COLOR,
                markeredgecolor="white", zorder=3, label="failing")
    missing = [(t, status(c) == FAIL) for t, v, c in zip(x, y, rows) if not math.isfinite(v)]
    for i, (t, failed) in enumerate(missing):
        ax.axvspan(t - 0.4, t + 0.4, color=_FAIL_COLOR if failed else "0.6", alpha=0.2, linewidth=0,
                   label="no value" if i == 0 else None)


_CONDITION_STYLE = {
    "native": dict(color="#1565c0", marker="o", label="native (teacher's vector)"),
    "transferred": dict(color="#ef6c00", marker="s", label="transferred (analog's vector, mapped)"),
    "random": dict(color="0.5", marker="^", linestyle="--", label="random (equal norm)"),
}


def dose_response_png(steering):
    """Plot p(matching) against norm-relative α for native, transferred and random vectors, one panel per behaviour and layer.

    Args:
        steering: The report's ``steering`` section (may be None).

    Returns:
        PNG bytes, or None when there are no curves.
    """
    cases = [
        (name, layer, case)
        for name, layers in ((steering or {}).get("behaviours") or {}).items()
        for layer, case in layers.items()
        if case.get("alphas")
    ]
    if not cases:
        return None
    columns = min(3, len(cases))
    rows = math.ceil(len(cases) / columns)
    fig = _figure(3.6 * columns + 0.4, 2.9 * rows + 0.8)
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for ax, (name, layer, case) in zip(axes, cases):
        for condition, values in (case.get("probability") or {}).items():
            style = dict(_CONDITION_STYLE.get(condition, dict(label=condition)))
            ax.plot(case["alphas"], [as_float(v) for v in values], markersize=4, linewidth=1.5, **style)
        if is_number(case.get("half_max_alpha")):
            ax.axvline(case["half_max_alpha"], color="0.3", linewidth=0.8, linestyle=":")
        ratio = case.get("transfer_ratio")
        title = f"{name}, teacher layer {layer} ← analog {case.get('analog_layer', '?')}"
        ax.set_title(title + (f"\ntransfer ratio {fmt_value(ratio)}" if is_number(ratio) else "\nno transfer ratio"), fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("α (× mean residual norm)")
    for ax in axes[len(cases):]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel("p(matching answer)")
    handles, labels = axes[0].get_legend_handles_labels()
    # one legend column per panel column: the long labels side by side are wider than one panel
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), columns), frameon=False, fontsize="small")
    return _to_png(fig)


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
    fig = _figure(2.6 * columns + 0.6, 2.8 * rows + 0.4)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    colors = (_LINE_COLORS[0], _LINE_COLORS[3])
    for ax, (task, row) in zip(axes, tasks.items()):
        for x, (role, label) in enumerate((("teacher", "teacher"), ("analog", "analog"))):
            value = as_float(row.get(role))
            interval = row.get(f"{role}_ci95")
            error = None
            if interval and math.isfinite(value):
                low, high = (as_float(v) for v in interval)
                error = [[max(0.0, value - low)], [max(0.0, high - value)]]
            ax.bar(x, value if math.isfinite(value) else 0.0, color=colors[x], yerr=error, capsize=6, width=0.6, label=label)
        if row.get("chance") is not None:
            ax.axhline(as_float(row["chance"]), linestyle="--", linewidth=1.2, color="0.25", label="chance")
        ax.set_xticks([0, 1], labels=["teacher", "analog"])
        direction = "higher is better" if row.get("higher_is_better", True) else "lower is better"
        ax.set_ylabel(f"{row.get('metric', '')} ({direction})", fontsize="small")
        ax.set_title(task, fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if any(row.get("chance") is not None for row in tasks.values()) and "chance" not in labels:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], linestyle="--", color="0.25"))
        labels.append("chance")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), columns), frameon=False)
    return _to_png(fig)


def training_curve_png(curve: list[dict]) -> bytes:
    """A distillation's held-out KL against the step, with the released (best) step marked."""
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    ax.plot([p["step"] for p in curve], [p["heldout_kl"] for p in curve], marker="o", color="#1565c0")
    best = min(curve, key=lambda p: p["heldout_kl"])
    ax.plot([best["step"]], [best["heldout_kl"]], marker="*", markersize=14, color="#c62828", linestyle="none",
            label=f"released: step {best['step']}, {best['heldout_kl']:.3f} nats")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out KL(teacher ‖ analog), nats")
    ax.legend()
    return _to_png(fig)
