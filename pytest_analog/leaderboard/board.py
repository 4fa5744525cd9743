"""Which submissions go on the board, and the row each one gets.

A submission is rejected, with one line saying why, when it breaks the schema,
when it was edited after it was written (its own ``sha256``), when its report
disagrees with its own file hashes (the weight hashes recomputed from the
bundle's file digests must be the report's), with its own thresholds (each
verdict recomputed from value and threshold; built-in criteria use the
configured threshold; counts and overall verdict recomputed), or when it
repeats a teacher/analog pair already on the board (the earliest stays).

These checks make a bundle internally consistent; they cannot prove the
numbers were measured. `verify` ties a bundle to model files anyone can hash,
and rerunning ``pytest`` on those files reproduces the numbers.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pytest_analog.config import Compliance, Criteria, SteeringCriteria
from pytest_analog.errors import AnalogError
from pytest_analog.models import parameter_fraction
from pytest_analog.options import SUITES
from pytest_analog.record import chance_corrected, judge
from pytest_analog.submission import content_sha256, load_submission, schema_errors, weights_sha256

# Where the config holds each built-in metric's threshold (benchmark tasks have their own gate).
CONFIGURED = {
    **{f.name: ("criteria", f.name) for f in fields(Criteria)},
    **{f.name: ("steering", "criteria", f.name) for f in fields(SteeringCriteria)},
    **{f.name: ("compliance", f.name) for f in fields(Compliance)},
}

# The headline score of a built-in suite: the mean of this metric's values over the suite's criteria.
# Any other suite's headline is the fraction of its gated criteria that pass.
HEADLINES = {"representation": "cka", "embeddings": "embedding_geometry", "logits": "top1_agreement"}


@dataclass
class Board:
    """The accepted rows, best first, and the rejected files with their reasons."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)

    @property
    def suites(self) -> list[str]:
        """Suites with a headline in any entry: built-in ones in their order, then others by name."""
        seen = {s for e in self.entries for s in e["scores"]}
        return [s for s in SUITES if s in seen] + sorted(seen - set(SUITES))

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "suites": self.suites,
            "headlines": {s: f"mean {HEADLINES[s]}" if s in HEADLINES else "fraction of gated criteria passed" for s in self.suites},
            "entries": self.entries,
            "rejected": self.rejected,
        }


def build_board(directory: Path) -> Board:
    """Check every ``*.json`` bundle in ``directory`` and return the board.

    Raises:
        AnalogError: ``directory`` is not a folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise AnalogError(f"submissions folder {directory} does not exist or is not a folder")
    board, accepted = Board(), []
    for path in sorted(directory.glob("*.json")):
        try:
            bundle = load_submission(path)
            reason = check_submission(bundle)
        except AnalogError as exc:
            reason = str(exc).removeprefix(f"submission {path} ")
        if reason:
            board.rejected.append({"file": path.name, "reason": reason})
        else:
            accepted.append((bundle["report"]["created"], path.name, bundle))
    pairs: dict[tuple[str, str], str] = {}
    for _, name, bundle in sorted(accepted, key=lambda a: (a[0], a[1])):
        models = bundle["report"]["models"]
        pair = (models["teacher"]["sha256"], models["student"]["sha256"])
        if pair in pairs:
            board.rejected.append({"file": name, "reason": f"duplicate of {pairs[pair]}: the same teacher and analog weights"})
            continue
        pairs[pair] = name
        board.entries.append(entry(bundle, name))
    board.entries.sort(key=lambda e: (e["verdict"] != "pass", -e["passed_fraction"], e["analog"]))
    board.rejected.sort(key=lambda r: r["file"])
    return board


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
    for role, name in (("teacher", "teacher"), ("student", "analog")):
        recorded, recomputed = report["models"][role]["sha256"], weights_sha256(bundle["models"][role])
        if recorded != recomputed:
            return (
                f"the {name}'s weight files in the bundle hash to {recomputed[:12]}… but the report measured "
                f"weights {recorded[:12]}…: a weight file was swapped or edited"
            )
    models = report["models"]
    fraction = parameter_fraction(models)
    if not math.isclose(models["parameter_fraction"], fraction, rel_tol=1e-9):
        return f"parameter_fraction {models['parameter_fraction']:.6g} is not the analog's / teacher's parameters ({fraction:.6g})"
    for criterion in report["criteria"]:
        reason = _criterion_problem(criterion, report["config"])
        if reason:
            return f"criterion {criterion['id']}: {reason}"
    return _summary_problem(report)


def _criterion_problem(c: dict, config: dict) -> str | None:
    value, threshold, direction = c["value"], c["threshold"], c["direction"]
    if c["gated"] != (threshold is not None and direction is not None):
        return "'gated' does not follow from its threshold and direction"
    if c["suite"] in SUITES and c["gated"]:
        rule = _configured_rule(config, c["metric"])
        if rule is None:
            return f"its config has no entry for {c['metric']} to check its threshold against"
        configured = rule.get(direction, 1.0 if rule.get("required") else None)
        if configured is not None and (isinstance(configured, bool) or not isinstance(configured, (int, float))):
            return f"its config gives {c['metric']} a {direction} of {configured!r}, not a number"
        if configured is not None and configured != threshold:
            return f"threshold {threshold:g} is not the configured {direction} {configured:g} of {c['metric']}"
        score = rule.get("score", "raw")
        if c.get("score", "raw") != score:
            return f"it is judged on the {c.get('score', 'raw')} score, but the config says {score}"
        gate = _configured_gate(config, c["metric"], rule)
        if c.get("gate", "point") != gate:
            return f"it is judged by gate {c.get('gate', 'point')}, but the config says {gate}"
    judged, interval = value, c.get("interval")
    if c.get("score") == "corrected":  # the threshold applies to (value - chance) / (1 - chance)
        chance, judged, interval = c.get("chance"), c.get("corrected"), c.get("corrected_interval")
        expected = None if value is None or chance is None else chance_corrected(value, chance)
        if judged is not None and (expected is None or not math.isclose(judged, expected, rel_tol=1e-9, abs_tol=1e-12)):
            return "its corrected score does not follow from its value and chance level"
    if not c["gated"]:
        return None if c["passed"] is None else "an ungated criterion has a verdict"
    if interval is not None and None in interval:  # a non-finite end is written as null
        interval = None
    gate = c.get("gate", "point")
    ok = judge(judged, threshold, direction, interval, gate)
    if c["passed"] is not ok:
        op = ">=" if direction == "min" else "<="
        by = f" with interval {interval} under gate lower_bound" if gate == "lower_bound" and interval else ""
        return f"value {judged}{by} {'meets' if ok else 'fails'} {op} {threshold:g} but 'passed' is {c['passed']}"
    return None


def _configured_rule(config: dict, metric: str) -> dict | None:
    """The config's entry for a built-in metric with a threshold in the config; {} for other metrics
    (benchmarks), None when the bundle's config lacks it or it is not a mapping."""
    path = CONFIGURED.get(metric)
    node = config
    for key in path or ():
        node = node.get(key) if isinstance(node, dict) else None
    return {} if path is None else node if isinstance(node, dict) else None


