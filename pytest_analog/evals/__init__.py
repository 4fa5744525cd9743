"""Benchmark deltas on lm-evaluation-harness: which capabilities does the analog keep?

`resolve_tasks` finds the tasks, `evaluate` runs lm-eval on one loaded model,
`compare` turns both models' per-sample results into paired deltas.
"""

from __future__ import annotations

from typing import Any

from pytest_analog.criterion import Measured
from pytest_analog.evals.deltas import compare, paired_delta, retained_fraction
from pytest_analog.evals.runner import evaluate
from pytest_analog.evals.tasks import TaskSet, resolve_tasks, shipped_task_names


def run_pair(pair, tasks: TaskSet, settings, *, seed: int, verbose: bool = False) -> dict[str, Any]:
    """lm-eval results of the teacher and the analog (`ModelPair`) on ``tasks`` (`config.Benchmarks`);
    ``verbose`` shows lm-eval's warnings and progress bars."""
    return {
        role: evaluate(
            loaded.model,
            loaded.tokenizer,
            tasks,
            name=loaded.info["id"],
            batch_size=settings.batch_size,
            num_fewshot=settings.num_fewshot,
            limit=settings.limit,
            fewshot_seed=seed,
            verbose=verbose,
        )
        for role, loaded in (("teacher", pair.teacher), ("analog", pair.analog))
    }


__all__ = ["TaskSet", "compare", "criterion", "evaluate", "paired_delta", "resolve_tasks", "retained_fraction", "run_pair", "shipped_task_names"]


def criterion(row: dict[str, Any], by_delta: bool) -> tuple[str, Measured, dict[str, Any]]:
    """(metric, measurement, details) of one task's row of `compare`.

    ``by_delta`` (the task is gated by ``max_drop``): the paired delta and its interval.
    Otherwise the retained fraction against its chance level; a task with no retained
    fraction has no value and is reported, not gated (`config.Gates.gate`).
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
