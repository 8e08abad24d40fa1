"""Regridding between latitude/longitude grids: first-order conservative and bilinear, as WeatherBench 2 regrids ERA5.

Both schemes are separable on rectilinear grids, so a regridder is two matrices, one per axis,
applied as ``W_lat · field · W_lonᵀ``:

- conservative: each target cell's value is the area-weighted mean of the source cells it
  overlaps. On the sphere a cell's area is proportional to ``Δ(sin latitude) · Δlongitude``, so the
  latitude weights are the overlaps of the cells' sin-latitude intervals and the longitude weights
  the overlaps of their (periodic) longitude intervals, each normalised by the target cell's width.
  Cell bounds are the midpoints between centres, closed at ±90° in latitude for a global grid
  (WeatherBench 2's ``regridding.py`` makes the same choices). The area-weighted mean over the globe is conserved.
- bilinear: linear interpolation in latitude, then in (periodic) longitude.

A target cell the source does not wholly cover (a regional source regridded to a global grid) is
refused rather than filled. NaN in the source propagates (through the matrix products, to every
target value of its field); the store job refuses such a source (:func:`regrid_store`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from earthsim.data import store
from earthsim.data.conventions import LATITUDE_DIM, LONGITUDE_CONVENTIONS, LONGITUDE_DIM, record_dim
from earthsim.errors import EarthsimError, ValidationError

METHODS = ("conservative", "bilinear")


def equiangular_grid(resolution: float, longitude_convention: str = "[0, 360)") -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude centres of WeatherBench's equiangular grid without poles at ``resolution`` degrees
    (5.625 gives its 32 × 64 grid: latitudes ±87.1875, longitudes 0, 5.625, …, 354.375), longitudes wrapped into
    ``longitude_convention`` and sorted."""
    if not resolution > 0:
        raise EarthsimError(f"a grid spacing must be a positive number of degrees, got {resolution}")
    rows, columns = 180.0 / resolution, 360.0 / resolution
    if abs(rows - round(rows)) > 1e-9 or abs(columns - round(columns)) > 1e-9:
        raise EarthsimError(f"a grid of {resolution}° does not divide 180° and 360° into whole cells")
    latitude = -90.0 + resolution / 2 + resolution * np.arange(round(rows))
    low = LONGITUDE_CONVENTIONS[longitude_convention]
    longitude = np.sort((resolution * np.arange(round(columns)) - low) % 360.0 + low)
    return latitude, longitude


def latitude_bounds(latitude: np.ndarray) -> np.ndarray:
    """Cell edges of increasing latitude centres: midpoints between them, the outer edges half a spacing beyond the
    end centres, clipped to ±90° (so a global grid's cells close at the poles)."""
    middle = (latitude[:-1] + latitude[1:]) / 2
    ends = [latitude[0] - (middle[0] - latitude[0]), latitude[-1] + (latitude[-1] - middle[-1])]
    return np.clip(np.concatenate([[ends[0]], middle, [ends[1]]]), -90.0, 90.0)


def longitude_bounds(longitude: np.ndarray) -> np.ndarray:
    """Cell edges of increasing longitude centres: midpoints; around the circle for a grid that closes it (the gap
    from the last centre to the first, 360° on, is no wider than 1.5 spacings), else half a spacing beyond the ends."""
    spacing = np.diff(longitude)
    gap = longitude[0] + 360.0 - longitude[-1]
    if gap <= 1.5 * np.median(spacing):
        wrapped = np.concatenate([[longitude[-1] - 360.0], longitude, [longitude[0] + 360.0]])
        return (wrapped[:-1] + wrapped[1:]) / 2
    middle = (longitude[:-1] + longitude[1:]) / 2
    return np.concatenate([[longitude[0] - spacing[0] / 2], middle, [longitude[-1] + spacing[-1] / 2]])


def _overlaps(target: np.ndarray, source: np.ndarray, period: float | None) -> np.ndarray:
    """Length of the overlap of every target interval with every source interval ``[n_target, n_source]``, with
    the source shifted by whole periods when ``period`` is given."""
    shifts = (-period, 0.0, period) if period else (0.0,)
    total = np.zeros((target.size - 1, source.size - 1))
    for shift in shifts:
        low = np.maximum(target[:-1, None], source[None, :-1] + shift)
        high = np.minimum(target[1:, None], source[None, 1:] + shift)
        total += np.clip(high - low, 0.0, None)
    return total


