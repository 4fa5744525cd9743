"""What a run leaves: the report document, its files and the bundle, the exit code and the terminal summary.

What a run leaves at its output paths is its own: a run with nothing to report
removes the earlier report files and bundle, and a partial run writes a report
whose verdict is at best "partial" and no bundle.
"""

from __future__ import annotations

import datetime
import platform
import sys
from typing import Any

import pytest

from pytest_analog import __version__
from pytest_analog.atomic import remove_files
from pytest_analog.criterion import summary, verdict
from pytest_analog.handover import reference_manifest
from pytest_analog.models import parameter_fraction
from pytest_analog.options import EXIT_PARTIAL
from pytest_analog.reference import store
from pytest_analog.report import SCHEMA_VERSION, remove_reports, terminal_lines, write_reports
from pytest_analog.submission import write_submission
from pytest_analog.versions import package_version


def report(session) -> dict[str, Any]:
    """The report document of ``session`` (see `pytest_analog.report.schema`)."""
    document = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": {"name": "pytest-analog", "version": __version__},
        "verdict": verdict(session.criteria, session.failure, session.partial),
        "environment": _environment(),
        "config": session.analog_config.to_dict(),
        "criteria": [c.to_dict() for c in session.criteria],
        "summary": summary(session.criteria),
    }
    if session.failure:
        document["error"] = session.failure
    if session.partial:
        document["partial"] = session.partial
    infos = session.models_info()
    if infos:
        document["models"] = {
            **infos,
            "parameter_fraction": parameter_fraction(infos),
            "same_tokenizer": infos["teacher"]["tokenizer"]["sha256"] == infos["analog"]["tokenizer"]["sha256"],
        }
    reference = reference_manifest(session)
    if reference:
        path = session.settings.reference
        document["reference"] = {
            "id": store.manifest_id(reference),
            "source": "file" if path else "memory",
            "path": str(path) if path else None,
            "parts": sorted(reference["parts"]),
            "teacher": reference["teacher"],
        }
    for name, spec in session.runs.items():  # the sections of the runs performed, in one order whoever performed them
        if name in session.outcomes:
            document.update(spec.section(session.outcomes[name], session.analog_config))
    return document


def finish(session, pytest_session: pytest.Session) -> None:
    """Write the report files for --analog-report and the bundle for --analog-submit (the xdist controller
    or a serial run only), and give the run the exit code of its verdict: a failed gate exits 1, a partial
    one that failed nothing `EXIT_PARTIAL`. A report or bundle that cannot be written (disk full, Ctrl-C)
    is one line in the summary and exit 4 (2 when interrupted); the earlier files stay whole.
    ``--collect-only`` touches nothing."""
    if session.is_worker or pytest_session.config.option.collectonly:
        return
    session.partial = _partial_reason(session, pytest_session)
    if not (session.criteria or session.failure):
        _settle(session, pytest_session, "partial" if session.partial else None)
        withdraw(session)
        return
    document = report(session)
    _settle(session, pytest_session, document["verdict"])
    settings, writing = session.settings, "report"
    try:
        if settings.report:
            write_reports(document, settings.report, session.suites)
        writing = "submit"
        if settings.submit and "models" in document and not session.partial:
            session.submitted = write_submission(document, *session.model_sources, settings.submit, session.cache_dir)
        elif settings.submit:
            remove_files([settings.submit])
    except (OSError, KeyboardInterrupt) as exc:
        _not_written(session, pytest_session, exc, writing)


def withdraw(session) -> None:
    """Remove the earlier report files and bundle from this run's output paths (never on a worker)."""
    if session.is_worker:
        return
    if session.settings.report:
        remove_reports(session.settings.report)
    if session.settings.submit:
        remove_files([session.settings.submit])


