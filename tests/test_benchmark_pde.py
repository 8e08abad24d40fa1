"""benchmarks/pde.py: the side-by-side cases compare the same flow (so its ratios and differences mean something),
its JSON carries every figure of the table, and without torch-cfd it says so and exits 2; the second part (seconds
per simulated time unit) times every learned model and solver and needs no torch-cfd."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from conftest import load_benchmark



@pytest.fixture(scope="module")
def pde():
    yield from load_benchmark("pde")


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
    pde.main(["--parts", "torch-cfd", "--sizes", "16", "--batches", "1", "2", "--rounds", "1", "--seconds", "0.001",
              "--diff-steps", "2", "--json", str(path)])
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


def test_learned_part_times_every_model_and_solver_without_torch_cfd(pde, tmp_path, capsys, monkeypatch):
    """A tiny second part (16² models, 0.05 time units, one run): every learned family and every solver case in the
    JSON with positive finite timings, each model's ratio against the finite-volume solver at its matching
    resolution (given or 2× its grid, which is then timed too), and one table row per case."""
    monkeypatch.setitem(sys.modules, "torch_cfd", None)  # the second part does not need torch-cfd
    path = tmp_path / "pde.json"
    pde.main(["--parts", "learned", "--learned-grid", "16", "--duration", "0.05", "--repeats", "1",
              "--fv-sizes", "16", "--spectral-sizes", "16", "--match", "tsm=16", "--json", str(path)])
    figures = json.loads(path.read_text())
    assert "rows" not in figures and torch.get_default_dtype() == torch.float32
    rows = figures["learned"]["rows"]
    learned = {r["name"]: r for r in rows if r["kind"] == "learned"}
    assert set(learned) == set(pde.LEARNED_PRESETS)
    solvers = {(r["name"], r["dtype"], r["resolution"]) for r in rows if r["kind"] == "solver"}
    assert solvers == {("finite-volume", d, n) for d in ("float32", "float64") for n in (16, 32)} | {
        ("pseudo-spectral", "float64", 16)}
    fv = {(r["resolution"], r["dtype"]): r["seconds_per_time_unit"] for r in rows if r["name"] == "finite-volume"}
    for row in rows:
        assert len(row["seconds"]) == 1 and all(math.isfinite(s) and s > 0 for s in row["seconds"])
        assert math.isfinite(row["seconds_per_time_unit"]) and row["seconds_per_time_unit"] > 0
        assert row["simulated_time"] >= 0.05 - 1e-12 and row["finite"]
    for name, row in learned.items():
        assert row["resolution"] == 16 and row["dtype"] == "float32" and row["parameters"] > 0
        match = row["match"]
        assert match["resolution"] == (16 if name == "tsm" else 32)
        for dtype, ratio in match["ratio"].items():  # one round: the median of one per-round ratio
            assert ratio == pytest.approx(row["seconds_per_time_unit"] / fv[(match["resolution"], dtype)])
            assert match["ratio_range"][dtype] == pytest.approx([ratio, ratio])
    assert learned["spacetime-fno"]["count"] == learned["spacetime-fno"]["frames_per_call"]  # whole calls
    table = capsys.readouterr().out
    assert all(table.count(f"| {name} |") == 1 for name in learned)
    assert table.count("| finite-volume |") == 4 and table.count("| pseudo-spectral |") == 1


def test_match_names_a_learned_model_and_an_even_resolution(pde):
    for bad in (["nope=64"], ["tsm=63"], ["tsm"]):
        with pytest.raises(SystemExit):
            pde.parse_matches(bad, list(pde.LEARNED_PRESETS))
    assert pde.parse_matches(["tsm=64", "fno=128"], list(pde.LEARNED_PRESETS)) == {"tsm": 64, "fno": 128}
