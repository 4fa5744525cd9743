"""The representation suite's parts of the report: what was compared, the layer map with its CKA heatmap,
and the massive-activation rows.

Markdown shows the layer map and the massive rows after the criteria (a pull-request comment leads with
the verdict); the HTML page shows them, heatmap first, before the criteria tables.
"""

import math

from pytest_analog.report import plots
from pytest_analog.report.formatting import as_float, as_list, fmt_value
from pytest_analog.report.html import esc, kv_table, png_img, section
from pytest_analog.report.markdown import cell, code, table
from pytest_analog.suite import Section

# -- what was compared ----------------------------------------------------------------------------------

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


def capture_markdown(report):
    """E.g. ``**Compared:** 5,123 aligned positions from 256 prompts (`default`, 0 dropped), token alignment.``"""
    capture = report.get("capture")
    if not capture:
        return None
    what = []
    if capture.get("n_rows") is not None:
        what.append(f"{fmt_value(capture['n_rows'])} aligned positions")
    if capture.get("n_prompts") is not None:
        what.append(_prompts(capture))
    parts = [" ".join(what)] if what else []
    if capture.get("alignment"):
        parts.append(f"{cell(capture['alignment'])} alignment")
    line = "**Compared:** " + (", ".join(parts) or "see fidelity.json")
    if capture.get("positions"):
        line += f". Positions: {cell(capture['positions'])}"
    if capture.get("seconds") is not None:
        line += f". Capture took {fmt_value(capture['seconds'])} s" + (" (cached)" if capture.get("cached") else "")
    return line + "."


def _prompts(capture):
    """E.g. ``from 256 prompts (`default`, 0 dropped)``."""
    prompts = f"from {fmt_value(capture['n_prompts'])} prompts"
    details = []
    if capture.get("prompt_set"):
        details.append(code(capture["prompt_set"], in_table=False))
    if capture.get("n_prompts_dropped") is not None:
        details.append(f"{fmt_value(capture['n_prompts_dropped'])} dropped")
    return prompts + (f" ({', '.join(details)})" if details else "")


def capture_html(report):
    """The positions compared, stressed, then every capture figure in a table."""
    capture = report.get("capture")
    if not capture:
        return None
    body = ""
    if capture.get("positions"):
        body += f'<p class="important"><strong>Positions compared:</strong> {esc(capture["positions"])}</p>\n'
    ordered = {k: capture[k] for k in _CAPTURE_LABELS if k in capture and k != "positions"}
    ordered.update({k: v for k, v in capture.items() if k not in _CAPTURE_LABELS})
    body += kv_table(ordered, _CAPTURE_LABELS)
    return section("Capture", body, "capture")


# -- the layer map ------------------------------------------------------------------------------------


def layers_markdown(report):
    """The analog layer per teacher layer, best match and mapped, as aligned columns, and where they differ."""
    layers = report.get("layers")
    if not layers:
        return None
    teacher = as_list(layers.get("teacher"))
    best = as_list(layers.get("best_match"))
    mapped = as_list(layers.get("mapped"))
    if not teacher or not (best or mapped):
        return None
    labelled = [(name, ["-" if v is None else str(v) for v in values])
                for name, values in (("teacher", teacher), ("best", best), ("mapped", mapped)) if values]
    width = max(len(v) for _, values in labelled for v in values)
    lines = [f"{name:<7} " + " ".join(f"{v:>{width}}" for v in values) for name, values in labelled]
    text = "**Layer map** (analog layer per teacher layer; best = highest CKA, mapped = what gated criteria use):\n\n"
    text += "```\n" + "\n".join(lines) + "\n```"
    if best and mapped:
        text += _agreement(teacher, best, mapped)
    return text


def _agreement(teacher, best, mapped):
    """E.g. ``Best match and mapped agree on 29/31 teacher layers; they differ at teacher layers 4, 9.``"""
    differ = [str(t) for t, b, m in zip(teacher, best, mapped) if b != m]
    n = min(len(teacher), len(best), len(mapped))
    text = f"\n\nBest match and mapped agree on {n - len(differ)}/{n} teacher layers"
    return text + (f"; they differ at teacher layers {', '.join(differ)}." if differ else ".")


def layers_html(report):
    """The layer convention, the CKA heatmap with what its marks mean, and the layer map table."""
    layers = report.get("layers")
    if not layers:
        return None
    parts = []
    if layers.get("convention"):
        parts.append(f'<p class="note">Layer convention: {esc(layers["convention"])}</p>')
    heatmap = png_img(cka_heatmap_png, layers, alt="CKA heatmap, teacher layers by analog layers")
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
    return section("Layer correspondence", "\n".join(p for p in parts if p), "layers")


