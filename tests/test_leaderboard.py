"""Submission bundles (--analog-submit), their schema, and the analog-leaderboard build/verify command."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_analog.criterion import Criterion, chance_corrected, summary, verdict
from pytest_analog.leaderboard import build_board, check_submission
from pytest_analog.leaderboard.cli import main
from pytest_analog.leaderboard.page import short_model_id
from pytest_analog.models import resolve_source, sha256_files
from pytest_analog.submission import (
    content_sha256, file_digests, nested_deeper_than, reference_model_files, schema_errors, weights_sha256, write_submission,
)
from tests.conftest import chromium

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tiny_dir, tiny_random_dir, tiny_other_tok_dir) -> dict[str, dict]:
    """Three real bundles from ``pytest --analog-submit``: analogs at 100 %, 47 % and 215 % of their teachers.

    One fresh process runs the plugin on the three pairs in turn (torch is imported once); "same" and
    "smaller" share a teacher.
    """
    folder = tmp_path_factory.mktemp("bundles")
    pairs = {"same": (tiny_dir, tiny_random_dir), "smaller": (tiny_dir, tiny_other_tok_dir), "larger": (tiny_other_tok_dir, tiny_dir)}
    runs = [
        [f"--analog-teacher={t}", f"--analog-student={s}", "--analog-suites=embeddings,compliance", "--analog-max-prompts=8",
         f"--analog-submit={folder / name}.json", "-p", "no:cacheprovider", "-q"]
        for name, (t, s) in pairs.items()
    ]
    script = f"import pytest, sys; sys.exit(max(int(pytest.main(args)) for args in {runs!r}))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", script], check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # the tiny analogs fail the gate
    assert run.stdout.count("submission: ") == 3
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in pairs}


def sealed(bundle: dict) -> dict:
    """The bundle with its own sha256 recomputed, as a forger who knows the format would."""
    bundle["sha256"] = content_sha256(bundle)
    return bundle


def resummed(bundle: dict) -> dict:
    """The bundle with its report's counts and verdict recomputed from its criteria rows (`criterion.summary`,
    `criterion.verdict`), resealed."""
    report = bundle["report"]
    criteria = [Criterion.from_dict(row) for row in report["criteria"]]
    report["summary"].update(summary(criteria))
    report["verdict"] = verdict(criteria, report.get("error"))
    return sealed(bundle)


def scored_against(bundle: dict, reference_id: str | None) -> dict:
    """A copy of ``bundle`` as a run against the teacher reference ``reference_id`` writes it (the report's
    reference section: its id and the teacher's record with its file digests), or naming none; resealed."""
    bundle = copy.deepcopy(bundle)
    report = bundle["report"]
    report.pop("reference", None)
    if reference_id:
        teacher = {**report["models"]["teacher"], "files": file_digests(bundle["models"]["teacher"])}
        report["reference"] = {"id": reference_id, "source": "memory", "path": None, "parts": ["representation"], "teacher": teacher}
    return sealed(bundle)


SHARED, OTHER = "1" * 64, "2" * 64  # two teacher references


def write(folder: Path, name: str, bundle) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(bundle if isinstance(bundle, str) else json.dumps(bundle))
    return path


# -- the bundle ----------------------------------------------------------------------------------


def test_bundle_follows_schema_and_hashes_every_file(bundles, tiny_dir, tiny_random_dir):
    bundle = bundles["same"]
    assert schema_errors(bundle) == []
    assert check_submission(bundle) is None
    assert bundle["config"] == bundle["report"]["config"]
    assert bundle["packages"]["torch"] and bundle["environment"]["python"]
    for role, folder in (("teacher", tiny_dir), ("analog", tiny_random_dir)):
        files = {f["name"]: f for f in bundle["models"][role]["files"]}
        assert set(files) == {p.name for p in folder.iterdir()}
        for path in folder.iterdir():  # what sha256sum prints
            assert files[path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert files[path.name]["size"] == path.stat().st_size
        assert {f["kind"] for f in files.values()} == {"weights", "config", "tokenizer"}
        assert files["model.safetensors"]["kind"] == "weights" and files["tokenizer.json"]["kind"] == "tokenizer"
        # the report's weight hash is recomputable from the bundle, and is what models.sha256_files computes
        source = resolve_source(str(folder))
        assert weights_sha256(bundle["models"][role]) == bundle["report"]["models"][role]["sha256"] == sha256_files(source.weight_files())


def test_a_bundle_scored_against_a_reference_takes_the_teacher_from_it(bundles, tiny_random_dir, tmp_path):
    """In reference mode (no teacher source) the teacher's files are the digests the reference records: the
    weight files found by their suffix, as on disk, so the report's weight hash follows from them."""
    live = scored_against(bundles["same"], SHARED)
    report = live["report"]
    path = write_submission(report, None, resolve_source(str(tiny_random_dir)), tmp_path / "bundle.json")
    bundle = json.loads(path.read_text())
    assert bundle["models"]["teacher"] == reference_model_files(report["reference"]["teacher"])
    hashed = [{k: v for k, v in f.items() if k != "size"} for f in live["models"]["teacher"]["files"]]
    # as a live run hashed them; a reference names a local teacher by its folder or file name, not its path
    expected = {**live["models"]["teacher"], "files": hashed, "id": Path(live["models"]["teacher"]["id"]).name}
    assert bundle["models"]["teacher"] == expected
    assert bundle["models"]["analog"] == live["models"]["analog"]
    assert check_submission(bundle) is None
    assert weights_sha256(bundle["models"]["teacher"]) == report["models"]["teacher"]["sha256"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.pop("models"), "at $: 'models' is a required property"),
        (lambda b: b["models"]["analog"]["files"][0].update(sha256="abc"), "at $.models.analog.files[0].sha256: 'abc' does not match"),
        (lambda b: b["report"].update(verdict="great"), "at $.report.verdict: 'great' is not one of"),
        (lambda b: b["report"]["criteria"][0].update(value="0.9"), "at $.report.criteria[0].value: '0.9' is not of type 'number', 'null'"),
        (lambda b: [f.update(kind="other") for f in b["models"]["teacher"]["files"]], "at $.models.teacher.files: "),
        (lambda b: b.update(submission_version=4), "it has submission version 4, written by a newer pytest-analog; "
                                                   "this one reads version 3: rerun the gate with --analog-submit under this version"),
        (lambda b: b.update(submission_version=2), "it has submission version 2, written by an older pytest-analog; "
                                                   "this one reads version 3: rerun the gate with --analog-submit under this version"),
        (lambda b: b.update(submission_version="3"), "at $.submission_version: 3 was expected"),
        (lambda b: b["report"]["reference"].update(id="abc"), "at $.report.reference.id: 'abc' does not match"),
        (lambda b: b["report"]["reference"]["teacher"].update(files={}), "at $.report.reference.teacher.files: {} should be non-empty"),
    ],
    ids=["no-models", "bad-digest", "bad-verdict", "value-as-string", "no-weights", "future-version", "older-version",
         "version-as-string", "bad-reference-id", "reference-without-files"],
)
def test_schema_rejects_bad_bundles(bundles, edit, message):
    bundle = scored_against(bundles["same"], SHARED)
    edit(bundle)
    errors = schema_errors(bundle)
    assert errors and errors[0].startswith(message), errors
    assert check_submission(sealed(bundle)).startswith(f"does not follow the submission schema: {message}")


