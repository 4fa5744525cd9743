"""PNG plots for the HTML report: the shared figure helpers and the per-layer curves.

A suite's own plots (the CKA heatmap, dose-response curves, benchmark bars) live
with its report sections and draw with `figure` and `to_png`. matplotlib is
imported inside the functions, so importing the report package costs nothing
until a plot is drawn. The figures are built with
`matplotlib.figure.Figure` and never go through pyplot: the caller's backend
is left alone (a user's test session may use an interactive one), nothing is
registered in pyplot's figure list, and a figure is freed as soon as its last
reference is dropped. ``savefig(format="png")`` renders with Agg whatever the
process-wide backend is, so there is no need to call ``matplotlib.use``.
"""

import io
import math

from pytest_analog.report.formatting import FAIL, as_float, fmt_value, per_layer_groups, status, teacher_layer

# Fixed resolution, so the same report always gives the same image size.
DPI = 100

_FAIL_COLOR = "#c62828"
LINE_COLORS = ("#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#4e342e")


def figure(width, height):
    """A figure of ``width`` x ``height`` inches at `DPI`, outside pyplot, with constrained layout."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("the HTML report's plots need matplotlib: pip install matplotlib") from exc
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def to_png(fig):
    """The figure as PNG bytes (no version stamp, so equal figures give equal bytes); the figure is cleared."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return buffer.getvalue()


def layer_curves_png(criteria):
    """Plot each per-layer metric against teacher layer, one panel per metric.

    Gated thresholds are dashed lines, failing points are red crosses, and
    layers whose value is missing (NaN or null) are shaded. Where criteria
    carry them, bootstrap intervals are shaded around the values and the chance
    level is a dotted grey line with its own interval. Where the threshold
    reads the corrected score, the corrected score is the main line (the raw
    value a faint one), so the threshold line and the points it judges agree.

    Args:
        criteria: The report's criteria (`Criterion` objects); only those with a ``teacher_layer`` are drawn.

    Returns:
        PNG bytes, or None when no criterion is per-layer.
    """
    from matplotlib.ticker import MaxNLocator

    groups = per_layer_groups(criteria)
    if not groups:
        return None
    fig = figure(8.0, 1.0 + 2.3 * len(groups))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for k, (ax, (metric, rows)) in enumerate(zip(axes, groups.items())):
        _metric_panel(ax, metric, rows, LINE_COLORS[k % len(LINE_COLORS)])
    layers = sorted({teacher_layer(c) for rows in groups.values() for c in rows})
    # Half a layer of margin keeps a single layer from getting fractional ticks.
    axes[-1].set_xlim(layers[0] - 0.5, layers[-1] + 0.5)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes[-1].set_xlabel("teacher layer")
    axes[0].set_title("Per-layer metrics against teacher layer")
    return to_png(fig)


def _metric_panel(ax, metric, rows, color):
    """One metric's panel: its judged values, chance, threshold, and the failing and missing layers."""
    x = [teacher_layer(c) for c in rows]
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
    corrected = all(c.gate.score == "corrected" for c in rows)  # the threshold reads the corrected score
    y = [as_float(c.judged) for c in rows]
    ax.plot(x, y, marker="o", markersize=4, linewidth=1.5, color=color,
            label=f"{metric}, corrected" if corrected else metric)
    _band(ax, x, [c.judged_interval for c in rows], color, 0.18, "interval")
    if corrected:
        ax.plot(x, [as_float(c.measured.value) for c in rows], linewidth=1.0, color=color, alpha=0.45, label="raw")
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
    chance = [as_float(c.measured.chance) for c in rows]
    if any(math.isfinite(v) for v in chance):
        ax.plot(x, chance, linestyle=":", marker=".", linewidth=1.5, color="0.35", label="chance")
        _band(ax, x, [c.measured.chance_interval for c in rows], "0.5", 0.2, "chance interval")


def _plot_threshold(ax, rows):
    """The gated layers' threshold as a dashed line, stepped where it differs by layer.

    Returns:
        Whether any layer has a gated, finite threshold.
    """
    gated = [(teacher_layer(c), c.gate) for c in rows if c.gate.gated and math.isfinite(c.gate.threshold)]
    if not gated:
        return False
    if len({gate.threshold for _, gate in gated}) == 1:
        gate = gated[0][1]
        ax.axhline(gate.threshold, linestyle="--", linewidth=1.2, color="0.25",
                   label=f"threshold {gate.sign()} {fmt_value(gate.threshold)}")
    else:
        ax.plot([t for t, _ in gated], [gate.threshold for _, gate in gated], linestyle="--",
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


def training_curve_png(curve: list[dict]) -> bytes:
    """A distillation's held-out KL against the step, with the released (best) step marked."""
    fig = figure(6, 3.5)
    ax = fig.add_subplot()
    ax.plot([p["step"] for p in curve], [p["heldout_kl"] for p in curve], marker="o", color="#1565c0")
    best = min(curve, key=lambda p: p["heldout_kl"])
    ax.plot([best["step"]], [best["heldout_kl"]], marker="*", markersize=14, color="#c62828", linestyle="none",
            label=f"released: step {best['step']}, {best['heldout_kl']:.3f} nats")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out KL(teacher ‖ analog), nats")
    ax.legend()
    return to_png(fig)