def _normalised(overlap: np.ndarray, widths: np.ndarray, axis: str, target: np.ndarray) -> np.ndarray:
    covered = overlap.sum(axis=1)
    short = np.flatnonzero(np.abs(covered - widths) > 1e-9 * np.maximum(np.abs(widths), 1.0))
    if short.size:
        raise ValidationError(
            f"the source grid does not cover the target's {axis} cells around {target[short[:3]].tolist()}"
            f"{' …' if short.size > 3 else ''} ({short.size} of {widths.size}); earthsim does not fill them")
    return overlap / widths[:, None]


def conservative_weights(source: np.ndarray, target: np.ndarray, axis: str) -> np.ndarray:
    """First-order conservative weights ``[n_target, n_source]`` along ``axis`` ("latitude" or "longitude")."""
    if axis == LATITUDE_DIM:
        target_edges = np.sin(np.deg2rad(latitude_bounds(target)))
        overlap = _overlaps(target_edges, np.sin(np.deg2rad(latitude_bounds(source))), None)
    else:
        target_edges = longitude_bounds(target)
        overlap = _overlaps(target_edges, longitude_bounds(source), 360.0)
    return _normalised(overlap, np.diff(target_edges), axis, target)


def bilinear_weights(source: np.ndarray, target: np.ndarray, axis: str) -> np.ndarray:
    """Linear-interpolation weights ``[n_target, n_source]`` along ``axis``; periodic in longitude."""
    periodic = axis == LONGITUDE_DIM and source[0] + 360.0 - source[-1] <= 1.5 * np.median(np.diff(source))
    if periodic:
        extended = np.concatenate([[source[-1] - 360.0], source, [source[0] + 360.0]])
        columns = np.concatenate([[source.size - 1], np.arange(source.size), [0]])
        points = (target - extended[0]) % 360.0 + extended[0]  # within the extended source's span
    else:
        extended, columns, points = source, np.arange(source.size), target
        outside = (points < source[0] - 1e-9) | (points > source[-1] + 1e-9)
        if outside.any():
            raise ValidationError(f"target {axis}s {points[outside][:3].tolist()} lie outside the source's "
                                  f"[{source[0]}, {source[-1]}]; earthsim does not extrapolate")
    right = np.clip(np.searchsorted(extended, points, side="right"), 1, extended.size - 1)
    left = right - 1
    fraction = (points - extended[left]) / (extended[right] - extended[left])
    weights = np.zeros((target.size, source.size))
    rows = np.arange(target.size)
    np.add.at(weights, (rows, columns[left]), 1.0 - fraction)
    np.add.at(weights, (rows, columns[right]), fraction)
    return weights


class Regridder:
    """Regrid fields from one latitude/longitude grid to another with ``method`` ("conservative" or "bilinear").

    Latitudes increasing, longitudes increasing within one 360° turn (earthsim's conventions).
    """

    def __init__(self, source_latitude, source_longitude, target_latitude, target_longitude,
                 method: str = "conservative"):
        if method not in METHODS:
            raise EarthsimError(f"regridding method must be one of {list(METHODS)}, got {method!r}")
        self.method = method
        self.target = (np.asarray(target_latitude, np.float64), np.asarray(target_longitude, np.float64))
        weights = conservative_weights if method == "conservative" else bilinear_weights
        self.latitude_weights = weights(np.asarray(source_latitude, np.float64), self.target[0], LATITUDE_DIM)
        self.longitude_weights = weights(np.asarray(source_longitude, np.float64), self.target[1], LONGITUDE_DIM)

    def regrid_array(self, values: np.ndarray) -> np.ndarray:
        """``values [..., latitude, longitude]`` on the source grid → float32 on the target grid (float64 sums)."""
        out = np.einsum("...ij,ki,lj->...kl", np.asarray(values, np.float64), self.latitude_weights,
                        self.longitude_weights, optimize=True)
        return out.astype(np.float32)

    def regrid(self, ds: xr.Dataset) -> xr.Dataset:
        """Every variable of ``ds`` with latitude and longitude dims, regridded lazily (dask, chunk by chunk); the
        target coordinates replace the source's, other variables and attributes are kept."""
        spatial = [name for name, var in ds.data_vars.items() if {LATITUDE_DIM, LONGITUDE_DIM} <= set(var.dims)]
        core = [LATITUDE_DIM, LONGITUDE_DIM]
        out = xr.apply_ufunc(
            self.regrid_array, ds[spatial].chunk({LATITUDE_DIM: -1, LONGITUDE_DIM: -1}), input_core_dims=[core],
            output_core_dims=[["target_latitude", "target_longitude"]], dask="parallelized",
            output_dtypes=[np.float32],
            dask_gufunc_kwargs={"output_sizes": {"target_latitude": self.target[0].size,
                                                 "target_longitude": self.target[1].size}},
            keep_attrs=True)
        out = out.drop_vars([LATITUDE_DIM, LONGITUDE_DIM], errors="ignore").rename(
            {"target_latitude": LATITUDE_DIM, "target_longitude": LONGITUDE_DIM})
        out = out.assign_coords({LATITUDE_DIM: (LATITUDE_DIM, self.target[0], ds[LATITUDE_DIM].attrs),
                                 LONGITUDE_DIM: (LONGITUDE_DIM, self.target[1], ds[LONGITUDE_DIM].attrs)})
        for name, var in ds.data_vars.items():
            if name not in spatial:
                out[name] = var
            else:
                out[name] = out[name].transpose(*var.dims)
        out.attrs = dict(ds.attrs)
        return out


