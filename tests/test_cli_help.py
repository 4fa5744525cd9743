"""The commands' --help: plain text, and no made-up default for a required setting."""

import pytest

from pytest_analog import demo
from pytest_analog.distill import cli as distill_cli
from pytest_analog.leaderboard import cli as leaderboard_cli


@pytest.mark.parametrize("main", [distill_cli.main, leaderboard_cli.main, demo.main], ids=["distill", "leaderboard", "demo"])
def test_help_has_no_markup(main, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and "`" not in text
    assert "(default: None)" not in " ".join(text.split())


def test_distill_help_says_the_teacher_is_required(capsys):
    with pytest.raises(SystemExit):
        distill_cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Distil an analog of a teacher into a release folder." in text
    assert "--teacher TEACHER hub id, model directory or .gguf file (required, here or in --config)" in text
