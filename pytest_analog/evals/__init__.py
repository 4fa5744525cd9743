"""Benchmark deltas on lm-evaluation-harness: which capabilities does the analog keep?

`resolve_tasks` finds the tasks, `evaluate` runs lm-eval on one loaded model
(`evaluate_vllm` on vLLM), and `compare` turns both models' per-sample results
into paired deltas. The benchmarks suite runs them on the teacher and the analog.
"""

from __future__ import annotations

from pytest_analog.evals.deltas import compare, paired_delta, retained_fraction
from pytest_analog.evals.runner import evaluate, evaluate_vllm
from pytest_analog.evals.tasks import TaskSet, resolve_tasks, shipped_task_names


__all__ = [
    "TaskSet", "compare", "evaluate", "evaluate_vllm", "paired_delta", "resolve_tasks", "retained_fraction", "shipped_task_names",
]
