"""The compliance suite's part of the report: what each release-compliance check found, or what is
missing and where it was looked for."""

from pytest_analog.report.formatting import criteria_of, failures_first, status
from pytest_analog.report.html import STATUS_LABEL, esc, section
from pytest_analog.report.markdown import ICON, cell, code
from pytest_analog.suite import Section


def _checks(report):
    """The report's compliance criteria, failures first."""
    return failures_first([c for c in criteria_of(report) if c.suite == "compliance"])


def compliance_markdown(report):
    """One line per check: its status, id and what it found."""
    checks = _checks(report)
    if not checks:
        return None
    lines = [f"- {ICON[status(c)]} {code(c.id, in_table=False)}: {cell(c.measured.reason or '')}" for c in checks]
    return "**Release compliance**\n\n" + "\n".join(lines)


def compliance_html(report):
    """One list item per check: its status, id and what it found."""
    checks = _checks(report)
    if not checks:
        return None
    items = "\n".join(
        f'<li class="{status(c)}">{STATUS_LABEL[status(c)]} <code>{esc(c.id)}</code>: {esc(c.measured.reason or "")}</li>'
        for c in checks
    )
    return section("Release compliance", f"<ul>\n{items}\n</ul>", "compliance")


SECTIONS = (Section((), markdown=compliance_markdown, html=compliance_html, after_criteria=True),)
