"""The plugin end to end with pytester: options, ini, usage errors, reports, exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import write_yaml

# the fidelity suites only: a tiny model is no compliant release, and steering and lm-eval have their own tests
FAST = ["--analog-max-prompts=24", "-p", "no:cacheprovider", "--analog-suites=representation,embeddings,logits"]


def models(teacher, student):
    return [f"--analog-teacher={teacher}", f"--analog-student={student}"]


def test_help_lists_every_option(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*pytest-analog*", "*--analog-teacher=MODEL*", "*--analog-allow-pickle*"])
    for name in ("student", "device", "dtype", "config", "report", "cache", "suites", "max-prompts", "trust-remote-code"):
        assert f"--analog-{name}" in result.stdout.str()


def test_no_models_adds_no_suites_and_skips_model_fixtures(pytester):
    pytester.makepyfile("def test_pair(analog_pair):\n    pass\n\ndef test_plain():\n    pass\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no models: give --analog-teacher and --analog-student*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--analog-device=gpu"], "*--analog-device: expected auto, cpu, cuda or cuda:N, got 'gpu'*"),
        (["--analog-dtype=int8"], "*--analog-dtype: expected auto, float32, bfloat16 or float16*"),
        (["--analog-suites=speed"], "*--analog-suites: expected all, none or a comma-separated list*"),
        (["--analog-max-prompts=0"], "*--analog-max-prompts: expected an integer >= 1*"),
        (["--analog-teacher=x/y"], "*ERROR: --analog-teacher was given without --analog-student*"),
    ],
)
def test_bad_options_are_usage_errors(pytester, args, message):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_missing_model_path_is_one_line_usage_error(pytester, tiny_dir):
    result = pytester.runpytest(*models("./no/such/model", tiny_dir))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: model path ./no/such/model does not exist; give a model directory*"])
    assert "Traceback" not in result.stderr.str()


def test_directory_that_is_not_a_model(pytester, tiny_dir):
    folder = pytester.mkdir("notamodel")
    result = pytester.runpytest(*models(folder, tiny_dir))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *notamodel is not a model directory: it has no config.json and no .gguf file"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_without_cuda_is_usage_error(pytester, tiny_dir):
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), "--analog-device=cuda:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --analog-device=cuda:1 but torch sees no CUDA device; use cpu or auto"])


def test_invalid_config_value_is_usage_error(pytester, tiny_dir):
    config = write_yaml(pytester.path / "analog.yaml", {"gates": {"cka": {"min": "high"}}})
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), f"--analog-config={config}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *analog.yaml: 'gates.cka.min' must be a number or null, got 'high'"])


def test_layer_out_of_range_is_usage_error(pytester, tiny_dir):
    config = write_yaml(pytester.path / "analog.yaml", {"layers": {"teacher": [1, 9]}})
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), f"--analog-config={config}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: layers.teacher lists [[]9], but the teacher has layers 0..3 (layer i = hidden_states*"])


def test_self_pair_passes_and_writes_reports(pytester, tiny_dir):
    report = pytester.path / "fidelity"
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *FAST, f"--analog-report={report}", f"--junitxml={junit}")
    assert result.ret == pytest.ExitCode.OK
    # 4 layers x 3 representation metrics + 2 geometry + 3 logit + 4 benchmark criteria
    result.assert_outcomes(passed=17)
    result.stdout.fnmatch_lines(["*analog fidelity*", "*report: *fidelity.html"])
    data = json.loads((report / "fidelity.json").read_text())
    assert data["schema_version"] == 3 and data["verdict"] == "pass"
    assert {c["metric"] for c in data["criteria"]} >= {"cka", "embedding_geometry", "kl"}
    cka = [c for c in data["criteria"] if c["metric"] == "cka"]
    assert len(cka) == 4 and all(c["value"] > 0.999 and c["passed"] for c in cka)
    assert all(c["few_prompts"].startswith("only 24 prompts (gates.cka.min_prompts: 50)") for c in cka)
    assert all(c["rule"] == "point" and c["too_close_to_call"] is False for c in data["criteria"])
    assert data["models"]["teacher"]["sha256"] == data["models"]["analog"]["sha256"]
    assert "first position" in data["capture"]["positions"]
    assert data["layers"]["best_match"] == [0, 1, 2, 3] == data["layers"]["mapped"]
    assert (report / "fidelity.md").read_text().strip() and "<html" in (report / "fidelity.html").read_text()
    properties = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert {"analog_metric", "analog_value", "analog_threshold", "analog_passed"} <= set(properties)


def test_failing_threshold_fails_the_run(pytester, tiny_dir, tiny_random_dir):
    config = write_yaml(pytester.path / "analog.yaml", {"gates": {"rule": "lower_bound", "cka": {"min": 0.99}}})
    report = pytester.path / "fidelity"
    result = pytester.runpytest(
        *models(tiny_dir, tiny_random_dir), *FAST, f"--analog-config={config}", f"--analog-report={report}",
        "--analog-suites=representation",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*cka at teacher layer 2 (analog layer 2) = * (chance *, corrected *) fails >= 0.99 on the corrected score at its interval's lower end *: *"])
    data = json.loads((report / "fidelity.json").read_text())
    assert data["verdict"] == "fail" and data["summary"]["failed"] >= 1
    assert {c["rule"] for c in data["criteria"]} == {"lower_bound"}  # the global rule reaches every criterion


def test_ini_twins_and_suite_selection(pytester, tiny_dir):
    pytester.makeini(
        f"""
        [pytest]
        analog_teacher = {tiny_dir}
        analog_student = {tiny_dir}
        analog_suites = embeddings
        analog_max_prompts = 24
        analog_report = out
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert (pytester.path / "out" / "fidelity.json").is_file()


