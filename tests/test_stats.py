"""Statistics and climatology against brute-force numpy on small synthetic stores (and the real ERA5 sample)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from conftest import SAMPLE_DATA, write_store_entry
from earthsim import catalog
from earthsim.data import stats, store
from earthsim.data.store import open_zarr
from earthsim.errors import CatalogError, ValidationError



pytestmark = pytest.mark.usefixtures("stores")


def _entry(tmp_path: Path, name: str, ds: xr.Dataset, kind: str, splits: dict, time: dict, grid: dict,
           **extra) -> catalog.DatasetEntry:
    """Write ``ds`` as a store and a catalog entry found by name; return the parsed entry."""
    if kind == "weather":
        extra.setdefault("climatology", str(tmp_path / f"{name}.climatology.zarr"))
    return catalog.get_entry(write_store_entry(tmp_path, name, ds, kind, entry_folder=tmp_path / "catalogs" / "datasets",
                                               grid=grid, time=time, splits=splits, **extra))


def _weather_entry(tmp_path: Path, name: str, ds: xr.Dataset, train_stop: str, validation_stop: str
                   ) -> catalog.DatasetEntry:
    """:func:`_entry` of a weather ``ds``, its time axis, grid and levels read from ``ds``: train from the first
    time to ``train_stop``, validation from the next step to ``validation_stop``, test from the next step on."""
    times = pd.DatetimeIndex(ds.time.values)
    step = times[1] - times[0]
    stamp = lambda t: pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M")  # noqa: E731
    axis = lambda c: {"start": float(ds[c][0]), "stop": float(ds[c][-1]), "size": ds.sizes[c]}  # noqa: E731
    levels = {"levels": ds.level.values.tolist()} if "level" in ds.coords else {}
    return _entry(tmp_path, name, ds, "weather",
                  splits={"train": {"start": stamp(times[0]), "stop": train_stop},
                          "validation": {"start": stamp(pd.Timestamp(train_stop) + step), "stop": validation_stop},
                          "test": {"start": stamp(pd.Timestamp(validation_stop) + step), "stop": stamp(times[-1])}},
                  time={"start": stamp(times[0]), "stop": stamp(times[-1]), "step": f"{step // pd.Timedelta('1h')}h"},
                  grid={"latitude": axis("latitude"), "longitude": axis("longitude")}, **levels)


def _fluid(tmp_path, name="fluid", trajectories=5, frames=7):
    """Trajectories offset by 1000 each, so a difference across trajectories would be huge."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(trajectories, frames, 4, 4)).cumsum(axis=1)
    data = base + 1000.0 * np.arange(trajectories)[:, None, None, None]
    ds = xr.Dataset(
        {"vorticity": (("trajectory", "time", "y", "x"), data.astype(np.float32))},
        coords={"trajectory": np.arange(trajectories), "time": 0.5 * np.arange(frames)},
    )
    entry = _entry(tmp_path, name, ds, "fluid",
                   splits={"train": {"trajectory": [0, 3]}, "validation": {"trajectory": [3, 4]},
                           "test": {"trajectory": [4, 5]}},
                   time={"step": 0.5, "units": "solver"}, grid={"x": 4, "y": 4, "length": 6.283185307179586})
    return entry, ds


def _ensemble(tmp_path, name="ens"):
    """6-hourly, 3 members, 2 levels, one 6-hour gap inside the training block."""
    rng = np.random.default_rng(1)
    times = pd.date_range("2020-01-01", periods=12, freq="6h").delete(4)
    shape = (len(times), 3, 2, 3, 4)
    by_level = 250 + 30 * np.arange(2)[None, None, :, None, None]
    ds = xr.Dataset(
        {
            "t": (("time", "realization", "level", "latitude", "longitude"),
                  (by_level + rng.normal(size=shape).cumsum(0)).astype(np.float32)),
            "t2m": (("time", "realization", "latitude", "longitude"),
                    (280 + rng.normal(size=shape[:2] + shape[3:]).cumsum(0)).astype(np.float32)),
        },
        coords={"time": times, "realization": np.arange(3), "level": [500, 850],
                "latitude": [-10.0, 0.0, 10.0], "longitude": [0.0, 90.0, 180.0, 270.0]},
    )
    entry = _entry(tmp_path, name, ds, "weather",
                   splits={"train": {"start": "2020-01-01T00:00", "stop": "2020-01-02T12:00"},
                           "validation": {"start": "2020-01-02T18:00", "stop": "2020-01-03T00:00"},
                           "test": {"start": "2020-01-03T06:00", "stop": "2020-01-03T18:00"}},
                   time={"start": "2020-01-01T00:00", "stop": "2020-01-03T18:00", "step": "6h"},
                   grid={"latitude": {"start": -10.0, "stop": 10.0, "size": 3},
                         "longitude": {"start": 0.0, "stop": 270.0, "size": 4}, "longitude_convention": "[0, 360)"},
                   levels=[500, 850], members=3)
    return entry, ds


