"""Leaderboard bundles from strangers (issue 22): malicious bundles built programmatically are refused or marked in
one line, judged under the board's gates, never order the board by a date their submitter writes, and the rerun of
one runs no configuration planted on the machine. Every bundle here is a real one, altered as an attacker would and
resealed with its sha256."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import pytest

from pytest_analog.config import config_from_dict
from pytest_analog.criterion import Criterion
from pytest_analog.leaderboard.board import board_gates, build_board
from pytest_analog.leaderboard.cli import main
from pytest_analog.submission import MAX_BYTES
from tests.test_leaderboard import SHARED, bundles, entries, resummed, scored_against, sealed, write  # noqa: F401  (a fixture)

LOWERED = {"cka": {"min": -100.0}, "embedding_geometry": {"min": -1.0}, "unembedding_geometry": {"min": -1.0},
           "parameter_fraction": {"max": 1.0}, "model_card": {"required": False}, "license": {"required": False},
           "training_code": {"required": False}}


def forge_gates(bundle: dict) -> dict:
    """``bundle`` with its own config's gates lowered until every criterion passes, re-judged and resealed."""
    bundle = copy.deepcopy(bundle)
    for config in (bundle["config"], bundle["report"]["config"]):
        for name, changes in LOWERED.items():
            config["gates"][name].update(changes)
    gates = config_from_dict(bundle["config"], "forged").gates
    report = bundle["report"]
    rows = [Criterion.from_dict(row) for row in report["criteria"]]
    report["criteria"] = [dataclasses.replace(c, gate=gates.gate(c.metric, c.measured.value, **c.details)).to_dict() for c in rows]
    return resummed(bundle)


def test_forged_gates_do_not_win_the_board_and_are_shown(bundles, tmp_path, capsys):
    folder = tmp_path / "submissions"
    honest, forged = scored_against(bundles["smaller"], SHARED), forge_gates(scored_against(bundles["same"], SHARED))
    assert forged["report"]["verdict"] == "pass"  # consistent with its own config: it passes every check
    write(folder, "honest.json", honest)
    write(folder, "forged.json", forged)
    out = tmp_path / "site"
    assert main(["build", str(folder), "--out", str(out)]) == 0
    data = json.loads((out / "leaderboard.json").read_text())
    rows = {e["file"]: e for e in entries(data)}
    unforged = bundles["same"]["report"]["summary"]  # what the same measurements get under the shipped gates
    assert (rows["forged.json"]["verdict"], rows["forged.json"]["passed"]) == ("fail", f"{unforged['passed']}/{unforged['gated']}")
    assert rows["forged.json"]["passed_fraction"] <= rows["honest.json"]["passed_fraction"]
    assert rows["forged.json"]["own_gates"][:3] == ["cka.min -100 vs 0.5", "embedding_geometry.min -1 vs 0.9",
                                                    "unembedding_geometry.min -1 vs 0.9"]
    assert rows["honest.json"]["own_gates"] == []
    assert data["gates"]["name"] == board_gates().name == f"pytest-analog {data['groups'][0]['entries'][0]['tool_version']} defaults"
    assert "embedding_geometry ≥ 0.9" in data["groups"][0]["thresholds"]
    page = (out / "index.html").read_text()
    assert f'gates: <strong>{board_gates().name}</strong>: ' in page
    assert "own gates differ: cka.min -100 vs 0.5; embedding_geometry.min -1 vs 0.9;" in page

    operator = tmp_path / "board-gates.yaml"  # the operator publishes other gates: they apply to every entry
    operator.write_text("gates:\n  embedding_geometry: {min: -1}\n  unembedding_geometry: {min: -1}\n")
    assert main(["build", str(folder), "--out", str(out), "--gates", str(operator)]) == 0
    data = json.loads((out / "leaderboard.json").read_text())
    assert data["gates"]["name"] == "board-gates.yaml"
    assert {e["file"]: e["passed"] for e in entries(data)} == {"forged.json": "5/9", "honest.json": "5/9"}
    assert sorted(os.listdir(out)) == ["index.html", "leaderboard.json"]


