"""The gate's own run under hostile conditions (issue 22): suites left out, lost xdist workers, a full disk,
Ctrl-C while writing, undecodable prompts, a tokenizer larger than its model and counts beyond any memory.

Each case ends in a verdict that says what happened (partial, exit 6) or in one line (exit 4), never in a
traceback or a passed gate.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from pytest_analog.options import EXIT_PARTIAL
from pytest_analog.suites import representation
from tests.conftest import save_model, tiny_llama, write_yaml

REPORTS = ("fidelity.json", "fidelity.md", "fidelity.html")
QUICK = ["--analog-max-prompts=24", "--analog-suites=representation,embeddings"]


def models(teacher, student):
    return [f"--analog-teacher={teacher}", f"--analog-student={student}"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One measurement cache for the module's gate runs: each pair is measured once."""
    return tmp_path_factory.mktemp("analog-cache")


def read_report(folder):
    return json.loads((folder / "fidelity.json").read_text())


# ------------------------------------------------------------------ partial runs


def test_a_requested_suite_that_never_ran_makes_the_run_partial(pytester, tiny_dir, cache_dir):
    """--ignore of a requested suite: verdict partial, exit 6, no bundle (was PASS, exit 0 and a bundle)."""
    ignored = Path(representation.__file__).with_name("test_representation.py")
    (pytester.path / "bundle.json").write_text("stale bundle")
    result = pytester.runpytest_subprocess(
        *models(tiny_dir, tiny_dir), *QUICK, f"--analog-cache={cache_dir}", f"--ignore={ignored}",
        "--analog-report=fidelity", "--analog-submit=bundle.json",
    )
    assert result.ret == EXIT_PARTIAL
    report = read_report(pytester.path / "fidelity")
    assert report["verdict"] == "partial" and "representation never ran" in report["partial"]
    assert not (pytester.path / "bundle.json").exists()
    result.stdout.fnmatch_lines(["analog fidelity: PARTIAL - *", "submission: none written (partial run)"])


def test_a_deselected_run_exits_with_the_partial_code(pytester, tiny_dir, cache_dir):
    """-k leaves criteria out of a passing gate: exit 6, the same under xdist (was exit 0)."""
    common = [*models(tiny_dir, tiny_dir), *QUICK, f"--analog-cache={cache_dir}", "-p", "no:cacheprovider"]
    selected = pytester.runpytest_subprocess(*common, "-k", "embedding", "--analog-report=selected")
    assert selected.ret == EXIT_PARTIAL and read_report(pytester.path / "selected")["verdict"] == "partial"
    parallel = pytester.runpytest_subprocess(*common, "-n", "2", "-k", "embedding", "--analog-report=parallel")
    assert parallel.ret == EXIT_PARTIAL
    assert read_report(pytester.path / "parallel")["criteria"] == read_report(pytester.path / "selected")["criteria"]


