"""A gate that cannot be fooled, broken or misread (issue 12): xdist, partial runs, stale and mixed
reports, weights swapped under the hash memo, bad output paths and inputs, NaN weights, file modes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from pytest_analog.atomic import replace_files, write_atomic
from pytest_analog.errors import AnalogError
from pytest_analog.models import file_sha256s, load_model
from pytest_analog.options import EXIT_PARTIAL
from tests.conftest import save_model, write_yaml

REPORTS = ("fidelity.json", "fidelity.md", "fidelity.html")
QUICK = ["--analog-max-prompts=24", "--analog-suites=representation,embeddings"]


def models(teacher, student):
    return [f"--analog-teacher={teacher}", f"--analog-student={student}"]


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def failing_config(pytester):
    return write_yaml(pytester.path / "analog.yaml", {"gates": {"cka": {"min": 0.99}}})


def read_report(folder):
    return json.loads((folder / "fidelity.json").read_text())


def judged(report):
    return [(c["id"], c["passed"]) for c in report["criteria"]]


# ------------------------------------------------------------------ xdist and partial runs


def test_xdist_writes_one_complete_report_on_the_controller(pytester, tiny_dir, tiny_random_dir, umask_022):
    """Under -n 2 the controller merges the workers' criteria: the same criteria and verdict as a serial run."""
    config = failing_config(pytester)
    common = [*models(tiny_dir, tiny_random_dir), *QUICK, f"--analog-config={config}", "-p", "no:cacheprovider"]
    serial = pytester.runpytest_subprocess(*common, "--analog-report=serial", "--analog-submit=serial.json")
    assert serial.ret == pytest.ExitCode.TESTS_FAILED
    parallel = pytester.runpytest_subprocess(*common, "-n", "2", "--analog-report=xdist", "--analog-submit=xdist.json")
    assert parallel.ret == pytest.ExitCode.TESTS_FAILED
    parallel.stdout.fnmatch_lines(["*analog fidelity*", "analog fidelity: FAIL - *", "report: *xdist*fidelity.html"])
    expected, got = read_report(pytester.path / "serial"), read_report(pytester.path / "xdist")
    assert len(expected["criteria"]) == 14  # 4 layers x 3 representation metrics + 2 geometries
    assert judged(got) == judged(expected) and got["verdict"] == expected["verdict"] == "fail"
    assert got["summary"] == expected["summary"] and got["layers"]["cka_matrix"] == expected["layers"]["cka_matrix"]
    assert got["models"] == expected["models"]
    bundle = json.loads((pytester.path / "xdist.json").read_text())
    assert judged(bundle["report"]) == judged(expected) and bundle["report"]["verdict"] == "fail"
    assert "FAIL" in (pytester.path / "xdist" / "fidelity.md").read_text()
    written = [pytester.path / "xdist" / name for name in REPORTS] + [pytester.path / "xdist.json"]
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}  # the umask, not mkstemp's 0600
    assert not list((pytester.path / "xdist").glob(".*"))  # no temp files


def test_last_failed_and_deselected_runs_are_partial(pytester, tiny_dir, tiny_random_dir):
    """A run of some of the criteria (--lf, -k) says so and never passes (exit 6); without the cache the verdict is the same."""
    config = failing_config(pytester)
    common = [*models(tiny_dir, tiny_random_dir), *QUICK, f"--analog-config={config}"]
    full = pytester.runpytest(*common, "--analog-report=full")
    full_report = read_report(pytester.path / "full")
    assert full.ret == pytest.ExitCode.TESTS_FAILED and "partial" not in full_report
    uncached = pytester.runpytest(*common, "-p", "no:cacheprovider", "--analog-report=uncached")
    assert uncached.ret == pytest.ExitCode.TESTS_FAILED
    assert judged(read_report(pytester.path / "uncached")) == judged(full_report)

    (pytester.path / "rerun.json").write_text("stale bundle")
    ungated = {"min": None}  # the failed criteria now pass (informational)
    write_yaml(config, {"gates": {"cka": ungated, "embedding_geometry": ungated, "unembedding_geometry": ungated}})
    rerun = pytester.runpytest(*common, "--lf", "--analog-report=rerun", "--analog-submit=rerun.json")
    assert rerun.ret == EXIT_PARTIAL
    rerun.stdout.fnmatch_lines(["analog fidelity: PARTIAL - *", "  partial run: *--lf*", "submission: none written (partial run)"])
    report = read_report(pytester.path / "rerun")
    assert report["verdict"] == "partial" and "--lf" in report["partial"]
    assert len(report["criteria"]) < len(full_report["criteria"])
    assert not (pytester.path / "rerun.json").exists()  # no bundle for a partial run, and no stale one

    selected = pytester.runpytest(*common, "-p", "no:cacheprovider", "-k", "embedding", "--analog-report=selected")
    report = read_report(pytester.path / "selected")
    assert selected.ret == EXIT_PARTIAL and report["verdict"] == "partial"
    assert report["partial"].startswith("12 test(s) that record criteria were deselected")


