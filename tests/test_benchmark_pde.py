"""benchmarks/pde.py: the side-by-side cases compare the same flow (so its ratios and differences mean something),
its JSON carries every figure of the table, and without torch-cfd it says so and exits 2."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def pde():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("benchmark_pde", BENCHMARKS / "pde.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_without_torch_cfd_exits_2_with_one_line(pde, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch_cfd", None)  # makes ``import torch_cfd`` raise ImportError
    with pytest.raises(SystemExit) as exit_:
        pde.main(["--quick"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "torch-cfd is not importable" in err


def test_spectral_solvers_agree_to_round_off_from_the_same_start(pde):
    """Same scheme, same start: float64 solutions after 10 steps equal to round-off (axis order handled); at 32²
    torch-cfd's 2/3 filter keeps one more k_y row, so only with earthsim's filter."""
    pytest.importorskip("torch_cfd")
    with pde.default_dtype(torch.float64), torch.no_grad():
        assert pde.differences("spectral", 64, 2, torch.float64, 10, "forward_euler")["relative_difference"] < 1e-13
        at_32 = pde.differences("spectral", 32, 1, torch.float64, 10, "forward_euler")
    assert at_32["relative_difference_same_filter"] < 1e-13 < at_32["relative_difference"]


def test_finite_volume_solvers_differ_by_their_schemes_only(pde):
    """Different diffusion schemes: close (not round-off) after 10 steps; earthsim's projection is exact."""
    pytest.importorskip("torch_cfd")
    with pde.default_dtype(torch.float64), torch.no_grad():
        out = pde.differences("fvm", 32, 2, torch.float64, 10, "forward_euler")
    assert 1e-8 < out["relative_difference"] < 1e-3
    assert out["max_divergence"]["earthsim"] < 1e-11


def test_main_writes_every_case_to_json_and_restores_the_default_dtype(pde, tmp_path, capsys):
    pytest.importorskip("torch_cfd")
    path = tmp_path / "pde.json"
    pde.main(["--sizes", "16", "--batches", "1", "2", "--rounds", "1", "--seconds", "0.001", "--diff-steps", "2",
              "--json", str(path)])
    figures = json.loads(path.read_text())
    assert torch.get_default_dtype() == torch.float32
    assert {(r["solver"], r["dtype"], r["batch"]) for r in figures["rows"]} == {
        (s, d, b) for s in ("spectral", "fvm") for d in ("float32", "float64") for b in (1, 2)}
    for row in figures["rows"]:
        rates = row["steps_per_second"]
        assert rates["earthsim"] > 0 and rates["torch-cfd"] > 0 and row["ratio"] > 0
        assert 0 <= row["relative_difference"] < 1e-2
    assert figures["target_met"] == all(r["ratio"] >= 1 for r in figures["rows"])
    table = capsys.readouterr().out
    assert table.count("| spectral |") == 4 and table.count("| fvm |") == 4
