"""The batch forecast run: a model and a baseline forecast as tasks on a cluster, then one scorecard, equal to the
library's forecasts and score made here; run again, it keeps the forecasts already written."""

from __future__ import annotations

import torch
import xarray as xr

from earthsim.data.stats import compute_statistics
from earthsim.data.windows import WindowDataset
from earthsim.forecast import persistence, run_forecast
from earthsim.models import DataSpec, build_model, export_model
from earthsim.score import score
from pipelines import forecast_score
from pipelines.conftest import global_weather, write_entry


def _model(entry: str, path):
    windows = WindowDataset(entry, "train", t_in=1, t_out=1)
    torch.manual_seed(0)
    model = build_model("fno", {"n_modes": [3, 4], "hidden_channels": 8, "n_layers": 2, "t_in": 1, "t_out": 1,
                                "residual": True}, DataSpec.from_windows(windows))
    return export_model(model, path, dataset=windows.entry.name, stride=1, lead_strides=(1,), step=1,
                        train_config={"seed": 0})


def test_batch_forecast_then_score_equals_the_library_here(catalog_folder, tmp_path, scheduler, capsys):
    write_entry(catalog_folder, "wx", global_weather(days=4), tmp_path / "stores" / "wx.zarr")
    compute_statistics("wx", progress=False)
    checkpoint = _model("wx", tmp_path / "fno" / "model.pt")
    argv = [f"fno={checkpoint}", "--baseline", "persistence", "--dataset", "wx", "--steps", "3",
            "--out", str(tmp_path / "batch"), "--scheduler", scheduler, "--no-progress"]
    assert forecast_score.main(argv) == 0
    job = xr.open_dataset(tmp_path / "batch" / "scores" / "scorecard.nc").load()

    here = tmp_path / "here"
    stores = {"fno": run_forecast(checkpoint, "wx", "test", steps=3, out=here / "fno.zarr", progress=False),
              "persistence": persistence("wx", "test", steps=3, out=here / "persistence.zarr", progress=False)}
    expected = score([f"{k}={v}" for k, v in stores.items()], "wx", here / "scores", progress=False)
    xr.testing.assert_allclose(job.drop_attrs().drop_vars("store"), expected.drop_attrs().drop_vars("store"))
    assert job.model.values.tolist() == ["fno", "persistence"]
    assert [p.split("/")[-1] for p in job.store.values.tolist()] == ["fno.zarr", "persistence.zarr"]

    capsys.readouterr()
    assert forecast_score.main([*argv, "--overwrite"]) == 0  # the forecasts are kept, the scores made again
    assert "2 of 2 forecasts already written" in capsys.readouterr().err


