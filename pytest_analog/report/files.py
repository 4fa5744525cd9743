"""Writing the three report files.

All three documents are rendered in memory before the first byte is written,
so a renderer that raises leaves the previous reports untouched, and the three
files are replaced as a set (`atomic.replace_files`), so a reader never sees
half a file, nor a new ``fidelity.json`` beside an old ``fidelity.md``.
"""

import json
from pathlib import Path

from pytest_analog.atomic import remove_files, replace_files
from pytest_analog.report.formatting import to_jsonable
from pytest_analog.report.html import render_html
from pytest_analog.report.markdown import render_markdown

JSON_NAME = "fidelity.json"
MARKDOWN_NAME = "fidelity.md"
HTML_NAME = "fidelity.html"


def render_json(report):
    """Serialise the report as strict JSON (NaN and infinities become null), indent 2."""
    return json.dumps(to_jsonable(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_reports(report, directory, suites=()):
    """Write ``fidelity.json``, ``fidelity.md`` and ``fidelity.html`` into ``directory``.

    Args:
        report: The report document (see `pytest_analog.report.schema`).
        directory: Folder to write into; created with its parents if missing.
        suites: The `suite.Suite` objects whose sections and metric facts the pages show, in report order.

    Returns:
        The paths written, JSON first.

    Raises:
        TypeError: when the report holds a value with no JSON form; nothing
            is written then.
    """
    directory = Path(directory)
    documents = {
        directory / JSON_NAME: render_json(report),
        directory / MARKDOWN_NAME: render_markdown(report, suites),
        directory / HTML_NAME: render_html(report, suites),
    }
    replace_files(documents)
    return list(documents)


def remove_reports(directory):
    """Remove the report files (and temporary files of killed writes) from ``directory``: a run
    that measured nothing leaves no earlier verdict behind."""
    remove_files(Path(directory) / name for name in (JSON_NAME, MARKDOWN_NAME, HTML_NAME))