def _fail_first_gated(bundle):
    """The bundle's failing size check (the analog is as large as its teacher), whatever order the suites ran in."""
    c = next(c for c in bundle["report"]["criteria"] if c["id"] == "compliance::test_parameter_fraction[max]")
    assert c["gated"] and c["passed"] is False
    return c


def _raise_score(bundle):
    c = _fail_first_gated(bundle)
    c["value"] = c["threshold"] + 1 if c["direction"] == "min" else c["threshold"] - 1  # an edited score, verdict left


def _flip_verdict(bundle):
    _fail_first_gated(bundle)["passed"] = True


def _lower_threshold(bundle):
    c = _fail_first_gated(bundle)
    c["threshold"], c["passed"] = c["value"], True
    s = bundle["report"]["summary"]
    s["passed"], s["failed"] = s["passed"] + 1, s["failed"] - 1


def _swap_weights(bundle):
    weights = next(f for f in bundle["models"]["analog"]["files"] if f["kind"] == "weights")
    weights["sha256"] = hashlib.sha256(b"other weights").hexdigest()


@pytest.mark.parametrize(
    ("edit", "seal", "reason"),
    [
        (_raise_score, False, "its content does not match its sha256: it was edited after pytest --analog-submit wrote it"),
        (_raise_score, True, "criterion compliance::test_parameter_fraction[max]: value -0.95 meets <= 0.05 but 'passed' is False"),
        (_flip_verdict, True, "criterion compliance::test_parameter_fraction[max]: value 1.0 fails <= 0.05 but 'passed' is True"),
        (_lower_threshold, True, "criterion compliance::test_parameter_fraction[max]: threshold max 1 is not the configured max 0.05 of parameter_fraction"),
        (_swap_weights, True, "the analog's weight files in the bundle hash to"),
        (lambda b: b["report"]["models"].update(parameter_fraction=0.01), True, "parameter_fraction 0.01 is not the analog's / teacher's parameters (1)"),
        (lambda b: b["report"].update(verdict="pass"), True, "its verdict 'pass' is not the verdict of its criteria ('fail')"),
        (lambda b: b["config"]["gates"]["cka"].update(min=0.1), True, "its config differs from the config in its report"),
        (lambda b: b["report"]["reference"]["teacher"].update(sha256=hashlib.sha256(b"other").hexdigest()), True,
         "its teacher is not the teacher of the reference it was scored against (weights or files differ)"),
        (lambda b: b["report"]["reference"]["teacher"]["files"].popitem(), True,
         "its teacher is not the teacher of the reference it was scored against (weights or files differ)"),
    ],
    ids=["edited-score", "edited-score-resealed", "flipped-verdict", "lowered-threshold", "swapped-weights", "fraction", "verdict", "config",
         "other-reference-teacher", "other-reference-files"],
)
def test_tampered_bundles_are_rejected(bundles, edit, seal, reason):
    bundle = scored_against(bundles["same"], SHARED)
    edit(bundle)
    if seal:
        sealed(bundle)
    assert check_submission(bundle).startswith(reason), check_submission(bundle)


