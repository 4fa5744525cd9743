"""The suites' cached runs (`pytest_analog.runs`): a cache key holds what its run reads and no threshold, so
changing a gate re-judges from the cache without loading a model."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pytest_analog import models, registry
from pytest_analog.config import load_config
from tests.conftest import write_yaml


def _leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and key != "per_task":
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _thresholds() -> list[str]:
    """Every threshold and decision rule of the config: what judges a value, never what measures it."""
    return list(_leaves(load_config().to_dict()["gates"], "gates."))


def _covers(read: str, path: str) -> bool:
    """True when the config key ``read`` (a section stands for all its keys) holds ``path``."""
    return path == read or path.startswith(read + ".")


RUNS = registry.runs(registry.built_in())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_no_threshold_is_in_a_run_key(name):
    thresholds = _thresholds()
    assert len(thresholds) > 40 and "gates.cka.min" in thresholds and "gates.spearman.rule" in thresholds
    clashes = [(read, t) for read in RUNS[name].reads for t in thresholds if _covers(read, t) or _covers(t, read)]
    assert clashes == []
    settings = RUNS[name].settings(load_config())
    assert settings == RUNS[name].settings(load_config(**{"gates.cka.min": 0.9, "gates.rule": "lower_bound"}))


def test_every_built_in_suite_names_the_run_it_reads():
    reads = {suite.name: suite.run and suite.run.name for suite in registry.built_in()}
    assert reads == {"representation": "representation", "embeddings": "representation", "logits": "representation",
                     "steering": "steering", "benchmarks": "benchmarks", "compliance": None}


class _Recording:
    """A read-only view of a `Config` that notes the dotted key of every value read through it."""

    def __init__(self, node, path: str, seen: set[str]):
        self._node, self._path, self._seen = node, path, seen

    def __getattr__(self, name):
        value = getattr(self._node, name)
        path = f"{self._path}{name}"
        if dataclasses.is_dataclass(value):
            return _Recording(value, f"{path}.", self._seen)
        self._seen.add(path)
        return value


def _reads(name, pair, config, teacher_inputs=None, **inputs) -> tuple[set[str], set[str]]:
    """The config keys the run's analog half and teacher half read (and both results are JSON)."""
    run, seen, seen_teacher = RUNS[name], set(), set()
    halves = (pair,)
    if run.teacher:
        part = run.teacher(pair.teacher, _Recording(config, "", seen_teacher), **teacher_inputs)
        json.dumps(part.meta)
        halves = (pair, part)
    json.dumps(run.compute(*halves, _Recording(config, "", seen), **inputs))
    return seen, seen_teacher


def test_each_run_reads_only_the_settings_its_key_holds(tiny_dir):
    """A value a computation reads but its key misses would let a stale cache entry (or a teacher
    reference built with other settings) through."""
    from pytest_analog.evals import resolve_tasks
    from pytest_analog.prompts import load_prompts
    from pytest_analog.steering import load_behaviour

    config = load_config(**{
        "layers.teacher": 2, "chance.resamples": 10, "steering.alphas": [0.0, 1.0], "steering.map_prompts": 10,
        "steering.train_items": 4, "steering.eval_items": 2, "steering.autoencoder_steps": 2, "benchmarks.limit": 2,
    })
    pair = models.load_pair(str(tiny_dir), str(tiny_dir), device="cpu", dtype="float32")
    prompts = load_prompts("default", 12)
    behaviours = [load_behaviour("sentiment")]
    tasks = {"tasks": resolve_tasks(["analog_capitals"]), "verbose": False}
    computed = {
        "representation": _reads("representation", pair, config, teacher_inputs={"prompts": prompts, "with_logits": True},
                                 prompts=prompts, with_logits=True),
        "steering": _reads("steering", pair, config, behaviours=behaviours, layer_pairs={1: 1}, map_texts=prompts.texts[:10],
                           teacher_inputs={"behaviours": behaviours, "teacher_layers": [1], "map_texts": prompts.texts[:10]}),
        "benchmarks": _reads("benchmarks", pair, config, teacher_inputs=tasks, **tasks),
    }
    for name, (seen, seen_teacher) in computed.items():
        assert seen, name
        assert [path for path in seen if not any(_covers(read, path) for read in RUNS[name].reads)] == [], name
        assert [path for path in seen_teacher if not any(_covers(read, path) for read in RUNS[name].teacher_reads)] == [], name
        assert bool(seen_teacher) == bool(RUNS[name].teacher), name
    assert {"representation.cka.debiased", "positions.skip_first", "chance.resamples"} <= computed["representation"][0]
    assert {"steering.map", "chance.seed"} <= computed["steering"][0]
    assert {"steering.alphas", "steering.train_items"} <= computed["steering"][1]
    assert "benchmarks.backend" in computed["benchmarks"][1]
    assert {"logits.top_k", "reference.dtype", "layers.matrix_rows"} <= computed["representation"][1]


def test_a_threshold_change_rejudges_from_the_cache_without_loading_a_model(pytester, tiny_dir, tiny_random_dir, monkeypatch):
    """Issue 13: rerunning with only a threshold changed in --analog-config runs no model and the verdict
    follows the new threshold."""
    config = pytester.path / "analog.yaml"
    args = [f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_random_dir}", "--analog-max-prompts=12",
            "--analog-suites=representation", f"--analog-config={config}", f"--analog-cache={pytester.path / 'cache'}",
            "--analog-report=out", "-p", "no:cacheprovider"]

    def report():
        data = json.loads((pytester.path / "out" / "fidelity.json").read_text())
        return data, [(c["value"], c["passed"]) for c in data["criteria"] if c["metric"] == "cka"]

    quick = {"chance": {"resamples": 0}}
    write_yaml(config, {**quick, "gates": {"cka": {"min": -0.5}}})  # an unrelated pair's corrected CKA is near 0
    assert pytester.runpytest(*args).ret == pytest.ExitCode.OK
    first, cka = report()
    assert first["verdict"] == "pass" and first["capture"]["cached"] is False
    assert len(cka) == 4 and all(passed for _, passed in cka)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a threshold change")

    # the module imported here, before the first run: pytester drops modules a run imported, and a patch
    # of a dropped module would reach nothing
    monkeypatch.setattr(models, "load_model", no_model)
    monkeypatch.setattr(models, "load_pair", no_model)
    write_yaml(config, {**quick, "gates": {"cka": {"min": 0.5}}})
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=8, failed=4)  # rbf_cka and mutual_knn are reported, cka fails at every layer
    again, recka = report()
    assert again["verdict"] == "fail" and "error" not in again and again["capture"]["cached"] is True
    assert [value for value, _ in recka] == [value for value, _ in cka] and not any(passed for _, passed in recka)
    assert again["config"]["gates"]["cka"]["min"] == 0.5 and again["layers"] == first["layers"]
