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


# ----------------------------------------------------------- one line for every refusal (review H6, H7, L17, L18)

def _one_error_line(err: str, command: str) -> str:
    """The single ``earthsim COMMAND: error: ...`` line of ``err`` (and nothing else: no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"earthsim {command}: error: "), err
    return lines[0]


def test_a_write_error_without_a_file_name_names_the_output(monkeypatch, capsys):
    import errno

    from earthsim import cli

    def no_space(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "_run_score", no_space)
    assert main(["score", "fc.zarr", "--truth", "t", "--out", "somewhere/scores"]) == 2
    line = _one_error_line(capsys.readouterr().err, "score")
    assert line.endswith("somewhere/scores: No space left on device") and "a file" not in line
    monkeypatch.setattr(cli, "_run_train", no_space)
    assert main(["train", "kolmogorov-fno"]) == 2  # the default run directory
    assert _one_error_line(capsys.readouterr().err, "train").endswith("runs/kolmogorov-fno: No space left on device")


class _FailingWindows:
    """A dataset whose every sample raises ``error`` (in the DataLoader worker process that reads it)."""

    def __init__(self, error):
        self.error = error

    def __len__(self):
        return 4

    def __getitem__(self, index):
        raise self.error


def _read_in_a_worker(error):
    def run(args):
        import torch

        next(iter(torch.utils.data.DataLoader(_FailingWindows(error), num_workers=1)))
    return run


def test_an_earthsim_error_in_a_dataloader_worker_is_one_line(monkeypatch, capsys):
    from earthsim import cli
    from earthsim.data.windows import SplitTooShortError
    from earthsim.errors import ValidationError

    message = "store data/x.zarr: variable 'u' holds NaN in 1 frame(s) of the window of sample 3"
    monkeypatch.setattr(cli, "_run_check", _read_in_a_worker(ValidationError(message)))
    assert main(["check", "x.zarr"]) == 2  # re-raised by torch as ValidationError("Caught ... Original Traceback ...")
    assert _one_error_line(capsys.readouterr().err, "check") == f"earthsim check: error: {message}"
    # an error class torch cannot rebuild from one string comes back as RuntimeError
    monkeypatch.setattr(cli, "_run_check", _read_in_a_worker(SplitTooShortError("split 'test' is too short", 2, 5)))
    assert main(["check", "x.zarr"]) == 2
    assert _one_error_line(capsys.readouterr().err, "check") == "earthsim check: error: split 'test' is too short"
    # anything else is a bug: its traceback is kept
    monkeypatch.setattr(cli, "_run_check", _read_in_a_worker(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError, match="Caught ZeroDivisionError in DataLoader worker process 0"):
        main(["check", "x.zarr"])


def test_run_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    assert main(["train", "kolmogorov-fno", "--run-dir", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert str(tmp_path / "run") in line and "is a file, not a directory" in line


def test_catalog_list_reports_invalid_yaml_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "broken.yaml").write_text("name: broken\nkind: [unclosed\n")
    monkeypatch.setenv("EARTHSIM_CATALOGS", str(tmp_path))
    assert main(["catalog", "list"]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err, "catalog")
    assert "broken.yaml: not valid YAML: expected ',' or ']'" in line and "line 3, column 1" in line
    assert "era5-uk-t2m" in captured.out  # the good entries are still listed


def _planted(path, marker):
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Payload()))  # pickle protocol 5: torch warns before refusing it


def test_a_refused_export_is_one_line_without_warnings(tmp_path):
    import warnings

    from earthsim.errors import EarthsimError
    from earthsim.models.export import load_exported

    _planted(tmp_path / "model.pt", tmp_path / "pwned")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(EarthsimError) as refused:
        warnings.simplefilter("always")
        load_exported(tmp_path / "model.pt")
    assert not [w for w in caught if "pickle protocol" in str(w.message)]
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'model.pt'}: not a loadable earthsim model file (")
    assert not (tmp_path / "pwned").exists()


def test_a_refused_export_says_why_without_torchs_advice(tmp_path):
    from earthsim.errors import EarthsimError
    from earthsim.models.export import load_exported

    _planted(tmp_path / "model.pt", tmp_path / "pwned")
    with pytest.raises(EarthsimError) as refused:
        load_exported(tmp_path / "model.pt")
    assert "weights_only" not in str(refused.value) and "Unsupported" in str(refused.value)
