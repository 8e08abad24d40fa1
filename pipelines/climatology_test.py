"""The climatology job against xarray's groupby mean by day of year and hour (a one-day window: no smoothing)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from earthsim.data.store import open_zarr
from pipelines import climatology
from pipelines.conftest import global_weather, write_entry


def test_climatology_job_equals_groupby_mean(catalog_folder, tmp_path, scheduler):
    ds = global_weather(days=4, levels=(250.0, 500.0, 700.0, 850.0))
    # stored in chunks of 3 time steps, z on four levels: the job rechunks them into tiles of a level on the cluster
    # (dask's peer-to-peer rechunk gave wrong values here: earthsim rechunks by tasks)
    write_entry(catalog_folder, "wx", ds.chunk({"time": 3}), tmp_path / "stores" / "wx.zarr")
    assert climatology.main(["wx", "--window-days", "1", "--scheduler", scheduler, "--no-progress"]) == 0
    result = open_zarr(tmp_path / "stores" / "wx.climatology.zarr").load()
    train = ds.isel(time=slice(0, -4)).astype(np.float64)
    key = train.time.dt.dayofyear * 100 + train.time.dt.hour
    grouped = train.groupby(key.rename("key")).mean()
    days = [int(k) // 100 for k in grouped.key.values]
    assert days == sorted(days) and set(days) == set(train.time.dt.dayofyear.values.tolist())
    for name in ds.data_vars:
        for key_value in grouped.key.values:
            got = result[name].sel(dayofyear=int(key_value) // 100, hour=int(key_value) % 100)
            xr.testing.assert_allclose(got.reset_coords(drop=True).drop_attrs().astype(np.float64),
                                       grouped[name].sel(key=key_value).reset_coords(drop=True), rtol=1e-6)
    other = result.t2m.sel(dayofyear=[d for d in range(1, 367) if d not in days])
    assert bool(other.isnull().all()), "days without a sample stay NaN"
