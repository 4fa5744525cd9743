"""Smaller pieces: light import, the cache's trust rules, criteria, prompt sets, shared vocabularies, package
versions and the parameter fraction."""

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest

from pytest_analog import registry
from pytest_analog import cache
from pytest_analog.criterion import Criterion, Gate, Measured
from pytest_analog.errors import AnalogError
from pytest_analog.models import ModelPair, parameter_fraction
from pytest_analog.prompts import load_prompts, shipped_prompt_sets
from pytest_analog.versions import package_version


def test_importing_the_plugin_and_its_suites_loads_no_ml_library():
    """What every pytest run does with the plugin installed (no models given): import it, load the suites and the config."""
    code = ("import sys, pytest_analog.plugin; from pytest_analog import registry, config; registry.installed(); config.load_config(); "
            "print(sorted(m for m in ('torch', 'transformers', 'lm_eval', 'matplotlib', 'scipy', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cache_round_trip_and_distrust(tmp_path):
    key = cache.cache_key(teacher="a", student="b", layers=[1, 2])
    assert key == cache.cache_key(layers=[1, 2], student="b", teacher="a")
    assert cache.load(tmp_path, key) is None
    payload = {"cka": {1: 0.5, 10: float("nan")}, "n": 3}
    path = cache.store(tmp_path, key, payload)
    loaded = cache.load(tmp_path, key)
    assert loaded["n"] == 3 and loaded["cka"]["1"] == 0.5 and math.isnan(loaded["cka"]["10"])
    other = cache.cache_key(teacher="a", student="c", layers=[1, 2])
    (tmp_path / f"{other}.json").write_text(path.read_text())  # a foreign entry under another key
    assert cache.load(tmp_path, other) is None
    path.write_text(path.read_text().replace("0.5", "0.9"))  # edited payload
    assert cache.load(tmp_path, key) is None
    path.write_text(path.read_text()[:20])  # truncated
    assert cache.load(tmp_path, key) is None
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("gate", "measured", "passed", "message"),
    [
        (Gate("min", 0.5), Measured(0.7), True, "cka = 0.7 passes >= 0.5"),
        (Gate("min", 0.5), Measured(0.3), False, "cka = 0.3 fails >= 0.5: the analog's layer shares little linear structure"),
        (Gate("max", 2.0), Measured(3.0), False, "cka = 3 fails <= 2"),
        (Gate(), Measured(0.3), None, "cka = 0.3 (informational)"),
        (Gate("min", 0.5), Measured(float("nan"), reason="too few prompts"), False, "cka has no value: too few prompts"),
    ],
)
def test_criteria_judge_and_explain(gate, measured, passed, message):
    facts = registry.metrics(registry.built_in())["cka"]
    c = Criterion("representation::test_cka", "representation", "cka", measured, gate, facts=facts)
    assert c.passed is passed and c.gate.gated is (passed is not None)
    assert c.to_dict()["passed"] is passed and c.to_dict()["gated"] is (passed is not None)
    assert c.message.startswith(message)
    json.dumps(c.to_dict(), allow_nan=False)  # NaN never reaches the report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("min", None), "a gate needs both a direction and a threshold, or neither; got 'min', None"),
        ((None, 0.5), "a gate needs both a direction and a threshold, or neither; got None, 0.5"),
        (("above", 0.5), "gate direction must be 'min' or 'max', got 'above'"),
        (("min", 0.5, "adjusted"), "gate score must be 'raw' or 'corrected', got 'adjusted'"),
        (("min", 0.5, "raw", "upper"), "gate rule must be 'point' or 'lower_bound', got 'upper'"),
    ],
)
def test_a_gate_refuses_what_it_cannot_judge(args, message):
    with pytest.raises(ValueError) as info:
        Gate(*args)
    assert str(info.value) == message


def test_per_layer_message_names_both_layers():
    c = Criterion("r::t", "representation", "cka", Measured(0.1), Gate("min", 0.5), {"teacher_layer": 12, "analog_layer": 6})
    assert c.message.startswith("cka at teacher layer 12 (analog layer 6) = 0.1 fails >= 0.5")