def _brute_force(values: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    values = values.astype(np.float64)
    diffs = np.concatenate([(b.astype(np.float64) - a.astype(np.float64)).ravel() for a, b in pairs])
    return values.mean(), values.std(), diffs.std()


def test_fluid_statistics_equal_brute_force_on_train_trajectories(tmp_path):
    entry, ds = _fluid(tmp_path)
    path = stats.compute_statistics(entry, progress=False)
    assert path == Path(entry.statistics)
    result = stats.load_statistics(entry)
    assert result["vorticity"].dims == ("statistic",)
    assert list(result.statistic.values) == ["mean", "std", "diff_std"]
    x = ds["vorticity"].values[:3]  # train: trajectories 0, 1, 2
    pairs = [(x[i, t], x[i, t + 1]) for i in range(3) for t in range(x.shape[1] - 1)]
    expected = _brute_force(x, pairs)
    np.testing.assert_allclose(result["vorticity"].values, expected, rtol=1e-6)
    # diffs never cross trajectories: those jumps (1000 apart) would dominate the std
    flattened = np.diff(x.reshape(-1, 4, 4), axis=0)
    assert result["vorticity"].sel(statistic="diff_std") < 0.1 * flattened.std()
    provenance = open_zarr(entry.statistics).attrs["provenance"]
    assert provenance["config"]["dataset"] == "fluid" and provenance["config"]["split"] == "train"
    assert provenance["config"]["split_definition"]["trajectory"] == [0, 3]
    assert provenance["inputs"] == [entry.store]


def test_weather_statistics_per_level_pool_members_and_skip_gaps(tmp_path):
    entry, ds = _ensemble(tmp_path)
    result = stats.load_statistics(entry, progress=False)
    train = ds.sel(time=slice("2020-01-01T00:00", "2020-01-02T12:00"))
    times = pd.DatetimeIndex(train.time.values)
    consecutive = [t for t in range(len(times) - 1) if times[t + 1] - times[t] == pd.Timedelta("6h")]
    assert len(consecutive) == len(times) - 2  # the gap is skipped
    assert result["t"].dims == ("statistic", "level")
    for k, level in enumerate([500, 850]):
        x = train["t"].values[:, :, k]
        pairs = [(x[t, m], x[t + 1, m]) for t in consecutive for m in range(3)]
        np.testing.assert_allclose(result["t"].sel(level=level).values, _brute_force(x, pairs), rtol=1e-6)
    x = train["t2m"].values
    pairs = [(x[t, m], x[t + 1, m]) for t in consecutive for m in range(3)]
    np.testing.assert_allclose(result["t2m"].values, _brute_force(x, pairs), rtol=1e-6)
    assert result.attrs["provenance"]["config"]["time_range"][0].startswith("2020-01-01T00:00")
    assert result.attrs["provenance"]["config"]["time_range"][1].startswith("2020-01-02T12:00")


def test_rerun_reuses_and_overwrite_recomputes(tmp_path, monkeypatch):
    from earthsim.cli import main

    entry, _ = _fluid(tmp_path)
    calls = []
    original = store.compute
    monkeypatch.setattr(store, "compute", lambda *objects, progress: calls.append(1) or original(*objects,
                                                                                               progress=progress))
    path = stats.compute_statistics(entry, progress=False)
    created = open_zarr(path).attrs["provenance"]["created"]
    mtime = (path / "zarr.json").stat().st_mtime_ns
    assert stats.compute_statistics(entry, progress=False) == path
    assert len(calls) == 1 and (path / "zarr.json").stat().st_mtime_ns == mtime
    stats.compute_statistics(entry, progress=False, overwrite=True)
    assert len(calls) == 2
    assert main(["stats", "fluid"]) == 0
    assert len(calls) == 2
    assert main(["stats", "fluid", "--overwrite"]) == 0
    assert len(calls) == 3
    assert open_zarr(path).attrs["provenance"]["created"] >= created


def test_stale_statistics_raise_until_overwritten(tmp_path):
    entry, ds = _fluid(tmp_path)
    stats.compute_statistics(entry, progress=False)
    yaml_path = Path(entry.path)
    raw = yaml.safe_load(yaml_path.read_text())
    raw["splits"]["train"]["trajectory"] = [0, 2]
    yaml_path.write_text(yaml.safe_dump(raw))
    changed = catalog.get_entry(yaml_path)
    with pytest.raises(ValidationError, match=r"split_definition.*--overwrite"):
        stats.load_statistics(changed, progress=False)
    stats.compute_statistics(changed, progress=False, overwrite=True)
    mean = stats.load_statistics(changed, progress=False)["vorticity"].sel(statistic="mean")
    np.testing.assert_allclose(mean, ds["vorticity"].values[:2].astype(np.float64).mean(), rtol=1e-6)


def test_missing_variable_and_empty_split_are_named(tmp_path):
    entry, _ = _fluid(tmp_path)
    raw = yaml.safe_load(Path(entry.path).read_text())
    raw["variables"]["pressure"] = {"units": "Pa"}
    Path(entry.path).write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match=r"pressure.*vorticity"):
        stats.compute_statistics(catalog.get_entry(entry.path), progress=False)
    del raw["variables"]["pressure"]
    raw["splits"]["train"]["trajectory"] = [10, 12]
    Path(entry.path).write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="selects no data"):
        stats.compute_statistics(catalog.get_entry(entry.path), progress=False)
    assert not Path(entry.statistics).exists()


