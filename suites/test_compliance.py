"""Compliance suite: does the analog's release contain what the release policy asks for?

One criterion per check of `pytest_analog.compliance` (arXiv 2510.14053): size
0.5-5 % of the teacher, same architecture family, safetensors weights, a model
card, a permissive licence, the training code, and the release lag when both
release dates are in the config (``compliance:``). Yes/no checks score 1 or 0;
a failure says what is missing and where it was looked for.
"""

import pytest

from pytest_analog import compliance


@pytest.fixture(scope="module")
def release(analog_session):
    return compliance.release_of(analog_session.sources()[1])


def _record(fidelity_record, metric, check, required):
    fidelity_record(metric, check.score, min=1.0 if required else None, reason=check.message)


@pytest.fixture(scope="module")
def parameters(analog_session):
    """(teacher, analog) parameter counts: from the measurements when a fidelity suite runs (cached), else the pair."""
    if set(analog_session.settings.suites) - {"compliance"}:
        models = analog_session.run("representation").models
        return models["teacher"]["parameters"], models["student"]["parameters"]
    pair = analog_session.pair()
    return pair.teacher.info["parameters"], pair.student.info["parameters"]


@pytest.mark.parametrize("bound", ["min", "max"])
def test_parameter_fraction(bound, parameters, analog_config, fidelity_record):
    check = compliance.parameter_fraction(*parameters)
    limit = getattr(analog_config.compliance.parameter_fraction, bound)
    fidelity_record("parameter_fraction", check.value, **{bound: limit}, reason=check.message)


def test_same_family(analog_session, analog_config, fidelity_record):
    from pytest_analog.models import read_config

    trust = analog_session.settings.trust_remote_code
    teacher, student = (read_config(s, trust_remote_code=trust) for s in analog_session.sources())
    _record(fidelity_record, "same_family", compliance.same_family(teacher, student), analog_config.compliance.same_family.required)


def test_safetensors(analog_session, analog_config, fidelity_record):
    check = compliance.safetensors_weights(analog_session.sources()[1])
    _record(fidelity_record, "safetensors", check, analog_config.compliance.safetensors.required)


def test_model_card(release, analog_config, fidelity_record):
    rule = analog_config.compliance.model_card
    _record(fidelity_record, "model_card", compliance.model_card(release, rule.sections), rule.required)


def test_license(release, analog_config, fidelity_record):
    rule = analog_config.compliance.license
    _record(fidelity_record, "license", compliance.license_check(release, rule.allowed), rule.required)


def test_training_code(release, analog_config, fidelity_record):
    rule = analog_config.compliance.training_code
    _record(fidelity_record, "training_code", compliance.training_code(release, rule.files, rule.sections), rule.required)


@pytest.mark.parametrize("bound", ["min", "max"])
def test_release_lag(bound, analog_config, fidelity_record):
    rule = analog_config.compliance.release_lag
    if not (rule.teacher and rule.analog):
        pytest.skip("no release dates: set compliance.release_lag.teacher and .analog (YYYY-MM-DD) in the config")
    check = compliance.release_lag(rule.teacher, rule.analog)
    fidelity_record("release_lag", check.value, **{bound: getattr(rule, bound)}, reason=check.message)