def test_prompt_sets(tmp_path):
    assert "default" in shipped_prompt_sets()
    default = load_prompts("default")
    assert len(default.texts) == 320 and len(set(default.texts)) == 320
    assert load_prompts("default", 5).texts == default.texts[:5]
    txt = tmp_path / "p.txt"
    txt.write_text("one prompt\n\nanother prompt\n")
    assert load_prompts(str(txt)).texts == ("one prompt", "another prompt")
    assert load_prompts(str(txt)).sha256 != default.sha256


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nosuchset", None, "unknown prompt set 'nosuchset'; shipped sets: default"),
        ("p.csv", "a,b", "must be .jsonl"),
        ("missing.jsonl", None, "does not exist"),
        ("bad.jsonl", '{"text": "ok"}\nnot json\n', "line 2: not JSON"),
        ("bad.jsonl", '{"prompt": "x"}\n', 'line 1: expected an object with a non-empty "text" string'),
        ("empty.txt", "\n\n", "holds no prompts"),
    ],
)
def test_prompt_set_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(AnalogError, match=message):
        load_prompts(name if name == "nosuchset" else str(path))


@pytest.mark.parametrize("shared", [0, 5])
def test_too_few_shared_tokens_give_geometry_a_reason_not_a_value(tmp_path, shared):
    """Below embeddings.min_rows shared rows the geometry is not measurable, and its gate fails."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from pytest_analog.config import load_config
    from pytest_analog.suites.representation.analog import _geometry
    from pytest_analog.suites.representation.teacher import _embedding_rows
    from pytest_analog.part import Part
    from pytest_analog.models import ModelPair, load_model
    from tests.conftest import save_model, tiny_llama

    dirs = []
    for prefix in ("a", "b"):
        vocab = {(f"s{i}" if i < shared else f"{prefix}{i}"): i for i in range(40)}
        tok = Tokenizer(models.WordLevel(vocab, unk_token=f"{prefix}38"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=f"{prefix}38", pad_token=f"{prefix}39")
        dirs.append(save_model(tiny_llama(fast, layers=1, hidden=16), fast, tmp_path / prefix))
    pair = ModelPair(*(load_model(str(d), device="cpu") for d in dirs))
    assert len(set(pair.teacher.tokenizer.get_vocab()) & set(pair.analog.tokenizer.get_vocab())) == shared
    rows, tokens = _embedding_rows(pair.teacher, load_config(), pair.teacher.model.dtype)
    values, notes = _geometry(Part(rows, tokens), pair.analog, pair.analog.tokenizer.get_vocab(), load_config())
    assert values == {"embedding": None, "unembedding": None}
    assert notes["embedding_geometry"] == (
        f"not measurable: the two models share {shared} usable token rows of the teacher's 39 sampled "  # its pad row is zero
        "(embeddings.rows); at least 100 are needed (embeddings.min_rows)"
    )
    gate = Criterion("embeddings::test_geometry", "embeddings", "embedding_geometry",
                     Measured(None, reason=notes["embedding_geometry"]), load_config().gates.gate("embedding_geometry"))
    assert gate.gate == Gate("min", 0.9)
    assert gate.passed is False and gate.message == f"embedding_geometry has no value: {notes['embedding_geometry']}"


def test_shipped_fixtures_found_installed_or_in_a_checkout(monkeypatch):
    from pytest_analog import resources

    assert (resources.shipped("fixtures") / "prompts/default.jsonl").is_file()
    # run from the root of a checkout, the installed mapping is shadowed: the folder beside the package serves
    monkeypatch.setattr(resources, "find_spec", lambda name: None)
    assert (resources.shipped("fixtures") / "prompts/default.jsonl").is_file()


def test_package_version_and_parameter_fraction():
    assert package_version("pytest") == pytest.__version__
    assert package_version("no-such-package-anywhere") is None
    assert parameter_fraction({"teacher": {"parameters": 400}, "analog": {"parameters": 30}}) == 0.075
    pair = ModelPair(SimpleNamespace(info={"parameters": 400}), SimpleNamespace(info={"parameters": 30}))
    assert pair.parameter_fraction == 0.075