# ------------------------------------------------------------------ stale and mixed reports


@pytest.mark.parametrize(
    "mistake",
    [["--analog-config=bad.yaml"], ["--analog-device=gpu"], ["--analog-suites=bogus"], ["--analog-student=./nowhere"]],
    ids=["config value", "option value", "suite name", "model path"],
)
def test_a_usage_error_run_leaves_no_earlier_verdict(pytester, tiny_dir, mistake):
    """A run that stops before measuring (exit 4) removes the earlier PASS report set and bundle."""
    write_yaml(pytester.path / "bad.yaml", {"batch_size": 0})
    (pytester.path / "fidelity").mkdir()
    for name in REPORTS:
        (pytester.path / "fidelity" / name).write_text("PASS from an earlier run")
    (pytester.path / "fidelity" / ".fidelity.md.0123456789ab.tmp").write_text("orphan of a killed write")
    (pytester.path / "fidelity" / "notes.txt").write_text("not ours")
    (pytester.path / "bundle.json").write_text("PASS from an earlier run")
    result = pytester.runpytest(
        *models(tiny_dir, tiny_dir), *QUICK, "--analog-report=fidelity", "--analog-submit=bundle.json", *mistake
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [p.name for p in (pytester.path / "fidelity").iterdir()] == ["notes.txt"]
    assert not (pytester.path / "bundle.json").exists()


KILLED_WRITE = """
import os, sys, time
import pytest_analog.atomic as atomic
from pytest_analog.report import write_reports

where, report = sys.argv[1], {"schema_version": 2, "created": sys.argv[2], "verdict": sys.argv[3], "criteria": [],
                              "summary": {"gated": 0, "passed": 0, "failed": 0, "informational": 0}}
calls = {"n": 0}

def pausing(real, at):
    def call(*args):
        calls["n"] += 1
        if calls["n"] == at:
            print("paused", flush=True)
            time.sleep(float(sys.argv[5]))
        return real(*args)
    return call

if where == "temp":  # while the third temporary file is written, before the swap
    atomic._write_temp = pausing(atomic._write_temp, 3)
elif where == "swap":  # inside the swap, between renames
    atomic.os.replace = pausing(os.replace, 2)
write_reports(report, sys.argv[4])
"""


@pytest.mark.parametrize(
    ("where", "sig", "complete"),
    [("temp", signal.SIGTERM, "old"), ("temp", signal.SIGKILL, "old"), ("swap", signal.SIGTERM, "new"),
     ("swap", signal.SIGINT, "new"), ("swap", signal.SIGKILL, None)],
    ids=["temp-TERM", "temp-KILL", "swap-TERM", "swap-INT", "swap-KILL"],
)
def test_a_killed_report_write_never_leaves_a_mixed_set(tmp_path, where, sig, complete):
    """TERM and INT wait for the swap to end; only KILL can cut it, leaving part of the new set and none of the old."""
    folder = tmp_path / "fidelity"
    script = tmp_path / "write.py"
    script.write_text(KILLED_WRITE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    old = subprocess.run([sys.executable, str(script), "none", "1999-01-01T00:00:00Z", "pass", str(folder), "0"], env=env)
    assert old.returncode == 0
    writer = subprocess.Popen(
        [sys.executable, str(script), where, "2026-01-01T00:00:00Z", "fail", str(folder), "3"],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    assert writer.stdout.readline().strip() == "paused"
    writer.send_signal(sig)
    writer.wait(timeout=60)
    present = {p.name: p.read_text() for p in folder.iterdir() if p.name in REPORTS}
    runs = {name: "new" if "2026-01-01" in text else "old" for name, text in present.items()}
    assert len(set(runs.values())) <= 1, f"mixed set: {runs}"
    if complete:
        assert set(runs) == set(REPORTS) and set(runs.values()) == {complete}
    else:
        assert set(runs.values()) == {"new"} and len(runs) < len(REPORTS)
    if complete == "new":
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    subprocess.run([sys.executable, str(script), "none", "2027-01-01T00:00:00Z", "pass", str(folder), "0"], env=env, check=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORTS)  # the next write removes orphan temp files


# ------------------------------------------------------------------ file modes


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "one.json", "{}")
        replace_files({tmp_path / "a.md": "a", tmp_path / "b.html": b"b"})
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["one.json", "a.md", "b.html"], 0o666 & ~umask)


def test_leaderboard_site_honours_the_umask(tmp_path, umask_022):
    from pytest_analog.leaderboard.cli import main

    (tmp_path / "submissions").mkdir()
    assert main(["build", str(tmp_path / "submissions"), "--out", str(tmp_path / "site")]) == 0
    files = list((tmp_path / "site").iterdir())
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o644}


