"""Gating against a teacher reference (issue 14): one code path with the live gate, the teacher never
loaded, a second analog against a cached teacher runs only the analog, bad references refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from pytest_analog.reference import cli, store
from tests.conftest import write_yaml

QUICK = ["--analog-max-prompts=24", "--analog-suites=representation,embeddings,logits"]


def values(report) -> dict:
    return {c["id"]: (c["value"], c.get("chance")) for c in report["criteria"]}


def read_report(folder):
    return json.loads((folder / "fidelity.json").read_text())


@pytest.fixture
def loads(monkeypatch):
    """The model references `models.load_model` is called with, in this process (by the gate or a reference build)."""
    from pytest_analog import models, session
    from pytest_analog.reference import cli

    seen, real = [], models.load_model
    for module in (session, cli):
        monkeypatch.setattr(module, "load_model", lambda ref, **kw: seen.append(str(getattr(ref, "ref", ref))) or real(ref, **kw))
    return seen


@pytest.fixture
def reference(tmp_path, tiny_dir):
    """A reference of a copy of the tiny teacher (elsewhere, by the same name), whose files are then deleted."""
    teacher = shutil.copytree(tiny_dir, tmp_path / "elsewhere" / tiny_dir.name)
    out = tmp_path / "ref"
    assert cli.main(["build", f"--teacher={teacher}", f"--out={out}", "--max-prompts=24",
                     "--suites=representation,embeddings,logits", "--device=cpu"]) == 0
    shutil.rmtree(teacher)
    return out


def test_the_gate_from_a_reference_gives_the_live_gates_values_without_the_teacher(pytester, tiny_dir, tiny_random_dir,
                                                                                  reference, loads):
    live = pytester.runpytest(f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_random_dir}", *QUICK,
                              "-p", "no:cacheprovider", "--analog-report=live")
    loads.clear()
    cold = pytester.runpytest(f"--analog-reference={reference}", f"--analog-student={tiny_random_dir}", *QUICK,
                              "-p", "no:cacheprovider", "--analog-report=cold")
    assert cold.ret == live.ret
    assert loads == [str(tiny_random_dir)]  # only the analog was loaded
    expected, got = read_report(pytester.path / "live"), read_report(pytester.path / "cold")
    assert len(got["criteria"]) == len(expected["criteria"]) > 10
    assert values(got) == values(expected)  # float32 on the CPU: the same numbers
    assert got["reference"]["id"] == store.load(reference).id and got["reference"]["source"] == "file"
    assert expected["reference"]["source"] == "memory" and expected["reference"]["id"] == got["reference"]["id"]
    assert got["models"]["teacher"]["sha256"] == expected["models"]["teacher"]["sha256"]


def test_a_second_analog_against_a_cached_teacher_runs_only_the_analog(pytester, tiny_dir, tiny_random_dir, loads):
    common = [f"--analog-teacher={tiny_dir}", *QUICK, f"--analog-cache={pytester.path / 'cache'}"]
    assert pytester.runpytest(*common, f"--analog-student={tiny_dir}").ret == 0
    assert sorted(loads) == sorted([str(tiny_dir)] * 2)
    loads.clear()
    pytester.runpytest(*common, f"--analog-student={tiny_random_dir}")
    assert loads == [str(tiny_random_dir)]


def test_an_analog_against_its_own_reference_matches_itself(pytester, tiny_dir, tmp_path):
    out = tmp_path / "self"
    assert cli.main(["build", f"--teacher={tiny_dir}", f"--out={out}", "--max-prompts=24", "--device=cpu",
                     "--suites=representation,logits"]) == 0
    result = pytester.runpytest(f"--analog-reference={out}", f"--analog-student={tiny_dir}", "--analog-max-prompts=24",
                                "--analog-suites=representation,logits", "--analog-report=r", "-p", "no:cacheprovider")
    report = read_report(pytester.path / "r")
    cka = [c["value"] for c in report["criteria"] if c["metric"] == "cka"]
    assert cka and min(cka) > 0.999
    kl = next(c["value"] for c in report["criteria"] if c["metric"] == "kl")
    assert kl == pytest.approx(0.0, abs=1e-6)
    assert result.ret == 0


@pytest.mark.parametrize("damage, message", [
    (lambda ref: (ref / "representation.safetensors").write_bytes(b"x" + (ref / "representation.safetensors").read_bytes()[1:]),
     "is refused: its file representation.safetensors was changed"),
    (lambda ref: shutil.rmtree(ref), "does not exist; build one with: analog-reference build"),
    (lambda ref: (ref / store.MANIFEST).write_text("{}"), "is not a teacher reference"),
])
def test_a_bad_reference_is_one_usage_error_before_the_analog_loads(pytester, tiny_random_dir, reference, loads,
                                                                    damage, message):
    damage(reference)
    result = pytester.runpytest(f"--analog-reference={reference}", f"--analog-student={tiny_random_dir}", *QUICK)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: *{message}*"])
    assert loads == []


def test_a_reference_built_with_other_settings_is_refused(pytester, tiny_random_dir, reference, tmp_path):
    config = write_yaml(tmp_path / "analog.yaml", {"version": 2, "layers": {"teacher": 2}})
    result = pytester.runpytest(f"--analog-reference={reference}", f"--analog-student={tiny_random_dir}", *QUICK,
                                f"--analog-config={config}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *was built with other settings than this run asks for (settings.layers.teacher: built with *, this run reads 2)*"])
    fewer = pytester.runpytest(f"--analog-reference={reference}", f"--analog-student={tiny_random_dir}",
                               "--analog-max-prompts=12", "--analog-suites=representation")
    assert fewer.ret == pytest.ExitCode.USAGE_ERROR


def test_a_reference_without_a_suites_part_is_refused(pytester, tiny_random_dir, reference):
    result = pytester.runpytest(f"--analog-reference={reference}", f"--analog-student={tiny_random_dir}",
                                "--analog-max-prompts=24", "--analog-suites=steering")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *holds no 'steering' part*"])


def test_a_reference_with_logits_serves_a_run_without_and_one_without_refuses_the_logits_suite(
        pytester, tiny_dir, tiny_random_dir, reference, tmp_path):
    alone = pytester.runpytest(f"--analog-reference={reference}", f"--analog-student={tiny_random_dir}",
                               "--analog-max-prompts=24", "--analog-suites=representation", "--analog-report=r")
    assert alone.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert [c for c in read_report(pytester.path / "r")["criteria"] if c["metric"] == "cka"]
    out = tmp_path / "no-logits"
    assert cli.main(["build", f"--teacher={tiny_dir}", f"--out={out}", "--max-prompts=24", "--device=cpu",
                     "--suites=representation"]) == 0
    assert not [n for n in store.load(out).part("representation").tensors if n.startswith("logits.")]
    result = pytester.runpytest(f"--analog-reference={out}", f"--analog-student={tiny_random_dir}",
                                "--analog-max-prompts=24", "--analog-suites=representation,logits")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *was built with other settings than this run asks for (inputs.with_logits: built with false, this run reads true)*"])


@pytest.mark.parametrize("args, message", [
    (["--analog-teacher=x", "--analog-reference=y", "--analog-student=z"], "were both given; gate against one"),
    (["--analog-reference=y"], "--analog-reference was given without --analog-student"),
])
def test_reference_option_mistakes_are_usage_errors(pytester, args, message):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: *{message}*"])


def test_verify_recomputes_the_reference_from_its_teacher(tmp_path, tiny_dir, tiny_random_dir, capsys):
    out = tmp_path / "ref"
    common = ["--max-prompts=12", "--suites=representation", "--device=cpu"]
    assert cli.main(["build", f"--teacher={tiny_dir}", f"--out={out}", *common]) == 0
    capsys.readouterr()
    assert cli.main(["verify", str(out), f"--teacher={tiny_dir}", *common]) == 0
    said = capsys.readouterr().out
    assert "teacher files: the same" in said and "representation: recomputed, the same" in said
    assert cli.main(["verify", str(out), f"--teacher={tiny_random_dir}", *common]) == 1
    said = capsys.readouterr().out
    assert "teacher files: differ" in said and "representation: recomputed, differs: tensor" in said
    assert f"is NOT the teacher {tiny_random_dir}'s" in said
    (out / "representation.json").write_text("{}")
    assert cli.main(["verify", str(out), f"--teacher={tiny_dir}", *common]) == 4
    assert "representation.json was changed" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["build", "--teacher=t", "--out=r", "--max-prompts=zero"], "argument --max-prompts: expected an integer >= 1, got 'zero'"),
    (["verify", "r"], "the following arguments are required: --teacher"),
    (["build", "--teacher=t"], "the following arguments are required: --out"),
])
def test_command_line_mistakes_are_one_line_and_exit_4(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("analog-reference ") and message in err


def test_an_unknown_suite_is_one_line_and_exit_4(capsys, tmp_path):
    """--suites is read once --conftest files have added their suites: the known names, then any model."""
    assert cli.main(["build", "--teacher=t", f"--out={tmp_path / 'r'}", "--suites=bogus"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("analog-reference: error: --suites: expected all, none or a comma-separated list of representation")
    (tmp_path / "conftest.py").write_text("X = 1\n")
    for conftest, said in (("nope.py", "no such Python file"), (tmp_path / "conftest.py", "it defines no pytest_analog_suites hook")):
        assert cli.main(["build", "--teacher=t", f"--out={tmp_path / 'r'}", f"--conftest={conftest}"]) == 4
        assert f"--conftest={conftest}: {said}" in capsys.readouterr().err


def test_build_refuses_a_folder_that_is_not_a_reference(tmp_path, tiny_dir, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    assert cli.main(["build", f"--teacher={tiny_dir}", f"--out={tmp_path / 'mine'}", "--suites=representation"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not a teacher reference" in err
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"


def test_a_reference_built_with_a_custom_prompt_set_is_keyed_by_the_prompts_content(
        pytester, tiny_dir, tiny_random_dir, tmp_path, monkeypatch):
    """Issue 22 item 7: built with a relative --config in its own folder, the reference serves a gate whose
    config names the same prompts by another path, and one whose config is a byte-identical copy elsewhere."""
    from pytest_analog.prompts import load_prompts

    home = tmp_path / "home"
    home.mkdir()
    (home / "mine.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in load_prompts("default").texts[:12]))
    write_yaml(home / "analog.yaml", {"version": 2, "prompts": {"set": "mine.jsonl"}})
    monkeypatch.chdir(home)
    assert cli.main(["build", f"--teacher={tiny_dir}", "--out=ref", "--config=analog.yaml", "--max-prompts=12",
                     "--suites=representation", "--device=cpu"]) == 0
    copy = shutil.copytree(home, tmp_path / "copy", ignore=shutil.ignore_patterns("ref"))
    for config in (home / "analog.yaml", copy / "analog.yaml"):
        result = pytester.runpytest(f"--analog-reference={home / 'ref'}", f"--analog-student={tiny_random_dir}",
                                    f"--analog-config={config}", "--analog-max-prompts=12", "--analog-suites=representation",
                                    "-p", "no:cacheprovider")
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stderr.str()
    (copy / "mine.jsonl").write_text(json.dumps({"text": "another prompt"}) + "\n")
    other = pytester.runpytest(f"--analog-reference={home / 'ref'}", f"--analog-student={tiny_random_dir}",
                               f"--analog-config={copy / 'analog.yaml'}", "--analog-max-prompts=12", "--analog-suites=representation")
    assert other.ret == pytest.ExitCode.USAGE_ERROR
    other.stderr.fnmatch_lines(["ERROR: *built with other settings than this run asks for (inputs.prompts: built with *"])
