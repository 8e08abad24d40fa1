"""Forecast stores: layout, rollout against a hand-written loop, chunked feedback, resume after SIGKILL,
ensembles, and the persistence, climatology and solver baselines against independent references."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from conftest import write_store_entry
from earthsim.data.stats import compute_climatology, compute_statistics
from earthsim.data.store import write_zarr
from earthsim.data.windows import WindowDataset
from earthsim.errors import CatalogError, EarthsimError, ValidationError
from earthsim.forecast import climatology_forecast, persistence, run_forecast, solver_baseline
from earthsim.models import DataSpec, build_model, export_model, load_exported
from earthsim.sim.navier_stokes import NavierStokesConfig, simulate_navier_stokes
from synthetic import write_waves_entry

ROOT = Path(__file__).resolve().parents[1]
N = 16


def _fluid_entry(root: Path, frames=12) -> Path:
    path = write_waves_entry(root, trajectories=7, frames=frames, n=N)
    compute_statistics(str(path), progress=False)
    return path


@pytest.fixture(scope="module")
def fluid(tmp_path_factory) -> Path:
    return _fluid_entry(tmp_path_factory.mktemp("fluid"))


def _weather_entry(root: Path) -> Path:
    """Three days of hourly z (two levels) and t2m on a 6 × 8 grid, with a diurnal cycle."""
    times = pd.date_range("2020-02-27T00:00", periods=72, freq="1h")
    lat, lon = np.linspace(40.0, 50.0, 6), np.linspace(-5.0, 9.0, 8)
    rng = np.random.default_rng(1)
    hour = times.hour.values[:, None, None]
    t2m = 280 + 5 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 1, (72, 6, 8))
    z = 5e4 + 300 * rng.normal(0, 1, (72, 2, 6, 8)) + np.array([0.0, -3e4])[None, :, None, None]
    ds = xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), t2m.astype(np.float32), {"units": "K", "long_name": "2 m T"}),
         "z": (("time", "level", "latitude", "longitude"), z.astype(np.float32), {"units": "m**2 s**-2"})},
        coords={"time": times, "level": [500.0, 850.0], "latitude": lat, "longitude": lon})
    path = write_store_entry(
        root, "wx", ds, "weather", levels=[500, 850], climatology=str(root / "wx.clim.zarr"),
        grid={"latitude": {"start": 40.0, "stop": 50.0, "size": 6}, "longitude": {"start": -5.0, "stop": 9.0, "size": 8}},
        time={"start": "2020-02-27T00:00", "stop": "2020-02-29T23:00", "step": "1h"},
        splits={"train": {"start": "2020-02-27T00:00", "stop": "2020-02-28T23:00"},
                "test": {"start": "2020-02-29T00:00", "stop": "2020-02-29T23:00"}})
    compute_statistics(str(path), progress=False)
    compute_climatology(str(path), progress=False, window_days=5)  # day 60 (the test day) draws on day 59
    return path


@pytest.fixture(scope="module")
def weather(tmp_path_factory) -> Path:
    return _weather_entry(tmp_path_factory.mktemp("weather"))


def _model(entry: Path, t_in=1, t_out=1, residual=False, seed=0, zero=False, stride=1, outputs=None, **params):
    """A small FNO for ``entry``'s data with fixed random (or zero) weights."""
    windows = WindowDataset(str(entry), "train", t_in=t_in, t_out=t_out, stride=stride)
    torch.manual_seed(seed)
    model = build_model("fno", {"n_modes": [3, 4], "hidden_channels": 8, "n_layers": 2, "t_in": t_in, "t_out": t_out,
                                "residual": residual, **params}, DataSpec.from_windows(windows, outputs))
    if zero:
        for parameter in model.parameters():
            parameter.data.zero_()
    return model, windows


def _export(entry: Path, path: Path, stride=1, **changes) -> Path:
    """A model.pt written by the trainer's export function."""
    model, windows = _model(entry, stride=stride, **changes)
    return export_model(model, path, dataset=windows.entry.name, stride=stride, lead_strides=(stride,), step=7,
                        train_config={"seed": changes.get("seed", 0)})


def _truth(entry: Path, group=None) -> xr.Dataset:
    spec = yaml.safe_load(entry.read_text())
    return xr.open_zarr(entry.parent / spec["store"], group=group, consolidated=False).load()


def _manual_rollout(checkpoint: Path, entry: Path, trajectory: int, init_frame: int, steps: int) -> np.ndarray:
    """Independent re-computation: raw frames from the store, one model call at a time, a list as history."""
    model, _ = load_exported(checkpoint)
    t_in = model.t_in
    raw = torch.from_numpy(_truth(entry).vorticity.values[trajectory])[:, None]  # [time, C=1, H, W]
    history = [raw[f] for f in range(init_frame - t_in + 1, init_frame + 1)]
    produced = []
    with torch.no_grad():
        while len(produced) < steps:
            out = model(torch.stack(history[-t_in:])[None])[0]  # [T_out, C, H, W], physical units
            history += list(out)
            produced += list(out)
    return torch.stack(produced[:steps])[:, 0].numpy()


