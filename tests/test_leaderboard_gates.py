"""The leaderboard checks every built-in criterion's gate against the bundle's own config: steering and
benchmark thresholds too, not only the representation and compliance ones."""

from __future__ import annotations

import copy

import pytest

from pytest_analog.config import config_from_dict
from pytest_analog.criterion import Criterion, Gate, Measured
from pytest_analog.leaderboard import check_submission
from tests.test_leaderboard import bundles, resummed, sealed  # noqa: F401  (a fixture, and the forger's reseal)


def with_row(bundle: dict, criterion: Criterion) -> dict:
    """``bundle`` with one more criterion row and the summary and verdict that follow, resealed."""
    bundle = copy.deepcopy(bundle)
    bundle["report"]["criteria"].append(criterion.to_dict())
    return resummed(bundle)


STEERING = {"behaviour": "sentiment", "steering_layer": 10, "analog_layer": 3, "half_max_alpha": 0.1}
BENCHMARK = {"task": "analog_capitals", "higher_is_better": True, "task_metric": "acc"}


@pytest.mark.parametrize(
    ("suite", "metric", "details", "value", "lowered"),
    [
        ("steering", "transfer_ratio", STEERING, 0.7, Gate("min", 0.5)),
        ("steering", "random_control", STEERING, 0.4, Gate("max", 0.5)),
        ("benchmarks", "benchmark_retained", BENCHMARK, 0.4, Gate("min", 0.3)),
    ],
)
def test_a_resealed_bundle_with_a_threshold_other_than_its_config_is_rejected(bundles, suite, metric, details, value, lowered):
    bundle = bundles["same"]
    configured = config_from_dict(bundle["config"], "config").gates.gate(metric, value, **details)
    assert configured.gated and configured.threshold != lowered.threshold
    row_id = f"{suite}::test_{metric}[case]"
    honest = Criterion(row_id, suite, metric, Measured(value), configured, details)
    assert check_submission(with_row(bundle, honest)) is None  # the configured gate is accepted, fail or pass
    forged = Criterion(row_id, suite, metric, Measured(value), lowered, details)
    assert forged.passed and not honest.passed  # the lowered threshold turns a failure into a pass
    reason = check_submission(with_row(bundle, forged))
    assert reason == (
        f"criterion {row_id}: threshold {lowered.direction} {lowered.threshold:g} is not the configured "
        f"{configured.direction} {configured.threshold:g} of {metric}"
    )


def test_a_benchmark_judged_by_another_rule_or_metric_than_its_config_is_rejected(bundles):
    bundle = bundles["same"]
    gates = config_from_dict(bundle["config"], "config").gates
    row_id = "benchmarks::test_benchmark[analog_capitals]"
    other_rule = Gate("min", gates.benchmarks.min_retained, rule="lower_bound")
    forged = Criterion(row_id, "benchmarks", "benchmark_retained", Measured(0.6, (0.45, 0.7)), other_rule, BENCHMARK)
    assert check_submission(with_row(bundle, forged)) == (
        f"criterion {row_id}: it is judged by rule lower_bound, but the config says {gates.rule}"
    )
    # the config gates this task by its retained fraction: a delta criterion in its place has no configured threshold
    delta = Criterion(row_id, "benchmarks", "benchmark_delta", Measured(-0.02), Gate("min", -0.05), BENCHMARK)
    assert check_submission(with_row(bundle, delta)) == (
        f"criterion {row_id}: threshold min -0.05 is not the configured no threshold of benchmark_delta"
    )


def test_a_row_whose_verdict_does_not_follow_is_rejected(bundles):
    bundle = with_row(bundles["same"], Criterion("user::test_x", "user", "my_metric", Measured(0.2), Gate("min", 0.5)))
    bundle["report"]["criteria"][-1]["passed"] = True  # a forger flips the verdict and fixes the counts
    summary = bundle["report"]["summary"]
    summary.update(passed=summary["passed"] + 1, failed=summary["failed"] - 1)
    assert check_submission(sealed(bundle)) == "criterion user::test_x: value 0.2 fails >= 0.5 but 'passed' is True"