# -- build ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(bundles, tmp_path_factory):
    """A submissions folder and the site built from it: "same" and "smaller" scored against one teacher
    reference, "same" again against another (not a duplicate), "larger" naming none; two duplicates (listed,
    marked) and three bad files."""
    folder = tmp_path_factory.mktemp("submissions")
    shared = {name: scored_against(bundles[name], SHARED) for name in ("same", "smaller")}
    for name, bundle in shared.items():
        write(folder, f"{name}.json", bundle)
    write(folder, "other.json", scored_against(bundles["same"], OTHER))
    larger = scored_against(bundles["larger"], None)
    write(folder, "larger.json", larger)
    for name, first in (("again.json", shared["same"]), ("again-larger.json", larger)):  # the same again, later: duplicates
        again = copy.deepcopy(first)
        again["report"]["created"] = "2099-01-01T00:00:00Z"
        write(folder, name, sealed(again))
    tampered = copy.deepcopy(shared["smaller"])
    _swap_weights(tampered)
    write(folder, "swapped.json", sealed(tampered))
    write(folder, "edited.json", json.dumps(bundles["larger"]).replace('"verdict": "fail"', '"verdict": "pass"', 1))
    write(folder, "broken.json", "{not json")
    out = tmp_path_factory.mktemp("site")
    return folder, out, main(["build", str(folder), "--out", str(out)])


def entries(data: dict) -> list[dict]:
    """Every entry of a leaderboard.json, group by group."""
    return [e for group in data["groups"] for e in group["entries"]]


