"""WeatherBench 2's ERA5 stores through the built-in entries, end to end on a local mock written in exactly their
schema (Zarr v2 with consolidated metadata, dims ``(time, level, longitude, latitude)``, WeatherBench 2's variable
names, 13 pressure levels of which the entry reads 7, static fields on ``(longitude, latitude)``, variables the
entry does not read): statistics, windows, a ClimaX run of the ``climax-wb2-5.625`` experiment at a tiny size,
a forecast and its scores. Nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from earthsim import catalog
from earthsim.data.stats import compute_climatology, compute_statistics
from earthsim.data.windows import WindowDataset
from earthsim.forecast import run_forecast
from earthsim.models import DataSpec, build_model
from earthsim.score.evaluation import evaluate
from earthsim.train.config import from_mapping, load_experiment
from earthsim.train.trainer import train

WB2_LEVELS = [50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000]
SURFACE = {"2m_temperature": ("K", 280.0, 10.0), "10m_u_component_of_wind": ("m s**-1", 0.0, 5.0),
           "10m_v_component_of_wind": ("m s**-1", 0.0, 5.0), "mean_sea_level_pressure": ("Pa", 101000.0, 1000.0)}
LEVELS = {"geopotential": ("m**2 s**-2", 50000.0, 5000.0), "u_component_of_wind": ("m s**-1", 5.0, 10.0),
          "v_component_of_wind": ("m s**-1", 0.0, 10.0), "temperature": ("K", 250.0, 20.0),
          "relative_humidity": ("%", 60.0, 20.0), "specific_humidity": ("kg kg**-1", 0.004, 0.002)}


def write_mock_wb2(path, days: int = 6) -> xr.Dataset:
    """Six days of 6-hourly fields on WeatherBench 2's 64 x 32 grid, in its schema (smooth fields that move)."""
    time = pd.date_range("2017-01-01", periods=4 * days, freq="6h")
    lat = np.linspace(-87.1875, 87.1875, 32)
    lon = np.arange(64) * 5.625
    rng = np.random.default_rng(0)
    t = np.arange(time.size)[:, None, None]
    wave = np.sin(np.deg2rad(lon)[None, :, None] - 0.2 * t) * np.cos(np.deg2rad(lat))[None, None, :]  # (t, lon, lat)
    data = {}
    for name, (units, mean, std) in SURFACE.items():
        values = mean + std * (wave + 0.1 * rng.standard_normal(wave.shape))
        data[name] = (("time", "longitude", "latitude"), values.astype(np.float32), {"units": units})
    for name, (units, mean, std) in LEVELS.items():
        scale = 1 + np.arange(len(WB2_LEVELS))[None, :, None, None] / 10
        values = mean + std * scale * (wave[:, None] + 0.1 * rng.standard_normal((time.size, len(WB2_LEVELS), 64, 32)))
        data[name] = (("time", "level", "longitude", "latitude"), values.astype(np.float32), {"units": units})
    data["land_sea_mask"] = (("longitude", "latitude"), (rng.random((64, 32)) > 0.7).astype(np.float32), {"units": "1"})
    data["geopotential_at_surface"] = (("longitude", "latitude"), (rng.random((64, 32)) * 5e4).astype(np.float32),
                                       {"units": "m**2 s**-2"})
    ds = xr.Dataset(data, coords={"time": time, "level": np.array(WB2_LEVELS, dtype=np.int64),
                                  "longitude": lon, "latitude": lat})
    encoding = {name: {"chunks": (1, 13, 64, 32) if "level" in ds[name].dims else
                       ((1, 64, 32) if "time" in ds[name].dims else (64, 32))} for name in ds.data_vars}
    ds.to_zarr(path, zarr_format=2, consolidated=True, encoding=encoding)
    return ds


