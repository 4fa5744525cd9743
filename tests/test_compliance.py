"""Release compliance: each check passing and failing on constructed release folders, and the suite end to end."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_analog.suites.compliance import checks as compliance
from pytest_analog.config import load_config
from pytest_analog.errors import AnalogError
from pytest_analog.models import ModelSource, resolve_source
from tests.conftest import save_model, tiny_llama, write_yaml

RULES = load_config().compliance
CARD = """---
license: apache-2.0
datasets: [HuggingFaceFW/fineweb-edu]
---
# tiny-analog

## Model details
A 3-block Llama analog of the teacher (d=32), 3.6 % of its parameters.

## Training procedure
Distilled with forward KL at T=2 for 1000 steps; see distill.yaml.

## Training data
Prompts from the shipped default set.

## Intended use
Research on the teacher's internals: interpretability and steering studies.
"""
MIT = """MIT License

Copyright (c) 2025 A Lab

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction...
"""


def release_dir(tiny_dir: Path, tmp_path: Path, files: dict[str, str]) -> compliance.Release:
    """A copy of the tiny model plus ``files`` (name -> text), as its release folder."""
    folder = tmp_path / "analog"
    shutil.copytree(tiny_dir, folder)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return compliance.release_of(resolve_source(str(folder)))


# -- model card ----------------------------------------------------------------------------


def test_model_card_with_every_section_passes(tiny_dir, tmp_path):
    check = compliance.model_card(release_dir(tiny_dir, tmp_path, {"README.md": CARD}), RULES.model_card.sections)
    assert check.passed is True
    assert "architecture ('Model details')" in check.message and "intended_use ('Intended use')" in check.message


def test_model_card_missing_sections_names_them_and_the_file(tiny_dir, tmp_path):
    card = CARD.split("## Training data")[0] + "## Training data\n\n## Uses\nResearch.\n"  # empty data section
    card = card.replace("datasets: [HuggingFaceFW/fineweb-edu]\n", "").replace("## Model details", "## About")
    check = compliance.model_card(release_dir(tiny_dir, tmp_path, {"README.md": card}), RULES.model_card.sections)
    assert check.passed is False
    assert "lacks a section on architecture, data" in check.message
    assert str(tmp_path / "analog" / "README.md") in check.message
    assert "'model details'" in check.message  # says what heading would do


def test_model_card_data_from_front_matter_and_headings_in_code_ignored(tiny_dir, tmp_path):
    card = CARD.replace("## Training data\nPrompts from the shipped default set.\n", "```\n## Training data\nnot a heading\n```\n")
    release = release_dir(tiny_dir, tmp_path, {"README.md": card})
    assert "data ('front matter 'datasets'')" in compliance.model_card(release, RULES.model_card.sections).message
    no_datasets = card.replace("datasets: [HuggingFaceFW/fineweb-edu]\n", "")
    (release.folder / "README.md").write_text(no_datasets)
    assert compliance.model_card(release, RULES.model_card.sections).passed is False


def test_no_model_card_says_where_it_looked(tiny_dir, tmp_path):
    check = compliance.model_card(release_dir(tiny_dir, tmp_path, {}), RULES.model_card.sections)
    assert check.passed is False
    assert check.message == f"no model card: looked for README.md or MODEL_CARD.md in {tmp_path / 'analog'}"


# -- licence -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "passed", "text"),
    [
        ({"README.md": CARD}, True, "licence apache-2.0 (from 'license:' in the front matter of README.md)"),
        ({"README.md": CARD.replace("apache-2.0", "other"), "LICENSE": MIT}, True, "licence mit (from the text of LICENSE)"),
        ({"LICENSE.txt": MIT.replace("MIT License", "") + "\nNeither the name..."}, True, "licence mit"),
        ({"README.md": CARD.replace("apache-2.0", "llama3")}, False, "licence 'llama3' (from 'license:' in the front matter"),
        ({"LICENSE": "All rights reserved."}, False, "(not a licence text pytest-analog recognises)"),
        ({}, False, "a LICENSE, LICENCE or COPYING file in"),
    ],
    ids=["card", "license-file", "license-txt", "not-permissive", "unknown-text", "none"],
)
def test_license(tiny_dir, tmp_path, files, passed, text):
    check = compliance.license_check(release_dir(tiny_dir, tmp_path, files), RULES.license.allowed)
    assert check.passed is passed
    assert text in check.message


def test_license_texts_are_recognised():
    bsd3 = "Redistribution and use in source and binary forms, with or without\nmodification... 3. Neither the name of"
    apache = "Apache License\n   Version 2.0, January 2004\n   http://www.apache.org/licenses/"
    for text, spdx in ((bsd3, "bsd-3-clause"), (bsd3.split("3.")[0], "bsd-2-clause"), (apache, "apache-2.0")):
        folder = Path(__import__("tempfile").mkdtemp())
        (folder / "LICENSE").write_text(text)
        assert compliance.license_of(compliance.Release("x", folder))[0] == spdx


# -- training code, weights, family, size, lag ---------------------------------------------------


@pytest.mark.parametrize(
    ("files", "passed", "text"),
    [
        ({"distill_config.yaml": "teacher: x\n"}, True, "training code or config distill_config.yaml"),
        ({"scripts/train.py": "print()\n"}, True, "scripts/train.py"),
        ({"README.md": CARD.replace("see distill.yaml.", "code: https://github.com/lab/distill")}, True, "section 'Training procedure'"),
        ({"README.md": CARD}, False, "no training code: no file matching *.py"),
        ({".git/hooks/x.py": ""}, False, "no training code"),
    ],
    ids=["distill-config", "script-in-subfolder", "card-link", "card-without-link", "hidden-folder"],
)
def test_training_code(tiny_dir, tmp_path, files, passed, text):
    rule = RULES.training_code
    check = compliance.training_code(release_dir(tiny_dir, tmp_path, files), rule.files, rule.sections)
    assert check.passed is passed
    assert text in check.message


def test_safetensors(tiny_dir, tmp_path):
    assert compliance.safetensors_weights(resolve_source(str(tiny_dir))).passed is True
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    check = compliance.safetensors_weights(ModelSource(str(folder), "directory", folder))
    assert check.passed is False
    assert f"found pytorch_model.bin in {folder}" in check.message


def test_same_family():
    from transformers import GPT2Config, LlamaConfig

    assert compliance.same_family(LlamaConfig().model_type, LlamaConfig(hidden_size=64).model_type).passed is True
    check = compliance.same_family(LlamaConfig().model_type, GPT2Config().model_type)
    assert check.passed is False
    assert check.message == "the analog's family is 'gpt2' but the teacher's is 'llama' (config model_type)"


def test_parameter_fraction_and_release_lag_values():
    assert compliance.parameter_fraction({"teacher": {"parameters": 1_000_000}, "analog": {"parameters": 20_000}}).value == pytest.approx(0.02)
    lag = compliance.release_lag("2025-01-15", "2025-03-16")
    assert lag.value == pytest.approx(60 / (365.25 / 12))
    assert compliance.release_lag("2025-01-15", "2025-01-10").value < 0


def test_release_dates_in_yaml(tmp_path):
    config = load_config(write_yaml(tmp_path / "a.yaml", {"compliance": {"release_dates": {"teacher": "2025-01-15"}}}))
    assert config.compliance.release_dates.teacher == "2025-01-15"
    (tmp_path / "b.yaml").write_text("compliance:\n  release_dates:\n    analog: 2025-03-01\n")  # YAML reads a date
    assert load_config(tmp_path / "b.yaml").compliance.release_dates.analog == "2025-03-01"
    with pytest.raises(AnalogError, match="'compliance.release_dates.analog' must be null or a date YYYY-MM-DD, got 'March'"):
        load_config(write_yaml(tmp_path / "c.yaml", {"compliance": {"release_dates": {"analog": "March"}}}))


@pytest.mark.slow
def test_lone_gguf_says_what_it_cannot_check(smollm2_gguf):
    source = resolve_source(str(smollm2_gguf))
    release = compliance.release_of(source)
    card = compliance.model_card(release, RULES.model_card.sections)
    assert card.passed is None
    assert card.message.startswith(f"cannot check: {smollm2_gguf} is a single .gguf file, which carries no model card")
    assert compliance.training_code(release, ["*.py"], []).passed is None  # the package folder's __init__.py is no release
    licence = compliance.license_check(release, RULES.license.allowed)
    assert (licence.passed, licence.message) == (True, f"licence apache-2.0 (from 'general.license' in {smollm2_gguf.name}) is permissive")
    assert compliance.safetensors_weights(source).passed is False


# -- the suite end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, bos_tokenizer) -> Path:
    """A tiny teacher (4 blocks, d=192) 28 times the size of ``tiny_dir``: a 3.6 % analog."""
    return save_model(tiny_llama(bos_tokenizer, layers=4, hidden=192), bos_tokenizer, tmp_path_factory.mktemp("big") / "teacher")


def test_compliant_release_passes_every_criterion(pytester, teacher_dir, tiny_dir):
    folder = pytester.path / "analog"
    shutil.copytree(tiny_dir, folder)
    (folder / "README.md").write_text(CARD)
    (folder / "distill.yaml").write_text("temperature: 2\n")
    config = write_yaml(pytester.path / "analog.yaml", {"compliance": {"release_dates": {"teacher": "2025-01-15", "analog": "2025-03-01"}}})
    result = pytester.runpytest(
        f"--analog-teacher={teacher_dir}", f"--analog-student={folder}", "--analog-suites=compliance",
        f"--analog-config={config}", "--junitxml=junit.xml", "--analog-report=fidelity", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=9)
    markdown = (pytester.path / "fidelity" / "fidelity.md").read_text()
    assert "**Release compliance**" in markdown and "licence apache-2.0 (from 'license:' in the front matter of README.md)" in markdown
    assert "analog released 1.48 months after the teacher (2025-01-15 -&gt; 2025-03-01)" in (pytester.path / "fidelity" / "fidelity.html").read_text()
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*analog fidelity: PASS - 9/9 gated criteria passed*"])
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert props["analog_metric"] and "analog_passed" in props


def test_non_compliant_release_fails_with_what_is_missing(pytester, tiny_dir, tiny_other_tok_dir):
    result = pytester.runpytest(
        f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_other_tok_dir}", "--analog-suites=compliance",
        "-p", "no:cacheprovider", "-rs",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=4, skipped=2)  # fraction >= min, same family, safetensors pass; lag: no dates
    result.stdout.fnmatch_lines([
        "*parameter_fraction = 0.4654 fails <= 0.05: analog has 24,888 parameters, 46.54% of the teacher's 53,472",
        f"*model_card = 0 fails >= 1: no model card: looked for README.md or MODEL_CARD.md in {tiny_other_tok_dir}*",
        "*license = 0 fails >= 1: no licence found: looked for*",
        "*SKIPPED*no release dates: set compliance.release_dates.teacher and .analog*",
    ])


def test_required_false_reports_only(pytester, tiny_dir, tiny_random_dir):
    config = write_yaml(pytester.path / "analog.yaml", {"gates": {
        "model_card": {"required": False}, "license": {"required": False}, "training_code": {"required": False},
        "parameter_fraction": {"min": None, "max": None},
    }})
    result = pytester.runpytest(
        f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_random_dir}", "--analog-suites=compliance",
        f"--analog-config={config}", "-p", "no:cacheprovider",
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*analog fidelity: PASS - 2/2 gated criteria passed, 0 failed, 5 informational*", "*compliance::test_model_card * 0 * info*"])
