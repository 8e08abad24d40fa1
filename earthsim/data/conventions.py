"""earthsim's conventions for weather fields, and the conversion of opened netCDF/GRIB data into them.

A dataset in the conventions (docs/architecture.md, "Data conventions") has:

- dims in the order ``time``, ``prediction_timedelta`` (forecasts only), ``realization`` (ensemble
  member: the name docs/architecture.md uses for ensembles, and the CF ``standard_name`` of GRIB's ``number``),
  ``level`` (pressure in hPa, increasing), ``latitude`` (degrees north, increasing), ``longitude``
  (degrees east, increasing, wrapped into one stated convention, ``[-180, 180)`` or ``[0, 360)``,
  recorded in the ``longitude_convention`` attribute); variables without ``time`` are static fields;
- ``time`` is the time a field is valid at: for analyses (GRIB ``step`` 0) it is ``valid_time``;
  GRIB forecasts with several steps keep the initialisation ``time`` and turn ``step`` into
  ``prediction_timedelta``, as WeatherBench 2 forecast stores do;
- files without a time axis but with a ``month`` dim (monthly-mean climatologies such as
  ERA-Interim's, values 1–12) keep ``month`` as their leading dim in place of ``time``;
- float32 data, float64 ``latitude``/``longitude``/``level``; every variable has CF ``units`` and
  ``long_name`` (the source's other attributes, GRIB_* included, are kept per variable);
- scalar coordinates are moved into the dataset attribute ``scalar_coordinates`` ({name: value}),
  e.g. GRIB's ``step``, ``surface``, ``heightAboveGround`` and a deterministic product's ``number``;
  a scalar ``time``, pressure level, or member of an ensemble product (GRIB_totalNumber > 0)
  instead becomes a dim of length 1, so files concatenate and validate like any other;
  ``valid_time`` is dropped once it has become ``time`` (or is derivable as time + lead);
- cell bounds variables (named by a coordinate's ``bounds``) are dropped: the grid is given by its
  centres; the source's encodings (int16 packing, fill values, chunks) are dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from earthsim.errors import EarthsimError

CONVENTIONS = (
    "earthsim-weather-1: dims (time | month, prediction_timedelta, realization, level [hPa, increasing], "
    "latitude [increasing], longitude [increasing]); time is the valid time; float32 data; CF units and long_name"
)
# Dim names every layer uses (docs/architecture.md): forecasts add LEAD_DIM, ensembles MEMBER_DIM, fluids TRAJECTORY_DIM.
TIME_DIM = "time"
LEVEL_DIM = "level"
MEMBER_DIM = "realization"
LEAD_DIM = "prediction_timedelta"
TRAJECTORY_DIM = "trajectory"
LATITUDE_DIM = "latitude"
LONGITUDE_DIM = "longitude"
Y_DIM, X_DIM = "y", "x"  # a periodic box
#: Attributes by which a solver-made store records its physics (earthsim.sim writes them; models may read them).
PHYSICS_ATTRS = ("flow", "viscosity", "reynolds_number", "drag", "forcing", "forcing_wavenumber", "forcing_amplitude",
                 "domain_length", "solver_dt", "cfl_velocity", "cfl_safety", "radius", "omega", "gravity", "havg",
                 "staggered")
LONGITUDE_CONVENTIONS = {"[-180, 180)": -180.0, "[0, 360)": 0.0}
RECORD_DIMS = (TIME_DIM, "month")

_RENAMES = {
    LATITUDE_DIM: ("lat",),
    LONGITUDE_DIM: ("lon",),
    LEVEL_DIM: ("isobaricInhPa", "isobaricInPa", "pressure_level", "plev"),
    MEMBER_DIM: ("number", "member", "ensemble", "ensemble_member"),
}
_HPA_PER_UNIT = {"pa": 0.01, "hpa": 1.0, "millibars": 1.0, "millibar": 1.0, "mbar": 1.0, "mb": 1.0}


def record_dim(ds: xr.Dataset) -> str | None:
    """The dim records are stacked along (``time``, else ``month``), or None for a single field."""
    return next((d for d in RECORD_DIMS if d in ds.dims), None)


def to_conventions(ds: xr.Dataset, longitude_convention: str = "[-180, 180)") -> xr.Dataset:
    """Rename, reorder, wrap and cast ``ds`` into earthsim's weather conventions (see module doc).

    Works lazily on dask-backed datasets: coordinates are read, data is only re-indexed and cast.
    """
    if longitude_convention not in LONGITUDE_CONVENTIONS:
        raise EarthsimError(
            f"longitude convention {longitude_convention!r} is not one of {list(LONGITUDE_CONVENTIONS)}"
        )
    ds = _drop_bounds(ds.copy())  # a shallow copy: attributes set below never reach the caller's dataset
    ds = ds.drop_encoding()
    ds = _rename(ds)
    ds = _valid_time(ds)
    ds = _scalars(ds)
    missing = [d for d in (LATITUDE_DIM, LONGITUDE_DIM) if d not in ds.dims]
    if missing:
        raise EarthsimError(
            f"no {' and '.join(missing)} dim (dims: {dict(ds.sizes)}); earthsim's weather conventions need a "
            "regular latitude/longitude grid with dims named latitude/lat and longitude/lon"
        )
    ds = _levels(ds)
    ds = _latitude(ds)
    ds = _longitude(ds, longitude_convention)
    ds = _float32(ds)
    leading = [d for d in (record_dim(ds), LEAD_DIM, MEMBER_DIM, LEVEL_DIM) if d is not None and d in ds.dims]
    ds = ds.transpose(*leading, ..., LATITUDE_DIM, LONGITUDE_DIM)
    ds.attrs["earthsim_conventions"] = CONVENTIONS
    ds.attrs["longitude_convention"] = longitude_convention
    return ds


def _drop_bounds(ds: xr.Dataset) -> xr.Dataset:
    names = {var.attrs.get("bounds") or var.encoding.get("bounds") for var in ds.variables.values()}
    return ds.drop_vars([n for n in names if n in ds.variables])


def _rename(ds: xr.Dataset) -> xr.Dataset:
    mapping = {}
    for target, sources in _RENAMES.items():
        present = [name for name in (target, *sources) if name in ds.variables or name in ds.dims]
        if len(present) > 1:
            raise EarthsimError(f"both {present[0]!r} and {present[1]!r} found; cannot tell which is {target!r}")
        if present and present[0] != target:
            mapping[present[0]] = target
    if "valid_time" in ds.dims and TIME_DIM not in ds.dims:
        # ERA5 netCDF from the new CDS: the time axis is called valid_time.
        if TIME_DIM in ds.variables:
            mapping[TIME_DIM] = "forecast_reference_time"
        mapping["valid_time"] = TIME_DIM
    return ds.rename(mapping)


def _valid_time(ds: xr.Dataset) -> xr.Dataset:
    """Make ``time`` the valid time (GRIB analyses), or forecasts' ``step`` their lead dim."""
    if "step" in ds.dims:
        return ds.rename({"step": LEAD_DIM}).drop_vars("valid_time", errors="ignore")
    if "valid_time" not in ds.variables:
        return ds
    valid = ds["valid_time"].variable
    if TIME_DIM not in ds.variables:
        return ds.rename({"valid_time": TIME_DIM})
    if valid.dims != ds[TIME_DIM].dims:
        raise EarthsimError(f"valid_time has dims {valid.dims} and time {ds['time'].dims}; expected the same")
    time = xr.Variable(valid.dims, np.asarray(valid.values), {**valid.attrs, "standard_name": "time"})
    return ds.drop_vars("valid_time").assign_coords(time=time)


