"""The registry of suites: what it takes, what it refuses, and the config it makes of them."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_analog import registry
from pytest_analog.config import load_config
from pytest_analog.errors import AnalogError
from pytest_analog.facts import Metric
from pytest_analog.gates import AtLeast
from pytest_analog.suite import Run, Suite

FACTS = Metric("share of words", "A share. Higher is better.", "too few words agree", "train more", bounds=(0.0, 1.0))


def suite(name="mine", **fields) -> Suite:
    return Suite(name=name, tests="tests.test_registry", **fields)


def test_the_built_in_suites_are_the_registry_list_in_order():
    assert [s.name for s in registry.built_in()] == list(registry.BUILT_IN)
    assert registry.installed()[: len(registry.BUILT_IN)] == registry.built_in()
    assert set(registry.runs(registry.built_in())) == {"representation", "steering", "benchmarks"}
    metrics = registry.metrics(registry.built_in())
    assert {"cka", "kl", "transfer_ratio", "benchmark_retained", "license"} <= set(metrics)


def test_a_suite_gets_a_config_section_and_gates_of_its_own():
    @dataclasses.dataclass(frozen=True)
    class Settings:
        words: int

    mine = suite(settings=Settings, gates={"agreement": AtLeast}, metrics={"agreement": FACTS},
                 defaults={"mine": {"words": 4}, "gates": {"agreement": {"min": 0.5, "rule": None}}},
                 checks={"mine.words": (lambda v: v >= 1, "an integer >= 1")})
    config = load_config(None, registry.built_in() + (mine,))
    assert config.mine.words == 4 and config.gates.gate("agreement", 0.7).threshold == 0.5
    assert config.gates.cka.min == load_config().gates.cka.min  # the built-in ones are untouched
    with pytest.raises(AnalogError, match=r"'mine.words' must be an integer >= 1, got 0"):
        load_config(None, registry.built_in() + (mine,), **{"mine.words": 0})
    with pytest.raises(AnalogError, match=r"'gates.agreement.min: 2' can never pass: agreement takes values in \[0, 1\]"):
        load_config(None, registry.built_in() + (mine,), **{"gates.agreement.min": 2})


@pytest.mark.parametrize(("defaults", "message"), [
    ({"gates": {"cka": {"min": 0.1, "rule": None}}}, "suite 'mine': its defaults set cka"),
    ({"prompts": {}}, "suite 'mine': its defaults set prompts"),
    ({"other": {}}, "suite 'mine': its defaults set other"),
])
def test_a_suite_may_set_only_its_own_defaults(defaults, message):
    with pytest.raises(AnalogError, match=message):
        load_config(None, registry.built_in() + (suite(defaults=defaults),))


def test_two_suites_may_not_share_a_name_a_run_name_or_a_metric():
    run = Run(name="representation", teacher=print, compute=print)
    with pytest.raises(AnalogError, match="two suites are named 'steering'"):
        registry.checked(registry.built_in() + (suite("steering"),))
    with pytest.raises(AnalogError, match="suite 'mine' brings a second run named 'representation'"):
        registry.checked(registry.built_in() + (suite(run=run),))
    with pytest.raises(AnalogError, match="suites 'representation' and 'mine' both describe the metric 'cka'"):
        registry.checked(registry.built_in() + (suite(metrics={"cka": FACTS}),))


def test_a_suites_name_names_a_config_section():
    with pytest.raises(ValueError, match="lower-case identifier"):
        suite("My-Suite")


def test_a_hook_that_returns_no_suite_is_one_usage_error(pytester):
    pytester.makeconftest("def pytest_analog_suites():\n    return 'representation'\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: a pytest_analog_suites hook gave str, not a pytest_analog.Suite or a list of them"])