def _nonfinite(ds: xr.Dataset) -> xr.DataArray:
    return sum((~np.isfinite(var)).sum() for var in ds.data_vars.values())


def regrid_store(source: str | os.PathLike, out: str | os.PathLike, resolution: float, method: str = "conservative",
                 *, progress: bool = True, overwrite: bool = False, records_per_region: int | None = None) -> Path:
    """Regrid a store in earthsim's conventions (or a netCDF/GRIB file, converted to them) to WeatherBench's
    equiangular ``resolution``° grid and write the Zarr v3 store ``out``.

    Written one block of time steps (or months) per region, on the active dask cluster if there is
    one, through ``OUT.partial``: a killed run resumes with the blocks not yet written. Output in the
    source's longitude convention, float32, one region per chunk. A source holding NaN or ±inf is
    refused.
    """
    from earthsim.data.ingest import open_inputs

    source = str(source)
    if Path(source).is_file():
        ds = open_inputs([source])
    else:
        ds = store.open_zarr(source)
    if LATITUDE_DIM not in ds.dims or LONGITUDE_DIM not in ds.dims:
        raise ValidationError(f"{source}: regridding needs {LATITUDE_DIM} and {LONGITUDE_DIM} dims; it has "
                              f"{sorted(ds.dims)}")
    convention = ds.attrs.get("longitude_convention", "[0, 360)" if ds[LONGITUDE_DIM].max() >= 180 else
                              "[-180, 180)")
    latitude, longitude = equiangular_grid(resolution, convention)
    try:
        regridder = Regridder(ds[LATITUDE_DIM].values, ds[LONGITUDE_DIM].values, latitude, longitude, method)
    except ValidationError as error:
        raise ValidationError(f"{source}: {error}") from None
    if records_per_region is not None and records_per_region < 1:
        raise EarthsimError(f"records per region must be at least 1, got {records_per_region}")
    record = record_dim(ds)
    step = records_per_region or (ds.chunksizes[record][0] if record and ds.chunksizes.get(record) else 1)
    result = regridder.regrid(ds)
    result.attrs.update(longitude_convention=convention)
    provenance = store.provenance(
        "earthsim.data.regrid.regrid_store", [source if store.is_url(source) else str(Path(source).resolve())],
        {"method": method, "resolution_degrees": float(resolution), "records_per_region": step,
         "grid": f"equiangular without poles, {latitude.size} x {longitude.size}"})
    result.attrs[store.PROVENANCE_ATTR] = provenance
    encoding = {name: {"chunks": tuple(step if d == record else result.sizes[d] for d in var.dims)}
                for name, var in result.data_vars.items()}
    partial = store.write_by_regions(result, out, provenance, along=record, step=step, encoding=encoding,
                                     report=_nonfinite, progress=progress, overwrite=overwrite, what="regridding")
    if partial.complete:  # checked before its flags were dropped
        return partial.finish()
    bad = int(np.sum(partial.flags()))
    if bad:
        shutil.rmtree(partial.partial)  # made from a source that must be mended first: nothing to resume
        raise ValidationError(f"{source}: the source holds NaN or ±inf values ({bad} regridded values became NaN or "
                              f"inf; `earthsim check` counts them in a store); nothing was written to {out}")
    return partial.finish()