# ------------------------------------------------------------------ hash memo


@pytest.mark.parametrize("swap", ["in place", "renamed over"])
def test_hash_memo_sees_new_weights_with_the_same_size_and_mtime(tmp_path, swap):
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"A" * 4096)
    before = weights.stat()
    first = file_sha256s([weights], tmp_path / "cache")[weights]
    if swap == "in place":
        weights.write_bytes(b"B" * 4096)
    else:  # as rsync -t and tar do: a new file moved over the old one
        (tmp_path / "new").write_bytes(b"B" * 4096)
        os.replace(tmp_path / "new", weights)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = file_sha256s([weights], tmp_path / "cache")[weights]
    assert first != second == __import__("hashlib").sha256(b"B" * 4096).hexdigest()
    assert file_sha256s([weights], tmp_path / "cache")[weights] == second  # remembered again


# ------------------------------------------------------------------ bad output paths and inputs, before any model loads


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--analog-report=afile", "ERROR: --analog-report=afile: afile is a file, not a folder; give a folder that can be written"),
        ("--analog-report=/proc/fidelity", "ERROR: --analog-report=/proc/fidelity: /proc/fidelity cannot be written: /proc: *"),
        ("--analog-report=afile/fidelity", "ERROR: *afile/fidelity is under the file *afile; give a folder that can be written"),
        ("--analog-submit=/proc/x/bundle.json", "ERROR: --analog-submit=/proc/x/bundle.json: /proc/x cannot be written: /proc: *"),
        ("--analog-cache=afile", "ERROR: --analog-cache=afile: afile is a file, not a folder; give a folder that can be written"),
    ],
)
def test_bad_output_paths_are_usage_errors_before_any_model_loads(pytester, tiny_dir, option, message):
    (pytester.path / "afile").write_text("not a folder")
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *QUICK, "-p", "no:cacheprovider", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert result.stderr.str().count("ERROR") == 1 and "collected" not in result.stdout.str()


