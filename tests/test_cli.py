"""The `medseg` command: --version, help for every subcommand, clear errors, no silent no-ops."""

from __future__ import annotations

import pytest

from medseg import __version__
from medseg.cli import COMMANDS, build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_real_help(command, capsys):
    with pytest.raises(SystemExit) as ei:
        main([command, "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: medseg {command}" in out
    # each subcommand documents at least one real option or argument besides -h
    assert out.count("--") >= 2 or "positional arguments" in out


def test_all_pipeline_subcommands_present():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(COMMANDS) <= set(sub.choices)
    assert {"info", "convert", "train", "segment", "detect", "classify", "explain", "evaluate", "demo"} <= set(COMMANDS)


def test_bad_config_exits_2_with_message(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: segmentation\ntrain:\n  epocs: 3\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'epochs'?" in err and str(cfg) in err


def test_missing_config_exits_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "COMMAND" in capsys.readouterr().out
