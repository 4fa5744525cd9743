"""The community leaderboard: validate submission bundles, build a static site, verify models and reruns.

``analog-leaderboard build SUBMISSIONS_DIR --out SITE_DIR`` and
``analog-leaderboard verify SUBMISSION --teacher ... | --reference ... --student ... [--rerun]`` (see `cli`);
both judge under the board's gates (`board_gates`), never a submission's own.
"""

from pytest_analog.leaderboard.board import Board, PublishedGates, board_gates, build_board, check_submission
from pytest_analog.leaderboard.verify import verify_models

__all__ = ["Board", "PublishedGates", "board_gates", "build_board", "check_submission", "verify_models"]