KILLER = """
import os, signal

def pytest_runtest_logreport(report):
    # the first worker dies right after a test recorded its criterion (the call report went out, its state never does)
    recorded = any(name == "analog_metric" for name, _ in report.user_properties)
    if report.when == "teardown" and recorded and os.environ.get("PYTEST_XDIST_WORKER") == "gw0":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_xdist_worker_makes_the_run_partial(pytester, tiny_dir, cache_dir):
    """A worker killed under -n 2 (a plugin, so that workers load it too): the report says partial and names
    the worker, the run fails, and no bundle is written (was: a report of part of the criteria and a bundle)."""
    pytester.makepyfile(killer=KILLER)
    result = pytester.runpytest_subprocess(
        "-p", "killer", *models(tiny_dir, tiny_dir), *QUICK, f"--analog-cache={cache_dir}", "-n", "2",
        "--analog-report=fidelity", "--analog-submit=bundle.json",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*worker 'gw0' crashed while running*"])
    report = read_report(pytester.path / "fidelity")
    assert report["verdict"] == "fail" and "gw0 went down" in report["partial"]
    assert not (pytester.path / "bundle.json").exists()


# ------------------------------------------------------------------ a full disk, Ctrl-C


@pytest.mark.parametrize(
    ("failure", "code", "line"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), pytest.ExitCode.USAGE_ERROR,
         "ERROR: --analog-report=fidelity: the report files could not be written (No space left on device); *"),
        (KeyboardInterrupt(), pytest.ExitCode.INTERRUPTED,
         "ERROR: --analog-report=fidelity: interrupted while writing the report files; *"),
    ],
    ids=["disk full", "ctrl-c"],
)
def test_a_report_that_cannot_be_written_is_one_line_and_keeps_the_old_set(
    pytester, monkeypatch, tiny_dir, cache_dir, failure, code, line
):
    import pytest_analog.atomic as atomic

    folder = pytester.path / "fidelity"
    folder.mkdir()
    for name in REPORTS:
        (folder / name).write_text(f"{name} of an earlier run")
    real = atomic._write_temp

    def failing(path, data):
        if path.name == "fidelity.html":  # after the JSON and markdown temporary files were written
            raise failure
        return real(path, data)

    monkeypatch.setattr(atomic, "_write_temp", failing)
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *QUICK, f"--analog-cache={cache_dir}", "--analog-report=fidelity")
    assert result.ret == code
    result.stdout.fnmatch_lines([line])
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and output.count("ERROR: --analog-report") == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORTS)  # no temporary file left
    assert all((folder / name).read_text() == f"{name} of an earlier run" for name in REPORTS)


def test_a_cache_that_cannot_be_written_warns_once_and_the_gate_goes_on(pytester, monkeypatch, tiny_dir, tiny_random_dir, tmp_path):
    """Every cache write fails with ENOSPC: one CacheWarning, and the same verdict and criteria as a run without a cache."""
    import pytest_analog.atomic as atomic
    import pytest_analog.reference.store as store

    common = [*models(tiny_dir, tiny_random_dir), *QUICK, "-p", "no:cacheprovider"]
    plain = pytester.runpytest(*common, "--analog-report=plain")
    cache = tmp_path / "full"
    real_temp, real_write = atomic._write_temp, store.write

    def no_space(path):
        return OSError(errno.ENOSPC, "No space left on device", str(path))

    def write_temp(path, data):
        if cache in path.parents:
            raise no_space(path)
        return real_temp(path, data)

    def write_reference(reference, out):
        if cache in Path(out).parents:
            raise no_space(out)
        return real_write(reference, out)

    monkeypatch.setattr(atomic, "_write_temp", write_temp)
    monkeypatch.setattr(store, "write", write_reference)
    result = pytester.runpytest(*common, f"--analog-cache={cache}", "--analog-report=full", "-W", "default::pytest_analog.cache.CacheWarning")
    assert result.ret == plain.ret
    assert [c["passed"] for c in read_report(pytester.path / "full")["criteria"]] == [
        c["passed"] for c in read_report(pytester.path / "plain")["criteria"]
    ]
    assert result.stdout.str().count("CacheWarning: the cache cannot be written: No space left on device") == 1


# ------------------------------------------------------------------ inputs refused in one line before any test


def test_a_prompt_file_that_is_not_utf8_is_one_usage_error(pytester, tiny_dir):
    (pytester.path / "latin1.jsonl").write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    config = write_yaml(pytester.path / "analog.yaml", {"prompts": {"set": "latin1.jsonl"}})
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *QUICK, f"--analog-config={config}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: prompt file *latin1.jsonl is not UTF-8 text*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_an_analog_with_fewer_embedding_rows_than_tokens_is_one_usage_error(pytester, tiny_dir, bos_tokenizer, other_tokenizer):
    """A 300-row model saved with a 400-token tokenizer: refused before any test (was an IndexError in every test)."""
    small = save_model(tiny_llama(other_tokenizer, seed=3), bos_tokenizer, pytester.path / "small")
    result = pytester.runpytest(*models(tiny_dir, small), *QUICK, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: {small}: its tokenizer has {len(bos_tokenizer)} tokens but its config's vocab_size is "
        f"{len(other_tokenizer)} embedding rows; *"
    ])
    assert "Traceback" not in result.stdout.str() + result.stderr.str() and "collected" not in result.stdout.str()


def test_a_count_beyond_its_bound_is_one_usage_error(pytester, tiny_dir):
    """chance.resamples of 10^8 was accepted and the gate was killed at 21 GB."""
    config = write_yaml(pytester.path / "analog.yaml", {"chance": {"resamples": 100_000_000}})
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *QUICK, f"--analog-config={config}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *analog.yaml: 'chance.resamples' must be 0 (no intervals) or an integer from 10 to 100,000, got 100000000"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_config_that_does_not_fit_in_memory_is_one_usage_error(pytester, monkeypatch, tiny_dir):
    """Counts within their bounds whose arrays exceed the memory available: refused before any model loads."""
    import pytest_analog.preflight as preflight

    monkeypatch.setattr(preflight, "available_memory", lambda: 2**30)
    config = write_yaml(pytester.path / "analog.yaml", {"layers": {"matrix_rows": 65_536}})
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *QUICK, f"--analog-config={config}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: this config needs at least 64.* GiB of memory beyond the models (layers.matrix_rows alone 64.0 GiB), "
        "more than the 1.0 GiB available; lower layers.matrix_rows"
    ])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_the_memory_estimate_names_the_largest_array():
    from pytest_analog import registry
    from pytest_analog.config import load_config
    from pytest_analog.memory import available_memory, memory_problem
    from pytest_analog.runs import Shape

    config = load_config(None, **{"chance.resamples": 100_000, "layers.matrix_rows": 8})
    runs = registry.runs(registry.built_in())
    shape = Shape(prompts=10_000, widths=(576, 64), gated_layers=9)
    sizes = {**runs["representation"].memory(config, shape), **runs["benchmarks"].memory(config, shape)}
    assert sizes["chance.resamples"] > 2 * 100_000 * 10_000 * 8  # the [B, P] counts and weights of the prompt bootstrap
    assert max(sizes, key=sizes.get) == "chance.resamples" and "steering.eval_items" not in sizes
    assert memory_problem(sizes, available=sum(sizes.values())) is None
    assert memory_problem(sizes, available=None) is None  # unknown: not refused
    assert memory_problem(sizes, available=2**30).endswith("more than the 1.0 GiB available; lower chance.resamples")
    assert runs["benchmarks"].memory(config, Shape(prompts=10, widths=(8, 8), gated_layers=1)) == {}
    assert available_memory() is None or available_memory() > 0
