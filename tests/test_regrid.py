"""Regridding's invariants: the conservative scheme keeps the global area-weighted mean, reproduces constants, and a
grid the source does not cover, or an extrapolation, is refused."""

from __future__ import annotations

import numpy as np
import pytest

from earthsim.data.regrid import Regridder, equiangular_grid
from earthsim.errors import ValidationError


def _area_mean(values: np.ndarray, latitude: np.ndarray, longitude: np.ndarray) -> float:
    """Area-weighted global mean of cell values, from cell bounds computed here (midpoints, poles closed)."""
    edges = np.concatenate([[-90.0], (latitude[:-1] + latitude[1:]) / 2, [90.0]])
    band = np.diff(np.sin(np.deg2rad(edges)))
    wrapped = np.concatenate([[longitude[-1] - 360], longitude, [longitude[0] + 360]])
    width = np.diff((wrapped[:-1] + wrapped[1:]) / 2)
    area = band[:, None] * width[None, :]
    return float((values * area).sum() / area.sum())


@pytest.mark.parametrize("source_resolution, target_resolution", [(0.75, 5.625), (1.40625, 5.625), (5.625, 2.8125)])
def test_conservative_keeps_the_global_mean(source_resolution, target_resolution):
    n_lat = round(180 / source_resolution) + 1  # a source with points at the poles, as ERA-Interim's
    latitude = np.linspace(-90, 90, n_lat)
    longitude = np.arange(round(360 / source_resolution)) * source_resolution - 180
    rng = np.random.default_rng(0)
    values = rng.normal(280, 20, (2, latitude.size, longitude.size))
    target = equiangular_grid(target_resolution, "[-180, 180)")
    out = Regridder(latitude, longitude, *target).regrid_array(values)
    for before, after in zip(values, out.astype(np.float64)):
        assert _area_mean(after, *target) == pytest.approx(_area_mean(before, latitude, longitude), rel=1e-6)
    constant = Regridder(latitude, longitude, *target).regrid_array(np.full((latitude.size, longitude.size), 3.25))
    np.testing.assert_allclose(constant, 3.25, rtol=1e-7)


def test_the_equiangular_grid_is_weatherbench_s():
    latitude, longitude = equiangular_grid(5.625)
    assert latitude.size == 32 and longitude.size == 64
    np.testing.assert_allclose(latitude[[0, -1]], [-87.1875, 87.1875])
    np.testing.assert_allclose(longitude[[0, 1, -1]], [0.0, 5.625, 354.375])
    assert equiangular_grid(5.625, "[-180, 180)")[1][0] == -180.0


def test_a_regional_source_is_refused_for_a_global_grid():
    latitude, longitude = np.linspace(40, 60, 21), np.linspace(-10, 10, 21)
    with pytest.raises(ValidationError, match="does not cover"):
        Regridder(latitude, longitude, *equiangular_grid(5.625, "[-180, 180)"))
    with pytest.raises(ValidationError, match="outside"):
        Regridder(latitude, longitude, *equiangular_grid(5.625, "[-180, 180)"), method="bilinear")


def test_bilinear_reproduces_linear_fields_and_source_points():
    latitude, longitude = np.linspace(-88.5, 88.5, 60), np.arange(120) * 3.0
    field = 2.0 * latitude[:, None] + 0.0 * longitude[None, :] + 7.0
    target = equiangular_grid(5.625)
    out = Regridder(latitude, longitude, *target, method="bilinear").regrid_array(field)
    np.testing.assert_allclose(out, 2.0 * target[0][:, None] + 7.0 + 0 * target[1][None, :], rtol=1e-6)
    same = Regridder(latitude, longitude, latitude, longitude, method="bilinear").regrid_array(field)
    np.testing.assert_allclose(same, field, rtol=1e-6)


def test_xesmf_agrees_where_it_installs():
    """Bilinear and first-order conservative against xESMF (ESMF draws cell edges and interpolates on great circles,
    earthsim in latitude and longitude: on a smooth field at 1.5° the two differ by well under 1e-3 of its
    amplitude, not by round-off)."""
    xesmf = pytest.importorskip("xesmf", reason="xESMF needs ESMF, which comes from conda-forge only; this project "
                                                "installs from PyPI (see README)")
    import xarray as xr

    latitude, longitude = np.linspace(-89.25, 89.25, 120), np.arange(240) * 1.5
    values = np.cos(np.deg2rad(latitude))[:, None] * np.sin(np.deg2rad(longitude))[None, :]
    target = equiangular_grid(5.625)
    source = xr.Dataset({"f": (("lat", "lon"), values)}, coords={"lat": latitude, "lon": longitude})
    grid = xr.Dataset(coords={"lat": target[0], "lon": target[1]})
    theirs = xesmf.Regridder(source, grid, "bilinear", periodic=True)(source.f).values
    ours = Regridder(latitude, longitude, *target, method="bilinear").regrid_array(values)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)

    def edges(centres: np.ndarray, step: float) -> np.ndarray:  # cell bounds, as xESMF's conservative method wants
        return np.concatenate([centres - step / 2, [centres[-1] + step / 2]])

    source = source.assign_coords(lat_b=np.clip(edges(latitude, 1.5), -90, 90), lon_b=edges(longitude, 1.5))
    grid = grid.assign_coords(lat_b=np.clip(edges(target[0], 5.625), -90, 90), lon_b=edges(target[1], 5.625))
    theirs = xesmf.Regridder(source, grid, "conservative", periodic=True)(source.f).values
    ours = Regridder(latitude, longitude, *target, method="conservative").regrid_array(values)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_a_source_holding_nan_is_refused_and_nothing_is_written(tmp_path):
    import xarray as xr

    from earthsim.data.regrid import regrid_store

    latitude, longitude = np.linspace(-88.5, 88.5, 60), np.arange(120) * 3.0
    values = np.ones((4, 60, 120), np.float32)
    values[2, 10, 20] = np.nan
    xr.Dataset({"t2m": (("time", "latitude", "longitude"), values, {"units": "K"})},
               coords={"time": np.arange(4), "latitude": latitude, "longitude": longitude}).to_zarr(
        tmp_path / "source.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(ValidationError, match=r"source.zarr: the source holds NaN or ±inf values \(\d+ regridded"):
        regrid_store(tmp_path / "source.zarr", tmp_path / "out.zarr", 5.625, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.zarr"]
