"""The YAML config: shipped defaults, overrides, and one-line errors for bad input."""

import pytest
import yaml

from pytest_analog import registry
from pytest_analog.config import DEFAULTS_PATH, load_config
from pytest_analog.errors import AnalogError
from tests.conftest import write_yaml


def test_defaults_load_and_carry_the_literature_thresholds():
    config = load_config()
    assert config.gates.embedding_geometry.min == 0.9  # Lee et al. 2025
    assert config.gates.unembedding_geometry.min == 0.9
    assert config.gates.cka.min == 0.5 and config.representation.cka.debiased
    assert config.positions.skip_first
    assert config.gates.kl.max is None  # informational by default


@pytest.mark.parametrize("suite", registry.built_in(), ids=lambda suite: suite.name)
def test_every_default_gate_is_explained_in_its_suites_yaml(suite):
    text = suite.defaults.read_text()
    raw = yaml.safe_load(text)
    lines = text.splitlines()
    assert set(raw["gates"]) == set(suite.gates) and set(raw) <= {suite.name, "gates"}
    for name in raw["gates"]:  # explained under gates, or beside its settings (compliance.model_card)
        starts = [i for i, line in enumerate(lines) if line.strip() == f"{name}:" and line.startswith("  ")]
        assert any(lines[i + 1].strip().startswith("#") for i in starts), f"gate {name} has no comment explaining its default"


def test_the_core_defaults_hold_no_suites_section_or_gate():
    raw = yaml.safe_load(DEFAULTS_PATH.read_text())
    assert list(raw["gates"]) == ["rule"] and not set(raw) & {suite.name for suite in registry.built_in()}


def test_user_file_overrides_a_subset(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"gates": {"cka": {"min": 0.7}}, "layers": {"map": {0: 0, 3: 1}}})
    config = load_config(path)
    assert config.gates.cka.min == 0.7 and config.representation.cka.debiased
    assert config.layers.map == {0: 0, 3: 1}
    assert config.gates.embedding_geometry.min == 0.9


def test_the_decision_rule_is_set_globally_and_per_criterion(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"gates": {"rule": "lower_bound", "cka": {"rule": "point"},
                                                      "benchmarks": {"rule": "point"}}})
    config = load_config(path)
    assert config.gates.rule == "lower_bound" and config.gates.cka.rule == "point"
    assert config.gates.rbf_cka.rule is None and config.gates.transfer_ratio.rule is None
    assert config.gates.benchmarks.rule == "point"


