"""The regrid job on the real ERA-Interim sample (0.75°, poles included) to WeatherBench's 5.625° grid, against a
direct area-weighted block average on the common refinement of the two grids, where every fine cell nests in one
source and one target cell; and bilinearly, against scipy's RegularGridInterpolator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from scipy.interpolate import RegularGridInterpolator

from earthsim.data.ingest import open_inputs
from earthsim.data.store import open_zarr
from pipelines import regrid

ERA_INTERIM = Path(__file__).resolve().parents[1] / "tests" / "data" / "eraint_uvz.nc"


def _edges(centres: np.ndarray, low: float | None) -> np.ndarray:
    """Cell edges: midpoints; closed at ±90 (latitude, ``low`` None) or wrapping around 360° (longitude)."""
    middle = (centres[:-1] + centres[1:]) / 2
    if low is None:
        return np.concatenate([[-90.0], middle, [90.0]])
    return np.concatenate([[(centres[-1] - 360 + centres[0]) / 2], middle, [(centres[-1] + centres[0] + 360) / 2]])


def _block_average(values: np.ndarray, src: tuple[np.ndarray, np.ndarray], dst: tuple[np.ndarray, np.ndarray]):
    """Area-weighted average of a piecewise-constant field over each target cell, on the union of the edges."""
    lat_s, lat_t = _edges(src[0], None), _edges(dst[0], None)
    lon_s, lon_t = _edges(src[1], 0.0), _edges(dst[1], 0.0)
    lat_f = np.union1d(lat_s, lat_t)
    lon_f = np.union1d(np.concatenate([lon_s, lon_s + 360, lon_s - 360]), lon_t)
    lon_f = lon_f[(lon_f >= lon_t[0]) & (lon_f <= lon_t[-1])]
    lat_mid, lon_mid = (lat_f[:-1] + lat_f[1:]) / 2, (lon_f[:-1] + lon_f[1:]) / 2
    area = np.diff(np.sin(np.deg2rad(lat_f)))[:, None] * np.diff(lon_f)[None, :]
    source_row = np.searchsorted(lat_s, lat_mid) - 1
    target_row = np.searchsorted(lat_t, lat_mid) - 1
    source_col = (np.searchsorted(lon_s, (lon_mid - lon_s[0]) % 360 + lon_s[0]) - 1) % src[1].size
    target_col = np.searchsorted(lon_t, lon_mid) - 1
    fine = values[..., source_row[:, None], source_col[None, :]] * area
    out = np.zeros(values.shape[:-2] + (dst[0].size, dst[1].size))
    weight = np.zeros((dst[0].size, dst[1].size))
    np.add.at(weight, (target_row[:, None], target_col[None, :]), area)
    for index in np.ndindex(values.shape[:-2]):
        np.add.at(out[index], (target_row[:, None], target_col[None, :]), fine[index])
    return out / weight


def test_conservative_regrid_of_era_interim_equals_a_block_average(tmp_path, scheduler):
    out = tmp_path / "eraint-5.625.zarr"
    assert regrid.main([str(ERA_INTERIM), "--out", str(out), "--resolution", "5.625", "--scheduler", scheduler,
                        "--no-progress"]) == 0
    result = open_zarr(out).load()
    source = open_inputs([ERA_INTERIM]).load()
    assert result.sizes["latitude"] == 32 and result.sizes["longitude"] == 64
    np.testing.assert_allclose(result.latitude.values[[0, -1]], [-87.1875, 87.1875])
    grids = ((source.latitude.values, source.longitude.values), (result.latitude.values, result.longitude.values))
    for name in ("z", "u", "v"):
        expected = xr.DataArray(_block_average(source[name].values.astype(np.float64), *grids),
                                dims=source[name].dims, coords=result[name].coords)
        scale = float(np.abs(source[name]).max())
        xr.testing.assert_allclose(result[name].astype(np.float64).drop_attrs(), expected, rtol=0, atol=1e-6 * scale)
        assert result[name].attrs["units"] == source[name].attrs["units"]
    assert result.attrs["provenance"]["config"]["method"] == "conservative"


def test_bilinear_regrid_equals_scipy(tmp_path, scheduler):
    out = tmp_path / "eraint-bilinear.zarr"
    assert regrid.main([str(ERA_INTERIM), "--out", str(out), "--resolution", "2.8125", "--method", "bilinear",
                        "--scheduler", scheduler, "--no-progress"]) == 0
    result = open_zarr(out).load()
    source = open_inputs([ERA_INTERIM]).load()
    lon = source.longitude.values
    padded = np.concatenate([lon, [lon[0] + 360]])  # periodic in longitude
    for name in ("z", "u"):
        values = source[name].values.astype(np.float64)
        values = np.concatenate([values, values[..., :1]], axis=-1)
        target_lon = (result.longitude.values - lon[0]) % 360 + lon[0]
        points = np.stack(np.meshgrid(result.latitude.values, target_lon, indexing="ij"), axis=-1)
        expected = np.empty(result[name].shape)
        for index in np.ndindex(values.shape[:-2]):
            expected[index] = RegularGridInterpolator((source.latitude.values, padded), values[index])(points)
        np.testing.assert_allclose(result[name].values, expected, rtol=0, atol=1e-6 * np.abs(values).max())