def test_store_layout_units_and_provenance(fluid, tmp_path):
    checkpoint = _export(fluid, tmp_path / "run" / "model.pt")
    out = run_forecast(tmp_path / "run", str(fluid), "test", steps=3, out=tmp_path / "f.zarr", progress=False)
    assert out == tmp_path / "f.zarr" and not (tmp_path / "f.zarr.partial").exists()
    ds = xr.open_zarr(out, consolidated=False)
    assert ds.vorticity.dims == ("trajectory", "time", "prediction_timedelta", "y", "x")
    assert ds.vorticity.dtype == np.float32 and ds.vorticity.attrs["units"] == "1"
    assert ds.trajectory.values.tolist() == [5, 6]
    np.testing.assert_allclose(ds.time.values, np.arange(0, 9) * 0.1)  # frames 0..8 have 3 frames after them
    np.testing.assert_allclose(ds.prediction_timedelta.values, [0.1, 0.2, 0.3])
    assert ds.prediction_timedelta.attrs["units"] == "solver time units"
    assert "done_blocks" not in ds and "realization" not in ds.dims
    config = ds.attrs["provenance"]["config"]
    assert config["checkpoint"] == str(checkpoint.resolve()) and config["checkpoint_step"] == 7
    assert (config["dataset"], config["split"], config["steps"], config["members"]) == ("waves", "test", 3, 1)
    assert config["model"] == "fno" and config["train_config"] == {"seed": 0}
    assert ds.attrs["forecast"] == "fno" and bool(np.isfinite(ds.vorticity).all())


@pytest.mark.parametrize("t_in,t_out,residual,steps", [(1, 1, False, 4), (1, 1, True, 4), (2, 3, True, 7),
                                                       (2, 3, False, 5)])
def test_rollout_equals_a_manual_loop_of_model_calls(fluid, tmp_path, t_in, t_out, residual, steps):
    checkpoint = _export(fluid, tmp_path / "model.pt", t_in=t_in, t_out=t_out, residual=residual, seed=3)
    out = run_forecast(checkpoint, str(fluid), "test", steps=steps, out=tmp_path / "f.zarr", batch_size=3,
                       progress=False)
    ds = xr.open_zarr(out, consolidated=False)
    assert ds.sizes["prediction_timedelta"] == steps
    assert ds.time.values[0] == pytest.approx((t_in - 1) * 0.1)  # t_in inputs end at the initial time
    for trajectory, position in ((5, 0), (6, 1)):
        for init in (t_in - 1, 11 - steps):
            expected = _manual_rollout(checkpoint, fluid, trajectory, init, steps)
            got = ds.vorticity.isel(trajectory=position).sel(time=init * 0.1, method="nearest").values
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_zero_residual_model_gives_persistence(fluid, tmp_path):
    checkpoint = _export(fluid, tmp_path / "model.pt", residual=True, zero=True)
    model = xr.open_zarr(run_forecast(checkpoint, str(fluid), "test", steps=3, out=tmp_path / "m.zarr",
                                      progress=False), consolidated=False).load()
    truth = _truth(fluid).vorticity.isel(trajectory=slice(5, 7), time=slice(0, 9))
    for k in range(3):
        # exact up to the float32 round trip through normalisation, (x - mean) / std · std + mean
        np.testing.assert_allclose(model.vorticity.isel(prediction_timedelta=k).values, truth.values,
                                   rtol=0, atol=4 * np.finfo(np.float32).eps * float(np.abs(truth).max()))


def test_persistence_baseline_repeats_the_initial_frame(fluid, tmp_path):
    ds = xr.open_zarr(persistence(str(fluid), "test", steps=4, out=tmp_path / "p.zarr", inits=[0.2, 0.5],
                                  progress=False), consolidated=False)
    truth = _truth(fluid).vorticity
    assert ds.time.values.tolist() == pytest.approx([0.2, 0.5]) and ds.attrs["forecast"] == "persistence"
    for k in range(4):
        np.testing.assert_array_equal(ds.vorticity.isel(prediction_timedelta=k).values,
                                      truth.isel(trajectory=slice(5, 7), time=[2, 5]).values)


