"""Compliance suite: does the analog's release contain what the release policy asks for?

One criterion per check of `checks` (arXiv 2510.14053): size
0.5-5 % of the teacher, same architecture family, safetensors weights, a model
card, a permissive licence, the training code, and the release lag when both
release dates are in the config (``compliance.release_dates``); the bounds and
which checks are required are under ``gates``. Yes/no checks score 1 or 0;
a failure says what is missing and where it was looked for.
"""

import pytest

from pytest_analog.suites.compliance import checks


@pytest.fixture(scope="module")
def release(analog_session):
    return checks.release_of(analog_session.sources()[1])


@pytest.fixture(scope="module")
def model_records(analog_session):
    """Both models' records: the teacher's from its reference (or the loaded teacher), the analog's once loaded."""
    return analog_session.model_records()


@pytest.mark.parametrize("bound", ["min", "max"])
def test_parameter_fraction(bound, model_records, fidelity_record):
    fidelity_record.configured("parameter_fraction", checks.parameter_fraction(model_records).measured, bound=bound)


def test_same_family(model_records, fidelity_record):
    teacher, analog = (model_records[role]["model_type"] for role in ("teacher", "analog"))
    fidelity_record.configured("same_family", checks.same_family(teacher, analog).measured)


def test_safetensors(analog_session, fidelity_record):
    fidelity_record.configured("safetensors", checks.safetensors_weights(analog_session.sources()[1]).measured)


def test_model_card(release, analog_config, fidelity_record):
    check = checks.model_card(release, analog_config.compliance.model_card.sections)
    fidelity_record.configured("model_card", check.measured)


def test_license(release, analog_config, fidelity_record):
    fidelity_record.configured("license", checks.license_check(release, analog_config.compliance.license.allowed).measured)


def test_training_code(release, analog_config, fidelity_record):
    rule = analog_config.compliance.training_code
    fidelity_record.configured("training_code", checks.training_code(release, rule.files, rule.sections).measured)


@pytest.mark.parametrize("bound", ["min", "max"])
def test_release_lag(bound, analog_config, fidelity_record):
    dates = analog_config.compliance.release_dates
    if not (dates.teacher and dates.analog):
        pytest.skip("no release dates: set compliance.release_dates.teacher and .analog (YYYY-MM-DD) in the config")
    fidelity_record.configured("release_lag", checks.release_lag(dates.teacher, dates.analog).measured, bound=bound)