def test_dotted_overrides_apply_last(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"prompts": {"max_prompts": 100}})
    assert load_config(path, **{"prompts.max_prompts": 7}).prompts.max_prompts == 7


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("chance.resamples", 100_000_000, "0 (no intervals) or an integer from 10 to 100,000"),
        ("chance.rows", 65_537, "an integer from 8 to 65,536"),
        ("layers.matrix_rows", 10**9, "an integer from 8 to 65,536"),
        ("prompts.max_prompts", 100_001, "null or an integer from 1 to 100,000"),
        ("prompts.max_length", 10**6, "an integer from 2 to 32,768"),
        ("batch_size", 4_097, "an integer from 1 to 4,096"),
        ("seed", -1, "an integer from 0 to 2**32 - 1"),
        ("representation.mutual_knn.k", 1_001, "an integer from 1 to 1,000"),
        ("embeddings.rows", 70_000, "an integer from 3 to 65,536"),
        ("logits.top_k", 10**7, "an integer from 1 to 65,536"),
        ("steering.autoencoder_steps", 10**7, "an integer from 1 to 1,000,000"),
        ("steering.random_directions", 10**6, "an integer from 2 to 100,000"),
        ("steering.batch_size", 10**4, "an integer from 1 to 4,096"),
        ("benchmarks.limit", 10**8, "null or an integer from 1 to 10,000,000"),
        ("benchmarks.batch_size", 10**4, "an integer from 1 to 4,096"),
    ],
)
def test_every_count_has_an_upper_bound(tmp_path, key, value, expected):
    """A count beyond its bound (``chance.resamples: 100000000`` once ran the gate out of memory) is one line."""
    section, _, leaf = key.rpartition(".")
    data = {leaf: value}
    for part in reversed(section.split(".") if section else []):
        data = {part: data}
    with pytest.raises(AnalogError) as info:
        load_config(write_yaml(tmp_path / "c.yaml", data))
    assert str(info.value).endswith(f"'{key}' must be {expected}, got {value}") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gates": {"cka": {"mni": 0.3}}}, "unknown config key 'gates.cka.mni'; did you mean 'gates.cka.min'?"),
        ({"batch_sise": 4}, "unknown config key 'batch_sise'; did you mean 'batch_size'?"),
        ({"batch_size": 0}, "'batch_size' must be an integer from 1 to 4,096, got 0"),
        ({"batch_size": True}, "'batch_size' must be an integer, got True"),
        ({"layers": {"teacher": [1, "x"]}}, "'layers.teacher' must be 'all' or an integer or a list of integers, got [1, 'x']"),
        ({"layers": {"map": "nearest"}}, "'layers.map' must be 'proportional' or a mapping of integers to integers"),
        ({"gates": {"cka": {"min": float("nan")}}}, "'gates.cka.min' must be finite"),
        ({"gates": {"cka": 0.5}}, "'gates.cka' must be a mapping, got 0.5"),
        ({"version": 1}, "'version' must be 2 (schema 1 kept thresholds beside settings; move them to gates:"),
        ({"layers": {"teacher": 0}}, "'layers.teacher' must be 'all', an integer from 1 to 1,024 or a list of integers, got 0"),
        ({"gates": {"rule": "lower"}}, "'gates.rule' must be 'point' or 'lower_bound', got 'lower'"),
        ({"gates": {"rule": None}}, "'gates.rule' must be 'point' or 'lower_bound', got None"),
        ({"gates": {"cka": {"rule": "upper_bound"}}}, "'gates.cka.rule' must be 'point' or 'lower_bound' or null"),
        ({"gates": {"spearman": {"rule": 1}}}, "'gates.spearman.rule' must be 'point' or 'lower_bound' or null"),
        ({"gates": {"benchmarks": {"rule": "strict"}}}, "'gates.benchmarks.rule' must be 'point' or 'lower_bound' or null"),
    ],
)
def test_invalid_values_are_one_line_errors(tmp_path, data, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(AnalogError) as info:
        load_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"criteria": {"cka": {"min": 0.6}}}, "config key 'criteria' moved: thresholds (min, max, score, gate) are now under gates.<metric>"),
        ({"gate": "lower_bound"}, "config key 'gate' moved to gates.rule (config schema 2)"),
        ({"steering": {"criteria": {"spearman": {"min": 0.5}}}}, "config key 'steering.criteria' moved: the steering thresholds are now under gates.<metric>"),
        ({"benchmarks": {"gate": "point"}}, "config key 'benchmarks.gate' moved to gates.benchmarks.rule (config schema 2)"),
        ({"compliance": {"model_card": {"required": False}}}, "config key 'compliance.model_card.required' moved to gates.model_card.required"),
        ({"compliance": {"release_lag": {"max": 6}}}, "config key 'compliance.release_lag' moved: the dates are compliance.release_dates, the bounds gates.release_lag"),
    ],
    ids=["criteria", "gate", "steering-criteria", "benchmarks-gate", "model-card-required", "release-lag"],
)
def test_schema_1_keys_say_where_they_moved(tmp_path, data, message):
    path = write_yaml(tmp_path / "c.yaml", data)
    with pytest.raises(AnalogError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)


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
    assert data["gates"]["cka"] == {"min": 0.5, "rule": None, "score": "corrected", "min_prompts": 50}
    assert data["representation"]["cka"] == {"debiased": True}
    assert data["gates"]["rule"] == "point"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gates:\n  cka: {min: 0.6}\nbatch_size: 4\ngates:\n  kl: {max: 2}\n",
         "line 4: duplicate key 'gates' (first given on line 1); give each key once"),
        ("gates:\n  cka:\n    min: 0.6\n    min: 0.7\n", "line 4: duplicate key 'min' (first given on line 3)"),
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
        ({"gates": {"kl": {"max": -1}}}, "'gates.kl.max: -1' can never pass: kl takes values in [0, inf)"),
        ({"gates": {"embedding_geometry": {"min": 1.5}}},
         "'gates.embedding_geometry.min: 1.5' can never pass: embedding_geometry takes values in [-1, 1]"),
        ({"gates": {"top1_agreement": {"min": -0.2}}},
         "'gates.top1_agreement.min: -0.2' can never fail: top1_agreement takes values in [0, 1]"),
        ({"gates": {"cka": {"min": 1.2}}}, "'gates.cka.min: 1.2' can never pass: its corrected score takes values in (-inf, 1]"),
        ({"gates": {"random_control": {"max": -0.1}}},
         "'gates.random_control.max: -0.1' can never pass: random_control takes values in [0, inf)"),
        ({"gates": {"spearman": {"min": 2}}}, "'gates.spearman.min: 2' can never pass"),
        ({"gates": {"parameter_fraction": {"max": -0.01}}}, "'gates.parameter_fraction.max: -0.01' can never pass"),
        ({"gates": {"parameter_fraction": {"min": 0.1, "max": 0.05}}},
         "'gates.parameter_fraction' can never pass: min 0.1 is above max 0.05"),
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
    path = write_yaml(tmp_path / "c.yaml", {"gates": {"kl": {"max": 0}, "embedding_geometry": {"min": 1}, "cka": {"min": -3}}})
    config = load_config(path)
    assert (config.gates.kl.max, config.gates.embedding_geometry.min, config.gates.cka.min) == (0, 1, -3)


def test_geometry_needs_a_documented_minimum_of_shared_rows(tmp_path):
    config = load_config()
    assert config.embeddings.min_rows == 100  # one setting for both geometries
    text = next(suite for suite in registry.built_in() if suite.name == "embeddings").defaults.read_text()
    assert "min_rows: 100" in text and "not measurable" in text and "FAILS" in text
    with pytest.raises(AnalogError, match=r"embeddings: rows \(50\) must be at least min_rows \(100\)"):
        load_config(write_yaml(tmp_path / "c.yaml", {"embeddings": {"rows": 50}}))
