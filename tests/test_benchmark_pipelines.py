"""benchmarks/pipelines.py on a tiny store (12 days, 8 × 16 grid, one 1-worker cluster): earthsim's statistics and
climatology and xarray's equivalents each get a row with positive rates in the JSON and the table, the statistics
of the two agree, and with a one-day window earthsim's climatology is xarray's plain groupby."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark



@pytest.fixture(scope="module")
def pipelines():
    yield from load_benchmark("pipelines")


@pytest.mark.timeout(120)
def test_every_job_and_implementation_on_a_one_worker_cluster(pipelines, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EARTHSIM_CATALOGS", raising=False)
    path = tmp_path / "pipelines.json"
    pipelines.main(["--quick", "--days", "12", "--grid", "8", "16", "--workers", "1", "--window-days", "1",
                    "--dir", str(tmp_path / "bench"), "--json", str(path)])
    figures = json.loads(path.read_text())
    assert figures["store"]["frames"] == 48 and figures["store"]["bytes"] > 48 * 2 * 4 * 8 * 16 * 4
    rows = {(r["workers"], r["job"], r["implementation"]) for r in figures["results"]}
    implementations = {"statistics": ("earthsim", "xarray", "xarray, earthsim's outputs"),
                       "climatology": ("earthsim", "xarray")}
    assert rows == {(1, job, name) for job, names in implementations.items() for name in names}
    for row in figures["results"]:
        assert row["seconds"] > 0 and row["mb_per_s"] > 0
    assert set(figures["ratios"]["workers=1"]) == {"statistics: earthsim/xarray", "climatology: earthsim/xarray",
                                                   "statistics: earthsim/xarray, earthsim's outputs"}
    assert all(value > 0 for value in figures["ratios"]["workers=1"].values())
    assert figures["differences"]["statistics_max_relative"] < 1e-10
    assert figures["differences"]["climatology_max_relative_days_1_365"] < 1e-6  # float32 results
    assert figures["climatology_output_bytes"]["earthsim climatology"] > 0
    table = capsys.readouterr().out
    assert table.count("| 1 | statistics |") == 3 and table.count("| 1 | climatology |") == 2
    assert not (tmp_path / "bench" / "pipelines-bench.zarr").exists()  # --dir without --keep: the store is removed
