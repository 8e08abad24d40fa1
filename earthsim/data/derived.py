"""Fields computed from a dataset's coordinates instead of read from its store.

Weather models read the position and the time of day as fields of their own (ClimaX's
vocabulary has a latitude field; the ERA5 UK experiment adds longitude and the local time of
day), so the loader makes them beside the stored variables:

- static fields, one map per dataset: ``latitude`` and ``longitude`` (degrees);
- per-frame fields, computed at each frame's valid time (forcings: read at every step, never
  predicted): ``local_time_sin`` and ``local_time_cos``, the sine and cosine of the local solar
  time ``2π (UTC hour + longitude / 15) / 24``, which vary along longitude;
- ``<channel>_climatology`` for a channel read (``t2m_climatology``, ``z500_climatology``): the
  entry's climatology of that channel at each frame's valid time (day of year × hour, made from the
  training split by ``earthsim stats`` as WeatherBench 2 does; a fluid's time mean). It gives a
  model the level that anomalies relax to, from the training days only.

The time-of-day fields are normalised by the fixed mean 0 and std 1 (their range is [-1, 1]), a
climatology by its channel's mean and std (so it reads on the channel's own scale); static fields
by their own mean and std, as any static field without statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from earthsim.data.grid import Grid
from earthsim.errors import ValidationError


@dataclass(frozen=True)
class DerivedField:
    """A field computed from coordinates: ``static`` (one map) or per frame (from the frames' valid times)."""

    units: str
    long_name: str
    static: bool
    compute: Callable  # static: (latitude [H, 1], longitude [1, W]); per frame: (..., hours of day [T, 1, 1])


def _local_time(longitude: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Local solar time as an angle: 2π (UTC hour + longitude / 15) / 24, ``[T, 1, W]``."""
    return 2.0 * np.pi * (hours + longitude / 15.0) / 24.0


#: The per-frame time-of-day fields, sine then cosine of the local solar time (a model may turn them to another hour).
LOCAL_TIME = ("local_time_sin", "local_time_cos")

DERIVED: dict[str, DerivedField] = {
    "latitude": DerivedField("degrees_north", "latitude of the grid point", True, lambda lat, lon: lat + 0 * lon),
    "longitude": DerivedField("degrees_east", "longitude of the grid point", True, lambda lat, lon: lon + 0 * lat),
    "local_time_sin": DerivedField("1", "sine of the local solar time of day", False,
                                   lambda lat, lon, hours: np.sin(_local_time(lon, hours)) + 0 * lat),
    "local_time_cos": DerivedField("1", "cosine of the local solar time of day", False,
                                   lambda lat, lon, hours: np.cos(_local_time(lon, hours)) + 0 * lat),
}


#: The name ending of a channel's climatology field: ``t2m_climatology``.
CLIMATOLOGY_SUFFIX = "_climatology"


def climatology_of(name: str) -> str | None:
    """The channel whose climatology the derived field ``name`` is (``t2m`` for ``t2m_climatology``), else None."""
    if name in DERIVED or not name.endswith(CLIMATOLOGY_SUFFIX):
        return None
    return name[: -len(CLIMATOLOGY_SUFFIX)] or None


def check_derived(names: list[str] | tuple[str, ...], grid: Grid, times: np.ndarray, where: str,
                  channels: list[str] | tuple[str, ...] = ()) -> None:
    """Raise naming ``where`` unless every name is a derived field these coordinates can give, or the
    climatology of one of the ``channels`` read."""
    unknown = [n for n in names if n not in DERIVED and climatology_of(n) not in channels]
    if unknown:
        raise ValidationError(f"{where}: unknown derived field(s) {unknown}; known: {sorted(DERIVED)}, or "
                              f"<channel>{CLIMATOLOGY_SUFFIX} for a channel read ({list(channels)})")
    if len(set(names)) != len(names):
        raise ValidationError(f"{where}: derived fields repeat a name: {list(names)}")
    from_coordinates = [n for n in names if n in DERIVED]
    if from_coordinates and grid.kind != "latlon":
        raise ValidationError(f"{where}: derived fields {from_coordinates} need a latitude/longitude grid, not a "
                              f"{grid.kind} grid")
    per_frame = [n for n in from_coordinates if not DERIVED[n].static]
    if per_frame and not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        raise ValidationError(f"{where}: derived fields {per_frame} need dates and times (the store's time is "
                              f"{np.asarray(times).dtype})")


def _axes(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    return grid.latitudes()[:, None], grid.longitudes()[None, :]


def static_fields(names: list[str], grid: Grid) -> np.ndarray:
    """The static derived fields ``[C, H, W]`` (float64) among ``names``, in order."""
    lat, lon = _axes(grid)
    fields = [DERIVED[n].compute(lat, lon) for n in names if n in DERIVED and DERIVED[n].static]
    return np.stack(fields) if fields else np.empty((0, *grid.shape))


def frame_fields(names: list[str], grid: Grid, times: np.ndarray) -> np.ndarray:
    """The per-frame fields ``[T, C, H, W]`` (float32) computed from coordinates (``names``, each one of
    ``DERIVED``'s per-frame fields) at the valid ``times`` (datetime64)."""
    lat, lon = _axes(grid)
    times = np.asarray(times, dtype="datetime64[ns]")
    hours = ((times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")).reshape(-1, 1, 1)
    fields = [DERIVED[n].compute(lat[None], lon[None], hours) for n in names if not DERIVED[n].static]
    shape = (len(times), 0, *grid.shape)
    return np.stack(fields, axis=1).astype(np.float32) if fields else np.empty(shape, np.float32)


def climatology_fields(entry, sources: list[tuple[str, str, float | None]], times: np.ndarray,
                       where: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The climatology of each ``(field, variable, level)`` in ``sources`` (level None for a variable
    without levels) at the valid ``times``, from ``entry``'s climatology store (computed first if missing).

    Returns one map per distinct (day of year, hour) among ``times`` ``[U, K, H, W]`` (float32; one map
    for a fluid's time mean), so a split of decades holds at most 366 × 24 maps; the row of each time
    ``[T]``; and what the store was made from (its dataset, training days and smoothing window: a model
    records it, so that its inputs cannot change under it). A value that is not finite is refused,
    naming the field and the first such time."""
    from earthsim.data.stats import climatology_at, climatology_source, load_climatology

    if entry.climatology is None:
        raise ValidationError(f"{where}: derived fields {[s[0] for s in sources]} need a climatology, and entry "
                              f"{entry.name!r} names no climatology store")
    climatology = load_climatology(entry, progress=False)
    keys = np.zeros(len(times), dtype=np.int64)  # the day of year and hour climatology_at selects by
    if "dayofyear" in climatology.dims:
        stamps = pd.DatetimeIndex(np.asarray(times))
        keys = np.asarray(stamps.day_of_year) * 24 + (np.asarray(stamps.hour) if "hour" in climatology.dims else 0)
    _, first, rows = np.unique(keys, return_index=True, return_inverse=True)
    times = np.asarray(times)[first]
    fields = []
    for name, variable, level in sources:
        values = climatology_at(climatology, variable, times, None if level is None else [level],
                                entry.grid.dims, f"climatology {entry.climatology}")[:, 0]
        bad = ~np.isfinite(values.reshape(len(values), -1))
        if bad.any():
            at = bad.any(axis=1)
            raise ValidationError(
                f"{where}: {name} is not finite at {int(bad.sum())} point(s) of {int(at.sum())} valid time(s), "
                f"first {times[at][0]}: climatology {entry.climatology} has no value there (a day "
                "its smoothing window over the training days does not reach: make it again with a wider "
                f"window, `python -m pipelines.climatology {entry.name} --window-days N --overwrite` in a "
                "checkout; or points where the variable itself is undefined)")
        fields.append(values)
    return np.stack(fields, axis=1).astype(np.float32), rows.ravel(), climatology_source(climatology)
