"""The command line's parser (dustgp.cli.parser): every option has help, --version, and negative values glued to
their flag."""

import pytest

import dustgp
from dustgp.cli import build_parser, main
from dustgp.cli.parser import glue_negative_values


@pytest.mark.parametrize("command", ["simulate", "fit", "predict", "plot", "info", "demo", "view", "query"])
def test_every_option_is_explained(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        assert action.help, f"{command}: option {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dustgp {dustgp.__version__}"


def test_negative_lists_are_glued_to_their_flag_and_lone_numbers_left_alone() -> None:
    """argparse takes ``-25.5,-3.8`` for an option, so it is glued to its flag; a lone ``-5`` it reads as a value
    (the parser has no option that looks like a negative number), so it is left as given."""
    assert glue_negative_values(["--b", "-25.5,-3.8", "--l", "1,2"]) == ["--b=-25.5,-3.8", "--l", "1,2"]
    assert glue_negative_values(["--seed", "-5"]) == ["--seed", "-5"]
    assert build_parser().parse_args(["predict", "fit.ckpt", "m.nc", "--seed", "-5"]).seed == -5