@pytest.fixture
def wb2(tmp_path, monkeypatch):
    """The built-in ``wb2-era5-5.625`` entry over the mock: its variables, levels, static fields and grid as
    shipped; its time axis and splits cut to the mock's six days (train 1-3, validation 4, test 5-6 January)."""
    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path / "stores"))
    monkeypatch.setenv("EARTHSIM_WB2", str(tmp_path / "wb2"))
    monkeypatch.setenv("EARTHSIM_CATALOGS", str(tmp_path / "catalogs"))
    builtin = catalog.get_entry("wb2-era5-5.625")
    mock = write_mock_wb2(builtin.store)
    raw = yaml.safe_load(open(catalog.BUILTIN_CATALOGS / "datasets" / "wb2-era5-5.625.yaml"))
    raw["time"] = {"start": "2017-01-01T00:00", "stop": "2017-01-06T18:00", "step": "6h"}
    raw["splits"] = {"train": {"start": "2017-01-01T00:00", "stop": "2017-01-03T18:00"},
                     "validation": {"start": "2017-01-04T00:00", "stop": "2017-01-04T18:00"},
                     "test": {"start": "2017-01-05T00:00", "stop": "2017-01-06T18:00"}}
    folder = tmp_path / "catalogs" / "datasets"
    folder.mkdir(parents=True)
    (folder / "wb2-era5-5.625.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    entry = catalog.get_entry("wb2-era5-5.625")
    assert entry.path != builtin.path and entry.store == builtin.store
    return entry, mock


def test_the_entry_reads_wb2_names_levels_and_layout(wb2):
    entry, mock = wb2
    ds = catalog.open_dataset(entry)
    assert {"t2m", "u10", "v10", "z", "u", "v", "t", "r", "q", "land_sea_mask", "geopotential_at_surface"} <= set(
        ds.data_vars) and not {"2m_temperature", "geopotential", "relative_humidity"} & set(ds.data_vars)
    assert ds["level"].values.tolist() == [50, 250, 500, 600, 700, 850, 925]
    compute_statistics(entry, progress=False)
    windows = WindowDataset(entry, "train", derived=["latitude"])
    names = ["t2m", "u10", "v10", *(f"{v}{level}" for v in "zuvtrq" for level in (50, 250, 500, 600, 700, 850, 925))]
    assert windows.channels == names and windows.static_channels == ["land_sea_mask", "geopotential_at_surface",
                                                                      "latitude"]
    frames = windows.read_frames(0, 2, 3)
    z500 = mock.geopotential.sel(level=500).isel(time=[2, 3, 4]).transpose("time", "latitude", "longitude")
    np.testing.assert_array_equal(frames[:, names.index("z500")], z500.values)
    t2m = mock["2m_temperature"].isel(time=[2, 3, 4]).transpose("time", "latitude", "longitude")
    np.testing.assert_array_equal(frames[:, 0], t2m.values)
    sample = windows[0]
    mask = mock.land_sea_mask.transpose("latitude", "longitude").values
    std = windows._static_statistics["land_sea_mask"]
    np.testing.assert_allclose(sample["static"][0].numpy(), (mask - std[0]) / std[1], rtol=1e-5, atol=1e-5)


def test_the_paper_default_experiment_on_wb2_is_the_reference_size(wb2):
    """48 variables (45 channels, 2 static fields and latitude): 108,088,512 parameters, as microsoft/ClimaX."""
    entry, _ = wb2
    compute_statistics(entry, progress=False)
    cfg = load_experiment("climax-wb2-5.625")
    windows = WindowDataset(entry, "train", derived=cfg.data.derived, lead_strides=cfg.data.leads()[:1])
    with torch.device("meta"):
        model = build_model("climax", cfg.model.params, DataSpec.from_windows(windows))
    assert len(model.vocabulary) == 48
    assert sum(p.numel() for p in model.parameters()) == 108_088_512


def test_climax_trains_forecasts_and_scores_on_wb2(wb2, tmp_path):
    from earthsim.errors import ValidationError

    entry, _ = wb2
    compute_statistics(entry, progress=False)
    raw = yaml.safe_load(open(catalog.BUILTIN_CATALOGS / "experiments" / "climax-wb2-5.625.yaml"))
    # a climatology forcing as well: made on the first training, read again by the forecast at the valid times
    raw["data"].update(batch_size=2, num_workers=0, lead_stride_range=[1, 2], derived=["latitude", "t2m_climatology"])
    raw["model"]["params"] = {"embed_dim": 32, "depth": 1, "num_heads": 4, "decoder_depth": 1, "patch_size": 2,
                              "drop_path": 0.0, "drop_rate": 0.0}
    raw.update(epochs=1, max_steps=2, device="cpu", validation={"rollout_steps": 1, "max_batches": 1})
    summary = train(from_mapping(raw), tmp_path / "run", progress=False)
    forecast = run_forecast(summary["export"], entry, "test", steps=2, out=tmp_path / "f.zarr", mode="direct",
                            progress=False)
    stored = xr.open_zarr(forecast, consolidated=False)
    assert {"t2m", "z"} <= set(stored.data_vars) and stored["z"].sizes["level"] == 7
    scores = evaluate([str(forecast)], entry, climatology=None, progress=False, metrics=["rmse"]).scorecard
    rmse = scores["rmse"]
    assert bool(np.isfinite(rmse).all()) and float(rmse.sel(variable="t2m").max()) > 0
    compute_climatology(entry, progress=False, overwrite=True, window_days=31)  # other values under the same name
    with pytest.raises(ValidationError, match=r"reads a climatology made from .*'window_days': 61.*is made from "
                                              r".*'window_days': 31"):
        run_forecast(summary["export"], entry, "test", steps=2, out=tmp_path / "g.zarr", mode="direct",
                     progress=False)


def test_a_channels_climatology_is_read_at_each_frames_valid_time_on_the_channels_scale(wb2):
    """``<channel>_climatology`` is WeatherBench 2's hourly climatology of the training days (1-3 January) at each
    frame's valid time: checked against the triangular 61-day window computed here by hand from the mock, for a
    surface variable and a pressure level, at input and target frames; normalised by its channel's statistics."""
    from earthsim.errors import ValidationError

    entry, mock = wb2
    compute_statistics(entry, progress=False)
    derived = ["t2m_climatology", "z500_climatology"]
    windows = WindowDataset(entry, "test", t_in=2, lead_strides=[3], derived=derived, normalise=False)
    assert windows.channels[-2:] == derived and windows.derived == tuple(derived)
    sample = windows[1]
    _, start, lead = windows.locate(1)
    times = windows.dataset.time.values
    train = mock.sel(time=slice("2017-01-01", "2017-01-03T18:00"))
    for name, field in (("t2m_climatology", train["2m_temperature"]),
                        ("z500_climatology", train.geopotential.sel(level=500))):
        at_hour = field.transpose("time", "latitude", "longitude")

        def expected(time):
            same_hour = at_hour.sel(time=at_hour.time.dt.hour == time.hour)
            weights = 1 - np.abs(time.day_of_year - same_hour.time.dt.day_of_year.values) / 30
            return np.tensordot(weights, same_hour.values.astype(np.float64), 1) / weights.sum()

        k = windows.channels.index(name)
        sample_frames = zip([*sample["x"], *sample["y"]], times[[start, start + 1, start + 1 + lead]])
        read = windows.read_frames(0, start, 3, 3)  # as a forecast reads its inputs and forcings
        for frame, time in [*((f[k].numpy(), t) for f, t in sample_frames), *zip(read[:, k], times[start::3])]:
            np.testing.assert_allclose(frame, expected(pd.Timestamp(time)), rtol=1e-5)

    normalised = WindowDataset(entry, "test", t_in=2, lead_strides=[3], derived=derived)
    for name, channel in zip(derived, ("t2m", "z500")):
        k, c = normalised.channels.index(name), normalised.channels.index(channel)
        assert normalised.mean[k] == normalised.mean[c] and normalised.std[k] == normalised.std[c]
        np.testing.assert_allclose(normalised[1]["x"][:, k].numpy(), (sample["x"][:, k].numpy() - float(
            normalised.mean[c])) / float(normalised.std[c]), rtol=1e-4, atol=1e-5)
    assert set(derived) <= set(DataSpec.from_windows(normalised).forcings)

    with pytest.raises(ValidationError, match=r"unknown derived field\(s\) \['sst_climatology'\]"):
        WindowDataset(entry, "test", derived=["sst_climatology"])
    compute_climatology(entry, progress=False, overwrite=True, window_days=3)  # reaches only the training days
    with pytest.raises(ValidationError, match=r"t2m_climatology is not finite at 16384 point\(s\) of 8 valid time\(s\), "
                                              r"first 2017-01-05"):
        WindowDataset(entry, "test", derived=["t2m_climatology"])


def test_a_store_whose_coordinates_are_not_the_entrys_grid_is_refused(wb2, tmp_path):
    """Same size, other places (longitudes shifted by half a cell): loss weights, derived fields and position
    embeddings would land on the wrong points, so the loader refuses before any sample."""
    from earthsim.errors import ValidationError

    entry, _ = wb2
    raw = yaml.safe_load(open(entry.path))
    raw["grid"]["longitude"] = {"start": 2.8125, "stop": 357.1875, "size": 64}
    path = tmp_path / "shifted.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ValidationError, match=r"longitude differs from the grid by up to 2.8125 degrees"):
        WindowDataset(str(path), "train")