def _layer_table(layers):
    """Per teacher layer, its best match and mapped analog layer with their CKA; rows where they differ highlighted."""
    teacher = as_list(layers.get("teacher"))
    best = as_list(layers.get("best_match"))
    mapped = as_list(layers.get("mapped"))
    if not teacher or not (best or mapped):
        return None
    cka = _cka_lookup(layers)
    rows = []
    for i, t in enumerate(teacher):
        b = best[i] if i < len(best) else None
        m = mapped[i] if i < len(mapped) else None
        css = ' class="unknown"' if b is not None and m is not None and b != m else ""
        rows.append(
            f'<tr{css}><td class="num">{esc(t)}</td><td class="num">{esc("" if b is None else b)}</td>'
            f'<td class="num">{esc(cka(i, b))}</td><td class="num">{esc("" if m is None else m)}</td>'
            f'<td class="num">{esc(cka(i, m))}</td></tr>'
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


def _cka_lookup(layers):
    """(teacher row, analog layer) -> the formatted CKA of the matrix cell, "" where there is none."""
    analog = as_list(layers.get("analog"))
    matrix = layers.get("cka_matrix")
    matrix = [] if matrix is None else list(matrix)

    def cka_at(i, s):
        """The CKA of teacher row ``i`` and analog layer ``s``, formatted."""
        if s not in analog or i >= len(matrix):
            return ""
        row = matrix[i]
        j = analog.index(s)
        return fmt_value(as_float(row[j])) if j < len(row) else ""

    return cka_at


# -- massive activations --------------------------------------------------------------------------------


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


# Cell markup by column kind (see `massive_tables`), in markdown and in HTML.
_MARKDOWN_CELL = {"code": code, "num": str, "text": cell}
_HTML_CELL = {"code": "<td><code>{}</code></td>", "num": '<td class="num">{}</td>', "text": "<td>{}</td>"}


def massive_markdown(report):
    """The massive-activation sentence in bold, then its tables."""
    found = report.get("massive")
    if not found:
        return None
    text = f"**{cell(massive_sentence(found))}**"
    for note, columns, rows in massive_tables(found):
        text += (f"\n\n{note}" if note else "") + "\n\n" + table(
            [heading for heading, _ in columns],
            [[_MARKDOWN_CELL[kind](v) for (_, kind), v in zip(columns, row)] for row in rows])
    return text


def massive_html(report):
    """The massive-activation sentence, stressed, then its tables."""
    found = report.get("massive")
    if not found:
        return None
    body = f'<p class="important">{esc(massive_sentence(found))}</p>'
    for note, columns, rows in massive_tables(found):
        body += (f"\n<p>{esc(note)}</p>" if note else "") + "\n" + _html_table(columns, rows)
    return section("Massive activations", body, "massive")


def _html_table(columns, rows):
    """A table whose cells are marked up by their column's kind (see `massive_tables`)."""
    header = "<tr>" + "".join(f"<th>{esc(heading)}</th>" for heading, _ in columns) + "</tr>"
    lines = ["<tr>" + "".join(_HTML_CELL[kind].format(esc(v)) for (_, kind), v in zip(columns, row)) + "</tr>" for row in rows]
    return "<table>\n" + header + "\n" + "\n".join(lines) + "\n</table>"


# -- the CKA heatmap --------------------------------------------------------------------------------------

_MAPPED_COLOR = "#ff1744"
# At most this many tick labels per axis; layer numbers in between are skipped.
_MAX_TICKS = 16
# The layer-map markers: report key, legend label, style (shared by the cells and the legend).
_LAYER_MARKS = (
    ("best_match", "best match",
     dict(marker="o", markerfacecolor="none", markeredgecolor="white", markeredgewidth=1.6)),
    ("mapped", "mapped (gated)", dict(marker="x", color=_MAPPED_COLOR, markeredgewidth=2.0)),
)
_CHANCE_HATCH = dict(hatch="///", edgecolor="white")
_NO_VALUE_COLOR = "#bdbdbd"


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

    fig = plots.figure(min(max(5.0, 0.32 * n_analog + 2.6), 14.0), min(max(4.0, 0.24 * n_teacher + 2.2), 16.0))
    ax = fig.add_subplot()
    _draw_matrix(fig, ax, matrix)
    _mark_layers(ax, layers, column_of, n_teacher, _marker_size(fig, matrix.shape))
    chance = _at_or_below_chance(matrix, layers.get("chance_matrix"))
    _hatch(ax, chance)
    _label_heatmap(ax, teacher, analog, layers.get("matrix_rows"))
    _heatmap_legend(fig, chance=bool(chance), missing=not np.isfinite(matrix).all())
    return plots.to_png(fig)


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
    cell_size = min(fig.get_figwidth() * 0.75 / n_analog, fig.get_figheight() * 0.8 / n_teacher) * 72
    return max(3.0, min(12.0, 0.6 * cell_size))


def _outline():
    """A black stroke around a marker, so it shows on any cell colour."""
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


def _ticks(n):
    """At most `_MAX_TICKS` evenly spaced positions of ``n``."""
    step = max(1, math.ceil(n / _MAX_TICKS))
    return list(range(0, n, step))


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


SECTIONS = (
    Section(("capture",), markdown=capture_markdown, html=capture_html),
    Section(("layers",), html=layers_html),
    Section(("massive",), html=massive_html),
    Section(("layers",), markdown=layers_markdown, after_criteria=True),
    Section(("massive",), markdown=massive_markdown, after_criteria=True),
)