def test_a_kept_forecast_of_another_request_is_refused(catalog_folder, tmp_path, scheduler, capsys):
    write_entry(catalog_folder, "wx", global_weather(days=4), tmp_path / "stores" / "wx.zarr")
    argv = ["--baseline", "persistence", "--dataset", "wx", "--out", str(tmp_path / "batch"), "--scheduler", scheduler,
            "--no-progress"]
    assert forecast_score.main([*argv, "--steps", "2"]) == 0
    capsys.readouterr()
    assert forecast_score.main([*argv, "--steps", "3"]) == 2
    assert "scores already exists" in capsys.readouterr().err
    assert forecast_score.main([*argv, "--steps", "3", "--overwrite"]) == 0
    card = xr.open_dataset(tmp_path / "batch" / "scores" / "scorecard.nc")
    assert card.sizes["prediction_timedelta"] == 3
    import shutil

    shutil.rmtree(tmp_path / "batch" / "scores")
    capsys.readouterr()
    assert forecast_score.main([*argv, "--steps", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("pipelines.forecast_score: error:") and "steps: 3 there, 2 now" in error


def test_the_solver_baseline_takes_its_resolution_and_device(catalog_folder, tmp_path, scheduler):
    """--solver-resolution and --device reach the solver baseline as they do in earthsim forecast."""
    import math

    import yaml

    from earthsim.forecast import solver_baseline
    from earthsim.sim.navier_stokes import NavierStokesConfig, simulate_navier_stokes

    store = tmp_path / "stores" / "fv.zarr"
    simulate_navier_stokes(NavierStokesConfig(resolution=64, save_resolutions=(64, 32), staggered=True, trajectories=2,
                                              frames=4, save_interval=0.1, spinup_time=0.2, batch_size=2,
                                              max_velocity=3.0), store, progress=False)
    entry = tmp_path / "fv32.yaml"
    entry.write_text(yaml.safe_dump({
        "name": "fv32", "kind": "fluid", "description": "staggered test flow", "licence": "test", "provenance": "tests",
        "store": str(store), "group": "32", "statistics": str(tmp_path / "stores" / "fv32.stats.zarr"),
        "variables": {name: {"units": "1"} for name in ("u", "v", "vorticity")},
        "grid": {"x": 32, "y": 32, "length": 2 * math.pi}, "time": {"step": 0.1, "units": "solver time units"},
        "splits": {"train": {"trajectory": [0, 1]}, "test": {"trajectory": [1, 2]}}}))
    argv = ["--baseline", "solver", "--solver-resolution", "64", "--device", "cpu", "--dataset", str(entry),
            "--steps", "2", "--out", str(tmp_path / "batch"), "--scheduler", scheduler, "--no-progress"]
    assert forecast_score.main(argv) == 0
    job = xr.open_zarr(tmp_path / "batch" / "forecasts" / "solver.zarr", consolidated=False).load()
    here = solver_baseline(str(entry), "test", steps=2, out=tmp_path / "here.zarr", progress=False, resolution=64)
    xr.testing.assert_identical(job.drop_attrs(), xr.open_zarr(here, consolidated=False).load().drop_attrs())
    assert job.attrs["provenance"]["config"]["resolution"] == 64
    assert forecast_score.main(["--baseline", "persistence", "--solver-resolution", "64", *argv[4:]]) == 2


def test_the_initial_times_and_batch_size_reach_every_forecast(catalog_folder, tmp_path, scheduler):
    """--inits and --batch-size reach the models and the baselines as they do in earthsim forecast."""
    write_entry(catalog_folder, "wx", global_weather(days=4), tmp_path / "stores" / "wx.zarr")
    compute_statistics("wx", progress=False)
    checkpoint = _model("wx", tmp_path / "fno" / "model.pt")
    every = xr.open_zarr(persistence("wx", "test", steps=2, out=tmp_path / "all.zarr", progress=False),
                         consolidated=False).time.values
    assert len(every) > 1
    inits = [str(t)[:16] for t in every[[0, -1]]]
    argv = [f"fno={checkpoint}", "--baseline", "persistence", "--dataset", "wx", "--steps", "2", "--inits", *inits,
            "--batch-size", "1", "--out", str(tmp_path / "batch"), "--scheduler", scheduler, "--no-progress"]
    assert forecast_score.main(argv) == 0
    here = {"fno": run_forecast(checkpoint, "wx", "test", steps=2, inits=inits, batch_size=1,
                                out=tmp_path / "fno.zarr", progress=False),
            "persistence": persistence("wx", "test", steps=2, inits=inits, batch_size=1,
                                       out=tmp_path / "persistence.zarr", progress=False)}
    for name, path in here.items():
        job = xr.open_zarr(tmp_path / "batch" / "forecasts" / f"{name}.zarr", consolidated=False)
        assert job.time.values.tolist() == every[[0, -1]].tolist()
        assert job.t2m.encoding["chunks"][0] == 1, name  # a store is written one block of initial times at a time
        xr.testing.assert_identical(job.drop_attrs(), xr.open_zarr(path, consolidated=False).load().drop_attrs())
