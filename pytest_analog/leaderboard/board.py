"""Which submissions go on the board, the row each one gets, and the one set of gates it is judged by.

A submission is rejected, with one line saying why, when its file is not a plain
JSON file, when it breaks the schema (every field the board reads is checked
there first), when it was edited after it was written (its own ``sha256``), when
its report disagrees with its own file hashes (the weight hashes recomputed from
the bundle's file digests must be the report's, and the analog it names the
one its file record names), with its own thresholds (each
verdict recomputed from value and threshold; an installed suite's criteria must
carry the gate their config sets, `gates.Gates.gate`; counts and overall verdict
recomputed), or when its teacher is not the teacher of the reference it names.

An accepted bundle is then judged under the board's gates, not its own: one
published set (`board_gates`: the shipped defaults, or the operator's file),
named on the page beside each group with its thresholds. Each criterion of an
installed suite (built-in, or from a package's entry point) is re-judged from its measured value, interval and chance level under
that set's gate (`criterion.judge`); its verdict, counts and scores follow. A
bundle whose own config gates otherwise is listed with the differences, so
lowered thresholds buy nothing. Criteria of other suites (a conftest's, a test's
own) have no published gate and are not counted.

Duplicates (the same analog weights against the same teacher reference) are all
listed, each marked with the others' files: which came first cannot be read from
a bundle, whose dates its submitter writes, so no rule picks one; the operator
keeps one.

Entries are grouped by the teacher reference they were scored against and
ranked within their group only: scores against different references (another
teacher, other prompts or settings) are not comparable. A bundle that names no
reference (no run read the teacher's part: compliance alone) is grouped by its
teacher's weights.

These checks make a bundle internally consistent; they cannot prove the
numbers were measured. `verify` ties a bundle to model files anyone can hash,
and rerunning ``pytest`` on those files reproduces the numbers.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_analog import registry
from pytest_analog.config import config_from_dict, load_config
from pytest_analog.criterion import Criterion, Gate, summary, verdict
from pytest_analog.errors import AnalogError
from pytest_analog.gates import Gates
from pytest_analog.models import parameter_fraction
from pytest_analog.submission import content_sha256, file_digests, load_submission, schema_errors, weights_sha256
from pytest_analog.versions import package_version



@dataclass(frozen=True)
class PublishedGates:
    """The one set of gates the board judges every entry under, and the name the page gives it."""

    name: str  # "pytest-analog 0.1.0 defaults", or the operator's file name
    gates: Gates

    def to_dict(self) -> dict[str, Any]:
        """Its name and its gates, as leaderboard.json holds them."""
        return {"name": self.name, "gates": dataclasses.asdict(self.gates)}


@dataclass
class Group:
    """The entries scored against one teacher reference (or, naming none, one teacher's weights), best first."""

    reference: str | None  # the reference's id (SHA-256 of its manifest); None: no run read the teacher's part
    teacher: str  # the teacher's id (hub id or path)
    teacher_sha256: str  # its weights (`models.sha256_files`)
    entries: list[dict[str, Any]]

    @property
    def suites(self) -> list[str]:
        """The suites with a headline in its entries (`suites_of`)."""
        return suites_of(self.entries)

    @property
    def thresholds(self) -> list[str]:
        """The board's gates its entries were judged by, in a few words each (`threshold_text`)."""
        return list(dict.fromkeys(t for e in self.entries for t in e.get("thresholds", [])))

    def to_dict(self) -> dict[str, Any]:
        """The group as leaderboard.json holds it."""
        return {"reference": self.reference, "teacher": self.teacher, "teacher_sha256": self.teacher_sha256,
                "suites": self.suites, "thresholds": self.thresholds, "entries": self.entries}


@dataclass
class Board:
    """The accepted rows, grouped by teacher reference and best first in each group, the rejected files
    with their reasons, and the gates every row is judged by."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    gates: PublishedGates = field(default_factory=lambda: board_gates())

    @property
    def groups(self) -> list[Group]:
        """One group per teacher reference (and teacher weights), by teacher id, then reference id."""
        groups: dict[tuple[str | None, str], Group] = {}
        for row in self.entries:
            key = (row["reference"], row["teacher_sha256"])
            if key not in groups:
                groups[key] = Group(row["reference"], row["teacher"], row["teacher_sha256"], [])
            groups[key].entries.append(row)
        return sorted(groups.values(), key=lambda g: (g.teacher, g.reference or "", g.teacher_sha256))

    @property
    def suites(self) -> list[str]:
        """The suites with a headline in its entries (`suites_of`)."""
        return suites_of(self.entries)

    @property
    def duplicates(self) -> list[list[str]]:
        """The files of each analog listed more than once against one teacher reference."""
        files = {tuple(sorted([e["file"], *e.get("same_weights_as", [])])) for e in self.entries if e.get("same_weights_as")}
        return [list(names) for names in sorted(files)]

    def to_dict(self) -> dict[str, Any]:
        """The board as leaderboard.json holds it."""
        return {
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "gates": self.gates.to_dict(),
            "headlines": {s: f"mean {_headlines()[s]}" if s in _headlines() else "fraction of gated criteria passed" for s in self.suites},
            "groups": [group.to_dict() for group in self.groups],
            "rejected": self.rejected,
        }


def suites_of(entries: list[dict[str, Any]]) -> list[str]:
    """Suites with a headline in any of ``entries``: the installed ones in their order, then others by name."""
    seen, known = {s for e in entries for s in e["scores"]}, _known()
    return [s for s in known if s in seen] + sorted(seen - set(known))


def _headlines() -> dict[str, str]:
    """Suite -> the metric whose mean is its headline score (`suite.Suite.headline`); any other suite's headline
    is the fraction of its gated criteria that pass."""
    return {suite.name: suite.headline for suite in registry.installed() if suite.headline}


def known_config(config: dict[str, Any], criteria: list[dict[str, Any]]) -> dict[str, Any]:
    """A bundle's ``config`` without the sections and gates of suites this installation does not know (a conftest's,
    named by its ``criteria``'s suite and metrics): their criteria are not counted, and nothing else is dropped."""
    foreign = {row["suite"] for row in criteria} - set(_known())
    metrics = {row["metric"] for row in criteria if row["suite"] in foreign}
    known = {key: value for key, value in config.items() if key not in foreign}
    if isinstance(known.get("gates"), dict):
        known["gates"] = {key: value for key, value in known["gates"].items() if key not in metrics}
    return known


def bundle_gates(config: dict[str, Any], criteria: list[dict[str, Any]]) -> Gates:
    """The gates of a bundle's own ``config`` (`known_config`), checked as a config file is."""
    return config_from_dict(known_config(config, criteria), "config").gates


def _known() -> list[str]:
    """The suites whose gates the board publishes: the built-in ones and those of installed packages, in order."""
    return [suite.name for suite in registry.installed()]


def build_board(directory: Path, gates: PublishedGates | None = None) -> Board:
    """Check every ``*.json`` bundle in ``directory`` and judge the accepted ones under ``gates``.

    Args:
        directory: the submissions folder; only its plain files are read (a symbolic link is rejected).
        gates: the board's gates; None: the shipped defaults (`board_gates`).

    Raises:
        AnalogError: ``directory`` is not a folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise AnalogError(f"submissions folder {directory} does not exist or is not a folder")
    board = Board(gates=gates or board_gates())
    for path in sorted(directory.glob("*.json")):
        name, reason = path.name, None
        if not name.isprintable():
            name, reason = ascii(name), "its file name holds a control character; rename it"
        elif path.is_symlink() or not path.is_file():
            reason = "is a symbolic link or not a plain file; a submission is a plain JSON file"
        else:
            try:
                bundle = load_submission(path)
                reason = check_submission(bundle)
            except AnalogError as exc:
                reason = str(exc).removeprefix(f"submission {path} ")
        if reason:
            board.rejected.append({"file": name, "reason": reason})
        else:
            board.entries.append(entry(bundle, name, board.gates.gates))
    pairs: dict[tuple[str | None, str, str], list[str]] = {}
    for row in board.entries:
        pairs.setdefault(weights_pair(row), []).append(row["file"])
    for row in board.entries:
        row["same_weights_as"] = [name for name in pairs[weights_pair(row)] if name != row["file"]]
    board.entries.sort(key=lambda e: (e["verdict"] != "pass", -e["passed_fraction"], e["analog"], e["file"]))
    return board


def weights_pair(row: dict[str, Any]) -> tuple[str | None, str, str]:
    """What makes two entries duplicates: the teacher reference, the teacher's and the analog's weights."""
    return row["reference"], row["teacher_sha256"], row["analog_sha256"]


def board_gates(path: Path | None = None) -> PublishedGates:
    """The shipped defaults, named ``pytest-analog VERSION defaults``, or the ``gates:`` of the config file at
    ``path`` (its other settings are not read), named by the file.

    Raises:
        AnalogError: the file is missing or is not a valid config.
    """
    if path is None:
        return PublishedGates(f"pytest-analog {package_version('pytest-analog')} defaults", load_config().gates)
    return PublishedGates(Path(path).name, load_config(path).gates)


def check_submission(bundle: Any) -> str | None:
    """Why ``bundle`` cannot go on the board, in one line; None when it can."""
    problems = schema_errors(bundle)
    if problems:
        return f"does not follow the submission schema: {problems[0]}"
    if bundle["sha256"] != content_sha256(bundle):
        return "its content does not match its sha256: it was edited after pytest --analog-submit wrote it"
    report = bundle["report"]
    if bundle["config"] != report["config"]:
        return "its config differs from the config in its report"
    scored = report.get("reference", {}).get("teacher")
    if scored and (scored["sha256"] != report["models"]["teacher"]["sha256"] or scored["files"] != file_digests(bundle["models"]["teacher"])):
        return "its teacher is not the teacher of the reference it was scored against (weights or files differ)"
    for role, name in (("teacher", "teacher"), ("analog", "analog")):
        recorded, recomputed = report["models"][role]["sha256"], weights_sha256(bundle["models"][role])
        if recorded != recomputed:
            return (
                f"the {name}'s weight files in the bundle hash to {recomputed[:12]}… but the report measured "
                f"weights {recorded[:12]}…: a weight file was swapped or edited"
            )
    models = report["models"]
    if models["analog"]["id"] != bundle["models"]["analog"]["id"]:
        return "its report names another analog than its file record does (models.analog.id differs)"
    fraction = parameter_fraction(models)
    if not math.isclose(models["parameter_fraction"], fraction, rel_tol=1e-9):
        return f"parameter_fraction {models['parameter_fraction']:.6g} is not the analog's / teacher's parameters ({fraction:.6g})"
    try:
        gates = bundle_gates(report["config"], report["criteria"])
    except AnalogError as exc:
        return f"its {exc} (a bundle's config must be one this version of pytest-analog reads)"
    for row in report["criteria"]:
        reason = _criterion_problem(row, gates)
        if reason:
            return f"criterion {row['id']}: {reason}"
    return _summary_problem(report)


def _criterion_problem(row: dict, gates: Gates) -> str | None:
    """Why a criterion row does not follow from its measurement and the bundle's gates, or None.

    An installed suite's criteria are gated as `gates.Gates.gate` gates them, the gate the suites record;
    every verdict, and every figure that follows from another, is recomputed (`criterion.judge`).
    """
    try:
        criterion = Criterion.from_dict(row)
    except (KeyError, TypeError, ValueError) as exc:
        return f"it is not a criterion row ({exc})"
    measured, gate = criterion.measured, criterion.gate
    if row["gated"] != gate.gated:
        return "'gated' does not follow from its threshold and direction"
    corrected = row.get("corrected")
    if corrected is not None and (measured.corrected is None or not math.isclose(corrected, measured.corrected, rel_tol=1e-9, abs_tol=1e-12)):
        return "its corrected score does not follow from its value and chance level"
    if criterion.suite in _known():
        if criterion.metric not in registry.metrics(registry.installed()):
            return f"{criterion.metric} is not a metric of the installed suites"
        try:
            expected = gates.gate(criterion.metric, measured.value, **criterion.details)
        except KeyError as exc:
            return f"it lacks the detail {exc} that selects its configured gate"
        problem = _gate_difference(criterion.metric, gate, expected)
        if problem:
            return problem
    if row["passed"] is not criterion.passed:
        interval = criterion.judged_interval
        by = f" with interval [{interval[0]:g}, {interval[1]:g}] under rule lower_bound" if gate.rule == "lower_bound" and interval else ""
        judged = "meets" if criterion.passed else "fails"
        return f"value {criterion.judged}{by} {judged} {gate.sign(ascii_only=True)} {gate.threshold:g} but 'passed' is {row['passed']}"
    return None


def _gate_difference(metric: str, gate: Gate, expected: Gate) -> str | None:
    """How a recorded gate differs from the configured one, in one line; None when they are the same."""
    if gate == expected:
        return None
    if (gate.direction, gate.threshold) != (expected.direction, expected.threshold):
        def bound(g: Gate) -> str:
            """A gate's direction and threshold, or "no threshold"."""
            return "no threshold" if not g.gated else f"{g.direction} {g.threshold:g}"

        return f"threshold {bound(gate)} is not the configured {bound(expected)} of {metric}"
    if gate.score != expected.score:
        return f"it is judged on the {gate.score} score, but the config says {expected.score}"
    return f"it is judged by rule {gate.rule}, but the config says {expected.rule}"


def _summary_problem(report: dict) -> str | None:
    """Why a report's counts or verdict are not those of its criteria (`criterion.summary`, `criterion.verdict`), or None."""
    criteria = [Criterion.from_dict(row) for row in report["criteria"]]
    counts = {k: v for k, v in summary(criteria).items() if k != "not_measured"}
    if {k: report["summary"][k] for k in counts} != counts:
        return f"its summary counts {report['summary']} are not those of its criteria {counts}"
    expected = verdict(criteria, report.get("error"), report.get("partial"))
    if report["verdict"] != expected:
        return f"its verdict '{report['verdict']}' is not the verdict of its criteria ('{expected}')"
    return None


def entry(bundle: dict, name: str, gates: Gates) -> dict[str, Any]:
    """The board's row for an accepted bundle: its installed suites' criteria judged under the board's ``gates``."""
    report = bundle["report"]
    models = report["models"]
    criteria = judged(report["criteria"], gates)
    counts = summary(criteria)
    return {
        "file": name,
        "reference": reference_id(report),
        "teacher": models["teacher"]["id"],
        "analog": models["analog"]["id"],
        "teacher_sha256": models["teacher"]["sha256"],
        "analog_sha256": models["analog"]["sha256"],
        "parameter_fraction": models["parameter_fraction"],
        "scores": headline_scores(criteria),
        "verdict": verdict(criteria, report.get("error")),
        "passed": f"{counts['passed']}/{counts['gated']}",
        "passed_fraction": counts["passed"] / counts["gated"] if counts["gated"] else 0.0,
        "thresholds": list(dict.fromkeys(threshold_text(c) for c in criteria if c.gate.gated)),
        "own_gates": gate_differences(bundle_gates(report["config"], report["criteria"]), gates),
        "date": report["created"][:10],
        "tool_version": report["tool"]["version"],
    }


def judged(rows: list[dict], gates: Gates) -> list[Criterion]:
    """The criteria of the installed suites among a report's ``rows``, each under its gate in ``gates`` (`gates.Gates.gate`).

    Criteria of other suites (a conftest's, a test's own) have no published gate, so the board neither judges nor scores them.
    """
    known = _known()
    criteria = [Criterion.from_dict(row) for row in rows if row["suite"] in known]
    return [replace(c, gate=gates.gate(c.metric, c.measured.value, **c.details)) for c in criteria]


def threshold_text(criterion: Criterion) -> str:
    """A gated criterion's gate in a few words: ``cka ≥ 0.5 corrected``, ``benchmark_retained[task] ≥ 0.5``."""
    gate = criterion.gate
    task = criterion.details.get("task")
    text = f"{criterion.metric}{f'[{task}]' if task else ''} {gate.sign()} {gate.threshold:g}"
    return text + (" corrected" if gate.score == "corrected" else "") + (" lower bound" if gate.rule == "lower_bound" else "")


def gate_differences(own: Gates, board: Gates) -> list[str]:
    """Every setting of ``own`` that is not the board's, as ``key own vs board`` (``cka.min -100 vs 0.5``)."""
    mine, theirs = _flat(dataclasses.asdict(own)), _flat(dataclasses.asdict(board))
    keys = dict.fromkeys([*theirs, *mine])
    return [f"{key} {_show(mine.get(key))} vs {_show(theirs.get(key))}" for key in keys if mine.get(key) != theirs.get(key)]


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping's leaves by dotted key (an empty mapping is a leaf)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(value: Any) -> str:
    """A setting as the page shows it: JSON for booleans and null, ``:g`` for numbers."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def reference_id(report: dict) -> str | None:
    """The id of the teacher reference a report was scored against; None when no run read the teacher's part."""
    return report["reference"]["id"] if "reference" in report else None


def headline_scores(criteria: list[Criterion]) -> dict[str, float | None]:
    """Each suite's headline score (`_headlines`); None when it has no value."""
    scores = {}
    for suite in dict.fromkeys(c.suite for c in criteria):
        rows = [c for c in criteria if c.suite == suite]
        if suite in _headlines():
            values = [c.measured.value for c in rows if c.metric == _headlines()[suite] and c.measured.value is not None]
            scores[suite] = sum(values) / len(values) if values else None
        else:
            counts = summary(rows)
            scores[suite] = counts["passed"] / counts["gated"] if counts["gated"] else None
    return scores