def test_verify_rerun_judges_under_the_board_gates_in_isolation(bundles, tmp_path, tiny_dir, tiny_random_dir, monkeypatch, capsys):
    """A pytest.ini and conftest.py planted above the rerun's temporary folder never run, and the forged gates
    do not reproduce: the rerun judges by the board's."""
    planted = tmp_path / "tmp"
    planted.mkdir()
    marker = tmp_path / "conftest-ran"
    (planted / "pytest.ini").write_text("[pytest]\naddopts = -p no:analog\n")
    (planted / "conftest.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.setenv("TMPDIR", str(planted))
    monkeypatch.setattr(tempfile, "tempdir", str(planted))
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:analog")
    path = write(tmp_path, "forged.json", forge_gates(bundles["same"]))
    assert main(["verify", str(path), "--teacher", str(tiny_dir), "--student", str(tiny_random_dir), "--rerun"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert not marker.exists()
    name = board_gates().name
    assert out[3] == (f"rerun: the submission's own gates differ from {name}: cka.min -100 vs 0.5; "
                      "embedding_geometry.min -1 vs 0.9; unembedding_geometry.min -1 vs 0.9; parameter_fraction.max 1 vs 0.05; "
                      "model_card.required false vs true; license.required false vs true; training_code.required false vs true")
    assert out[5].startswith("rerun: 6 of 9 criteria do not reproduce within 0.0001 under ")
    assert "  embeddings::test_geometry[embedding_geometry]: the value reproduces but not the verdict: submitted passed=True, " \
           "rerun passed=False" in out
    assert sorted(p.name for p in planted.iterdir()) == ["conftest.py", "pytest.ini"]  # the rerun's folder is gone


def test_a_backdated_duplicate_does_not_push_out_the_honest_bundle(bundles, tmp_path, capsys):
    """The same weights under another name, dated 2020: both are listed and marked, whatever the date or file name."""
    honest = scored_against(bundles["same"], SHARED)
    thief = copy.deepcopy(honest)
    thief["created"] = thief["report"]["created"] = "2020-01-01T00:00:00Z"
    thief["report"]["models"]["analog"]["id"] = thief["models"]["analog"]["id"] = "thief/analog"
    for first, second in (("a.json", "b.json"), ("b.json", "a.json")):
        folder = tmp_path / first
        write(folder, first, honest)
        write(folder, second, sealed(thief))
        out = tmp_path / f"site-{first}"
        assert main(["build", str(folder), "--out", str(out)]) == 1
        assert capsys.readouterr().err.splitlines() == [
            "duplicate a.json, b.json: the same analog weights against the same teacher reference; all are listed, keep one"
        ]
        data = json.loads((out / "leaderboard.json").read_text())
        assert data["rejected"] == []
        assert {e["analog"]: e["same_weights_as"] for e in entries(data)} == {
            honest["report"]["models"]["analog"]["id"]: [second], "thief/analog": [first]
        }


def _criterion(bundle: dict, metric: str) -> dict:
    return next(c for c in bundle["report"]["criteria"] if c["metric"] == metric)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda b: _criterion(b, "embedding_geometry").update(id="x\nrejected honest.json: forged"),
         "does not follow the submission schema: at $.report.criteria[7].id: 'x\\nrejected honest.json: forged' holds a "
         "control character (text the board shows must be one line)"),
        (lambda b: b["report"]["models"]["analog"].update(id="analog\r"),
         "does not follow the submission schema: at $.report.models.analog.id: 'analog\\r' holds a control character"),
        (lambda b: b["report"]["tool"].update(version="0.1.0\n"),
         "does not follow the submission schema: at $.report.tool.version: '0.1.0\\n' holds a control character"),
        (lambda b: _criterion(b, "embedding_geometry").update(interval=[1.0]),
         "does not follow the submission schema: at $.report.criteria[7].interval: [1.0] is too short"),
        (lambda b: _criterion(b, "parameter_fraction").update(bound="sideways"),
         "does not follow the submission schema: at $.report.criteria[0].bound: 'sideways' is not one of ['min', 'max']"),
        (lambda b: b["report"]["models"]["analog"].update(id="famous-org/analog"),
         "its report names another analog than its file record does (models.analog.id differs)"),
        (lambda b: _criterion(b, "embedding_geometry").update(value=float("nan")), "is not a JSON file: NaN is not a JSON number"),
        (lambda b: _criterion(b, "embedding_geometry").update(value=float("inf")),
         "is not a JSON file: Infinity is not a JSON number"),
    ],
    ids=["newline-in-id", "control-in-analog", "newline-in-version", "short-interval", "unknown-bound", "other-analog", "nan",
         "infinity"],
)
def test_malformed_fields_are_one_rejection_each_and_the_board_is_written(bundles, tmp_path, capsys, edit, reason):
    folder = tmp_path / "submissions"
    write(folder, "honest.json", bundles["smaller"])
    bad = copy.deepcopy(bundles["same"])
    edit(bad)
    write(folder, "bad.json", json.dumps(sealed(bad)))
    out = tmp_path / "site"
    assert main(["build", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [err.rstrip("\n")] and err.startswith(f"rejected bad.json: {reason}"), err
    assert [e["file"] for e in entries(json.loads((out / "leaderboard.json").read_text()))] == ["honest.json"]


def test_links_odd_names_and_huge_files_are_rejected_unread(bundles, tmp_path, capsys):
    outside = write(tmp_path / "outside", "secret.json", bundles["same"])  # a valid bundle outside the folder
    folder = tmp_path / "submissions"
    write(folder, "honest.json", bundles["smaller"])
    (folder / "link.json").symlink_to(outside)
    write(folder, "two\nlines.json", bundles["larger"])
    huge = json.dumps({**bundles["larger"], "environment": {"padding": "x" * MAX_BYTES}})
    write(folder, "huge.json", huge)
    board = build_board(folder)
    assert [e["file"] for e in board.entries] == ["honest.json"]
    assert board.rejected == [
        {"file": "huge.json", "reason": "is larger than 16 MiB, which no submission bundle is"},
        {"file": "link.json", "reason": "is a symbolic link or not a plain file; a submission is a plain JSON file"},
        {"file": "'two\\nlines.json'", "reason": "its file name holds a control character; rename it"},
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["honest.json", "huge.json", "link.json", "two\nlines.json"]
    assert sorted(p.name for p in Path(outside).parent.iterdir()) == ["secret.json"]


@pytest.mark.parametrize(("suite", "metric", "missing"), [("chance", "x", "chance"), ("mine", "cka", "gates.cka")])
def test_a_foreign_suites_rows_cannot_strip_the_config_the_board_checks(bundles, tmp_path, capsys, suite, metric, missing):
    """A board sets aside the config section and gates of suites it does not know (`board.known_config`), named by the
    bundle's own criteria; rows naming a core section or a built-in gate as a foreign suite's leave that key missing."""
    folder = tmp_path / "submissions"
    write(folder, "honest.json", bundles["smaller"])
    bad = copy.deepcopy(bundles["same"])
    row = {**_criterion(bad, "embedding_geometry"), "id": f"{suite}::test_x", "suite": suite, "metric": metric}
    bad["report"]["criteria"].append(row)
    write(folder, "bad.json", resummed(bad))
    out = tmp_path / "site"
    assert main(["build", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [err.rstrip("\n")]
    assert err.startswith(f"rejected bad.json: its config: missing config key '{missing}'"), err
    assert [e["file"] for e in entries(json.loads((out / "leaderboard.json").read_text()))] == ["honest.json"]
