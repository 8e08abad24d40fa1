"""The ingest job: three netCDF files (a day each) into one store, on a real LocalCluster of two worker processes,
equal to the files concatenated by xarray; and a catalog entry's GRIB (named by its YAML file), on a scheduler."""

from __future__ import annotations

import numpy as np
import xarray as xr

from earthsim import catalog
from earthsim.data.store import is_complete, open_zarr
from pipelines import ingest
from pipelines.conftest import global_weather


def test_ingest_job_on_two_worker_processes_equals_the_files_concatenated(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ds = global_weather(days=3)
    files = []
    for day in range(3):
        path = tmp_path / f"day-{day}.nc"
        part = ds.isel(time=slice(4 * day, 4 * day + 4))
        part = part.assign_coords(latitude=part.latitude[::-1].values).isel(latitude=slice(None, None, -1))
        part.rename(latitude="lat", longitude="lon").to_netcdf(path)  # names and order another tool might use
        files.append(str(path))
    out = tmp_path / "joined.zarr"
    assert ingest.main([*files, "--out", str(out), "--time-chunk", "2", "--workers", "2", "--no-progress"]) == 0
    assert is_complete(out) and open_zarr(out).chunks["time"] == (2,) * 6
    result = open_zarr(out).load()
    expected = xr.concat([xr.open_dataset(f).load() for f in files], dim="time").rename(lat="latitude", lon="longitude")
    expected = expected.assign_coords(longitude=(expected.longitude + 180) % 360 - 180)  # the default convention
    expected = expected.sortby(["latitude", "longitude"])
    xr.testing.assert_equal(result[["t2m", "z"]].reset_coords(drop=True),
                            expected[["t2m", "z"]].reset_coords(drop=True))
    assert result.attrs["provenance"]["inputs"] == files


def test_ingest_job_of_a_catalog_entry(tmp_path, monkeypatch, scheduler):
    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path / "stores"))
    entry = catalog.get_entry("era5-uk-t2m")  # named by its YAML file, chunked as asked
    assert ingest.main([str(entry.path), "--time-chunk", "48", "--scheduler", scheduler, "--no-progress"]) == 0
    result = open_zarr(entry.store)
    assert result.sizes["time"] == 744 and bool(np.isfinite(result.t2m).all())
    assert result.chunks["time"] == (48,) * 15 + (24,)
    raw = xr.open_dataset(entry.source.ingest[0], engine="cfgrib", backend_kwargs={"indexpath": ""})
    np.testing.assert_array_equal(result.t2m.values, raw.t2m.values[:, ::-1, :])  # GRIB's latitude runs north to south


def test_files_without_out_are_refused_in_one_line(tmp_path, capsys):
    assert ingest.main([str(tmp_path / "a.nc"), "--workers", "1", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("pipelines.ingest: error:") and "--out" in error
