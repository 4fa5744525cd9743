"""Does the gate, rerun on the submitted analog, give the submitted values?

`rerun_gate` runs ``pytest`` in a fresh folder on the suites a bundle covers, with the
bundle's measurement settings and the board's gates, against a teacher reference (or the
teacher itself), and returns the rerun's report; `unreproduced` compares every criterion
with the submitted one.

The rerun is isolated from every pytest configuration on the machine (any local user can put a
pytest.ini and conftest.py in $TMPDIR or /tmp, above the rerun's folder): its own ini file
(``-c``), its folder as rootdir, no conftest.py (``--noconftest``), no ``PYTEST_*`` variable
from the environment, no cache.
A bundle's settings that name a file (a prompt, behaviour or task file) are refused: they
would read a file the bundle chose on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_analog import registry
from pytest_analog.errors import AnalogError
from pytest_analog.gates import Gates
from pytest_analog.leaderboard.board import known_config

# Values agree when they differ by at most this, relative to the larger magnitude above 1 and absolute
# below it. Scored against the same reference, a value comes from the same stored teacher half and the
# analog's own pass: across machines CKA-like values move by about 1e-6 (float32 sums in another order)
# and benchmark accuracies not at all. 1e-4 leaves a hundredfold margin for the first, and is below the
# 1/n step of one flipped item of a benchmark task of up to 10,000 items.
DEFAULT_TOLERANCE = 1e-4
_DTYPES = ("float32", "bfloat16", "float16")


def rerun_gate(bundle: dict, student: str, gates: Gates, *, reference: str | None = None, teacher: str | None = None,
               allow_pickle: bool = False) -> dict[str, Any]:
    """Run the gate on ``student`` as the bundle was run, judged under ``gates``, and return the rerun's report
    (``fidelity.json``).

    The rerun reads the bundle's settings with ``gates`` in place of its own (written to a temporary
    config file), runs the installed suites its criteria come from, in the analog's dtype it records,
    against ``reference`` (a reference folder) or else ``teacher``, isolated as the module says.

    Raises:
        AnalogError: the bundle's settings name a file, or the rerun wrote no report (a usage error,
            a crash); one line with pytest's reason.
    """
    report = bundle["report"]
    suites = [s.name for s in registry.installed() if s.name in {c["suite"] for c in report["criteria"]}]
    if not suites:
        raise AnalogError("the submission has no criterion of an installed suite, so there is nothing to rerun")
    named = named_files(bundle["config"])
    if named:
        raise AnalogError(f"the submission's config names a file ({named[0]}); a rerun reads shipped prompt sets, "
                          "behaviours and tasks only: rerun the gate by hand with your own copy of that file")
    with tempfile.TemporaryDirectory(prefix="analog-rerun-") as folder:
        folder = Path(folder)
        config = folder / "config.yaml"
        settings = {**known_config(bundle["config"], report["criteria"]), "gates": dataclasses.asdict(gates)}
        config.write_text(json.dumps(settings), encoding="utf-8")  # JSON is YAML
        ini = folder / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        models = [f"--analog-reference={_local(reference)}"] if reference else [f"--analog-teacher={_local(teacher)}"]
        dtype = report["models"]["analog"].get("dtype")
        args = [
            sys.executable, "-m", "pytest", "-c", str(ini), f"--rootdir={folder}", "--noconftest", "-p", "no:cacheprovider",
            *models, f"--analog-student={_local(student)}", f"--analog-config={config}",
            f"--analog-report={folder / 'report'}", f"--analog-suites={','.join(suites)}",
            *([f"--analog-dtype={dtype}"] if dtype in _DTYPES else []),
            *(["--analog-allow-pickle"] if allow_pickle else []), "-q",
        ]
        env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
        run = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, check=False)
        written = folder / "report" / "fidelity.json"
        if run.returncode not in (0, 1) or not written.is_file():
            raise AnalogError(f"the rerun wrote no report (pytest exit code {run.returncode}): {_reason(run)}")
        return json.loads(written.read_text(encoding="utf-8"))


# A shipped prompt set, behaviour or task, or a task of lm-eval's registry: a plain name, no path or suffix.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def named_files(config: dict) -> list[str]:
    """The settings of a bundle's config that name a file rather than a shipped set, as ``key: value``."""
    entries = [("prompts.set", config["prompts"]["set"]),
               *(("steering.behaviours", b) for b in config["steering"]["behaviours"]),
               *(("benchmarks.tasks", t) for t in config["benchmarks"]["tasks"])]
    return [f"{key}: {value}" for key, value in entries if not _PLAIN_NAME.fullmatch(value)]


def unreproduced(submitted: list[dict], rerun: list[dict], tolerance: float = DEFAULT_TOLERANCE) -> list[str]:
    """Every criterion whose value or verdict the rerun does not reproduce, one line each, in the submission's
    order and then the rerun's; a criterion only one of the two has is one too. Empty: all reproduce."""
    theirs, ours = {c["id"]: c for c in submitted}, {c["id"]: c for c in rerun}
    problems = []
    for name in dict.fromkeys([*theirs, *ours]):
        mine, given = ours.get(name), theirs.get(name)
        if mine is None:
            problems.append(f"{name}: submitted {_value(given)}, not measured by the rerun")
        elif given is None:
            problems.append(f"{name}: not in the submission, measured {_value(mine)} by the rerun")
        elif not values_agree(given["value"], mine["value"], tolerance):
            problems.append(f"{name}: submitted {_value(given)}, rerun {_value(mine)}")
        elif given["passed"] is not mine["passed"]:
            problems.append(f"{name}: the value reproduces but not the verdict: submitted passed={given['passed']}, "
                            f"rerun passed={mine['passed']}")
    return problems


def values_agree(submitted: float | None, rerun: float | None, tolerance: float) -> bool:
    """Whether two values agree within ``tolerance`` (see `DEFAULT_TOLERANCE`); None (not measured) agrees with None only."""
    if submitted is None or rerun is None:
        return submitted is rerun
    return math.isclose(submitted, rerun, rel_tol=tolerance, abs_tol=tolerance)


def _value(criterion: dict) -> str:
    return "no value" if criterion["value"] is None else f"{criterion['value']:.8g}"


def _local(model: str) -> str:
    """An existing path made absolute (the rerun runs in another folder); a hub id as it is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _reason(run: subprocess.CompletedProcess) -> str:
    """pytest's own one-line error, else the last line it printed."""
    lines = [line.strip() for line in (run.stderr + "\n" + run.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["it printed nothing"])[0 if errors else -1]