def test_suites_none_runs_only_user_tests_with_fixtures(pytester, tiny_dir):
    pytester.makepyfile(
        """
        def test_own(analog_pair, teacher, analog, fidelity_record):
            assert analog_pair.same_tokenizer
            assert teacher.info["sha256"] == analog.info["sha256"]
            fidelity_record("parameter_fraction", analog_pair.parameter_fraction, max=0.05)
        """
    )
    report = pytester.path / "fidelity"
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), "--analog-suites=none", f"--analog-report={report}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*parameter_fraction = 1 fails <= 0.05*"])
    data = json.loads((report / "fidelity.json").read_text())
    assert [c["id"] for c in data["criteria"]] == ["suites_none_runs_only_user_tests_with_fixtures::test_own"]


def test_different_tokenizers_skip_logits_and_align_words(pytester, tiny_dir, tiny_other_tok_dir):
    report = pytester.path / "fidelity"
    result = pytester.runpytest(*models(tiny_dir, tiny_other_tok_dir), *FAST, f"--analog-report={report}", "-rs")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    result.stdout.fnmatch_lines(["*the two tokenizers differ*"])
    data = json.loads((report / "fidelity.json").read_text())
    assert data["capture"]["alignment"] == "word"
    assert not data["models"]["same_tokenizer"]


def test_measurements_are_cached(pytester, tiny_dir):
    cache = pytester.path / "cache"
    args = [*models(tiny_dir, tiny_dir), *FAST, f"--analog-cache={cache}", "--analog-report=out"]
    pytester.runpytest(*args).assert_outcomes(passed=17)
    entries = list((cache / "representation").glob("*.json"))
    assert len(entries) == 1
    pytester.runpytest(*args).assert_outcomes(passed=17)
    assert json.loads((pytester.path / "out" / "fidelity.json").read_text())["capture"]["cached"] is True
    entries[0].write_text(entries[0].read_text().replace('"cka"', '"cka_"', 1))  # corrupt it
    pytester.runpytest(*args).assert_outcomes(passed=17)
    assert json.loads((pytester.path / "out" / "fidelity.json").read_text())["capture"]["cached"] is False


def test_a_failing_measurement_is_reported_once_and_not_retried(pytester, tiny_dir, monkeypatch):
    import pytest_analog.suites.representation.analog

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pytest_analog.suites.representation.analog, "measure", broken)
    report = pytester.path / "fidelity"
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *FAST, f"--analog-report={report}", "--analog-suites=embeddings")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(calls) == 1
    result.assert_outcomes(errors=2)
    data = json.loads((report / "fidelity.json").read_text())
    assert data["verdict"] == "fail" and data["error"] == "RuntimeError: out of memory"


def test_suites_are_collected_whatever_python_files_says(pytester, tiny_dir):
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *FAST, "-o", "python_files=check_*.py", "--analog-suites=embeddings")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_embeddings.py*"])


def test_fidelity_record_without_models_and_twice_in_one_test(pytester):
    pytester.makepyfile(
        """
        def test_once(fidelity_record):
            fidelity_record("my_metric", 0.8, min=0.5)

        def test_twice(fidelity_record):
            fidelity_record("a", 1.0)
            fidelity_record("b", 2.0)

        def test_both_bounds(fidelity_record):
            fidelity_record("c", 0.5, min=0.1, max=0.9)

        def test_bad_score(fidelity_record):
            fidelity_record("d", 0.5, min=0.1, score="adjusted")
        """
    )
    result = pytester.runpytest("--analog-report=out")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines([
        "*fidelity_record was called twice in test_twice; record one criterion per test*",
        "*fidelity_record('c'): give min or max, not both*",
        "*fidelity_record('d'): gate score must be 'raw' or 'corrected', got 'adjusted'*",
    ])
    data = json.loads((pytester.path / "out" / "fidelity.json").read_text())
    assert [(c["metric"], c["passed"]) for c in data["criteria"]] == [("my_metric", True), ("a", None)]
    assert "models" not in data
