"""The `earthsim` command: subcommands listed, each with help and examples, errors exit non-zero."""

import subprocess
import sys

import pytest

from earthsim.cli import main

SUBCOMMANDS = ["simulate", "ingest", "catalog", "stats", "train", "forecast", "score", "demo"]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help_with_examples(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"earthsim {name}" in out


def test_solver_flags_come_from_the_typed_configs(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "navier-stokes", "--help"])
    out = capsys.readouterr().out
    assert "--out" in out and "--trajectories" in out and "--save-resolutions" in out


def test_console_script_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "earthsim", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "simulate" in result.stdout


def test_bad_input_exits_non_zero_with_a_named_error(capsys):
    assert main(["catalog", "show", "no-such-dataset"]) == 2
    err = capsys.readouterr().err
    assert "no-such-dataset" in err and "era5-uk-t2m" in err


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "SUBCOMMAND" in capsys.readouterr().out