def _configured_gate(config: dict, metric: str, rule: dict) -> str:
    """The decision rule the config sets for a built-in metric: its own ``gate``, else the global one."""
    own = rule.get("gate")
    if metric.startswith("benchmark_") and isinstance(config.get("benchmarks"), dict):
        own = config["benchmarks"].get("gate")
    return own or config.get("gate") or "point"


def _summary_problem(report: dict) -> str | None:
    gated = [c for c in report["criteria"] if c["gated"]]
    failed = sum(not c["passed"] for c in gated)
    counts = {"gated": len(gated), "passed": len(gated) - failed, "failed": failed, "informational": len(report["criteria"]) - len(gated)}
    if {k: report["summary"][k] for k in counts} != counts:
        return f"its summary counts {report['summary']} are not those of its criteria {counts}"
    verdict = "fail" if failed or report.get("error") else "pass" if gated else "no gated criteria"
    if report["verdict"] != verdict:
        return f"its verdict '{report['verdict']}' is not the verdict of its criteria ('{verdict}')"
    return None


def entry(bundle: dict, name: str) -> dict[str, Any]:
    """The board's row for an accepted bundle."""
    report = bundle["report"]
    models, summary = report["models"], report["summary"]
    return {
        "file": name,
        "teacher": models["teacher"]["id"],
        "analog": models["student"]["id"],
        "teacher_sha256": models["teacher"]["sha256"],
        "analog_sha256": models["student"]["sha256"],
        "parameter_fraction": models["parameter_fraction"],
        "scores": headline_scores(report["criteria"]),
        "verdict": report["verdict"],
        "passed": f"{summary['passed']}/{summary['gated']}",
        "passed_fraction": summary["passed"] / summary["gated"] if summary["gated"] else 0.0,
        "date": report["created"][:10],
        "tool_version": report["tool"]["version"],
    }


def headline_scores(criteria: list[dict]) -> dict[str, float | None]:
    """Each suite's headline score (see `HEADLINES`); None when it has no value."""
    scores = {}
    for suite in dict.fromkeys(c["suite"] for c in criteria):
        rows = [c for c in criteria if c["suite"] == suite]
        if suite in HEADLINES:
            values = [c["value"] for c in rows if c["metric"] == HEADLINES[suite] and c["value"] is not None]
            scores[suite] = sum(values) / len(values) if values else None
        else:
            gated = [c for c in rows if c["gated"]]
            scores[suite] = sum(bool(c["passed"]) for c in gated) / len(gated) if gated else None
    return scores
