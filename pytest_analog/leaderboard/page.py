"""The leaderboard as one self-contained HTML page: a sortable table per teacher reference, with the gates it is judged by."""

from __future__ import annotations

import html
import json

from pytest_analog.leaderboard.board import Board, Group

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 96rem; padding: 0 1rem; color: #1d1d1f; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .4rem .5rem; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.model { overflow-wrap: anywhere; min-width: 8rem; } td.pass, td.fail, td.date { white-space: nowrap; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; }
th[aria-sort=ascending] button::after { content: " \\25B2"; }
th[aria-sort=descending] button::after { content: " \\25BC"; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #c0392b; font-weight: 600; }
code { font-size: 85%; } small { color: #666; }
h2 { margin-top: 2rem; } h2 small { font-weight: normal; }
p.gates { margin: .2rem 0 .6rem; font-size: 90%; } p.gates span { white-space: nowrap; }
td small { display: block; overflow-wrap: anywhere; } small.differ { color: #b35900; }
"""

# Click a header to sort by it; click again to reverse. Numbers sort as numbers; empty cells go last.
_SCRIPT = """
document.querySelectorAll("th[data-col] button").forEach(function (button) {
  button.addEventListener("click", function () {
    var th = button.parentElement, table = th.closest("table"), body = table.tBodies[0];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var col = th.cellIndex;
    function key(row) { return row.cells[col].getAttribute("data-sort"); }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      var nx = Number(x), ny = Number(y);
      var order = isFinite(nx) && isFinite(ny) ? nx - ny : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def render_page(board: Board) -> str:
    """The leaderboard page: one table per teacher reference, sortable by each column; rejected files listed below."""
    tables = "\n".join(_table(group, board.gates.name) for group in board.groups)
    rejected = "".join(f"<li><code>{html.escape(r['file'])}</code>: {html.escape(r['reason'])}</li>" for r in board.rejected)
    legend = "; ".join(f"{html.escape(s)}: {html.escape(h)}" for s, h in board.to_dict()["headlines"].items())
    count = len(board.entries)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Analog leaderboard</title><style>{_STYLE}</style></head>
<body>
<h1>Analog leaderboard</h1>
<p>Open analogs measured against their teachers with <a href="https://pypi.org/project/pytest-analog/">pytest-analog</a>.
{count} {"entry" if count == 1 else "entries"}, grouped by the teacher reference they were scored against: entries are ranked
within their group only. Every entry is judged under the board's gates, <strong>{html.escape(board.gates.name)}</strong>
(listed above each table), not under the thresholds of its own config; an entry whose config gates otherwise says how.
The same analog weights submitted twice against one reference are all listed and marked: a bundle's date is its
submitter's word, so none is taken as first. Click a column header to sort.
<small>Suite scores: {legend or "none"}.</small></p>
{tables}
{f"<h2>Rejected submissions</h2><ul id='rejected'>{rejected}</ul>" if rejected else ""}
<script>{_SCRIPT}</script>
</body></html>
"""


# Characters of a reference id shown in a group's heading (the full id is its tooltip and in leaderboard.json).
SHORT_ID = 12


def _table(group: Group, gates: str) -> str:
    """One group's section: a heading naming the teacher and the reference (or its weights), the ``gates`` its
    entries are judged by with their thresholds, and its entries' table."""
    suites = group.suites
    head = ["analog", "size fraction", *(f"{s} score" for s in suites), "verdict", "gated passed", "date"]
    header = "".join(f'<th data-col="{i}" scope="col"><button type="button">{html.escape(h)}</button></th>' for i, h in enumerate(head))
    rows = "\n".join(_row(e, suites) for e in group.entries)
    teacher, reference = html.escape(group.teacher), html.escape(group.reference or "")
    thresholds = " · ".join(f"<span>{html.escape(t)}</span>" for t in group.thresholds)
    named = (f'reference <code title="{reference}">{reference[:SHORT_ID]}</code>' if group.reference else
             f'no reference (no suite read the teacher\'s part): weights <code title="{group.teacher_sha256}">{group.teacher_sha256[:SHORT_ID]}</code>')
    return f"""<section class="group" data-reference="{reference}" data-teacher-sha256="{group.teacher_sha256}">
<h2>Teacher <span title="{teacher}">{html.escape(short_model_id(group.teacher))}</span>
<small>{named}</small></h2>
<p class="gates">gates: <strong>{html.escape(gates)}</strong>: {thresholds or "none gate these entries"}</p>
<table class="leaderboard"><thead><tr>{header}</tr></thead>
<tbody>
{rows}
</tbody></table>
</section>"""


def _row(entry: dict, suites: list[str]) -> str:
    """One entry's table row: analog (with its notes), size, suite scores, verdict, gated passed, date."""
    def cell(text, sort, numeric=False, css="", title=None, notes=()):
        """A cell showing ``text``, sorted by ``sort``, with its notes below."""
        classes = " ".join(c for c in ("num" if numeric else "", css) if c)
        attr = f' class="{classes}"' if classes else ""
        attr += f' title="{html.escape(title)}"' if title else ""
        small = "".join(f'<small class="{kind}">{html.escape(note)}</small>' for kind, note in notes)
        return f'<td{attr} data-sort="{html.escape(str(sort))}">{html.escape(text)}{small}</td>'

    notes = []
    if entry.get("own_gates"):
        notes.append(("differ", f"own gates differ: {'; '.join(entry['own_gates'])}"))
    if entry.get("same_weights_as"):
        notes.append(("duplicate", f"same weights as {', '.join(entry['same_weights_as'])}"))

    scores = [
        cell("" if entry["scores"].get(s) is None else f"{entry['scores'][s]:.3f}", _num(entry["scores"].get(s)), True)
        for s in suites
    ]
    fraction = entry["parameter_fraction"]
    cells = [
        cell(short_model_id(entry["analog"]), entry["analog"], css="model", title=entry["analog"], notes=notes),
        cell(f"{fraction:.2%}", _num(fraction), True),
        *scores,
        cell(entry["verdict"], entry["verdict"], css=entry["verdict"] if entry["verdict"] in ("pass", "fail") else ""),
        cell(entry["passed"], _num(entry["passed_fraction"]), True),
        cell(entry["date"], entry["date"], css="date"),
    ]
    return f'<tr data-file="{html.escape(entry["file"])}">{"".join(cells)}</tr>'


# A model id longer than this shows its last two path parts; the full id is the cell's tooltip.
_MODEL_ID_CHARS = 40


def short_model_id(model_id: str) -> str:
    """``…/analog-5pct/release`` for a long local path; a hub id or a short path as it is."""
    parts = model_id.rstrip("/").split("/")
    if len(model_id) <= _MODEL_ID_CHARS or len(parts) <= 2:
        return model_id
    return "…/" + "/".join(parts[-2:])


def _num(value) -> str:
    """A number as a sort key ("" for none)."""
    return "" if value is None else json.dumps(value)