def display(session, terminalreporter) -> None:
    """The verdict, its failing criteria and where the report and bundle went, after pytest's own summary."""
    if not session.criteria:
        if session.partial and session.enabled:
            terminalreporter.write_sep("=", "analog fidelity")
            terminalreporter.write_line(f"analog fidelity: PARTIAL - {session.partial}")
        return
    terminalreporter.write_sep("=", "analog fidelity")
    for line in terminal_lines(report(session)):
        terminalreporter.write_line(line)
    failed, settings = session.unwritten or "", session.settings
    if settings.report and not failed.startswith("--analog-report"):
        terminalreporter.write_line(f"report: {settings.report / 'fidelity.html'}")
    if settings.submit and not failed.startswith("--analog-submit"):
        why = "partial run" if session.partial else "the report was not written" if failed else "no model was measured"
        written = f"submission: {session.submitted}" if session.submitted else f"submission: none written ({why})"
        terminalreporter.write_line(written)
    if failed:
        terminalreporter.write_line(f"ERROR: {failed}", red=True, bold=True)


def _settle(session, pytest_session: pytest.Session, outcome: str | None) -> None:
    """Give a run whose tests all passed the exit code of its verdict (a failed gate 1, a partial one 6)."""
    if session.enabled and pytest_session.exitstatus == pytest.ExitCode.OK:
        if outcome == "fail":
            pytest_session.exitstatus = pytest.ExitCode.TESTS_FAILED
        elif outcome == "partial":
            pytest_session.exitstatus = EXIT_PARTIAL


def _not_written(session, pytest_session: pytest.Session, exc: BaseException, option: str) -> None:
    """The report files or the bundle (``option``: "report" or "submit") could not be written: one line for the
    summary. The earlier files stay whole (`atomic`: written beside them first, swapped in with SIGINT held back)."""
    what = "report files" if option == "report" else "bundle"
    option = f"--analog-{option}={getattr(session.settings, option)}"
    if isinstance(exc, KeyboardInterrupt):
        session.unwritten = f"{option}: interrupted while writing the {what}; nothing is half-written: the earlier {what} or this run's are in place"
        pytest_session.exitstatus = pytest.ExitCode.INTERRUPTED
    else:
        session.unwritten = (f"{option}: the {what} could not be written ({exc.strerror or exc}); "
                             "what was there before is left as it was")
        pytest_session.exitstatus = pytest.ExitCode.USAGE_ERROR


def _partial_reason(session, pytest_session: pytest.Session) -> str | None:
    """Why the tests that ran are not every test that records a criterion, or None."""
    if session.workers_down:
        return f"pytest-xdist worker(s) {', '.join(session.workers_down)} went down; the criteria they recorded are missing"
    missing = len(session.recording_tests) - len(session.criteria)
    if missing > 0:  # recorded by tests whose worker never handed them over
        return f"{missing} of the {len(session.recording_tests)} criteria that tests recorded are missing"
    if session.deselected:
        return f"{session.deselected} test(s) that record criteria were deselected (-k, -m, --lf, --deselect or --sw)"
    config = session.pytest_config
    last_failed = config.pluginmanager.get_plugin("lfplugin")
    if config.getoption("lf", False) and last_failed is not None and last_failed.lastfailed:
        return "run with --lf: only the tests that failed last time ran"
    stopped = pytest_session.shouldfail or pytest_session.shouldstop or pytest_session.exitstatus == pytest.ExitCode.INTERRUPTED
    if stopped:
        return f"the run stopped before every test ran ({stopped if isinstance(stopped, str) else 'interrupted'})"
    unrun = [suite.name for suite in session.wanted() if suite.name not in session.suites_seen]
    if unrun:
        return (f"requested suite(s) {', '.join(unrun)} never ran: none of their tests was collected "
                "(--ignore, --ignore-glob, a conftest or a plugin left them out)")
    return None


def _environment() -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: package_version(name) for name in ("torch", "transformers", "numpy", "pytest")},
    }
    if "torch" in sys.modules:
        import torch

        env["device_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return env
