"""The YAML config: shipped defaults, overrides, and one-line errors for bad input."""

import pytest
import yaml

from pytest_analog.config import DEFAULTS_PATH, load_config
from pytest_analog.errors import AnalogError
from tests.conftest import write_yaml


def test_defaults_load_and_carry_the_literature_thresholds():
    config = load_config()
    assert config.criteria.embedding_geometry.min == 0.9  # Lee et al. 2025
    assert config.criteria.unembedding_geometry.min == 0.9
    assert config.criteria.cka.min == 0.5 and config.criteria.cka.debiased
    assert config.positions.skip_first
    assert config.criteria.kl.max is None  # informational by default


def test_every_default_criterion_is_explained_in_the_yaml():
    text = DEFAULTS_PATH.read_text()
    raw = yaml.safe_load(text)
    for name in raw["criteria"]:
        block = text[text.index(f"  {name}:") :].splitlines()[1]
        assert block.strip().startswith("#"), f"criterion {name} has no comment explaining its default"


def test_user_file_overrides_a_subset(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"criteria": {"cka": {"min": 0.7}}, "layers": {"map": {0: 0, 3: 1}}})
    config = load_config(path)
    assert config.criteria.cka.min == 0.7 and config.criteria.cka.debiased
    assert config.layers.map == {0: 0, 3: 1}
    assert config.criteria.embedding_geometry.min == 0.9


def test_the_decision_rule_is_set_globally_and_per_criterion(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"gate": "lower_bound", "criteria": {"cka": {"gate": "point"}},
                                            "benchmarks": {"gate": "point"}})
    config = load_config(path)
    assert config.gate == "lower_bound" and config.criteria.cka.gate == "point"
    assert config.criteria.rbf_cka.gate is None and config.steering.criteria.transfer_ratio.gate is None
    assert config.benchmarks.gate == "point"


def test_dotted_overrides_apply_last(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"prompts": {"max_prompts": 100}})
    assert load_config(path, **{"prompts.max_prompts": 7}).prompts.max_prompts == 7


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"criteria": {"cka": {"mni": 0.3}}}, "unknown config key 'criteria.cka.mni'; did you mean 'criteria.cka.min'?"),
        ({"batch_sise": 4}, "unknown config key 'batch_sise'; did you mean 'batch_size'?"),
        ({"batch_size": 0}, "'batch_size' must be an integer >= 1, got 0"),
        ({"batch_size": True}, "'batch_size' must be an integer, got True"),
        ({"layers": {"teacher": [1, "x"]}}, "'layers.teacher' must be 'all' or an integer or a list of integers, got [1, 'x']"),
        ({"layers": {"map": "nearest"}}, "'layers.map' must be 'proportional' or a mapping of integers to integers"),
        ({"criteria": {"cka": {"min": float("nan")}}}, "'criteria.cka.min' must be finite"),
        ({"criteria": {"cka": 0.5}}, "'criteria.cka' must be a mapping, got 0.5"),
        ({"version": 2}, "'version' must be 1, got 2"),
        ({"layers": {"teacher": 0}}, "'layers.teacher' must be 'all', an integer >= 1 or a list of integers, got 0"),
        ({"gate": "lower"}, "'gate' must be 'point' or 'lower_bound', got 'lower'"),
        ({"gate": None}, "'gate' must be 'point' or 'lower_bound', got None"),
        ({"criteria": {"cka": {"gate": "upper_bound"}}}, "'criteria.cka.gate' must be 'point' or 'lower_bound' or null"),
        ({"steering": {"criteria": {"spearman": {"gate": 1}}}}, "'steering.criteria.spearman.gate' must be 'point' or 'lower_bound' or null"),
        ({"benchmarks": {"gate": "strict"}}, "'benchmarks.gate' must be 'point' or 'lower_bound' or null"),
    ],
)
def test_invalid_values_are_one_line_errors(tmp_path, data, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(AnalogError) as info:
        load_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("x: [", "is not valid YAML"), ("- a\n- b\n", "must hold a mapping of keys, not a list")],
)
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(AnalogError, match=message):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(AnalogError, match="does not exist; pass a YAML file"):
        load_config(tmp_path / "nope.yaml")


def test_config_round_trips_into_the_report():
    data = load_config().to_dict()
    assert data["criteria"]["cka"] == {"min": 0.5, "gate": None, "score": "corrected", "debiased": True, "min_prompts": 50}
    assert data["gate"] == "point"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("criteria:\n  cka: {min: 0.6}\nbatch_size: 4\ncriteria:\n  kl: {max: 2}\n",
         "line 4: duplicate key 'criteria' (first given on line 1); give each key once"),
        ("criteria:\n  cka:\n    min: 0.6\n    min: 0.7\n", "line 4: duplicate key 'min' (first given on line 3)"),
    ],
    ids=["top-level", "nested"],
)
def test_duplicate_keys_are_refused_with_their_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(AnalogError) as info:
        load_config(path)
    assert str(info.value).startswith(f"config file {path}, {message}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"criteria": {"kl": {"max": -1}}}, "'criteria.kl.max: -1' can never pass: kl takes values in [0, inf)"),
        ({"criteria": {"embedding_geometry": {"min": 1.5}}},
         "'criteria.embedding_geometry.min: 1.5' can never pass: embedding_geometry takes values in [-1, 1]"),
        ({"criteria": {"top1_agreement": {"min": -0.2}}},
         "'criteria.top1_agreement.min: -0.2' can never fail: top1_agreement takes values in [0, 1]"),
        ({"criteria": {"cka": {"min": 1.2}}}, "'criteria.cka.min: 1.2' can never pass: its corrected score takes values in (-inf, 1]"),
        ({"steering": {"criteria": {"random_control": {"max": -0.1}}}},
         "'steering.criteria.random_control.max: -0.1' can never pass: random_control takes values in [0, inf)"),
        ({"steering": {"criteria": {"spearman": {"min": 2}}}}, "'steering.criteria.spearman.min: 2' can never pass"),
        ({"compliance": {"parameter_fraction": {"max": -0.01}}}, "'compliance.parameter_fraction.max: -0.01' can never pass"),
        ({"compliance": {"parameter_fraction": {"min": 0.1, "max": 0.05}}},
         "'compliance.parameter_fraction' can never pass: min 0.1 is above max 0.05"),
    ],
    ids=["kl-negative", "r-above-1", "fraction-below-0", "corrected-above-1", "ratio-negative", "rho-above-1",
         "param-fraction", "min-above-max"],
)
def test_impossible_thresholds_are_refused(tmp_path, data, message):
    path = write_yaml(tmp_path / "c.yaml", data)
    with pytest.raises(AnalogError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)


def test_thresholds_at_the_ends_of_a_metrics_values_are_accepted(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"criteria": {"kl": {"max": 0}, "embedding_geometry": {"min": 1}, "cka": {"min": -3}}})
    config = load_config(path)
    assert (config.criteria.kl.max, config.criteria.embedding_geometry.min, config.criteria.cka.min) == (0, 1, -3)


def test_geometry_needs_a_documented_minimum_of_shared_rows(tmp_path):
    config = load_config()
    assert config.criteria.embedding_geometry.min_rows == config.criteria.unembedding_geometry.min_rows == 100
    text = DEFAULTS_PATH.read_text()
    assert "min_rows: 100" in text and "not measurable" in text and "FAILS" in text
    with pytest.raises(AnalogError, match=r"rows \(50\) must be at least min_rows \(100\)"):
        load_config(write_yaml(tmp_path / "c.yaml", {"criteria": {"embedding_geometry": {"rows": 50}}}))