def _circular_brute_force(times: pd.DatetimeIndex, values: np.ndarray, hour: int, window: int) -> np.ndarray:
    """Triangular-window weighted mean of the samples at ``hour`` for each target day 1..366 (WB2's definition).

    Each sample weighs ``1 - distance / half`` where ``distance`` is the shorter way round a 366-day
    year; samples of day 365 of a non-leap year count for day 366 too; NaN samples are skipped.
    """
    half = window // 2
    at_hour = times.hour == hour
    doy = times.day_of_year.values[at_hour]
    samples = values[at_hour]
    copy = (~times.is_leap_year[at_hour]) & (doy == 365)
    doy = np.concatenate([doy, np.full(copy.sum(), 366)])
    samples = np.concatenate([samples, samples[copy]]).astype(np.float64)
    gap = np.abs(doy[None, :] - np.arange(1, 367)[:, None])
    distance = np.minimum(gap, 366 - gap)
    weights = np.where(distance <= half, 1.0 - distance / half, 0.0)
    valid = ~np.isnan(samples)
    total = np.tensordot(weights, np.where(valid, samples, 0.0), axes=1)
    weight = np.tensordot(weights, valid.astype(np.float64), axes=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


def test_climatology_equals_brute_force_circular_window_over_years(tmp_path):
    times = pd.date_range("2019-01-01", "2021-12-31T12:00", freq="12h")
    rng = np.random.default_rng(2)
    doy = times.day_of_year.values
    season = 10 * np.cos(2 * np.pi * doy / 365.25)[:, None, None, None]
    level = np.array([0.0, -40.0])[None, :, None, None]
    t = (260 + season + level + 3 * (times.hour.values == 12)[:, None, None, None]
         + rng.normal(size=(len(times), 2, 2, 3))).astype(np.float32)
    t[5, 0, 1, 2] = np.nan  # a missing value is skipped, not propagated
    ds = xr.Dataset(
        {"t": (("time", "level", "latitude", "longitude"), t),
         "t2m": (("time", "latitude", "longitude"), t[:, 0] + 15)},
        coords={"time": times, "level": [500, 850], "latitude": [40.0, 50.0], "longitude": [0.0, 10.0, 20.0]},
    )
    entry = _weather_entry(tmp_path, "years", ds, "2020-12-31T12:00", "2021-06-30T12:00")
    window = 31
    stats.compute_climatology(entry, progress=False, window_days=window)
    clim = stats.load_climatology(entry)
    assert clim["t"].dims == ("hour", "dayofyear", "level", "latitude", "longitude")
    assert clim["t2m"].dims == ("hour", "dayofyear", "latitude", "longitude")
    assert list(clim.hour.values) == [0, 12] and list(clim.dayofyear.values) == list(range(1, 367))
    train = ds.sel(time=slice("2019-01-01", "2020-12-31T12:00"))
    train_times = pd.DatetimeIndex(train.time.values)
    for hour in (0, 12):
        expected = _circular_brute_force(train_times, train["t"].values, hour, window)
        np.testing.assert_allclose(clim["t"].sel(hour=hour).values, expected, rtol=1e-6)
        expected = _circular_brute_force(train_times, train["t2m"].values, hour, window)
        np.testing.assert_allclose(clim["t2m"].sel(hour=hour).values, expected, rtol=1e-6)
    assert not np.isnan(clim["t"].values).any()
    config = clim.attrs["provenance"]["config"]
    assert config["window_days"] == window and config["time_range"][1].startswith("2020-12-31T12:00")
    # a different window is a different climatology: asking for it without overwrite is refused
    with pytest.raises(ValidationError, match="window_days"):
        stats.compute_climatology(entry, progress=False, window_days=61)


def test_climatology_of_one_month_fills_only_days_within_the_window(tmp_path):
    times = pd.date_range("2019-03-01", "2019-03-31T23:00", freq="1h")
    rng = np.random.default_rng(3)
    values = (275 + rng.normal(size=(len(times), 2, 2))).astype(np.float32)
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), values)},
                    coords={"time": times, "latitude": [50.0, 51.0], "longitude": [-1.0, 0.0]})
    entry = _entry(tmp_path, "month", ds, "weather",
                   splits={"train": {"start": "2019-03-01T00:00", "stop": "2019-03-21T23:00"},
                           "validation": {"start": "2019-03-22T00:00", "stop": "2019-03-25T23:00"},
                           "test": {"start": "2019-03-26T00:00", "stop": "2019-03-31T23:00"}},
                   time={"start": "2019-03-01T00:00", "stop": "2019-03-31T23:00", "step": "1h"},
                   grid={"latitude": {"start": 50.0, "stop": 51.0, "size": 2},
                         "longitude": {"start": -1.0, "stop": 0.0, "size": 2}})
    clim = stats.load_climatology(entry, progress=False)["t2m"]
    assert clim.sizes["hour"] == 24
    # train is days 60..80 (1-21 March 2019); weights vanish at |Δ| = 30 for the default 61-day window
    filled = ~np.isnan(clim.values).any(axis=(0, 2, 3))
    assert np.array_equal(np.flatnonzero(filled) + 1, np.arange(60 - 29, 80 + 29 + 1))
    assert np.isnan(clim.values[:, ~filled]).all()
    train_times = pd.DatetimeIndex(ds.time.values[:21 * 24])
    expected = _circular_brute_force(train_times, values[:21 * 24], 6, stats.DEFAULT_WINDOW_DAYS)
    np.testing.assert_allclose(clim.sel(hour=6).values, expected, rtol=1e-6)
    path = Path(entry.climatology)
    mtime = (path / "zarr.json").stat().st_mtime_ns
    assert stats.compute_climatology(entry, progress=False) == path
    assert (path / "zarr.json").stat().st_mtime_ns == mtime  # reused, not rewritten
    stats.compute_climatology(entry, progress=False, overwrite=True)
    assert (path / "zarr.json").stat().st_mtime_ns != mtime