def _chunk_mtimes(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in (store / "vorticity" / "c").rglob("*")
            if p.is_file()}


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    entry = _fluid_entry(tmp_path, frames=60)
    checkpoint = _export(entry, tmp_path / "model.pt", residual=True, seed=1)
    out = tmp_path / "killed.zarr"
    partial = Path(str(out) + ".partial")
    command = [sys.executable, "-m", "earthsim.forecast", str(checkpoint), "--dataset", str(entry), "--steps", "5",
               "--out", str(out), "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = partial / "done_blocks" / "c"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(list(done.glob("*")) if done.exists() else []) < 8:
        time.sleep(0.005)
    assert process.poll() is None, "the forecast ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.exists() and not out.exists()
    flags = sorted(int(p.name) for p in done.glob("*"))
    assert 8 <= len(flags) < 2 * 55  # 2 trajectories × 55 initial times, one block each
    before = _chunk_mtimes(partial)

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.exists() and not partial.exists()
    after = _chunk_mtimes(out)
    # blocks finished before the kill were not computed again: their chunk files are untouched
    kept = [name for name in before if before[name] == after.get(name)]
    assert len(kept) == len(flags), (len(kept), len(flags))

    whole = tmp_path / "whole.zarr"  # uninterrupted, with the same thread count (float sums depend on it)
    subprocess.run([*command[:-3], str(whole), *command[-2:]], env=env, check=True, capture_output=True, timeout=300)
    resumed, uninterrupted = (xr.open_zarr(p, consolidated=False).load() for p in (out, whole))
    for ds in (resumed, uninterrupted):
        ds.attrs["provenance"].pop("created")
    xr.testing.assert_identical(resumed, uninterrupted)


def test_a_run_killed_between_dropping_the_flags_and_the_rename_just_renames(fluid, tmp_path):
    first = xr.open_zarr(persistence(str(fluid), "test", steps=2, out=tmp_path / "p.zarr", progress=False),
                         consolidated=False).load()
    (tmp_path / "p.zarr").rename(tmp_path / "p.zarr.partial")  # complete, flags dropped, not yet renamed
    again = persistence(str(fluid), "test", steps=2, out=tmp_path / "p.zarr", progress=False)
    assert not (tmp_path / "p.zarr.partial").exists()
    xr.testing.assert_identical(xr.open_zarr(again, consolidated=False).load(), first)


def test_a_different_request_does_not_resume_a_partial_store(fluid, tmp_path):
    checkpoint = _export(fluid, tmp_path / "model.pt")
    partial = tmp_path / "f.zarr.partial"
    persistence(str(fluid), "test", steps=2, out=tmp_path / "p.zarr", progress=False)
    (tmp_path / "p.zarr").rename(partial)  # a finished store of another request posing as a partial one
    with pytest.raises(EarthsimError, match=r"another request .*steps: 2 there, 3 now"):
        run_forecast(checkpoint, str(fluid), "test", steps=3, out=tmp_path / "f.zarr", progress=False)
    assert not (tmp_path / "f.zarr").exists()
    out = run_forecast(checkpoint, str(fluid), "test", steps=3, out=tmp_path / "f.zarr", progress=False,
                       overwrite=True)  # overwrite starts afresh
    assert xr.open_zarr(out, consolidated=False).sizes["prediction_timedelta"] == 3 and not partial.exists()


def test_ensembles_are_reproducible_by_seed_and_members_differ(fluid, tmp_path):
    checkpoint = _export(fluid, tmp_path / "model.pt", residual=True)

    def forecast(name, seed, batch_size):
        return xr.open_zarr(run_forecast(checkpoint, str(fluid), "test", steps=2, out=tmp_path / name, members=3,
                                         perturbation=0.1, seed=seed, batch_size=batch_size, progress=False),
                            consolidated=False).load()

    first, again, other = forecast("a.zarr", 0, 6), forecast("b.zarr", 0, 4), forecast("c.zarr", 1, 6)
    assert first.vorticity.dims == ("trajectory", "time", "prediction_timedelta", "realization", "y", "x")
    assert first.realization.values.tolist() == [0, 1, 2]
    xr.testing.assert_equal(first.vorticity, again.vorticity)  # same seed, other batching
    assert not np.allclose(first.vorticity.values, other.vorticity.values)
    lead1 = first.vorticity.isel(prediction_timedelta=0)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert float(np.abs(lead1.isel(realization=a) - lead1.isel(realization=b)).max()) > 1e-3
    unperturbed = xr.open_zarr(run_forecast(checkpoint, str(fluid), "test", steps=2, out=tmp_path / "d.zarr",
                                            progress=False), consolidated=False).vorticity
    spread = float(np.abs(lead1.mean("realization") - unperturbed.isel(prediction_timedelta=0)).mean())
    assert 0 < spread < 0.1 * float(np.abs(unperturbed).mean())


def test_several_checkpoints_make_an_ensemble_of_each_ones_own_forecast(fluid, tmp_path, capsys):
    """Trainings with other seeds as one store (``earthsim forecast A B``): member k is checkpoint k's forecast,
    bit for bit, and with perturbed members checkpoint k's members draw the noise of members k × members …"""
    from earthsim.cli import main

    first = _export(fluid, tmp_path / "a.pt", residual=True, seed=0)
    second = _export(fluid, tmp_path / "b.pt", residual=True, seed=1)

    def forecast(checkpoint, name, **options):
        return xr.open_zarr(run_forecast(checkpoint, str(fluid), "test", steps=2, out=tmp_path / name,
                                         progress=False, **options), consolidated=False).vorticity.load()

    alone = [forecast(first, "a.zarr", batch_size=1), forecast(second, "b.zarr", batch_size=1)]
    assert main(["forecast", str(first), str(second), "--dataset", str(fluid), "--steps", "2", "--batch-size", "2",
                 "--out", str(tmp_path / "ab.zarr")]) == 0  # one initial time per model call, as alone
    both = xr.open_zarr(tmp_path / "ab.zarr", consolidated=False).vorticity.load()
    assert both.realization.values.tolist() == [0, 1]
    for k in range(2):
        np.testing.assert_array_equal(both.isel(realization=k).values, alone[k].values)
    assert not np.allclose(alone[0].values, alone[1].values)
    perturbed = forecast([first, second], "p.zarr", members=2, perturbation=0.1, seed=3, batch_size=4)
    first_alone = forecast(first, "pa.zarr", members=2, perturbation=0.1, seed=3, batch_size=2)
    second_alone = forecast(second, "pb.zarr", members=4, perturbation=0.1, seed=3, batch_size=4)
    assert perturbed.sizes["realization"] == 4
    np.testing.assert_array_equal(perturbed.isel(realization=[0, 1]).values, first_alone.values)
    np.testing.assert_allclose(perturbed.isel(realization=[2, 3]).values,  # other batches: rounding only
                               second_alone.isel(realization=[2, 3]).values, rtol=1e-5, atol=1e-6)
    other = _export(fluid, tmp_path / "c.pt", residual=False)
    with pytest.raises(ValidationError, match=r"c.pt differs from model .*a.pt .* in its model configuration "
                                              r"\(\{'residual': False\} against \{'residual': True\}\)"):
        forecast([first, other], "ac.zarr")
    with pytest.raises(ValidationError, match=r"a.pt'\] are given more than once"):
        forecast([first, second, first], "aba.zarr")
    assert not (tmp_path / "ac.zarr").exists() and not (tmp_path / "aba.zarr").exists()
    # a partial store resumes only the same ensemble: one model's store is another request, the same list is not
    (tmp_path / "a.zarr").rename(tmp_path / "ab2.zarr.partial")
    with pytest.raises(EarthsimError, match=r"another request .*checkpoint"):
        forecast([first, second], "ab2.zarr", batch_size=2)
    (tmp_path / "ab.zarr").rename(tmp_path / "ab3.zarr.partial")  # complete, not yet renamed
    np.testing.assert_array_equal(forecast([first, second], "ab3.zarr", batch_size=2).values, both.values)


def test_weather_layout_and_climatology_baseline(weather, tmp_path):
    checkpoint = _export(weather, tmp_path / "model.pt", residual=True)
    ds = xr.open_zarr(run_forecast(checkpoint, str(weather), "test", steps=3, out=tmp_path / "f.zarr", members=2,
                                   perturbation=0.01, inits=["2020-02-29T05:00", "2020-02-29T20:00"],
                                   progress=False), consolidated=False)
    assert ds.z.dims == ("time", "prediction_timedelta", "realization", "level", "latitude", "longitude")
    assert ds.t2m.dims == ("time", "prediction_timedelta", "realization", "latitude", "longitude")
    assert ds.time.dtype.kind == "M" and ds.prediction_timedelta.dtype.kind == "m"
    np.testing.assert_array_equal(ds.prediction_timedelta.values, pd.to_timedelta([1, 2, 3], unit="h").values)
    np.testing.assert_array_equal(ds.time.values, pd.to_datetime(["2020-02-29T05:00", "2020-02-29T20:00"]).values)
    assert ds.level.values.tolist() == [500.0, 850.0] and ds.z.attrs["units"] == "m**2 s**-2"
    assert ds.t2m.attrs["units"] == "K" and ds.z.dtype == np.float32
    # levels map back to their channels: z850 is ~3e4 below z500, as in the data
    assert 2e4 < float((ds.z.sel(level=500) - ds.z.sel(level=850)).mean()) < 4e4

    clim_store = climatology_forecast(str(weather), "test", steps=4, out=tmp_path / "c.zarr", progress=False)
    forecast = xr.open_zarr(clim_store, consolidated=False).load()
    climatology = xr.open_zarr(weather.parent / "wx.clim.zarr", consolidated=False).load()
    assert forecast.sizes["time"] == 24 - 4 and forecast.attrs["forecast"] == "climatology"
    for init in forecast.time.values[[0, 7, 19]]:
        for k, lead in enumerate(forecast.prediction_timedelta.values):
            valid = pd.Timestamp(init + lead)
            expected = climatology.sel(hour=valid.hour, dayofyear=valid.day_of_year)
            got = forecast.isel(prediction_timedelta=k).sel(time=init)
            np.testing.assert_array_equal(got.t2m.values, expected.t2m.values)
            np.testing.assert_array_equal(got.z.values, expected.z.transpose("level", ...).values)
    assert bool(np.isfinite(forecast.t2m).all())


def test_a_weather_ensemble_dataset_keeps_its_members_along_realization(tmp_path):
    times = pd.date_range("2020-01-01", periods=10, freq="12h")
    values = np.random.default_rng(0).normal(size=(10, 3, 4, 5)).astype(np.float32)
    data = xr.Dataset({"t": (("time", "realization", "latitude", "longitude"), values, {"units": "K"})},
                      coords={"time": times, "realization": [0, 1, 2], "latitude": np.linspace(-10, 10, 4),
                              "longitude": np.linspace(0, 20, 5)})
    write_store_entry(tmp_path, "e", data, "weather", members=3, climatology=str(tmp_path / "e.climatology.zarr"),
                      grid={"latitude": {"start": -10.0, "stop": 10.0, "size": 4},
                            "longitude": {"start": 0.0, "stop": 20.0, "size": 5}},
                      time={"start": str(times[0]), "stop": str(times[-1]), "step": "12h"},
                      splits={"train": {"start": str(times[0]), "stop": str(times[4])},
                              "test": {"start": str(times[5]), "stop": str(times[-1])}})
    for batch_size in (2, 64):  # blocks of initial times of one member; blocks of whole members
        forecast = xr.open_zarr(persistence(str(tmp_path / "e.yaml"), steps=2, out=tmp_path / f"p{batch_size}.zarr",
                                            batch_size=batch_size, progress=False), consolidated=False).load()
        assert forecast.t.dims == ("time", "prediction_timedelta", "realization", "latitude", "longitude")
        np.testing.assert_array_equal(forecast.time.values, times[5:8].values)
        for k in range(2):
            np.testing.assert_array_equal(forecast.t.isel(prediction_timedelta=k).values, values[5:8])

    compute_climatology(str(tmp_path / "e.yaml"), progress=False, window_days=1)
    clim = xr.open_zarr(tmp_path / "e.climatology.zarr", consolidated=False).t.load()
    for batch_size in (2, 64):  # every member of a block shares the climatology at the valid time
        forecast = xr.open_zarr(climatology_forecast(str(tmp_path / "e.yaml"), steps=2, out=tmp_path / f"c{batch_size}.zarr",
                                                     batch_size=batch_size, progress=False), consolidated=False).load()
        for k in range(2):
            valid = pd.DatetimeIndex(times[5:8] + pd.Timedelta(hours=12 * (k + 1)))
            expected = clim.sel(hour=xr.DataArray(np.asarray(valid.hour), dims="valid"),
                                dayofyear=xr.DataArray(np.asarray(valid.day_of_year), dims="valid")).values
            for member in range(3):
                np.testing.assert_array_equal(forecast.t.isel(prediction_timedelta=k, realization=member).values,
                                              expected)


@pytest.fixture(scope="module")
def kolmogorov(tmp_path_factory) -> Path:
    """A tiny Kolmogorov flow solved at 64², saved at 64² and 32², frames 0.1 apart; an entry per grid."""
    root = tmp_path_factory.mktemp("kolmogorov")
    config = NavierStokesConfig(resolution=64, save_resolutions=(64, 32), trajectories=2, frames=8, save_interval=0.1,
                                spinup_time=0.5, batch_size=2)
    simulate_navier_stokes(config, root / "kolmo.zarr", progress=False)
    for n in (64, 32):
        write_store_entry(root, f"kolmo{n}", None, "fluid", store=str(root / "kolmo.zarr"), group=str(n),
                          variables={"vorticity": {"units": "1"}}, grid={"x": n, "y": n, "length": 2 * math.pi},
                          time={"step": 0.1, "units": "solver time units"},
                          splits={"train": {"trajectory": [0, 1]}, "test": {"trajectory": [1, 2]}})
    return root


def _relative_l2(forecast: xr.DataArray, truth: xr.DataArray, k: int) -> float:
    """Mean over initial times of ||forecast - truth|| / ||truth|| at lead ``k`` (0-based)."""
    valid = truth.isel(time=slice(k + 1, k + 1 + forecast.sizes["time"])).values
    error = np.sqrt(((forecast.isel(prediction_timedelta=k).values - valid) ** 2).sum(axis=(-2, -1)))
    return float((error / np.sqrt((valid ** 2).sum(axis=(-2, -1)))).mean())


def test_solver_baseline_reproduces_the_solve_at_its_own_resolution(kolmogorov, tmp_path):
    solver = xr.open_zarr(solver_baseline(str(kolmogorov / "kolmo64.yaml"), "test", steps=3, out=tmp_path / "s.zarr",
                                          progress=False), consolidated=False).vorticity.load()
    truth = _truth(kolmogorov / "kolmo64.yaml", group="64").vorticity.isel(trajectory=[1])
    for k in range(3):  # same solver, grid and time step as the data: equal but for float32 storage
        assert _relative_l2(solver, truth, k) < 1e-6


def test_solver_baseline_at_coarse_resolution_beats_persistence(kolmogorov, tmp_path):
    entry = str(kolmogorov / "kolmo32.yaml")
    store = xr.open_zarr(solver_baseline(entry, "test", steps=3, out=tmp_path / "s.zarr", progress=False),
                         consolidated=False).load()
    still = xr.open_zarr(persistence(entry, "test", steps=3, out=tmp_path / "p.zarr", progress=False),
                         consolidated=False).vorticity.load()
    solver = store.vorticity
    assert store.attrs["forecast"] == "solver" and store.attrs["provenance"]["config"]["resolution"] == 32
    assert solver.attrs["units"] == "1" and solver.dims == still.dims
    truth = _truth(kolmogorov / "kolmo32.yaml", group="32").vorticity.isel(trajectory=[1])
    for k in range(3):
        coarse, persisted = _relative_l2(solver, truth, k), _relative_l2(still, truth, k)
        assert coarse < 0.75 * persisted, (k, coarse, persisted)


def test_bad_inputs_name_what_is_wrong_and_leave_no_store(fluid, weather, tmp_path):
    checkpoint = _export(fluid, tmp_path / "model.pt")
    out = tmp_path / "f.zarr"
    with pytest.raises(CatalogError, match="unknown dataset 'nowhere'"):
        run_forecast(checkpoint, "nowhere", "test", steps=2, out=out, progress=False)
    with pytest.raises(ValidationError, match=r"12 frames per sequence, but a forecast of steps=20 .* at most 11"):
        run_forecast(checkpoint, str(fluid), "test", steps=20, out=out, progress=False)
    with pytest.raises(ValidationError, match=r"reads variables \['vorticity'\]; dataset 'wx' has variables "
                                              r"\['t2m', 'z'\], without"):
        run_forecast(checkpoint, str(weather), "test", steps=2, out=out, progress=False)
    with pytest.raises(ValidationError, match=r"initial time '1.15' is not a valid initial time"):
        run_forecast(checkpoint, str(fluid), "test", steps=2, out=out, inits=["1.15"], progress=False)
    with pytest.raises(EarthsimError, match="no exported model at"):
        run_forecast(tmp_path / "missing", str(fluid), "test", steps=2, out=out, progress=False)
    with pytest.raises(ValidationError, match="does not record Navier–Stokes physics"):
        solver_baseline(str(fluid), "test", steps=2, out=out, progress=False)
    with pytest.raises(ValidationError, match="needs a weather dataset"):
        climatology_forecast(str(fluid), "test", steps=2, out=out, progress=False)
    assert not out.exists() and not Path(str(out) + ".partial").exists()
    result = subprocess.run([sys.executable, "-m", "earthsim.forecast", "--dataset", str(fluid), "--steps", "2",
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "give a model (RUN_OR_CHECKPOINT) or --baseline" in result.stderr


def _static_entry(root: Path) -> Path:
    """Two days of hourly t2m on a 6 × 8 grid with a static orography, and its statistics."""
    times = pd.date_range("2020-02-27T00:00", periods=48, freq="1h")
    lat, lon = np.linspace(40.0, 50.0, 6), np.linspace(-5.0, 9.0, 8)
    rng = np.random.default_rng(4)
    ds = xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), (280 + rng.normal(0, 1, (48, 6, 8))).astype(np.float32),
                 {"units": "K"}),
         "orography": (("latitude", "longitude"), (800 + 300 * rng.normal(0, 1, (6, 8))).astype(np.float32),
                       {"units": "m"})},
        coords={"time": times, "latitude": lat, "longitude": lon})
    path = write_store_entry(
        root, "oro", ds, "weather", static=["orography"],
        grid={"latitude": {"start": 40.0, "stop": 50.0, "size": 6}, "longitude": {"start": -5.0, "stop": 9.0, "size": 8}},
        time={"start": "2020-02-27T00:00", "stop": "2020-02-28T23:00", "step": "1h"},
        splits={"train": {"start": "2020-02-27T00:00", "stop": "2020-02-27T23:00"},
                "test": {"start": "2020-02-28T00:00", "stop": "2020-02-28T23:00"}})
    compute_statistics(str(path), progress=False)
    return path


