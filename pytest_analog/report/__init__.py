"""Report writers: the fidelity document as JSON, markdown, HTML and terminal lines.

The plugin builds one plain dict (its keys are documented in `schema`);
this package only renders it, so a saved ``fidelity.json`` can be rendered
again later without models or torch. It names no suite: the suites passed to
`render_markdown`, `render_html` and `write_reports` bring their sections
(`suite.Section`) and what their metrics are (`facts.Metric`).
"""

from pytest_analog.report.files import remove_reports, render_json, write_reports
from pytest_analog.report.html import render_html
from pytest_analog.report.markdown import render_markdown
from pytest_analog.report.schema import SCHEMA_VERSION
from pytest_analog.report.terminal import terminal_lines

__all__ = ["SCHEMA_VERSION", "remove_reports", "render_html", "render_json", "render_markdown", "terminal_lines", "write_reports"]
