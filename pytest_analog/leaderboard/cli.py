"""``analog-leaderboard``: build the leaderboard site, verify a submission's models.

Exit codes: 0 success; 1 a rejected submission (the site is still written from
the others) or models that differ from the submission; 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pytest_analog.atomic import folder_problem, write_atomic
from pytest_analog.errors import AnalogError


def main(argv: list[str] | None = None) -> int:
    summary = __doc__.splitlines()[0].removeprefix("``analog-leaderboard``: ")  # the docstring's markup stays out of --help
    parser = argparse.ArgumentParser(prog="analog-leaderboard", description=summary[0].upper() + summary[1:])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="validate every *.json submission in a folder and write the site")
    build.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR")
    build.add_argument("--out", type=Path, required=True, metavar="SITE_DIR", help="folder for index.html and leaderboard.json")
    verify = commands.add_parser("verify", help="re-hash local model files and compare them with a submission")
    verify.add_argument("submission", type=Path, metavar="SUBMISSION")
    verify.add_argument("--teacher", required=True, metavar="MODEL", help="the teacher: a hub id, a model directory or a .gguf file")
    verify.add_argument("--student", required=True, metavar="MODEL", help="the analog: a hub id, a model directory or a .gguf file")
    verify.add_argument("--allow-pickle", action="store_true", help="accept pickle weight files (they are only hashed)")
    args = parser.parse_args(argv)
    try:
        return _build(args) if args.command == "build" else _verify(args)
    except AnalogError as exc:
        print(f"analog-leaderboard: error: {exc}", file=sys.stderr)
        return 2


def _build(args) -> int:
    from pytest_analog.leaderboard.board import build_board
    from pytest_analog.leaderboard.page import render_page

    problem = folder_problem(args.out)
    if problem:
        raise AnalogError(f"--out {args.out} {problem}; give a folder for index.html and leaderboard.json")
    board = build_board(args.submissions)
    page, data = render_page(board), json.dumps(board.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_atomic(args.out / "leaderboard.json", data)
    write_atomic(args.out / "index.html", page)
    for rejection in board.rejected:
        print(f"rejected {rejection['file']}: {rejection['reason']}", file=sys.stderr)
    print(f"{len(board.entries)} entries, {len(board.rejected)} rejected: {args.out / 'index.html'}")
    return 1 if board.rejected else 0


def _verify(args) -> int:
    from pytest_analog.leaderboard.verify import verify_models
    from pytest_analog.submission import load_submission

    differences = verify_models(load_submission(args.submission), args.teacher, args.student, allow_pickle=args.allow_pickle)
    reasons = differences.pop("submission")
    print(f"submission: REJECTED: {reasons[0]}" if reasons else "submission: consistent (its own sha256, file hashes and verdicts)")
    for role, found in differences.items():
        if found:
            print(f"{role}: NOT the submitted files: {'; '.join(found)}")
        else:
            print(f"{role}: the same files as submitted")
    return 1 if reasons or any(differences.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