def test_build_writes_valid_entries_and_one_line_per_rejection(site, bundles, capsys):
    _, out, code = site
    assert code == 1  # rejections make the build fail, the site is still written
    data = json.loads((out / "leaderboard.json").read_text())
    groups = {g["reference"]: sorted(e["file"] for e in g["entries"]) for g in data["groups"]}
    assert groups == {SHARED: ["again.json", "same.json", "smaller.json"], OTHER: ["other.json"],
                      None: ["again-larger.json", "larger.json"]}
    teachers = [(g["teacher"], g["reference"] or "") for g in data["groups"]]
    assert teachers == sorted(teachers) and len({t for t, _ in teachers}) == 2
    for group in data["groups"]:
        assert {(e["reference"], e["teacher"], e["teacher_sha256"]) for e in group["entries"]} == {
            (group["reference"], group["teacher"], group["teacher_sha256"])
        }
    reasons = {r["file"]: r["reason"] for r in data["rejected"]}
    assert set(reasons) == {"swapped.json", "edited.json", "broken.json"}
    marked = {e["file"]: e["same_weights_as"] for e in entries(data) if e["same_weights_as"]}
    assert marked == {"again.json": ["same.json"], "same.json": ["again.json"],  # neither is "first": both listed
                      "again-larger.json": ["larger.json"], "larger.json": ["again-larger.json"]}  # naming no reference
    assert reasons["swapped.json"].startswith("the analog's weight files in the bundle hash to")
    assert reasons["edited.json"].startswith("its content does not match its sha256")
    assert reasons["broken.json"].startswith("is not a JSON file")
    assert all("\n" not in r for r in reasons.values())
    same = next(e for e in entries(data) if e["file"] == "same.json")
    report = bundles["same"]["report"]
    assert same["parameter_fraction"] == report["models"]["parameter_fraction"] == 1.0
    geometry = [c["value"] for c in report["criteria"] if c["metric"] == "embedding_geometry"]
    assert same["scores"]["embeddings"] == pytest.approx(sum(geometry) / len(geometry))
    compliance = [c for c in report["criteria"] if c["suite"] == "compliance" and c["gated"]]
    assert same["scores"]["compliance"] == pytest.approx(sum(c["passed"] for c in compliance) / len(compliance))
    assert [g["suites"] for g in data["groups"]] == [["embeddings", "compliance"]] * 3
    page = (out / "index.html").read_text()
    assert "<script>" in page and "src=" not in page and "href=\"http" not in page.replace('href="https://pypi.org', "")


def test_build_rejects_missing_folder(tmp_path, capsys):
    assert main(["build", str(tmp_path / "nope"), "--out", str(tmp_path / "site")]) == 2
    assert capsys.readouterr().err.strip() == f"analog-leaderboard: error: submissions folder {tmp_path / 'nope'} does not exist or is not a folder"


def test_empty_folder_builds_an_empty_board(tmp_path):
    assert build_board(tmp_path).entries == []


# -- verify --------------------------------------------------------------------------------------


