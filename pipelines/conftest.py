"""What the pipeline jobs' tests share: a dask scheduler to run jobs on, and small synthetic stores with their catalog
entries (found by name through ``EARTHSIM_CATALOGS``; stores under ``EARTHSIM_STORES``, both in a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from earthsim.data.store import write_zarr


@pytest.fixture(scope="session")
def scheduler():
    """Address of an in-process dask cluster (one worker, two threads) the jobs connect to with ``--scheduler``."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def catalog_folder(tmp_path, monkeypatch) -> Path:
    """Where entries written by :func:`write_entry` are found by name; stores go to ``tmp_path/stores``."""
    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path / "stores"))
    monkeypatch.setenv("EARTHSIM_CATALOGS", str(tmp_path / "catalogs"))
    return tmp_path / "catalogs" / "datasets"


def global_weather(days: int = 6, latitudes: int = 12, longitudes: int = 24, seed: int = 0,
                   levels: tuple[float, ...] = (500.0, 850.0)) -> xr.Dataset:
    """6-hourly z (on ``levels``) and t2m on a global grid without poles: smooth fields with a diurnal cycle and
    noise."""
    times = pd.date_range("2021-03-01T00:00", periods=4 * days, freq="6h")
    latitude = -90 + 180 / latitudes * (np.arange(latitudes) + 0.5)
    longitude = 360 / longitudes * np.arange(longitudes)
    rng = np.random.default_rng(seed)
    lat, lon = np.deg2rad(latitude)[:, None], np.deg2rad(longitude)[None, :]
    hour = times.hour.values[:, None, None]
    t2m = (250 + 40 * np.cos(lat) + 3 * np.sin(lon) * np.cos(2 * np.pi * hour / 24)
           + rng.normal(0, 0.5, (times.size, latitudes, longitudes)))
    z = (5e4 + 2e3 * np.cos(2 * lat) * np.cos(lon)[None] + 100 * rng.normal(0, 1, (times.size, len(levels),
                                                                                    latitudes, longitudes))
         + -3e4 * np.linspace(0.0, 1.0, len(levels))[None, :, None, None])
    return xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), t2m.astype(np.float32), {"units": "K", "long_name": "2 m T"}),
         "z": (("time", "level", "latitude", "longitude"), z.astype(np.float32),
               {"units": "m**2 s**-2", "long_name": "geopotential"})},
        coords={"time": times, "level": list(levels), "latitude": latitude, "longitude": longitude},
        attrs={"longitude_convention": "[0, 360)"})


def write_entry(folder: Path, name: str, ds: xr.Dataset, store: Path, **fields) -> Path:
    """Write ``ds`` to ``store`` and a weather catalog entry ``folder/NAME.yaml`` describing it (train: all but the last
    day, test: the last day); return the entry's path."""
    write_zarr(ds, store, progress=False)
    times = pd.DatetimeIndex(ds.time.values)
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M")  # noqa: E731
    raw = {
        "name": name, "kind": "weather", "description": "synthetic weather for the pipeline tests", "store": str(store),
        "variables": {v: {"units": ds[v].attrs["units"]} for v in ds.data_vars},
        "levels": ds.level.values.tolist(),
        "grid": {"latitude": {"start": float(ds.latitude[0]), "stop": float(ds.latitude[-1]),
                              "size": ds.sizes["latitude"]},
                 "longitude": {"start": float(ds.longitude[0]), "stop": float(ds.longitude[-1]),
                               "size": ds.sizes["longitude"]},
                 "longitude_convention": "[0, 360)"},
        "time": {"start": stamp(times[0]), "stop": stamp(times[-1]), "step": "6h"},
        "splits": {"train": {"start": stamp(times[0]), "stop": stamp(times[-5])},
                   "test": {"start": stamp(times[-4]), "stop": stamp(times[-1])}},
        "statistics": str(store.with_name(f"{name}.stats.zarr")),
        "climatology": str(store.with_name(f"{name}.climatology.zarr")),
        "licence": "test", "provenance": "pipelines tests", **fields}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
