"""Benchmark deltas on lm-evaluation-harness: which capabilities does the analog keep?

`resolve_tasks` finds the tasks, `evaluate` runs lm-eval on one loaded model,
`teacher_part` keeps the teacher's results (a teacher reference's part),
`analog_results` runs the analog beside them, and `compare` turns both
models' per-sample results into paired deltas.
"""

from __future__ import annotations

from typing import Any

from pytest_analog.criterion import Measured
from pytest_analog.evals.deltas import compare, paired_delta, retained_fraction
from pytest_analog.evals.runner import evaluate, evaluate_vllm
from pytest_analog.evals.tasks import TaskSet, resolve_tasks, shipped_task_names


def teacher_part(teacher, config, *, tasks: TaskSet, verbose: bool = False):
    """The teacher half of the benchmarks run: lm-eval's results of ``teacher`` (a `LoadedModel`) on
    ``tasks``, per-item samples included, as a `reference.store.Part` (all JSON, no tensors).

    ``benchmarks.backend: vllm`` runs the teacher on lm-eval's vLLM backend from its local files.
    """
    from pytest_analog.reference.store import Part

    settings = config.benchmarks
    common = dict(batch_size=settings.batch_size, num_fewshot=settings.num_fewshot, limit=settings.limit,
                  fewshot_seed=config.seed, verbose=verbose)
    if settings.backend == "vllm":
        results = evaluate_vllm(teacher.source, tasks, name=teacher.info["id"], dtype=teacher.info["dtype"], **common)
    else:
        results = evaluate(teacher.model, teacher.tokenizer, tasks, name=teacher.info["id"], **common)
    return Part({}, results)


def analog_results(pair, part, config, *, tasks: TaskSet, verbose: bool = False) -> dict[str, Any]:
    """The analog half: lm-eval's results of the analog alone beside the teacher's from ``part``
    (``{"teacher": stored, "analog": fresh}``, what `compare` reads); the teacher does not run."""
    settings = config.benchmarks
    analog = evaluate(
        pair.analog.model, pair.analog.tokenizer, tasks, name=pair.analog.info["id"], batch_size=settings.batch_size,
        num_fewshot=settings.num_fewshot, limit=settings.limit, fewshot_seed=config.seed, verbose=verbose,
    )
    return {"teacher": part.meta, "analog": analog}


__all__ = [
    "TaskSet", "analog_results", "compare", "criterion", "evaluate", "evaluate_vllm", "paired_delta", "resolve_tasks",
    "retained_fraction", "shipped_task_names", "teacher_part",
]


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
