"""Command-line options of the ``analog`` group, their ini twins, and their validation."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_analog.atomic import folder_problem
from pytest_analog.registry import BUILT_IN
# Exit code of a run of part of the gate that failed nothing: not a pass (0), and none of pytest's own 0-5.
EXIT_PARTIAL = 6


def parse_device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got '{value}'")
    return value


def parse_dtype(value: str) -> str:
    if value not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"expected auto, float32, bfloat16 or float16, got '{value}'")
    return value


def parse_positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"expected an integer >= 1, got '{value}'")
    return number


def parse_suites(value: str, known) -> tuple[str, ...]:
    """``all``, ``none`` or a comma-separated list of the names in ``known`` (the registry's suites)."""
    if value == "all":
        return tuple(known)
    if value == "none":
        return ()
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"expected all, none or a comma-separated list of {', '.join(known)}, got '{value}'")
    return names


def parse_tasks(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise ValueError(f"expected a comma-separated list of lm-eval task names or task YAML paths, got '{value}'")
    return names


# name, metavar, parser, default, help
_OPTIONS = [
    ("teacher", "MODEL", str, None, "the teacher: a hub id, a local model directory or a .gguf file"),
    ("student", "MODEL", str, None, "the analog (student): a hub id, a local model directory or a .gguf file"),
    ("reference", "REF", str, None, "a teacher reference folder (analog-reference build) to gate against instead of --analog-teacher"),
    ("device", "DEVICE", parse_device, "auto", "auto|cpu|cuda|cuda:N; auto uses CUDA when present (device_map='auto' across GPUs)"),
    ("dtype", "DTYPE", parse_dtype, "auto", "auto|float32|bfloat16|float16; auto is bfloat16 on CUDA and float32 on the CPU"),
    ("config", "YAML", str, None, "a YAML file overriding the shipped thresholds, prompt set, layers and batch size"),
    ("report", "DIR", str, None, "write fidelity.json, fidelity.md and fidelity.html to this directory"),
    ("cache", "DIR", str, None, "cache directory for measurements and file hashes (default: under pytest's cache dir)"),
    ("suites", "LIST", parse_suites, "all", f"suites to run when a teacher is given: all, none or a list of {', '.join(BUILT_IN)} (and installed or conftest suites)"),
    ("max-prompts", "N", parse_positive_int, None, "use at most N prompts of the prompt set and N items of each benchmark task"),
    ("tasks", "LIST", parse_tasks, None, "lm-eval tasks for the benchmarks suite: shipped names, task YAML paths or registry names"),
    ("submit", "PATH", str, None, "write a leaderboard submission bundle (JSON: report, config, file hashes) to this file"),
]
_FLAGS = [
    ("trust-remote-code", "run custom model code from a model repository (off by default)"),
    ("allow-pickle", "allow pickle checkpoints (*.bin, *.pt), which can execute code when loaded (off by default)"),
]


def add_options(parser: pytest.Parser) -> None:
    """Add the ``analog`` option group and an ini twin (``analog_NAME``) for each option.

    Values are checked in `read_settings`, not by argparse, so that a bad one is
    one line and the run can still withdraw the earlier report (see `SettingsError`).
    """
    group = parser.getgroup(
        "analog", "pytest-analog: fidelity of an analog model to its teacher (exit 0: the gate passed, "
        f"1: it failed, {EXIT_PARTIAL}: only part of it ran, as with -k, --lf, --ignore or a lost xdist worker)",
    )
    for name, metavar, _, default, text in _OPTIONS:
        shown = f" (default: {default})" if default is not None else ""
        group.addoption(f"--analog-{name}", metavar=metavar, default=None, help=text + shown)
        parser.addini(f"analog_{name.replace('-', '_')}", text + shown, default=None)
    for name, text in _FLAGS:
        group.addoption(f"--analog-{name}", action="store_true", default=None, help=text)
        parser.addini(f"analog_{name.replace('-', '_')}", text, type="bool", default=False)


@dataclass(frozen=True)
class Settings:
    """The resolved options: command line first, then the ini file, then the default."""

    teacher: str | None
    student: str | None
    reference: Path | None
    device: str
    dtype: str
    config: Path | None
    report: Path | None
    cache: Path | None
    suites: tuple[str, ...]
    max_prompts: int | None
    submit: Path | None
    tasks: tuple[str, ...] | None
    trust_remote_code: bool
    allow_pickle: bool


class SettingsError(pytest.UsageError):
    """A bad option; ``settings`` holds every option as far as it could be read (a bad one is None)."""

    def __init__(self, message: str, settings: Settings):
        super().__init__(message)
        self.settings = settings


def read_settings(config: pytest.Config, suites) -> Settings:
    """Resolve every option: command line, then ini file, then default; ``suites`` are the names of the known suites.

    Raises:
        SettingsError: for the first bad option or option pair, one line.
    """
    values, problems = {}, []
    for name, _, parse, default, _ in _OPTIONS:
        key = name.replace("-", "_")
        option = config.getoption(f"analog_{key}")
        raw = option if option is not None else config.getini(f"analog_{key}") or None
        if parse is parse_suites:
            parse = functools.partial(parse_suites, known=tuple(suites))
        try:
            if raw is None:
                values[key] = parse(default) if default is not None else None
            elif parse is str:
                values[key] = raw if option is not None else _ini_path(config, raw, name)
            else:
                values[key] = parse(raw)
        except ValueError as exc:
            problems.append(f"{f'--analog-{name}' if option is not None else f'ini option analog_{key}'}: {exc}")
            values[key] = None
    for name, _ in _FLAGS:
        key = name.replace("-", "_")
        values[key] = bool(config.getoption(f"analog_{key}") or config.getini(f"analog_{key}"))
    for key in ("reference", "config", "report", "cache", "submit"):
        values[key] = Path(values[key]).expanduser() if values[key] else None
    settings = Settings(**values)
    problems += _output_problems(settings)
    if settings.teacher and settings.reference:
        problems.append("--analog-teacher and --analog-reference were both given; gate against one: the teacher or its reference")
    elif bool(settings.teacher or settings.reference) != bool(settings.student):
        given = "teacher" if settings.teacher else "reference" if settings.reference else "student"
        missing = "teacher (or --analog-reference)" if given == "student" else "student"
        problems.append(f"--analog-{given} was given without --analog-{missing}; give both")
    if problems:
        raise SettingsError(problems[0], settings)
    return settings


def _output_problems(settings: Settings) -> list[str]:
    """Output paths that cannot be written, found before any model loads."""
    if settings.submit and settings.submit.is_dir():
        return [f"--analog-submit={settings.submit} is a folder; give a file name such as submission.json"]
    folders = {"report": settings.report, "cache": settings.cache, "submit": settings.submit and settings.submit.parent}
    problems = (_unwritable(f"--analog-{key}={getattr(settings, key)}", folder) for key, folder in folders.items() if folder)
    return [problem for problem in problems if problem][:1]


def _unwritable(option: str, folder: Path) -> str | None:
    """Why ``folder`` cannot hold the files written at the end, or None (a missing folder is made then)."""
    problem = folder_problem(folder)
    return f"{option}: {folder} {problem}; give a folder that can be written" if problem else None


def _ini_path(config: pytest.Config, raw: str, name: str) -> str:
    """Paths in the ini file are relative to it; a model that names no existing path stays a hub id."""
    base = config.inipath.parent if config.inipath else config.rootpath
    candidate = base / Path(raw).expanduser()
    if name in ("teacher", "student") and not candidate.exists() and not raw.startswith("."):
        return raw
    return str(candidate)
