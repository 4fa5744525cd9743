"""Steering suite: does a steering vector found on the analog move the teacher as the teacher's own does?

For each behaviour set and steered teacher layer (``steering`` in the config):
the analog's mean-difference vector, carried to the teacher through a map fitted
on paired activations, against the teacher's native vector and an equal-norm
random vector, over norm-relative doses, and its direction against the native
one. Everything is measured once per session (the steering run) and reported
under ``steering`` in fidelity.json. Against a teacher reference the teacher
cannot run the transferred vector: the criteria that need it are recorded with
no value and the reason, neither passed nor failed.
"""

import pytest

from pytest_analog.criterion import Measured
from pytest_analog.plugin import session_key
from pytest_analog.suites.steering.fixtures import steering_cases


def pytest_generate_tests(metafunc):
    session = metafunc.config.stash[session_key]
    if "steering_case" in metafunc.fixturenames:
        cases = steering_cases(session)
        metafunc.parametrize("steering_case", cases, ids=[f"{b}-layer{i}" for b, i in cases])
    if "steering_layer" in metafunc.fixturenames:
        layers = sorted({i for _, i in steering_cases(session)})
        metafunc.parametrize("steering_layer", layers, ids=[f"teacher_layer={i}" for i in layers])


@pytest.fixture(scope="module")
def steering(analog_session):
    return analog_session.run("steering")


def _case_criterion(metric, value, steering_case, steering, fidelity_record, against_chance=False):
    behaviour, layer = steering_case
    result = steering["behaviours"][behaviour][layer]
    details = {
        "behaviour": behaviour,
        "steering_layer": layer,  # not teacher_layer: five behaviours per layer are not a per-layer curve
        "analog_layer": result["analog_layer"],
        "half_max_alpha": result["half_max_alpha"],
    }
    unmeasured = result.get("unmeasured", {})
    if metric in unmeasured:  # needs the teacher (reference mode): no value, so not gated (`config.Gates.gate`)
        fidelity_record.configured(metric, Measured(None, reason=unmeasured[metric]), needs_teacher=True, **details)
        return
    chance = (result.get("transfer_ratio_chance") or {}) if against_chance else {}
    fidelity_record.configured(metric, Measured(value(result), **chance, reason=result["notes"].get(metric)), **details)


def test_transfer_ratio(steering_case, steering, fidelity_record):
    # beside its chance level: the equal-norm random vector's ratio at the same dose
    _case_criterion("transfer_ratio", lambda r: r["transfer_ratio"], steering_case, steering, fidelity_record, against_chance=True)


def test_transfer_gap(steering_case, steering, fidelity_record):
    _case_criterion("transfer_gap", lambda r: r["transfer_gap"], steering_case, steering, fidelity_record)


def test_dose_response(steering_case, steering, fidelity_record):
    _case_criterion("spearman", lambda r: r["spearman"]["transferred"], steering_case, steering, fidelity_record)


def test_random_control(steering_case, steering, fidelity_record):
    _case_criterion("random_control", lambda r: r["random_control"], steering_case, steering, fidelity_record)


def test_direction_fidelity(steering_case, steering, fidelity_record):
    behaviour, layer = steering_case
    result = steering["behaviours"][behaviour][layer]
    fidelity_record.configured(
        "direction_fidelity",
        Measured(**result["direction_fidelity"]),
        behaviour=behaviour,
        steering_layer=layer,
        analog_layer=result["analog_layer"],
    )


@pytest.mark.parametrize("metric", ["map_fvu", "map_cosine"])
def test_map(metric, steering_layer, steering, fidelity_record):
    heldout = steering["maps"][steering_layer]
    fidelity_record.configured(
        metric,
        heldout[steering["map"]][metric.removeprefix("map_")],
        teacher_layer=steering_layer,
        analog_layer=heldout["analog_layer"],
        map=steering["map"],
    )
