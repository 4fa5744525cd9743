"""analog-demo: options checked before the distillation, stages announced with their times."""

from __future__ import annotations

import shutil

import pytest

from pytest_analog import demo


@pytest.fixture
def no_distillation(monkeypatch, tiny_dir):
    """The demo on the tiny pair; fails the test if it reaches the distillation."""
    monkeypatch.setattr(demo, "smollm2_gguf", lambda: tiny_dir)

    def distil(teacher, workdir):
        raise AssertionError("the demo distilled before it checked its options")

    monkeypatch.setattr(demo, "build_distilled_student", distil)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--analog-suites=bogus", "ERROR: --analog-suites: expected all, none or a comma-separated list"),
        ("--analog-max-prompts=zero", "ERROR: --analog-max-prompts: expected an integer >= 1, got 'zero'"),
        ("--no-such-option", "unrecognized arguments: --no-such-option"),
    ],
    ids=["bad-suite", "bad-value", "unknown-option"],
)
def test_bad_pytest_options_are_refused_before_distilling(tmp_path, no_distillation, capsys, option, message):
    code = demo.main(["--workdir", str(tmp_path / "work"), "--report", str(tmp_path / "report"), option])
    assert code == 4
    out, err = capsys.readouterr()
    assert "[1/4] checking the options" in out and "[2/4]" not in out
    assert message in err, err


def test_workdir_that_is_a_file_is_one_line_before_any_work(tmp_path, no_distillation, capsys):
    workdir = tmp_path / "analog.txt"
    workdir.write_text("keep")
    assert demo.main(["--workdir", str(workdir)]) == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"analog-demo: error: --workdir {workdir} is a file, not a folder; give a folder for the analog and the cache\n"
    assert workdir.read_text() == "keep"


def test_demo_announces_its_stages_then_one_line_each(tmp_path, monkeypatch, tiny_dir, tiny_random_dir, capsys):
    monkeypatch.setattr(demo, "smollm2_gguf", lambda: tiny_dir)
    monkeypatch.setattr(demo, "build_distilled_student", lambda teacher, workdir: tiny_random_dir)
    code = demo.main(["--workdir", str(tmp_path / "work"), "--report", str(tmp_path / "report"),
                      "--analog-suites=compliance", "-q"])
    assert code == 1  # the tiny analog has no card, no licence
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("analog-demo: ")]
    assert lines[0].startswith("analog-demo: the fidelity gate on SmolLM2-135M-Instruct")
    assert "  2. distil the analog (once; cached in " in out and "): 2 min 46 s" in out and "): 2 min 32 s" in out and "): 49 s" in out
    assert [line.split("]")[0] for line in lines[1:]] == ["analog-demo: [1/4", "analog-demo: [2/4", "analog-demo: [2/4",
                                                          "analog-demo: [3/4", "analog-demo: [3/4",
                                                          "analog-demo: [4/4", "analog-demo: [4/4"]
    assert lines[3] == f"analog-demo: [2/4] analog read from {tiny_random_dir.parent}"  # built before this run
    assert lines[5] == "analog-demo: [3/4] the suites chosen read nothing of the teacher: no reference built"
    assert lines[6].startswith("analog-demo: [4/4] running the suites: about 49 s left")
    assert lines[7].startswith("analog-demo: [4/4] suites done in ")
    assert (tmp_path / "report" / "fidelity.json").is_file()


def test_remaining_time_scales_with_the_measured_distillation(tmp_path, monkeypatch, tiny_dir, tiny_random_dir, capsys):
    """A machine that distilled at half the reference speed is told the suites take twice as long."""
    reference = demo.REFERENCE_SECONDS
    assert demo.suites_estimate(2 * reference["distil"]) == (
        2 * reference["suites"], "this machine ran the distillation at 0.5x the reference speed")
    assert demo.suites_estimate(reference["distil"] / 3)[0] == pytest.approx(reference["suites"] / 3)
    assert demo.suites_estimate(None)[0] == reference["suites"]  # cached: nothing measured yet
    monkeypatch.setattr(demo, "smollm2_gguf", lambda: tiny_dir)
    monkeypatch.setattr(demo, "build_distilled_student",  # written now, as a distillation writes it
                        lambda teacher, workdir: shutil.copytree(tiny_random_dir, workdir / "analog", copy_function=shutil.copy))
    demo.main(["--workdir", str(tmp_path / "work"), "--report", str(tmp_path / "report"), "--analog-suites=compliance", "-q"])
    lines = capsys.readouterr().out.splitlines()
    distilled = next(line for line in lines if line.startswith("analog-demo: [2/4] analog distilled in "))
    running = lines[lines.index(distilled) + 3]
    assert running.startswith("analog-demo: [4/4] running the suites: about ")
    assert running.endswith("x the reference speed)")