def test_climatology_needs_a_weather_entry_and_an_odd_window(tmp_path):
    entry, _ = _fluid(tmp_path)
    with pytest.raises(CatalogError, match="weather"):
        stats.compute_climatology(entry, progress=False)
    entry, _ = _ensemble(tmp_path)
    with pytest.raises(ValidationError, match="odd"):
        stats.compute_climatology(entry, progress=False, window_days=30)


def test_ensemble_climatology_pools_members(tmp_path):
    entry, ds = _ensemble(tmp_path)
    clim = stats.load_climatology(entry, progress=False)
    assert clim["t"].dims == ("hour", "dayofyear", "level", "latitude", "longitude")
    train = ds.sel(time=slice("2020-01-01T00:00", "2020-01-02T12:00"))
    # Jan 1 and Jan 2 (days 1, 2) are the only days with samples; weights 1 and 1 - 1/30 seen from day 1
    day1 = train.sel(time=train.time.dt.dayofyear == 1)
    day2 = train.sel(time=train.time.dt.dayofyear == 2)
    for hour in (0, 6, 12):
        a = day1["t"].sel(time=day1.time.dt.hour == hour).values.astype(np.float64)
        b = day2["t"].sel(time=day2.time.dt.hour == hour).values.astype(np.float64)
        w = 1 - 1 / 30
        count = a.shape[0] * a.shape[1] + w * b.shape[0] * b.shape[1]
        expected = (a.sum(axis=(0, 1)) + w * b.sum(axis=(0, 1))) / count
        np.testing.assert_allclose(clim["t"].sel(hour=hour, dayofyear=1).values, expected, rtol=1e-6)


