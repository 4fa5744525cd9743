"""Benchmarks suite: does the analog keep the teacher's capabilities on lm-eval tasks?

One criterion per task (``benchmarks.tasks`` or --analog-tasks): the retained
fraction of the teacher's score, chance-corrected for multiple choice, or the
paired analog - teacher delta (``benchmarks.max_drop``).
"""

import pytest

from pytest_analog.evals import criterion


def test_benchmark(benchmark_task, analog_benchmarks, analog_config, fidelity_record):
    if benchmark_task not in analog_benchmarks:
        pytest.fail(f"lm-eval gave no per-item results for '{benchmark_task}' (a group? list its tasks instead)", pytrace=False)
    args = criterion(analog_benchmarks[benchmark_task], *analog_config.benchmarks.thresholds(benchmark_task))
    fidelity_record(args.pop("metric"), args.pop("value"), task=benchmark_task, gate=analog_config.benchmarks.gate, **args)