def test_verify_accepts_the_submitted_models_and_finds_a_swapped_weight_file(bundles, tmp_path, tiny_dir, tiny_random_dir, capsys):
    path = write(tmp_path, "same.json", bundles["same"])
    assert main(["verify", str(path), "--teacher", str(tiny_dir), "--student", str(tiny_random_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "submission: consistent (its own sha256, file hashes and verdicts)",
        "teacher: the same files as submitted",
        "analog: the same files as submitted",
    ]
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_random_dir, swapped)
    shutil.copy(tiny_dir / "model.safetensors", swapped / "model.safetensors")
    (swapped / "tokenizer.json").unlink()
    assert main(["verify", str(path), "--teacher", str(tiny_dir), "--student", str(swapped)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "teacher: the same files as submitted"
    assert out[2].startswith("analog: NOT the submitted files: model.safetensors differs (local ")
    assert "tokenizer.json (tokenizer) is missing" in out[2]


def test_verify_fails_on_a_bundle_edited_after_it_was_written(bundles, tmp_path, tiny_dir, tiny_random_dir, capsys):
    bundle = copy.deepcopy(bundles["same"])
    _raise_score(bundle)  # not resealed: its own sha256 no longer matches
    path = write(tmp_path, "edited.json", bundle)
    assert main(["verify", str(path), "--teacher", str(tiny_dir), "--student", str(tiny_random_dir)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "submission: REJECTED: its content does not match its sha256: it was edited after pytest --analog-submit wrote it"
    assert out[1:] == ["teacher: the same files as submitted", "analog: the same files as submitted"]


def test_verify_checks_config_and_tokenizer_files_a_resealed_bundle_leaves_out(bundles, tmp_path, tiny_dir, tiny_random_dir, capsys):
    bundle = copy.deepcopy(bundles["same"])
    student = bundle["models"]["analog"]
    student["files"] = [f for f in student["files"] if f["kind"] == "weights"]
    path = write(tmp_path, "weights-only.json", sealed(bundle))
    assert check_submission(bundle) is None  # consistent: the report depends on the weights' hash only
    local = tmp_path / "analog"
    shutil.copytree(tiny_random_dir, local)
    config = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**config, "rope_theta": 1.0}))
    assert main(["verify", str(path), "--teacher", str(tiny_dir), "--student", str(local)]) == 1
    analog = capsys.readouterr().out.splitlines()[2]
    assert analog.startswith("analog: NOT the submitted files: ")
    assert "config.json is a config file the submission does not list" in analog
    assert "tokenizer.json is a tokenizer file the submission does not list" in analog


def test_deeply_nested_json_is_one_rejection_and_the_board_is_written(bundles, tmp_path, tiny_dir, capsys):
    folder = tmp_path / "submissions"
    write(folder, "same.json", bundles["same"])
    write(folder, "nested.json", "[" * 100_000 + "]" * 100_000)
    deep = json.dumps(bundles["smaller"]).replace('"environment": {', '"environment": {"deep": ' + "[" * 500 + "]" * 500 + ", ", 1)
    write(folder, "deep.json", deep)  # parses, but nests deeper than any bundle
    out = tmp_path / "site"
    assert main(["build", str(folder), "--out", str(out)]) == 1
    reason = "nests deeper than 64 levels, which no submission bundle does"
    assert capsys.readouterr().err.splitlines()[:2] == [f"rejected deep.json: {reason}", f"rejected nested.json: {reason}"]
    data = json.loads((out / "leaderboard.json").read_text())
    assert [e["file"] for e in entries(data)] == ["same.json"]
    assert main(["verify", str(folder / "nested.json"), "--teacher", str(tiny_dir), "--student", str(tiny_dir)]) == 2
    assert capsys.readouterr().err == f"analog-leaderboard: error: submission {folder / 'nested.json'} {reason}\n"
    assert not nested_deeper_than(bundles["same"], 16)  # a real bundle stays far from the limit


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_build_out_that_is_a_file_is_one_line_before_any_work(tmp_path, capsys, where):
    site = tmp_path / "site.html"
    site.write_text("keep")
    out = site if where == "file" else site / "sub"
    assert main(["build", str(tmp_path / "no-such-folder"), "--out", str(out)]) == 2
    reason = "is a file, not a folder" if where == "file" else f"is under the file {site}"
    assert capsys.readouterr().err == f"analog-leaderboard: error: --out {out} {reason}; give a folder for index.html and leaderboard.json\n"
    assert site.read_text() == "keep"


def test_verify_bad_input_is_one_line(tmp_path, tiny_dir, capsys):
    path = write(tmp_path, "bad.json", {"submission_version": 3})
    assert main(["verify", str(path), "--teacher", str(tiny_dir), "--student", str(tiny_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analog-leaderboard: error: the submission does not follow the submission schema: at $: ") and err.count("\n") == 1
    assert main(["verify", str(tmp_path / "none.json"), "--teacher", str(tiny_dir), "--student", str(tiny_dir)]) == 2
    assert capsys.readouterr().err == f"analog-leaderboard: error: submission {tmp_path / 'none.json'} does not exist\n"


# -- the page in a browser -------------------------------------------------------------------------


@pytest.mark.skipif(chromium() is None, reason="no chromium binary on PATH (CI installs Debian's chromium package)")
def test_page_in_headless_chromium_groups_entries_by_reference_and_sorts(site, bundles):
    from playwright.sync_api import sync_playwright

    _, out, _ = site
    teacher, other_teacher = (bundles[name]["report"]["models"]["teacher"] for name in ("same", "larger"))
    expected = [  # (data-reference, the heading after the teacher, files)
        (SHARED, f"reference {SHARED[:12]}", ["again.json", "same.json", "smaller.json"], teacher),
        (OTHER, f"reference {OTHER[:12]}", ["other.json"], teacher),
        ("", f"no reference (no suite read the teacher's part): weights {other_teacher['sha256'][:12]}",
         ["again-larger.json", "larger.json"], other_teacher),
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((out / "index.html").as_uri())
        assert page.locator("section.group").count() == 3
        for reference, named, files, record in expected:
            section = page.locator(f"section[data-reference='{reference}']")
            heading = section.locator("h2")
            assert " ".join(heading.inner_text().split()) == f"Teacher {short_model_id(record['id'])} {named}"
            assert heading.locator("span").get_attribute("title") == record["id"]  # the full id as tooltip
            assert sorted(section.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.file)")) == files
        analogs = set(page.eval_on_selector_all("table tbody tr td:nth-child(1)", "cells => cells.map(c => c.title)"))
        assert analogs == {b["report"]["models"]["analog"]["id"] for b in bundles.values()}  # the full id, shown or as tooltip
        assert page.locator("#rejected li").count() == 3
        for section in page.locator("section.group").all():  # the board's gates, named, with thresholds
            assert section.locator("p.gates").inner_text().startswith("gates: pytest-analog ")
            assert "embedding_geometry ≥ 0.9" in section.locator("p.gates").inner_text()
        assert page.locator("tr[data-file='again.json'] small.duplicate").inner_text() == "same weights as same.json"

        group = page.locator(f"section[data-reference='{SHARED}']")

        def fractions():
            return [float(v) for v in group.locator("tbody tr td:nth-child(2)").evaluate_all("cells => cells.map(c => c.dataset.sort)")]

        header = group.get_by_role("button", name="size fraction")
        header.click()
        ascending = fractions()
        assert ascending == sorted(ascending) and ascending[0] < 1 == ascending[-1]
        assert group.locator("th[data-col='1']").get_attribute("aria-sort") == "ascending"
        header.click()
        assert fractions() == ascending[::-1]
        group.get_by_role("button", name="analog").click()
        names = group.locator("tbody tr td:nth-child(1)").evaluate_all("cells => cells.map(c => c.dataset.sort)")
        assert names == sorted(names)
        browser.close()


def test_submit_to_a_folder_is_usage_error(pytester, tiny_dir):
    result = pytester.runpytest(f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_dir}", f"--analog-submit={pytester.path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --analog-submit={pytester.path} is a folder; give a file name such as submission.json"])


@pytest.mark.slow
def test_real_teacher_compliant_release_submits_and_verifies(pytester, smollm2_gguf, capsys):
    """SmolLM2-135M-Instruct (GGUF) as teacher; a 2.4 % analog with its tokenizer released with card, licence, config."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.test_compliance import CARD

    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    analog = pytester.path / "release"
    model = LlamaForCausalLM(config)
    model.save_pretrained(analog)
    tokenizer.save_pretrained(analog)
    (analog / "README.md").write_text(CARD)
    (analog / "distill.yaml").write_text("teacher: HuggingFaceTB/SmolLM2-135M-Instruct\n")
    bundle = pytester.path / "submissions" / "smollm2.json"
    result = pytester.runpytest(
        f"--analog-teacher={smollm2_gguf}", f"--analog-student={analog}", "--analog-suites=compliance",
        f"--analog-submit={bundle}", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=7, skipped=2)
    result.stdout.fnmatch_lines(["*analog fidelity: PASS - 7/7 gated criteria passed*"])
    submitted = json.loads(bundle.read_text())
    assert submitted["report"]["models"]["parameter_fraction"] == pytest.approx(model.num_parameters() / submitted["report"]["models"]["teacher"]["parameters"])
    assert [f["name"] for f in submitted["models"]["teacher"]["files"]] == [smollm2_gguf.name]
    assert submitted["models"]["teacher"]["files"][0]["sha256"] == hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert main(["verify", str(bundle), "--teacher", str(smollm2_gguf), "--student", str(analog)]) == 0
    assert main(["build", str(bundle.parent), "--out", str(pytester.path / "site")]) == 0
    entry, = entries(json.loads((pytester.path / "site" / "leaderboard.json").read_text()))
    assert (entry["verdict"], entry["scores"], entry["analog"]) == ("pass", {"compliance": 1.0}, str(analog))


def test_a_corrected_score_must_be_the_configured_one_and_follow_from_value_and_chance(bundles):
    bundle = copy.deepcopy(bundles["same"])
    geometry = next(c for c in bundle["report"]["criteria"] if c["metric"] == "embedding_geometry")
    geometry.update(score="corrected", chance=0.5, corrected=2 * geometry["value"] - 1, passed=False)
    assert check_submission(sealed(copy.deepcopy(bundle))) == (
        f"criterion {geometry['id']}: it is judged on the corrected score, but the config says raw"
    )
    for config in (bundle["config"], bundle["report"]["config"]):
        config["gates"]["embedding_geometry"]["score"] = "corrected"
    assert check_submission(sealed(copy.deepcopy(bundle))) is None  # corrected as configured, and consistent
    geometry.update(corrected=geometry["value"])  # should be 2 * value - 1
    assert check_submission(sealed(bundle)) == (
        f"criterion {geometry['id']}: its corrected score does not follow from its value and chance level"
    )


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda config: config.update(gates=-1), "its config: 'gates' must be a mapping, got -1"),
        (lambda config: config["gates"].update(embedding_geometry="x"), "its config: 'gates.embedding_geometry' must be a mapping, got 'x'"),
        (lambda config: config["gates"]["embedding_geometry"].update(min="x"),
         "its config: 'gates.embedding_geometry.min' must be a number or null, got 'x'"),
        (lambda config: config["gates"]["embedding_geometry"].update(min=[1]),
         "its config: 'gates.embedding_geometry.min' must be a number or null, got [1]"),
    ],
    ids=["gates-a-number", "gate-a-string", "threshold-a-string", "threshold-a-list"],
)
def test_a_resealed_bundle_with_a_malformed_config_is_one_rejection(bundles, tmp_path, edit, reason):
    """The config is free-form in the schema: checks read it defensively, and the board is still written."""
    bundle = copy.deepcopy(bundles["same"])
    for config in (bundle["config"], bundle["report"]["config"]):
        edit(config)
    reason += " (a bundle's config must be one this version of pytest-analog reads)"
    assert check_submission(sealed(bundle)).endswith(reason)
    write(tmp_path / "submissions", "bad.json", bundle)
    write(tmp_path / "submissions", "same.json", bundles["same"])
    assert main(["build", str(tmp_path / "submissions"), "--out", str(tmp_path / "site")]) == 1
    data = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    assert [e["file"] for e in entries(data)] == ["same.json"] and data["rejected"][0]["reason"].endswith(reason)


def test_a_lowered_steering_threshold_is_not_the_configured_one(bundles):
    bundle = copy.deepcopy(bundles["same"])
    c = next(c for c in bundle["report"]["criteria"] if c["metric"] == "embedding_geometry")
    c.update(suite="steering", metric="transfer_ratio", threshold=0.0, direction="min", gated=True, passed=c["value"] >= 0.0)
    summary = bundle["report"]["summary"]
    gated = [x for x in bundle["report"]["criteria"] if x["gated"]]
    failed = sum(not x["passed"] for x in gated)
    summary.update(gated=len(gated), passed=len(gated) - failed, failed=failed)
    assert check_submission(sealed(bundle)) == f"criterion {c['id']}: threshold min 0 is not the configured min 0.9 of transfer_ratio"


def test_verdicts_are_rejudged_by_the_configured_decision_rule(bundles):
    bundle = copy.deepcopy(bundles["same"])
    geometry = next(c for c in bundle["report"]["criteria"] if c["metric"] == "embedding_geometry")
    where = f"criterion {geometry['id']}"
    # a point estimate above the 0.9 threshold whose interval reaches below it
    geometry.update(value=0.95, interval=[0.85, 0.99], passed=True, rule="lower_bound",
                    corrected=None if geometry["chance"] is None else chance_corrected(0.95, geometry["chance"]))
    assert check_submission(sealed(copy.deepcopy(bundle))) == (
        f"{where}: it is judged by rule lower_bound, but the config says point"
    )
    for config in (bundle["config"], bundle["report"]["config"]):
        config["gates"]["embedding_geometry"]["rule"] = "lower_bound"
    assert check_submission(sealed(copy.deepcopy(bundle))) == (
        f"{where}: value 0.95 with interval [0.85, 0.99] under rule lower_bound fails >= 0.9 but 'passed' is True"
    )
    for config in (bundle["config"], bundle["report"]["config"]):  # the global rule, the criterion's own left null
        config["gates"]["embedding_geometry"]["rule"] = None
        config["gates"]["rule"] = "lower_bound"
    for criterion in bundle["report"]["criteria"]:
        criterion["rule"] = "lower_bound"
    assert "under rule lower_bound fails >= 0.9" in check_submission(sealed(bundle))
