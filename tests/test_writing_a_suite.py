"""The guide's suite (docs/writing-a-suite.md): its first Python block, copied into an empty folder as a
conftest.py, is gated beside the built-in suites, live and against a teacher reference built with it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_analog.leaderboard.board import build_board
from pytest_analog.reference import cli as reference_cli

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "writing-a-suite.md"
ROW = "next_word::test_next_word"
QUICK = ["--analog-max-prompts=12", "-p", "no:cacheprovider"]


def guide_conftest() -> str:
    """The guide's first Python code block, as written."""
    return re.search(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S).group(1)


@pytest.fixture
def folder(pytester):
    pytester.makeconftest(guide_conftest())
    return pytester


def reports(directory: Path) -> tuple[dict, str, str]:
    return (json.loads((directory / "fidelity.json").read_text()), (directory / "fidelity.md").read_text(),
            (directory / "fidelity.html").read_text())


def test_the_guides_suite_is_gated_beside_the_built_in_ones(folder, tiny_dir, tiny_random_dir):
    out = folder.path / "R"
    result = folder.runpytest(f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_dir}", f"--analog-report={out}",
                              "--analog-suites=next_word,embeddings", "--analog-submit=B/bundle.json", *QUICK)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    # a board without the conftest takes the bundle and counts the built-in criteria only
    (entry,) = build_board(folder.path / "B").entries
    assert entry["passed"] == "2/2" and set(entry["scores"]) == {"embeddings"}
    data, markdown, html = reports(out)
    row = next(c for c in data["criteria"] if c["id"] == ROW)
    assert row["suite"] == "next_word" and row["metric"] == "next_word_agreement"
    assert row["value"] == 1.0 and row["threshold"] == 0.5 and row["passed"] is True  # the teacher against itself
    assert row["description"] == "fraction of prompts whose most likely next word is the teacher's"
    assert {c["suite"] for c in data["criteria"]} == {"next_word", "embeddings"}
    assert data["summary"]["gated"] == len([c for c in data["criteria"] if c["gated"]]) and data["verdict"] == "pass"
    assert data["config"]["gates"]["next_word_agreement"] == {"min": 0.5, "rule": None}
    assert ROW in markdown and ROW in html
    # the same gate under a stricter threshold of the user's config fails the pair on this criterion alone
    (folder.path / "strict.yaml").write_text("gates:\n  next_word_agreement:\n    min: 1.0\n")
    result = folder.runpytest(f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_random_dir}", f"--analog-report={out}",
                              "--analog-suites=next_word", "--analog-config=strict.yaml", *QUICK)
    data, _, _ = reports(out)
    (row,) = data["criteria"]
    assert row["threshold"] == 1.0 and row["value"] < 1.0 and row["passed"] is False
    assert data["verdict"] == "fail" and result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*next_word_agreement*fails*"])


def test_the_guides_suite_is_gated_against_a_reference_built_with_its_conftest(folder, tiny_dir, monkeypatch):
    monkeypatch.chdir(folder.path)
    reference = folder.path / "REF"
    assert reference_cli.main(["build", f"--teacher={tiny_dir}", f"--out={reference}", "--conftest=conftest.py",
                               "--suites=next_word"]) == 0
    manifest = json.loads((reference / "manifest.json").read_text())
    assert sorted(manifest["parts"]) == ["next_word"]
    assert json.loads((reference / "next_word.json").read_text())["words"]  # the teacher's next words, stored
    out = folder.path / "R"
    result = folder.runpytest(f"--analog-reference={reference}", f"--analog-student={tiny_dir}", f"--analog-report={out}",
                              "--analog-suites=next_word", *QUICK)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    data, markdown, html = reports(out)
    (row,) = data["criteria"]
    assert row["id"] == ROW and row["value"] == 1.0 and row["passed"] is True
    assert data["reference"]["parts"] == ["next_word"] and data["reference"]["source"] == "file"


def test_a_suite_that_is_not_registered_is_a_usage_error(pytester, tiny_dir):
    result = pytester.runpytest(f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_dir}", "--analog-suites=next_word", *QUICK)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--analog-suites: expected all, none or a comma-separated list of representation*got 'next_word'*"])


def test_an_installed_package_adds_the_guides_suite_through_its_entry_point(pytester, tiny_dir, monkeypatch):
    """The same suite shipped in a package (entry point group ``pytest_analog.suites``) instead of a conftest."""
    site = pytester.path / "site"
    site.mkdir()
    (site / "next_word_suite.py").write_text(guide_conftest())
    info = site / "next_word_suite-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: next-word-suite\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytest_analog.suites]\nnext_word = next_word_suite:SUITE\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    result = pytester.runpytest_subprocess(f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_dir}",
                                           "--analog-report=R", "--analog-suites=next_word", "--analog-submit=B/bundle.json", *QUICK)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    (row,) = json.loads((pytester.path / "R" / "fidelity.json").read_text())["criteria"]
    assert row["id"] == ROW and row["passed"] is True
    # a board where the package is installed judges the suite's criterion under its own published gate
    built = subprocess.run([sys.executable, "-m", "pytest_analog.leaderboard.cli", "build", "B", "--out", "site"],
                           cwd=pytester.path, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    (entry,) = json.loads((pytester.path / "site" / "leaderboard.json").read_text())["groups"][0]["entries"]
    assert entry["scores"] == {"next_word": 1.0} and entry["passed"] == "1/1"
    assert entry["thresholds"] == ["next_word_agreement ≥ 0.5"]


def test_the_guides_suite_under_xdist_gives_the_serial_report(folder, tiny_dir):
    runs = {}
    for name, extra in (("serial", []), ("parallel", ["-n", "2"])):
        result = folder.runpytest(f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_dir}", f"--analog-report={name}",
                                  "--analog-suites=next_word,embeddings", *QUICK, *extra)
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        runs[name] = reports(folder.path / name)[0]
    assert [c["id"] for c in runs["parallel"]["criteria"]] == [c["id"] for c in runs["serial"]["criteria"]]
    assert ROW in [c["id"] for c in runs["parallel"]["criteria"]] and runs["parallel"]["verdict"] == "pass"


def test_editing_the_suites_code_reruns_it_and_nothing_else_does(folder, tiny_dir):
    """A cached result is keyed by the code of the suite's halves: an edited conftest is measured anew."""
    gate = [f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_dir}", "--analog-report=R", "--analog-cache=C",
            "--analog-suites=next_word", *QUICK]
    entries = lambda: sorted(p.name for p in (folder.path / "C" / "next_word").glob("*.json"))  # noqa: E731
    for _ in range(2):  # the second run reads the cache
        assert folder.runpytest(*gate).ret == pytest.ExitCode.OK
    first = entries()
    assert len(first) == 1 and reports(folder.path / "R")[0]["criteria"][0]["value"] == 1.0
    conftest = folder.path / "conftest.py"
    conftest.write_text(conftest.read_text().replace('"agreement": sum(agree) / len(agree)', '"agreement": 0.25'))
    assert folder.runpytest(*gate).ret == pytest.ExitCode.TESTS_FAILED
    assert reports(folder.path / "R")[0]["criteria"][0]["value"] == 0.25
    assert len(entries()) == 2 and first[0] in entries()