def bad_inputs(tmp_path, tiny_dir):
    """(name, extra options, expected error line) for inputs that are checked before collection."""
    corrupt = shutil.copytree(tiny_dir, tmp_path / "corrupt")
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    custom = shutil.copytree(tiny_dir, tmp_path / "custom")
    tokenizer_config = json.loads((custom / "tokenizer_config.json").read_text())
    tokenizer_config.update(tokenizer_class="MysteryTokenizer", auto_map={"AutoTokenizer": ["tok.MysteryTokenizer", None]})
    (custom / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (custom / "tok.py").write_text("raise SystemExit('remote code ran')\n")
    prompts = {
        "empty.jsonl": "\n", "broken.jsonl": '{"text": "fine"}\n{"text": \n', "notext.jsonl": '{"prompt": "hi"}\n',
    }
    for name, text in prompts.items():
        (tmp_path / name).write_text(text)
    configs = {name: write_yaml(tmp_path / f"{name}.yaml", {"prompts": {"set": name}}) for name in [*prompts, "missing.jsonl"]}
    return [
        ("corrupt safetensors", models(tiny_dir, corrupt), "ERROR: *corrupt: model.safetensors is not a readable safetensors file (*); save or download the weights again"),
        ("tokenizer code", models(tiny_dir, custom), "ERROR: *custom's tokenizer needs custom code from its repository (auto_map in tokenizer_config.json)*--analog-trust-remote-code*"),
        ("missing prompts", [*models(tiny_dir, tiny_dir), f"--analog-config={configs['missing.jsonl']}"], "ERROR: prompt file *missing.jsonl does not exist"),
        ("empty prompts", [*models(tiny_dir, tiny_dir), f"--analog-config={configs['empty.jsonl']}"], "ERROR: prompt file *empty.jsonl holds no prompts"),
        ("broken line", [*models(tiny_dir, tiny_dir), f"--analog-config={configs['broken.jsonl']}"], "ERROR: prompt file *broken.jsonl, line 2: not JSON (*)"),
        ("no text key", [*models(tiny_dir, tiny_dir), f"--analog-config={configs['notext.jsonl']}"], 'ERROR: prompt file *notext.jsonl, line 1: expected an object with a non-empty "text" string'),
    ]


def test_bad_inputs_are_one_usage_error_before_collection(pytester, tiny_dir, tmp_path):
    for name, args, message in bad_inputs(tmp_path, tiny_dir):
        result = pytester.runpytest(*args, *QUICK, "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, name
        result.stderr.fnmatch_lines([message])
        output = result.stdout.str() + result.stderr.str()
        assert "Traceback" not in output and "remote code ran" not in output and output.count("ERROR") == 1, name


def test_prompt_file_in_a_config_file_is_found_beside_it(tmp_path, monkeypatch):
    from pytest_analog.config import load_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mine.jsonl").write_text('{"text": "hello"}\n')
    config = write_yaml(tmp_path / "conf" / "analog.yaml", {"prompts": {"set": "mine.jsonl"}})
    monkeypatch.chdir(tmp_path)
    assert load_config(config).prompts.set == str(tmp_path / "conf" / "mine.jsonl")
    assert load_config(write_yaml(tmp_path / "conf" / "named.yaml", {"prompts": {"set": "default"}})).prompts.set == "default"


# ------------------------------------------------------------------ NaN weights


@pytest.fixture
def nan_dir(tmp_path, tiny_dir, bos_tokenizer):
    import torch

    model = load_model(str(tiny_dir), device="cpu").model
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
        model.model.layers[2].self_attn.q_proj.weight[0, 0] = float("inf")
    return save_model(model, bos_tokenizer, tmp_path / "nan")


def test_nan_weights_name_the_model_and_first_layer(nan_dir):
    with pytest.raises(AnalogError, match=r"nan has NaN or infinite weights, first in model\.layers\.1\.mlp\.up_proj\.weight;"):
        load_model(str(nan_dir), device="cpu")


def test_nan_weights_fail_each_test_with_one_line(pytester, tiny_dir, nan_dir):
    result = pytester.runpytest(*models(tiny_dir, nan_dir), "--analog-max-prompts=24", "--analog-suites=embeddings", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    assert "Traceback" not in output and "ValueError" not in output and len(output.splitlines()) < 40
    result.stdout.fnmatch_lines(["*nan has NaN or infinite weights, first in model.layers.1.mlp.up_proj.weight*"])

