"""Benchmarks suite: does the analog keep the teacher's capabilities on lm-eval tasks?

One criterion per task (``benchmarks.tasks`` or --analog-tasks): the retained
fraction of the teacher's score, chance-corrected for multiple choice, or the
paired analog - teacher delta (``gates.benchmarks.max_drop``).
"""

import pytest

from pytest_analog.suites.benchmarks.analog import criterion


def test_benchmark(benchmark_task, analog_benchmarks, analog_config, fidelity_record):
    if benchmark_task not in analog_benchmarks:
        pytest.fail(f"lm-eval gave no per-item results for '{benchmark_task}' (a group? list its tasks instead)", pytrace=False)
    _, max_drop = analog_config.gates.benchmarks.thresholds(benchmark_task)
    metric, measured, details = criterion(analog_benchmarks[benchmark_task], by_delta=max_drop is not None)
    fidelity_record.configured(metric, measured, task=benchmark_task, **details)
