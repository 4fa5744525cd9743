"""The benchmarks suite: does the analog keep the teacher's capabilities on lm-eval tasks?

Its run's teacher half (`teacher.teacher_part`) keeps lm-eval's per-item results
of the teacher; the analog half (`analog.analog_results`) runs the analog alone
beside them, and `evals.compare` pairs both per item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_analog.evals import compare, resolve_tasks
from pytest_analog.runs import Inputs, Outcome, Run
from pytest_analog.suite import Suite
from pytest_analog.suites.benchmarks import report
from pytest_analog.suites.benchmarks.analog import analog_results
from pytest_analog.suites.benchmarks.facts import METRICS
from pytest_analog.suites.benchmarks.settings import CHECKS, BenchmarkGates, Benchmarks
from pytest_analog.suites.benchmarks.teacher import part_problem, teacher_part
from pytest_analog.versions import package_version


def tasks(session):
    """The resolved `evals.TaskSet` of ``benchmarks.tasks``, once per session."""
    return session.once("benchmarks.tasks", lambda: resolve_tasks(session.analog_config.benchmarks.tasks))


def _inputs(session) -> Inputs:
    resolved = tasks(session)
    return Inputs(args={"tasks": resolved, "verbose": session.verbose}, key={"tasks": resolved.sha256})


def _teacher_inputs(session) -> Inputs:
    inputs = _inputs(session)  # a reference built on other tasks or another lm-eval is refused
    return Inputs(inputs.args, {**inputs.key, "lm_eval": package_version("lm_eval")})


def _teacher(teacher, config, *, tasks, verbose):
    return teacher_part(teacher, config, tasks=tasks, verbose=verbose)


def _evaluate(pair, part, config, *, tasks, verbose):
    return analog_results(pair, part, config, tasks=tasks, verbose=verbose)


def _compared(payload):
    return compare(payload["teacher"], payload["analog"])


def _section(done: Outcome, config) -> dict[str, Any]:
    return {"benchmarks": {
        "lm_eval_version": done.payload["teacher"].get("lm_eval_version"),  # the version that ran (in the key)
        "cached": done.cached,
        "tasks": done.result,
        "results": {role: {k: v for k, v in r.items() if k != "samples"} for role, r in done.payload.items()},
    }}


RUN = Run(
    name="benchmarks",
    reads=("benchmarks.num_fewshot", "benchmarks.limit", "benchmarks.batch_size", "seed"),
    inputs=_inputs,
    compute=_evaluate,
    result=_compared,
    section=_section,
    packages=("lm_eval", "torch", "transformers"),
    teacher_reads=("benchmarks.num_fewshot", "benchmarks.limit", "benchmarks.batch_size", "benchmarks.backend", "seed"),
    teacher_inputs=_teacher_inputs,
    teacher=_teacher,
    part_problem=part_problem,
)

SUITE = Suite(
    name="benchmarks",
    tests="pytest_analog.suites.benchmarks.test_benchmarks",
    run=RUN,
    settings=Benchmarks,
    gates={"benchmarks": BenchmarkGates},
    defaults=Path(__file__).with_name("defaults.yaml"),
    checks=CHECKS,
    metrics=METRICS,
    sections=report.SECTIONS,
    plugin="pytest_analog.suites.benchmarks.fixtures",
    check=tasks,  # an unknown task is a usage error before any model loads
)