def test_static_fields_are_normalised_by_the_statistics_the_model_was_trained_with(tmp_path):
    """The model normalises the forecast dataset's static fields with the static statistics in its spec (recorded
    at export), not with whatever statistics exist at forecast time."""
    entry = _static_entry(tmp_path)
    windows = WindowDataset(str(entry), "train")
    spec = DataSpec.from_windows(windows)
    recorded_mean, recorded_std = spec.statistics.static_mean, spec.statistics.static_std
    assert len(recorded_mean) == 1 and spec.static == ("orography",)
    torch.manual_seed(5)
    config = {"n_modes": [3, 4], "hidden_channels": 8, "n_layers": 2}
    other = dataclasses.replace(spec.statistics, static_mean=(recorded_mean[0] + 150.0,),
                                static_std=(recorded_std[0] * 2.0,))  # as if trained with other statistics
    plain_model = build_model("fno", config, spec)
    trained_model = build_model("fno", config, dataclasses.replace(spec, statistics=other))
    trained_model.load_state_dict(plain_model.state_dict())  # the same weights, other static statistics
    paths = {name: export_model(model, tmp_path / name / "model.pt", dataset="oro", stride=1, lead_strides=(1,))
             for name, model in (("plain", plain_model), ("trained", trained_model))}

    def forecast(name):
        out = run_forecast(paths[name], str(entry), "test", steps=2, out=tmp_path / f"{name}.zarr", inits=[
            "2020-02-28T03:00", "2020-02-28T10:00"], progress=False)
        return xr.open_zarr(out, consolidated=False).t2m.load()

    plain = forecast("plain")
    shutil.rmtree(tmp_path / "oro.stats.zarr")  # the export alone says how static fields were normalised
    got = forecast("trained")
    assert not np.allclose(got.values, plain.values)
    truth = _truth(entry).t2m.sel(time=got.time.values).values  # [inits, H, W]
    orography = _truth(entry).orography.values.astype(np.float64)
    normalised_static = torch.from_numpy((orography - recorded_mean[0] - 150.0) / (recorded_std[0] * 2.0)).float()
    mean, std = spec.statistics.mean[0], spec.statistics.std[0]
    x = ((torch.from_numpy(truth) - mean) / std)[:, None, None]
    with torch.no_grad():  # the same weights, by hand: network on normalised fields, then de-normalised
        frames = []
        for _ in range(2):
            out = plain_model.network(x, normalised_static.expand(x.shape[0], 1, -1, -1), None)
            frames.append(out * std + mean)
            x = out
    expected = torch.cat(frames, dim=1)[:, :, 0].numpy()
    np.testing.assert_allclose(got.values, expected, rtol=1e-5, atol=1e-4)