def _scalars(ds: xr.Dataset) -> xr.Dataset:
    ensemble = any(int(v.attrs.get("GRIB_totalNumber", 0) or 0) > 0 for v in ds.data_vars.values())
    expand, moved = [], dict(ds.attrs.get("scalar_coordinates", {}))
    for name, coord in ds.coords.items():
        if coord.ndim:
            continue
        if name in (TIME_DIM, LEVEL_DIM) or (name == MEMBER_DIM and ensemble):
            expand.append(name)
        else:
            moved[name] = _scalar_value(coord.values)
    ds = ds.drop_vars([n for n in moved if n in ds.variables])
    if expand:
        ds = ds.expand_dims(expand)
    if moved:
        ds.attrs["scalar_coordinates"] = moved
    return ds


def _scalar_value(value: np.ndarray):
    """A JSON-friendly form of a 0-d coordinate value."""
    if np.issubdtype(value.dtype, np.datetime64):
        return pd.Timestamp(value).isoformat()
    if np.issubdtype(value.dtype, np.timedelta64):
        return str(pd.Timedelta(value))
    return value.item()


def _levels(ds: xr.Dataset) -> xr.Dataset:
    if LEVEL_DIM not in ds.dims:
        return ds
    units = str(ds[LEVEL_DIM].attrs.get("units", "hPa"))
    if units.lower() not in _HPA_PER_UNIT:
        raise EarthsimError(
            f"level coordinate has units {units!r}; earthsim's level is pressure, units one of {sorted(_HPA_PER_UNIT)}"
        )
    values = ds[LEVEL_DIM].values.astype(np.float64) * _HPA_PER_UNIT[units.lower()]
    attrs = {"units": "hPa", "long_name": "pressure level", "standard_name": "air_pressure", "positive": "down"}
    ds = ds.assign_coords(level=(LEVEL_DIM, values, attrs))
    return _increasing(ds, LEVEL_DIM, values)


