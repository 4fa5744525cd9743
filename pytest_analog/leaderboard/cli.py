"""``analog-leaderboard``: build the leaderboard site, verify a submission's models and rerun its gate.

Both judge under the board's gates: the shipped defaults, or ``--gates FILE`` (a
config file; only its ``gates:`` are read), never a submission's own. The same
analog weights submitted twice against one reference are all listed, each
marked: a bundle's ``created`` date is its submitter's word, so none counts as first.

Exit codes: 0 success; 1 a rejected submission or duplicate weights (the site is
still written from the others), models or a teacher reference that differ from
the submission, or values or verdicts (under the board's gates) a rerun does not
reproduce; 2 bad input; 4 a teacher reference that cannot be used (missing, not a
reference, a newer schema, a file changed), as everywhere a reference is read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pytest_analog.atomic import folder_problem, write_atomic
from pytest_analog.errors import AnalogError
from pytest_analog.leaderboard.board import board_gates, build_board, bundle_gates, gate_differences
from pytest_analog.leaderboard.page import render_page
from pytest_analog.leaderboard.rerun import DEFAULT_TOLERANCE, rerun_gate, unreproduced
from pytest_analog.leaderboard.verify import reference_problem, verify_models
from pytest_analog.reference import store
from pytest_analog.submission import load_submission

REFERENCE_REFUSED = 4  # exit code, as for pytest --analog-reference and analog-reference


def main(argv: list[str] | None = None) -> int:
    summary = __doc__.splitlines()[0].removeprefix("``analog-leaderboard``: ")  # the docstring's markup stays out of --help
    parser = argparse.ArgumentParser(prog="analog-leaderboard", description=summary[0].upper() + summary[1:])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="validate every *.json submission in a folder and write the site")
    build.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR")
    build.add_argument("--out", type=Path, required=True, metavar="SITE_DIR", help="folder for index.html and leaderboard.json")
    _add_gates(build)
    verify = commands.add_parser(
        "verify", help="re-hash local model files (or check a teacher reference) against a submission; --rerun reruns its gate"
    )
    verify.add_argument("submission", type=Path, metavar="SUBMISSION")
    teacher = verify.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--teacher", metavar="MODEL", help="the teacher: a hub id, a model directory or a .gguf file")
    teacher.add_argument("--reference", type=Path, metavar="REF", help="the teacher reference the submission names (a folder)")
    verify.add_argument("--student", required=True, metavar="MODEL", help="the analog: a hub id, a model directory or a .gguf file")
    verify.add_argument("--rerun", action="store_true", help="rerun the gate on the analog and compare every criterion's value")
    verify.add_argument("--tolerance", type=_tolerance, metavar="T", default=None,
                        help=f"with --rerun: largest difference of a reproduced value, absolute below 1 and relative "
                             f"above (default: {DEFAULT_TOLERANCE:g})")
    verify.add_argument("--allow-pickle", action="store_true", help="accept pickle weight files (they are only hashed)")
    _add_gates(verify)
    args = parser.parse_args(argv)
    if args.command == "verify" and args.tolerance is not None and not args.rerun:
        verify.error("--tolerance applies to --rerun; add --rerun or leave it out")
    try:
        return _build(args) if args.command == "build" else _verify(args)
    except AnalogError as exc:
        print(f"analog-leaderboard: error: {exc}", file=sys.stderr)
        return 2


def _add_gates(command: argparse.ArgumentParser) -> None:
    command.add_argument("--gates", type=Path, metavar="FILE", help="judge under the gates: of this config file "
                         "(default: the shipped defaults; a submission's own gates are never used)")


def _tolerance(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{value}'")
    return number


def _build(args) -> int:
    problem = folder_problem(args.out)
    if problem:
        raise AnalogError(f"--out {args.out} {problem}; give a folder for index.html and leaderboard.json")
    board = build_board(args.submissions, board_gates(args.gates))
    page, data = render_page(board), json.dumps(board.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_atomic(args.out / "leaderboard.json", data)
    write_atomic(args.out / "index.html", page)
    for rejection in board.rejected:
        print(f"rejected {rejection['file']}: {rejection['reason']}", file=sys.stderr)
    for files in board.duplicates:
        print(f"duplicate {', '.join(files)}: the same analog weights against the same teacher reference; "
              "all are listed, keep one", file=sys.stderr)
    print(f"{len(board.entries)} entries judged under {board.gates.name}, {len(board.rejected)} rejected: {args.out / 'index.html'}")
    return 1 if board.rejected or board.duplicates else 0


def _verify(args) -> int:
    gates = board_gates(args.gates)
    bundle = load_submission(args.submission)
    if args.reference:
        try:
            reference = store.load(args.reference)
        except AnalogError as exc:
            print(f"analog-leaderboard: error: {exc}", file=sys.stderr)
            return REFERENCE_REFUSED
    differences = verify_models(bundle, args.teacher, args.student, allow_pickle=args.allow_pickle)
    reasons = differences.pop("submission")
    print(f"submission: REJECTED: {reasons[0]}" if reasons else "submission: consistent (its own sha256, file hashes and verdicts)")
    problem = reference_problem(bundle, reference) if args.reference else None
    if args.reference:
        print(f"reference: NOT the submission's: {problem}" if problem else
              f"reference: the one the submission was scored against ({reference.id[:12]}…)")
    for role, found in differences.items():
        if found:
            print(f"{role}: NOT the submitted files: {'; '.join(found)}")
        else:
            print(f"{role}: the same files as submitted")
    failed = bool(reasons or problem or any(differences.values()))
    if args.rerun:
        failed = _rerun(args, bundle, gates, skip=failed)
    return 1 if failed else 0


def _rerun(args, bundle: dict, gates, *, skip: bool) -> bool:
    """Rerun the gate under the board's ``gates`` (a `board.PublishedGates`) and print whether it reproduces the
    submission's values and verdicts; True when it does not (or could not run)."""
    if skip:
        print("rerun: not run (the submission, its models or its reference do not match)")
        return True
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    differences = gate_differences(bundle_gates(bundle["config"], bundle["report"]["criteria"]), gates.gates)
    if differences:
        print(f"rerun: the submission's own gates differ from {gates.name}: {'; '.join(differences)}")
    print(f"rerun: running the gate (pytest) on the analog with the submission's settings under {gates.name}", flush=True)
    try:
        report = rerun_gate(bundle, args.student, gates.gates, reference=args.reference, teacher=args.teacher,
                            allow_pickle=args.allow_pickle)
    except AnalogError as exc:
        print(f"rerun: FAILED: {exc}")
        return True
    submitted = bundle["report"]["criteria"]
    problems = unreproduced(submitted, report["criteria"], tolerance)
    if not problems:
        print(f"rerun: all {len(submitted)} criteria reproduce within {tolerance:g}")
        return False
    print(f"rerun: {len(problems)} of {len(submitted)} criteria do not reproduce within {tolerance:g} under {gates.name}:")
    for problem in problems:
        print(f"  {problem}")
    return True


if __name__ == "__main__":
    sys.exit(main())
