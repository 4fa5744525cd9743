"""The criterion spine: a measurement, its gate, one judge, one report verdict; and the gate of each built-in
metric from the config."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math

import pytest

from pytest_analog import config as config_module
from pytest_analog.config import load_config
from pytest_analog.gates import AtLeast, AtMost, Range, Required
from pytest_analog.criterion import Criterion, Gate, Measured, judge, summary, verdict
from pytest_analog.registry import BUILT_IN as SUITES

# What each built-in metric is, merged over the built-in suites' facts.
METRICS = {k: v for name in SUITES for k, v in importlib.import_module(f"pytest_analog.suites.{name}.facts").METRICS.items()}


def test_judge_follows_direction_score_and_rule():
    m = Measured(0.62, interval=(0.55, 0.70), chance=0.2, corrected_interval=(0.40, 0.61))
    assert m.corrected == pytest.approx((0.62 - 0.2) / 0.8)
    assert judge(m, Gate("min", 0.6)) is True
    assert judge(m, Gate("max", 0.6)) is False
    assert judge(m, Gate("min", 0.5, score="corrected")) is True  # 0.525
    assert judge(m, Gate("min", 0.5, score="corrected", rule="lower_bound")) is False  # 0.40
    assert judge(m, Gate("max", 0.69, rule="lower_bound")) is False  # upper end 0.70
    assert judge(m, Gate()) is None
    # no value fails a gate, whatever the rule; no interval: the estimate stands for it
    assert judge(Measured(None), Gate("min", 0.0)) is False
    assert judge(Measured(math.nan), Gate("max", 1.0, rule="lower_bound")) is False
    assert judge(Measured(0.7), Gate("min", 0.6, rule="lower_bound")) is True
    # a corrected gate without a chance level has no score to judge, and says why
    c = Criterion("s::t", "s", "cka", Measured(0.9), Gate("min", 0.5, score="corrected"))
    assert c.passed is False and "no chance level" in c.message


def test_gate_refuses_half_or_unknown_settings():
    for args in (("min", None), (None, 0.5), ("above", 0.5)):
        with pytest.raises(ValueError, match="gate"):
            Gate(*args)
    with pytest.raises(ValueError, match="score must be 'raw' or 'corrected'"):
        Gate("min", 0.5, score="adjusted")
    with pytest.raises(ValueError, match="rule must be 'point' or 'lower_bound'"):
        Gate("min", 0.5, rule="upper")


def test_a_row_holds_what_follows_and_from_dict_recomputes_it():
    c = Criterion(
        "representation::test_cka[teacher_layer=3]", "representation", "cka",
        Measured(0.6, (0.5, 0.7), 0.2, (0.1, 0.3), (0.4, 0.55)), Gate("min", 0.5, "corrected"), {"teacher_layer": 3},
        facts=METRICS["cka"],
    )
    row = c.to_dict()
    assert row["passed"] is True and row["corrected"] == pytest.approx(0.5) and row["gated"] is True
    assert row["too_close_to_call"] is True and row["above_chance"] is True and row["teacher_layer"] == 3
    assert row["rule"] == "point" and row["description"] == METRICS["cka"].description
    assert list(row) == [  # the row's layout: keys in this order, then the details
        "id", "suite", "metric", "description", "value", "interval", "chance", "chance_interval", "corrected",
        "corrected_interval", "reason", "direction", "threshold", "score", "rule", "gated", "passed", "above_chance",
        "too_close_to_call", "teacher_layer",
    ]
    assert Criterion.from_dict(row) == c
    assert json.dumps(Criterion.from_dict(row).to_dict()) == json.dumps(row)  # the row's own description kept
    # derived fields are read from the measurement and the gate, never from the row
    forged = {**row, "passed": False, "corrected": 0.99, "gated": False, "too_close_to_call": False}
    assert Criterion.from_dict(forged).to_dict() == row
    # a non-finite end is written as null and read back as NaN
    nan_row = Criterion("u::t", "u", "m", Measured(1.0, (math.nan, 2.0))).to_dict()
    assert nan_row["interval"] == [None, 2.0]
    assert math.isnan(Criterion.from_dict(nan_row).measured.interval[0])


def test_every_metric_has_one_direction_and_the_config_gates_it_that_way():
    gates = load_config().gates
    classes = {"min": (AtLeast,), "max": (AtMost,), None: (Range,)}
    for metric, facts in METRICS.items():
        if metric.startswith("benchmark_"):
            continue
        entry = getattr(gates, metric)
        if isinstance(entry, Required):
            assert facts.direction == "min", metric  # yes/no checks score 1 when met
        else:
            assert isinstance(entry, classes[facts.direction]), metric
    assert {f.name for f in dataclasses.fields(gates)} - {"rule", "benchmarks"} == {m for m in METRICS if not m.startswith("benchmark_")}


def test_gates_give_each_builtin_criterion_its_configured_gate(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text(
        "gates:\n  rule: lower_bound\n  cka: {min: 0.4, rule: point}\n  kl: {max: 0.8}\n"
        "  transfer_ratio: {min: 0.7}\n  license: {required: false}\n"
        "  benchmarks: {min_retained: 0.6, rule: point, per_task: {arith: {max_drop: 0.05}}}\n"
    )
    gates = load_config(path).gates
    assert gates.gate("cka") == Gate("min", 0.4, "corrected", "point")
    assert gates.gate("kl") == Gate("max", 0.8, rule="lower_bound")
    assert gates.gate("top1_agreement") == Gate(rule="lower_bound")  # reported, never failed
    assert gates.gate("transfer_ratio") == Gate("min", 0.7, rule="lower_bound")
    assert gates.gate("same_family") == Gate("min", 1.0, rule="lower_bound") and gates.gate("license") == Gate(rule="lower_bound")
    assert gates.gate("parameter_fraction", bound="min").threshold == 0.005
    assert gates.gate("parameter_fraction", bound="max") == Gate("max", 0.05, rule="lower_bound")
    assert gates.gate("benchmark_retained", 0.3, task="capitals") == Gate("min", 0.6, rule="point")
    assert not gates.gate("benchmark_retained", None, task="capitals").gated  # teacher not above chance
    assert not gates.gate("benchmark_retained", 0.3, task="arith").gated  # gated by its delta instead
    assert gates.gate("benchmark_delta", -0.1, task="arith") == Gate("min", -0.05, rule="point")
    assert gates.gate("benchmark_delta", 0.1, task="arith", higher_is_better=False) == Gate("max", 0.05, rule="point")


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("criteria:\n  cka:\n    min: 0.4\n", "config key 'criteria' moved: thresholds (min, max, score, gate) are now under gates.<metric>"),
        ("gate: lower_bound\n", "config key 'gate' moved to gates.rule"),
        ("steering:\n  criteria:\n    spearman: {min: 0.5}\n", "config key 'steering.criteria' moved"),
        ("benchmarks:\n  min_retained: 0.4\n", "config key 'benchmarks.min_retained' moved to gates.benchmarks.min_retained"),
        ("compliance:\n  license:\n    required: false\n", "config key 'compliance.license.required' moved to gates.license.required"),
        ("version: 1\n", "'version' must be 2 (schema 1 kept thresholds beside settings"),
    ],
)
def test_a_schema_1_config_is_refused_in_one_line_saying_where_its_keys_went(tmp_path, yaml, message):
    path = tmp_path / "old.yaml"
    path.write_text(yaml)
    with pytest.raises(config_module.AnalogError) as caught:
        load_config(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_no_measurement_setting_sits_among_the_gates():
    """What a run reads and what the gate reads are apart: the gates section holds thresholds, scores,
    rules and the few-prompts flag only, and no settings section holds any of those."""
    config = load_config().to_dict()
    gate_keys = {"min", "max", "score", "rule", "required", "min_prompts", "min_retained", "max_drop", "per_task"}

    def keys(node):
        return {k for k, v in node.items() for k in ([k] + sorted(keys(v)) if isinstance(v, dict) else [k])}

    assert keys(config["gates"]) - set(METRICS) - {"benchmarks"} <= gate_keys
    for section in set(config) - {"gates"}:
        value = config[section]
        if isinstance(value, dict) and section != "steering":
            assert not keys(value) & {"min", "max", "score", "rule", "required", "min_retained", "max_drop"}, section
    assert "criteria" not in config["steering"] and set(SUITES) >= {"representation", "steering", "benchmarks"}


def test_a_non_finite_interval_end_fails_lower_bound_with_a_reason():
    # (0.3, inf) used to pass on the estimate; an interval with a non-finite end was not measured
    for interval in ((0.3, math.inf), (math.nan, math.nan), (-math.inf, 0.9)):
        c = Criterion("s::t", "s", "cka", Measured(0.8, interval), Gate("min", 0.5, rule="lower_bound"))
        assert c.passed is False and "interval was not measured" in c.message
    assert judge(Measured(0.8, (0.3, math.inf)), Gate("min", 0.5)) is True  # the point rule reads the estimate


def test_straddles_honours_the_judges_tolerance():
    low = (0.6 - 0.2) / 0.8  # 0.49999999999999994: meets ">= 0.5"
    c = Criterion("s::t", "s", "cka", Measured(0.6, (low, 0.7)), Gate("min", 0.5, rule="lower_bound"))
    assert c.passed is True and c.too_close_to_call is False
    assert Criterion("s::t", "s", "cka", Measured(0.6, (0.49, 0.7)), Gate("min", 0.5)).too_close_to_call is True


def test_a_chance_level_of_minus_infinity_is_unmeasured_not_zero():
    from pytest_analog.criterion import chance_corrected

    assert math.isnan(chance_corrected(0.7, -math.inf))
    assert chance_corrected(0.7, -0.1) == pytest.approx(0.7)  # a measured chance below 0 is taken as 0
    c = Criterion("s::t", "s", "cka", Measured(0.7, chance=-math.inf), Gate("min", 0.5, score="corrected"))
    assert c.measured.corrected is not None and math.isnan(c.measured.corrected)
    assert c.passed is False and "no chance level" in c.message


def test_a_criterion_reads_what_its_metric_is_from_the_facts_it_carries():
    facts = METRICS["kl"]
    bare = Criterion("logits::test_logits[kl]", "logits", "kl", Measured(0.9), Gate("max", 0.5))
    described = dataclasses.replace(bare, facts=facts)
    assert bare == described  # facts describe a criterion; they are not part of what it is
    assert bare.to_dict()["description"] == "" and described.to_dict()["description"] == facts.description
    assert bare.message == "kl = 0.9 fails <= 0.5" and described.message == f"kl = 0.9 fails <= 0.5: {facts.failure}"
    # a row read back without facts keeps the description it was written with; facts given take its place
    row = {**bare.to_dict(), "description": "my own words"}
    assert Criterion.from_dict(row).description == "my own words" == Criterion.from_dict(row).to_dict()["description"]
    assert Criterion.from_dict(row, facts).description == facts.description


def test_a_gate_names_its_comparison_once():
    assert (Gate("min", 0.5).sign(), Gate("max", 0.5).sign(), Gate().sign()) == ("≥", "≤", "")
    assert (Gate("min", 0.5).sign(ascii_only=True), Gate("max", 0.5).sign(ascii_only=True)) == (">=", "<=")


def _criteria(*rows):
    """Criteria from (value, gate, reason) triples, ids c0, c1, ..."""
    return [Criterion(f"s::c{i}", "s", "m", Measured(value, reason=reason), gate) for i, (value, gate, reason) in enumerate(rows)]


def test_verdict_fails_on_a_failure_or_an_error_then_is_partial_pass_or_ungated():
    passing, failing, info = (0.9, Gate("min", 0.5), None), (0.1, Gate("min", 0.5), None), (0.3, Gate(), None)
    assert verdict(_criteria(passing, info)) == "pass"
    assert verdict(_criteria(passing, failing)) == "fail"
    assert verdict(_criteria(passing), error="the teacher did not load") == "fail"
    assert verdict(_criteria(), error="the teacher did not load") == "fail"
    assert verdict(_criteria(passing), partial="deselected tests") == "partial"
    assert verdict(_criteria(failing), partial="deselected tests") == "fail"  # a failure is a failure in part of the gate too
    assert verdict(_criteria(info)) == verdict(_criteria()) == "no gated criteria"
    assert verdict(_criteria(info), partial="--lf") == "partial"
    assert verdict(_criteria((None, Gate("min", 0.5), "no value"))) == "fail"  # a gated criterion without a value fails


def test_summary_counts_an_unmeasured_gated_criterion_failed_and_an_unmeasured_ungated_one_not_measured():
    criteria = _criteria(
        (0.9, Gate("min", 0.5), None),
        (None, Gate("min", 0.5), "the metric could not be computed"),  # gated, no value: failed
        (None, Gate(), "needs the teacher"),  # ungated for lack of the teacher: neither passed nor failed
        (None, Gate(), None),  # no value, no reason: informational only
        (0.2, Gate(), None),
    )
    assert summary(criteria) == {
        "gated": 2, "passed": 1, "failed": 1, "informational": 3,
        "not_measured": [{"id": "s::c2", "reason": "needs the teacher"}],
    }
    assert summary(iter(criteria)) == summary(criteria)  # any iterable
    assert summary([]) == {"gated": 0, "passed": 0, "failed": 0, "informational": 0, "not_measured": []}