def test_a_model_refuses_a_dataset_on_another_grid_of_the_same_size(weather, tmp_path):
    """Same shape, other region: the export's grid is checked, not its size alone."""
    checkpoint = _export(weather, tmp_path / "model.pt")
    moved = yaml.safe_load(weather.read_text())
    store = xr.open_zarr(moved["store"], consolidated=False).load()
    store = store.assign_coords(longitude=store["longitude"] + 10.0)
    store.attrs.pop("provenance", None)
    write_zarr(store, tmp_path / "wx-east.zarr", progress=False)
    moved.update(name="wx-east", store=str(tmp_path / "wx-east.zarr"),
                 grid={"latitude": {"start": 40.0, "stop": 50.0, "size": 6},
                       "longitude": {"start": 5.0, "stop": 19.0, "size": 8}})
    other = tmp_path / "wx-east.yaml"
    other.write_text(yaml.safe_dump(moved))
    with pytest.raises(ValidationError, match=r"dataset 'wx-east' against the grid model .* was trained on: "
                                              r"longitude differs from the grid by up to 10 degrees"):
        run_forecast(checkpoint, str(other), "test", steps=2, out=tmp_path / "f.zarr", progress=False)


def test_a_recurrent_model_forecasts_from_a_longer_context_than_its_t_in(fluid, tmp_path):
    """The long-horizon protocol: a ConvS5 (t_in 1) digests ``context`` frames, then generates; equal to calling it
    on the whole context and feeding back each prediction. A model without a carried state is refused."""
    windows = WindowDataset(str(fluid), "train")
    torch.manual_seed(0)
    model = build_model("convs5", {"d_model": 8, "ssm_size": 8, "layers": 2, "encoder_depths": [8, 8]},
                        DataSpec.from_windows(windows))
    checkpoint = export_model(model, tmp_path / "s5.pt", dataset=windows.entry.name, stride=1, lead_strides=(1,))
    out = run_forecast(checkpoint, str(fluid), "test", steps=3, context=5, out=tmp_path / "f.zarr", progress=False)
    ds = xr.open_zarr(out, consolidated=False)
    assert ds.time.values[0] == pytest.approx(0.4)  # five context frames end at the first initial time
    assert ds.attrs["provenance"]["config"]["context"] == 5 and ds.attrs["provenance"]["config"]["t_in"] == 1
    raw = torch.from_numpy(_truth(fluid).vorticity.values[5])[:, None]  # trajectory 5, [time, C, H, W]
    loaded, _ = load_exported(checkpoint)
    history = raw[:5][None]
    with torch.no_grad():
        for _ in range(3):
            history = torch.cat([history, loaded(history)], dim=1)
    np.testing.assert_allclose(ds.vorticity.isel(trajectory=0, time=0).values, history[0, 5:, 0].numpy(),
                               rtol=1e-4, atol=1e-5)
    fno = _export(fluid, tmp_path / "fno.pt")
    with pytest.raises(ValidationError, match="needs a recurrent model"):
        run_forecast(fno, str(fluid), "test", steps=3, context=5, out=tmp_path / "g.zarr", progress=False)


