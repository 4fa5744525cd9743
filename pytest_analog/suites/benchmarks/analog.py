"""The analog half of the benchmarks run, and each task's criterion from the compared results."""

from __future__ import annotations

from typing import Any

from pytest_analog.criterion import Measured
from pytest_analog.evals import TaskSet, evaluate


def analog_results(pair, part, config, *, tasks: TaskSet, verbose: bool = False) -> dict[str, Any]:
    """The analog half: lm-eval's results of the analog alone beside the teacher's from ``part``
    (``{"teacher": stored, "analog": fresh}``, what `compare` reads); the teacher does not run."""
    settings = config.benchmarks
    analog = evaluate(
        pair.analog.model, pair.analog.tokenizer, tasks, name=pair.analog.info["id"], batch_size=settings.batch_size,
        num_fewshot=settings.num_fewshot, limit=settings.limit, fewshot_seed=config.seed, verbose=verbose,
    )
    return {"teacher": part.meta, "analog": analog}


def criterion(row: dict[str, Any], by_delta: bool) -> tuple[str, Measured, dict[str, Any]]:
    """(metric, measurement, details) of one task's row of `compare`.

    ``by_delta`` (the task is gated by ``max_drop``): the paired delta and its interval.
    Otherwise the retained fraction against its chance level; a task with no retained
    fraction has no value and is reported, not gated (`settings.BenchmarkGates.gate`).
    """
    details = {
        "task_metric": row["metric"],
        "higher_is_better": row["higher_is_better"],
        "teacher_score": row["teacher"],
        "analog_score": row["analog"],
        "delta": row["delta"],
        "delta_ci95": row["delta_ci95"],
        "chance_accuracy": row["chance"],
    }
    if by_delta:
        return "benchmark_delta", Measured(row["delta"], row["delta_ci95"], reason=row["note"]), details
    return "benchmark_retained", Measured(row["retained"], reason=row["note"], **retained_against_chance(row)), details


def retained_against_chance(row: dict[str, Any]) -> dict[str, Any]:
    """The retained fraction's chance level and interval (multiple choice), as `Measured` fields.

    An analog answering at chance accuracy retains 0, so the chance level is 0
    and the corrected score equals the retained fraction. Its interval is the
    delta-method one of the ratio (`deltas.retained_se`): both the analog's and
    the teacher's scores vary over the items.
    """
    if row["chance"] is None or row["retained"] is None or not row["teacher"] > row["chance"]:
        return {}
    interval = row.get("retained_ci95")
    return {"chance": 0.0, "interval": interval, "chance_interval": None, "corrected_interval": interval}
