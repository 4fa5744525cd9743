"""The community leaderboard: validate submission bundles, build a static site, verify models.

``analog-leaderboard build SUBMISSIONS_DIR --out SITE_DIR`` and
``analog-leaderboard verify SUBMISSION --teacher ... --student ...`` (see `cli`).
"""

from pytest_analog.leaderboard.board import Board, build_board, check_submission
from pytest_analog.leaderboard.verify import verify_models

__all__ = ["Board", "build_board", "check_submission", "verify_models"]