def _latitude(ds: xr.Dataset) -> xr.Dataset:
    values = ds[LATITUDE_DIM].values.astype(np.float64)
    attrs = {k: v for k, v in ds[LATITUDE_DIM].attrs.items() if k != "stored_direction"}
    attrs.update(units="degrees_north", standard_name="latitude", long_name="latitude")
    ds = ds.assign_coords(latitude=(LATITUDE_DIM, values, attrs))
    return _increasing(ds, LATITUDE_DIM, values)


def _increasing(ds: xr.Dataset, dim: str, values: np.ndarray) -> xr.Dataset:
    if np.unique(values).size != values.size:
        raise EarthsimError(f"{dim} has repeated values {values[pd.Index(values).duplicated()].tolist()}")
    if np.all(np.diff(values) > 0):
        return ds
    if np.all(np.diff(values) < 0):
        return ds.isel({dim: slice(None, None, -1)})
    return ds.isel({dim: np.argsort(values, kind="stable")})


def _longitude(ds: xr.Dataset, convention: str) -> xr.Dataset:
    """Wrap longitudes into ``[low, low + 360)`` and sort; a repeated (cyclic) point is dropped.

    Only values outside the range are shifted, so values already inside keep their exact bits.
    """
    low = LONGITUDE_CONVENTIONS[convention]
    values = ds[LONGITUDE_DIM].values.astype(np.float64)
    outside = (values < low) | (values >= low + 360.0)
    values = np.where(outside, values - 360.0 * np.floor((values - low) / 360.0), values)
    attrs = {k: v for k, v in ds[LONGITUDE_DIM].attrs.items() if k != "stored_direction"}
    attrs.update(units="degrees_east", standard_name="longitude", long_name="longitude")
    ds = ds.assign_coords(longitude=(LONGITUDE_DIM, values, attrs))
    _, first = np.unique(values, return_index=True)  # sorted unique values, first occurrence of each
    if first.size == values.size and np.all(np.diff(values) > 0):
        return ds
    return ds.isel(longitude=first)


def _float32(ds: xr.Dataset) -> xr.Dataset:
    for name, var in ds.data_vars.items():
        if var.dtype.kind not in "biuf":
            raise EarthsimError(f"variable {name!r} has dtype {var.dtype}; earthsim stores numeric fields as float32")
        attrs = dict(var.attrs)
        attrs.setdefault("long_name", attrs.get("GRIB_name") or attrs.get("standard_name") or str(name))
        ds[name] = var.astype(np.float32).assign_attrs(attrs)
    return ds


def lead_numbers(leads) -> np.ndarray:
    """Lead times as float64: hours for timedeltas (weather), solver time units otherwise (fluids)."""
    leads = np.asarray(leads)
    if np.issubdtype(leads.dtype, np.timedelta64):
        return leads.astype("timedelta64[ns]").astype(np.int64) / 3600e9
    return leads.astype(np.float64)


def physics_attributes(attrs) -> dict[str, float | int | str]:
    """The physics a solver-made store records in its attributes (:data:`PHYSICS_ATTRS`), as plain values."""
    out = {}
    for key in PHYSICS_ATTRS:
        if key in attrs:
            value = attrs[key]
            out[key] = value.item() if hasattr(value, "item") else value
    return out
