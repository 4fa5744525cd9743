"""``analog-leaderboard verify``: against a teacher reference (--reference) and by rerunning the gate (--rerun)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_analog.config import load_config
from pytest_analog.criterion import chance_corrected
from pytest_analog.leaderboard import check_submission, rerun
from pytest_analog.leaderboard.board import board_gates
from pytest_analog.leaderboard.cli import main
from pytest_analog.leaderboard.rerun import DEFAULT_TOLERANCE, rerun_gate, unreproduced, values_agree
from pytest_analog.part import Part
from pytest_analog.reference import store
from tests.test_leaderboard import ROOT, bundles, scored_against, sealed, write  # noqa: F401  (a fixture and bundle makers)


def row(name: str, value: float | None, passed: bool | None = True) -> dict:
    return {"id": name, "value": value, "passed": passed}


# -- the comparison --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("submitted", "rerun_value", "agree"),
    [
        (0.43, 0.43, True),
        (0.43, 0.43 + 1e-6, True),  # float noise of another machine
        (0.43, 0.43 + 0.99e-4, True),  # absolute below 1
        (0.43, 0.43 + 1.01e-4, False),
        (0.0, -1.01e-4, False),
        (50.0, 50.004, True),  # relative above 1: 8e-5 of 50
        (50.0, 50.006, False),
        (None, None, True),  # not measured either time (e.g. a criterion that needs the teacher)
        (None, 0.5, False),
        (0.5, None, False),
    ],
)
def test_values_agree_within_the_tolerance_absolute_below_one_relative_above(submitted, rerun_value, agree):
    assert values_agree(submitted, rerun_value, DEFAULT_TOLERANCE) is agree
    if submitted is not None and rerun_value is not None:  # the rule written out: |a - b| <= tol * max(1, |a|, |b|)
        bound = DEFAULT_TOLERANCE * max(1.0, abs(submitted), abs(rerun_value))
        assert (abs(submitted - rerun_value) <= bound) is agree


def test_unreproduced_names_each_criterion_that_differs_missing_or_extra_or_flips_its_verdict():
    submitted = [row("a", 0.5), row("b", 0.25, False), row("c", None, None), row("d", 0.9), row("e", 0.9)]
    rerun_rows = [row("e", 0.9), row("a", 0.5 + 1e-7), row("b", 0.26, False), row("c", None, None), row("d", 0.9, False),
                  row("f", 0.1, False)]
    assert unreproduced(submitted, rerun_rows) == [
        "b: submitted 0.25, rerun 0.26",
        "d: the value reproduces but not the verdict: submitted passed=True, rerun passed=False",
        "f: not in the submission, measured 0.1 by the rerun",
    ]
    assert unreproduced(submitted, rerun_rows[:3]) == [
        "b: submitted 0.25, rerun 0.26",
        "c: submitted no value, not measured by the rerun",
        "d: submitted 0.9, not measured by the rerun",
    ]
    assert unreproduced(submitted, rerun_rows, tolerance=0.1)[0] == "d: the value reproduces but not the verdict: submitted passed=True, rerun passed=False"
    assert unreproduced(submitted, submitted) == []


def test_rerun_runs_pytest_on_the_bundles_suites_and_settings_under_the_board_gates(bundles, tmp_path, monkeypatch):
    """The command line of the rerun (the end-to-end rerun against a reference needs the session's --analog-reference):
    isolated from any pytest configuration on the machine, judged under the gates it is given."""
    bundle = copy.deepcopy(bundles["same"])
    for config in (bundle["config"], bundle["report"]["config"]):
        config["gates"]["embedding_geometry"]["min"] = -1.0  # the submitter's own gate: not what the rerun judges by
    seen = {}

    def fake_run(args, cwd, env, **kwargs):
        options = dict(a.split("=", 1) for a in args if a.startswith("--analog-"))
        seen.update(args=args, cwd=cwd, env=env, options=options, config=json.loads(Path(options["--analog-config"]).read_text()),
                    ini=Path(args[args.index("-c") + 1]).read_text())
        Path(options["--analog-report"]).mkdir()
        (Path(options["--analog-report"]) / "fidelity.json").write_text(json.dumps({"criteria": []}))
        return subprocess.CompletedProcess(args, 1, "", "")

    monkeypatch.setattr(rerun.subprocess, "run", fake_run)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p planted")
    monkeypatch.setenv("PYTEST_PLUGINS", "planted")
    reference = tmp_path / "ref"
    reference.mkdir()
    monkeypatch.chdir(tmp_path)
    gates = load_config().gates
    assert rerun_gate(bundle, "analog-org/analog", gates, reference="ref") == {"criteria": []}
    folder = Path(seen["cwd"])
    assert seen["args"][1:9] == ["-m", "pytest", "-c", str(folder / "pytest.ini"), f"--rootdir={folder}", "--noconftest",
                                 "-p", "no:cacheprovider"]
    assert seen["ini"] == "[pytest]\n" and seen["args"][-1] == "-q"
    assert not [name for name in seen["env"] if name.startswith("PYTEST_")] and seen["env"]["PATH"] == os.environ["PATH"]
    assert seen["options"] == {
        "--analog-reference": str(reference),  # made absolute: pytest runs in an empty folder
        "--analog-student": "analog-org/analog",  # a hub id as it is
        "--analog-config": seen["options"]["--analog-config"],
        "--analog-report": seen["options"]["--analog-report"],
        "--analog-suites": "embeddings,compliance",
        "--analog-dtype": "float32",
    }
    assert seen["config"] == {**bundle["config"], "gates": dataclasses.asdict(gates)}  # its settings, the board's gates
    assert Path(seen["options"]["--analog-config"]).parent == folder != tmp_path


# -- verify --reference ----------------------------------------------------------------------------


@pytest.fixture
def scored(bundles, bos_tokenizer, tmp_path) -> tuple[Path, Path]:
    """A teacher reference folder and a bundle scored against it (its reference section names it)."""
    bundle = scored_against(bundles["same"], "0" * 64)
    teacher = bundle["report"]["reference"]["teacher"]
    part = Part({"rows": torch.arange(6.0).reshape(2, 3)}, {"tokens": ["a", "b"]}, {"settings": {"seed": 0}, "inputs": {}})
    built = store.build(teacher, {"embeddings": part}, store.tokenizer_files(bos_tokenizer), {"torch": torch.__version__})
    reference = store.write(built, tmp_path / "ref")
    bundle["report"]["reference"].update(id=reference.id, source="file", path=str(reference.path), parts=["embeddings"])
    return reference.path, write(tmp_path, "scored.json", sealed(bundle))


def test_verify_against_the_reference_the_bundle_names(scored, tiny_random_dir, capsys):
    reference, bundle = scored
    assert main(["verify", str(bundle), "--reference", str(reference), "--student", str(tiny_random_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "submission: consistent (its own sha256, file hashes and verdicts)",
        f"reference: the one the submission was scored against ({store.load(reference).id[:12]}…)",
        "analog: the same files as submitted",
    ]


def test_verify_against_another_reference_says_which_and_fails(scored, bundles, bos_tokenizer, tiny_random_dir, tmp_path, capsys):
    _, bundle = scored
    teacher = json.loads(bundle.read_text())["report"]["reference"]["teacher"]
    logits = Part({}, {}, {"settings": {"top_k": 64}, "inputs": {}})
    other = store.write(store.build(teacher, {"logits": logits}, store.tokenizer_files(bos_tokenizer), {}), tmp_path / "other")
    submitted = json.loads(bundle.read_text())["report"]["reference"]["id"]
    assert main(["verify", str(bundle), "--reference", str(other.path), "--student", str(tiny_random_dir), "--rerun"]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"reference: NOT the submission's: it is reference {other.id[:12]}…, the submission was scored against reference {submitted[:12]}…",
        "analog: the same files as submitted",
        "rerun: not run (the submission, its models or its reference do not match)",
    ]


def test_verify_finds_a_teacher_record_that_is_not_the_references(scored, tiny_random_dir, capsys):
    reference, path = scored
    bundle = json.loads(path.read_text())
    for record in (bundle["report"]["models"]["teacher"], bundle["report"]["reference"]["teacher"]):
        record["id"] = "a-larger/teacher"  # consistent within the bundle, but not what the reference records
    write(path.parent, path.name, sealed(bundle))
    assert main(["verify", str(path), "--reference", str(reference), "--student", str(tiny_random_dir)]) == 1
    assert capsys.readouterr().out.splitlines()[1] == (
        "reference: NOT the submission's: its id is the submission's, but the submission's record of its teacher is not the reference's"
    )


def test_verify_against_a_reference_of_a_bundle_that_names_none(scored, bundles, tiny_random_dir, tmp_path, capsys):
    reference, _ = scored
    path = write(tmp_path, "compliance-only.json", scored_against(bundles["same"], None))
    assert main(["verify", str(path), "--reference", str(reference), "--student", str(tiny_random_dir)]) == 1
    assert capsys.readouterr().out.splitlines()[1] == (
        "reference: NOT the submission's: the submission names no teacher reference (no suite read the teacher's part); "
        "verify it with --teacher"
    )


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_tampered_or_missing_reference_is_refused_in_one_line_exit_4(scored, tiny_random_dir, capsys, damage):
    reference, bundle = scored
    if damage == "changed":
        part = reference / "embeddings.json"
        part.write_text(part.read_text().replace('"a"', '"z"'))
    else:
        reference = reference.parent / "nowhere"
    assert main(["verify", str(bundle), "--reference", str(reference), "--student", str(tiny_random_dir), "--rerun"]) == 4
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    expected = (f"teacher reference {reference} is refused: its file embeddings.json was changed (SHA-256 differs from the manifest)"
                if damage == "changed" else f"teacher reference {reference} does not exist")
    assert captured.err.startswith(f"analog-leaderboard: error: {expected}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "one of the arguments --teacher --reference is required"),
        (["--teacher", "t", "--reference", "r"], "argument --reference: not allowed with argument --teacher"),
        (["--teacher", "t", "--tolerance", "0.01"], "--tolerance applies to --rerun; add --rerun or leave it out"),
        (["--teacher", "t", "--rerun", "--tolerance", "-1"], "argument --tolerance: expected a number >= 0, got '-1'"),
        (["--teacher", "t", "--rerun", "--tolerance", "nan"], "argument --tolerance: expected a number >= 0, got 'nan'"),
    ],
    ids=["no-teacher", "both", "tolerance-without-rerun", "negative-tolerance", "nan-tolerance"],
)
def test_verify_option_mistakes_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["verify", "bundle.json", "--student", "s", *args])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"analog-leaderboard verify: error: {message}"


# -- verify --rerun (the live gate: --teacher) --------------------------------------------------------


def test_rerun_reproduces_an_honest_bundle_and_catches_a_forged_value(bundles, tmp_path, tiny_dir, tiny_random_dir, capsys):
    """A value edited on the same side of its threshold passes every consistency check; only the rerun finds it."""
    honest = write(tmp_path, "same.json", bundles["same"])
    models = ["--teacher", str(tiny_dir), "--student", str(tiny_random_dir), "--rerun"]
    assert main(["verify", str(honest), *models]) == 0
    criteria = bundles["same"]["report"]["criteria"]
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"rerun: running the gate (pytest) on the analog with the submission's settings under {board_gates().name}",
        f"rerun: all {len(criteria)} criteria reproduce within 0.0001",
    ]

    forged = copy.deepcopy(bundles["same"])
    geometry = next(c for c in forged["report"]["criteria"] if c["metric"] == "embedding_geometry")
    assert geometry["passed"] is False and geometry["threshold"] == 0.9
    submitted, geometry["value"] = geometry["value"], 0.5  # still failing: verdicts and counts stay consistent
    geometry["corrected"] = None if geometry.get("chance") is None else chance_corrected(0.5, geometry["chance"])
    path = write(tmp_path, "forged.json", sealed(forged))
    assert main(["verify", str(path), *models, "--tolerance", "0.001"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "submission: consistent (its own sha256, file hashes and verdicts)"
    assert out[-2:] == [
        f"rerun: 1 of {len(criteria)} criteria do not reproduce within 0.001 under {board_gates().name}:",
        f"  {geometry['id']}: submitted 0.5, rerun {submitted:.8g}",
    ]


def test_a_rerun_of_a_bundle_whose_settings_name_a_file_is_refused_in_one_line(bundles, tmp_path, tiny_dir, tiny_random_dir, capsys):
    """A path in the bundle's settings would have the rerun read a file the submitter chose on this machine."""
    bundle = copy.deepcopy(bundles["same"])
    for config in (bundle["config"], bundle["report"]["config"]):
        config["prompts"]["set"] = str(tmp_path / "gone.jsonl")  # the submitter's prompt file, or any file here
    path = write(tmp_path, "elsewhere.json", sealed(bundle))
    assert main(["verify", str(path), "--teacher", str(tiny_dir), "--student", str(tiny_random_dir), "--rerun"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"rerun: FAILED: the submission's config names a file (prompts.set: {tmp_path / 'gone.jsonl'}); a rerun reads "
        "shipped prompt sets, behaviours and tasks only: rerun the gate by hand with your own copy of that file"
    )


def test_a_rerun_that_cannot_run_says_why_in_one_line(bundles, tmp_path, tiny_dir, tiny_random_dir, capsys):
    bundle = copy.deepcopy(bundles["same"])
    for config in (bundle["config"], bundle["report"]["config"]):
        config["prompts"]["set"] = "not-shipped"  # a prompt set this version does not ship
    path = write(tmp_path, "elsewhere.json", sealed(bundle))
    assert main(["verify", str(path), "--teacher", str(tiny_dir), "--student", str(tiny_random_dir), "--rerun"]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("rerun: FAILED: the rerun wrote no report (pytest exit code 4): ERROR: ")
    assert "not-shipped" in last


# -- end to end: a submission scored against a reference, confirmed without the teacher ------------------


def test_a_submission_scored_against_a_reference_is_confirmed_by_a_rerun_and_a_tampered_reference_refused(
    tmp_path, tiny_dir, tiny_random_dir, capsys
):
    from pytest_analog.reference import cli as reference_cli

    teacher, out, bundle = shutil.copytree(tiny_dir, tmp_path / "teacher"), tmp_path / "ref", tmp_path / "bundle.json"
    quick = ["--max-prompts=8", "--suites=embeddings,compliance"]
    assert reference_cli.main(["build", f"--teacher={teacher}", f"--out={out}", *quick, "--device=cpu"]) == 0
    shutil.rmtree(teacher)  # from here on nobody holds the teacher
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    gate = subprocess.run(
        [sys.executable, "-m", "pytest", f"--analog-reference={out}", f"--analog-student={tiny_random_dir}",
         *(f"--analog-{option[2:]}" for option in quick), f"--analog-submit={bundle}", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert gate.returncode == 1 and bundle.is_file(), gate.stdout[-3000:] + gate.stderr[-3000:]  # the tiny analog fails
    submitted = json.loads(bundle.read_text())
    assert submitted["report"]["reference"]["id"] == store.load(out).id and submitted["report"]["reference"]["source"] == "file"
    assert check_submission(submitted) is None

    models = ["--reference", str(out), "--student", str(tiny_random_dir), "--rerun"]
    assert main(["verify", str(bundle), *models]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"rerun: all {len(submitted['report']['criteria'])} criteria reproduce within 0.0001"

    changed = out / next(name for name in store.load(out).manifest["files"] if not name.startswith("tokenizer/"))
    changed.write_bytes(changed.read_bytes() + b" ")
    assert main(["verify", str(bundle), *models]) == 4
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"analog-leaderboard: error: teacher reference {out} is refused: ")
