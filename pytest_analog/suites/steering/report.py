"""The steering suite's part of the report: per behaviour and teacher layer, how far the analog's vector
moves the teacher, with the dose-response curves in the HTML page."""

import math

from pytest_analog.report import plots
from pytest_analog.report.formatting import as_float, fmt_value, is_number
from pytest_analog.report.html import esc, png_img, section
from pytest_analog.report.markdown import cell, table
from pytest_analog.suite import Section


def steering_markdown(report):
    """One row per behaviour and teacher layer: baseline, native effect, transfer ratio, Spearman ρ, random control."""
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
            + table(header, rows) + rule)


def steering_html(report):
    """How the behaviours were measured, the dose-response curves, the cases, the maps and the extra forward passes."""
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
        png_img(dose_response_png, steering, alt="dose-response curves per behaviour") or "",
        _cases_table(steering.get("behaviours") or {}),
        _maps_table(steering.get("maps") or {}),
    ]
    passes = steering.get("forward_passes")
    if passes:
        parts.append(f'<p class="note">Forward passes: {esc(", ".join(f"{k} {v}" for k, v in passes.items()))}.</p>')
    return section("Steering transfer", "\n".join(p for p in parts if p), "steering")


def _cases_table(behaviours):
    """One row per behaviour and teacher layer; None without any."""
    rows = []
    for name, layers in behaviours.items():
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
    if not rows:
        return None
    return (
        "<table>\n<tr><th>behaviour</th><th>teacher ← analog layer</th><th>p(matching), unsteered</th>"
        "<th>max native effect</th><th>transfer ratio</th><th>Spearman ρ (transferred)</th>"
        "<th>random / native</th><th>cosine native vs transferred</th></tr>\n" + "\n".join(rows) + "\n</table>"
    )


def _maps_table(maps):
    """Held-out FVU and cosine of each map kind per layer pair; None without maps."""
    if not maps:
        return None
    kinds = [k for k in ("ridge", "procrustes", "autoencoder") if k in next(iter(maps.values()))]
    head = "".join(f"<th>{esc(k)} FVU</th><th>{esc(k)} cosine</th>" for k in kinds)
    body = "\n".join(
        f'<tr><td class="num">{esc(i)} ← {esc(m.get("analog_layer"))}</td><td class="num">{esc(fmt_value((m.get("rows") or {}).get("heldout")))}</td>'
        + "".join(f'<td class="num">{esc(fmt_value(m[k].get("fvu")))}</td><td class="num">{esc(fmt_value(m[k].get("cosine")))}</td>' for k in kinds)
        + "</tr>"
        for i, m in maps.items()
    )
    return (
        "<h3>Maps, analog layer → teacher layer (held-out prompts)</h3>\n<p class=\"note\">Fraction of variance "
        "unexplained (0 is perfect) and mean cosine of mapped analog activations against the teacher's.</p>\n"
        f"<table>\n<tr><th>teacher ← analog layer</th><th>held-out rows</th>{head}</tr>\n{body}\n</table>"
    )


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
    fig = plots.figure(3.6 * columns + 0.4, 2.9 * rows + 0.8)
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for ax, (name, layer, case) in zip(axes, cases):
        _dose_panel(ax, name, layer, case)
    for ax in axes[len(cases):]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel("p(matching answer)")
    handles, labels = axes[0].get_legend_handles_labels()
    # one legend column per panel column: the long labels side by side are wider than one panel
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), columns), frameon=False, fontsize="small")
    return plots.to_png(fig)


def _dose_panel(ax, name, layer, case):
    """One behaviour at one teacher layer: a curve per vector, the half-maximum dose, the transfer ratio in the title."""
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


SECTIONS = (
    Section(("steering",), html=steering_html),
    Section(("steering",), markdown=steering_markdown, after_criteria=True),
)
