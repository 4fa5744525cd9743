"""The compliance suite: does the analog's release hold what the release policy asks for (arXiv 2510.14053)?

It reads the release files and both models' records only (`checks`), no run.
"""

from pathlib import Path

from pytest_analog.gates import Range, Required
from pytest_analog.suite import Suite
from pytest_analog.suites.compliance import report
from pytest_analog.suites.compliance.facts import METRICS
from pytest_analog.suites.compliance.settings import CHECKS, Compliance

SUITE = Suite(
    name="compliance",
    tests="pytest_analog.suites.compliance.test_compliance",
    settings=Compliance,
    gates={"parameter_fraction": Range, "same_family": Required, "safetensors": Required, "model_card": Required,
           "license": Required, "training_code": Required, "release_lag": Range},
    defaults=Path(__file__).with_name("defaults.yaml"),
    checks=CHECKS,
    metrics=METRICS,
    sections=report.SECTIONS,
)