def test_hours_missing_from_the_training_split_stay_nan(tmp_path):
    entry, ds = _ensemble(tmp_path)
    raw = yaml.safe_load(Path(entry.path).read_text())
    raw["splits"]["train"]["stop"] = "2020-01-01T12:00"  # no 18 UTC sample in train
    Path(entry.path).write_text(yaml.safe_dump(raw))
    clim = stats.load_climatology(catalog.get_entry(entry.path), progress=False)
    assert list(clim.hour.values) == [0, 6, 12, 18]
    assert np.isnan(clim["t"].sel(hour=18).values).all()
    np.testing.assert_allclose(clim["t2m"].sel(hour=6, dayofyear=1).values,
                               ds["t2m"].sel(time="2020-01-01T06:00").values.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_cli_stats_writes_statistics_and_climatology(tmp_path, capsys):
    from earthsim.cli import main

    entry, _ = _ensemble(tmp_path)
    assert main(["stats", "ens"]) == 0
    out = capsys.readouterr().out
    assert entry.statistics in out and entry.climatology in out
    assert Path(entry.statistics).exists() and Path(entry.climatology).exists()


def test_real_era5_uk_t2m_statistics_and_climatology(tmp_path):
    entry = catalog.get_entry("era5-uk-t2m")
    assert entry.store.startswith(str(tmp_path))
    catalog.open_dataset("era5-uk-t2m")
    raw = xr.open_dataset(SAMPLE_DATA / "era5-2mt-2019-03-uk.grib", engine="cfgrib", decode_timedelta=False,
                          backend_kwargs={"indexpath": ""})
    t2m = raw["t2m"].sel(time=slice("2019-03-01T00:00", "2019-03-21T23:00"))
    x = t2m.values
    assert x.shape[0] == 21 * 24
    pairs = [(x[t], x[t + 1]) for t in range(x.shape[0] - 1)]
    result = stats.load_statistics(entry, progress=False)
    np.testing.assert_allclose(result["t2m"].values, _brute_force(x, pairs), rtol=1e-6)
    clim = stats.load_climatology(entry, progress=False)["t2m"]
    assert clim.dims == ("hour", "dayofyear", "latitude", "longitude") and clim.sizes["hour"] == 24
    filled = ~np.isnan(clim.values).all(axis=(0, 2, 3))
    assert np.array_equal(np.flatnonzero(filled) + 1, np.arange(31, 110))
    times = pd.DatetimeIndex(t2m.time.values)
    expected = _circular_brute_force(times, x, 12, stats.DEFAULT_WINDOW_DAYS)[69]  # day 70, raw grid order
    got = clim.sel(hour=12, dayofyear=70).sel(latitude=raw.latitude.values, longitude=raw.longitude.values)
    np.testing.assert_allclose(got.values, expected, rtol=1e-6)


def test_non_finite_values_are_refused_by_variable_and_count(tmp_path):
    """NaN or ±inf in the training split (here: trajectories 0-2) never becomes a statistic; outside it is no concern."""
    rng = np.random.default_rng(4)
    data = rng.normal(size=(5, 4, 4, 4)).astype(np.float32)
    data[0, 1, 2, 3], data[2, 0, 0, 0] = np.inf, np.nan
    data[4, 0, 0, 0] = -np.inf  # the test split
    ds = xr.Dataset({"vorticity": (("trajectory", "time", "y", "x"), data)},
                    coords={"trajectory": np.arange(5), "time": 0.5 * np.arange(4)})
    entry = _entry(tmp_path, "bad", ds, "fluid",
                   splits={"train": {"trajectory": [0, 3]}, "validation": {"trajectory": [3, 4]},
                           "test": {"trajectory": [4, 5]}},
                   time={"step": 0.5, "units": "solver"}, grid={"x": 4, "y": 4, "length": 6.283185307179586})
    with pytest.raises(ValidationError, match=r"variable 'vorticity' holds 2 non-finite value\(s\) \(NaN or ±inf\) in "
                                              r"split 'train'"):
        stats.compute_statistics(entry, progress=False)
    assert not Path(entry.statistics).exists()


def test_an_infinite_value_is_refused_by_the_climatology(tmp_path):
    """NaN is a missing sample to the climatology (skipped, as above); ±inf is damage: refused by name, nothing kept."""
    times = pd.date_range("2020-01-01", "2020-01-10T18:00", freq="6h")
    t = np.random.default_rng(5).normal(280, 5, size=(len(times), 2, 3)).astype(np.float32)
    t[3, 1, 2] = -np.inf
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), t)},
                    coords={"time": times, "latitude": [40.0, 50.0], "longitude": [0.0, 10.0, 20.0]})
    entry = _weather_entry(tmp_path, "inf", ds, "2020-01-06T18:00", "2020-01-08T18:00")
    with pytest.raises(ValidationError, match=r"variable 't2m' holds 1 infinite value\(s\) in split 'train'"):
        stats.compute_climatology(entry, progress=False)
    assert not Path(entry.climatology).exists()
    assert not Path(entry.climatology + ".partial").exists()