@pytest.fixture(scope="module")
def staggered(tmp_path_factory) -> Path:
    """A tiny Kolmogorov flow solved at 64², saved as staggered face averages at 64² and 32²; an entry for 32²."""
    root = tmp_path_factory.mktemp("staggered")
    config = NavierStokesConfig(resolution=64, save_resolutions=(64, 32), staggered=True, trajectories=2, frames=6,
                                save_interval=0.1, spinup_time=0.5, batch_size=2, max_velocity=3.0)
    simulate_navier_stokes(config, root / "fv.zarr", progress=False)
    write_store_entry(root, "fv32", None, "fluid", store=str(root / "fv.zarr"), group="32",
                      variables={name: {"units": "1"} for name in ("u", "v", "vorticity")},
                      grid={"x": 32, "y": 32, "length": 2 * math.pi}, time={"step": 0.1, "units": "solver time units"},
                      splits={"train": {"trajectory": [0, 1]}, "test": {"trajectory": [1, 2]}})
    return root


def test_finite_volume_baseline_gains_accuracy_with_resolution_and_scores_on_the_dataset_grid(staggered, tmp_path):
    entry = str(staggered / "fv32.yaml")
    runs = {n: xr.open_zarr(solver_baseline(entry, "test", steps=4, out=tmp_path / f"s{n}.zarr", progress=False,
                                            resolution=n), consolidated=False).load() for n in (32, 64)}
    truth = _truth(staggered / "fv32.yaml", group="32").isel(trajectory=[1])
    assert runs[64].sizes["x"] == 32 and runs[64].attrs["provenance"]["config"]["resolution"] == 64
    errors = {n: [_relative_l2(run.vorticity, truth.vorticity, k) for k in range(4)] for n, run in runs.items()}
    assert all(e64 < e32 for e64, e32 in zip(errors[64], errors[32])), errors
    assert errors[64][-1] < 0.2, errors  # the truth's own grid, by another scheme, stays close
    # the vorticity written is the curl of the velocity written
    from earthsim.sim.finite_volume import curl

    velocity = torch.from_numpy(np.stack([runs[64].u.values, runs[64].v.values], axis=-3)).double()
    np.testing.assert_allclose(curl(velocity).numpy(), runs[64].vorticity.values, atol=1e-4)
    with pytest.raises(ValidationError, match="multiple of 32"):
        solver_baseline(entry, "test", steps=2, out=tmp_path / "bad.zarr", progress=False, resolution=48)
    assert not (tmp_path / "bad.zarr").exists()


def test_the_command_line_writes_each_baseline_as_the_library_does(staggered, tmp_path):
    """earthsim forecast --baseline NAME reaches the writer of that name, with the solver's own options."""
    from earthsim.cli import main
    from earthsim.forecast.command import BASELINES, baseline_writer

    assert {name: baseline_writer(name).__name__ for name in BASELINES} == BASELINES
    with pytest.raises(EarthsimError, match=r"no baseline 'persistance'; baselines: \['climatology'"):
        baseline_writer("persistance")
    entry = str(staggered / "fv32.yaml")
    for name, options in (("persistence", {}), ("solver", {"resolution": 64})):
        library = baseline_writer(name)(entry, "test", steps=2, out=tmp_path / f"{name}.zarr", progress=False,
                                        **options)
        extra = ["--solver-resolution", "64"] if options else []
        assert main(["forecast", "--baseline", name, *extra, "--dataset", entry, "--steps", "2",
                     "--out", str(tmp_path / f"cli-{name}.zarr")]) == 0
        cli, ours = (xr.open_zarr(path, consolidated=False).load() for path in (tmp_path / f"cli-{name}.zarr", library))
        xr.testing.assert_identical(cli.drop_attrs(), ours.drop_attrs())