def test_a_climatology_in_tiles_of_part_of_a_row_equals_one_in_whole_fields(tmp_path, monkeypatch):
    """The climatology contracts every sample of a tile at once (stats._tiled); tiles of whole rows and of part of
    a row, in time-chunked stores, give the result of one tile holding the whole field."""
    times = pd.date_range("2019-06-01", "2020-07-31T18:00", freq="6h")
    rng = np.random.default_rng(6)
    t = (280 + 10 * np.cos(2 * np.pi * times.day_of_year.values / 365.25)[:, None, None, None]
         + rng.normal(size=(len(times), 2, 4, 6))).astype(np.float32)
    t[7, 1, 2, 3] = np.nan
    ds = xr.Dataset({"t": (("time", "level", "latitude", "longitude"), t)},
                    coords={"time": times, "level": [500, 850], "latitude": [30.0, 40.0, 50.0, 60.0],
                            "longitude": np.arange(6) * 10.0}).chunk({"time": 50})
    results = []
    samples = int(np.sum(times <= "2020-05-31T18:00"))
    for tile_bytes in (10**9, samples * 6 * 4 * 2, samples * 4 * 4):  # whole field, 2 rows, 4 points of a row
        monkeypatch.setattr(stats, "CLIMATOLOGY_TILE_BYTES", tile_bytes)
        entry = _weather_entry(tmp_path / str(tile_bytes), "tiles", ds, "2020-05-31T18:00", "2020-06-30T18:00")
        stats.compute_climatology(entry, progress=False)
        results.append(stats.load_climatology(entry)["t"].load())
    assert stats.climatology_tile(samples, 4, 6) == (1, 4)  # the last: part of a row
    for result in results[1:]:
        xr.testing.assert_allclose(result.drop_attrs(), results[0].drop_attrs(), rtol=1e-6)
    train = pd.DatetimeIndex(times[times <= "2020-05-31T18:00"])
    expected = _circular_brute_force(train, t[: len(train)], 6, 61)
    np.testing.assert_allclose(results[2].sel(hour=6).values, expected, rtol=1e-6)
