"""Normalisation statistics and day-of-year × hour climatologies of catalog datasets, computed with dask.

Statistics (``compute_statistics``, ``earthsim stats NAME``): for each variable, and each level when
it has one, the mean and standard deviation over the training split and the standard deviation of
one-step differences along time (the scale of residual targets ``x[t+1] - x[t]``, as GraphCast's
``diffs_stddev_by_level``). Everything is pooled over time, trajectories or ensemble members and
the grid; differences are taken within each trajectory and member, inside the split, and only
between frames exactly one catalog time step apart, so they never straddle a gap or a boundary.
Accumulation is float64. Static fields (the entry's ``static``) get a mean and std; their
``diff_std`` is NaN. The result is one Dataset with dims ``("statistic", [level])``,
``statistic = ["mean", "std", "diff_std"]``, stored at ``entry.statistics``.
A NaN or ±inf value in a variable (over the training split; a static field: anywhere) is refused,
naming the variable and how many, so that no model is normalised with NaN or inf statistics.

Climatology (``compute_climatology``) of weather entries: the mean by hour of day × day of year over
the training split, smoothed over a window of days as WeatherBench 2 does (``compute_hourly_stat``):
triangular weights ``1 - |Δ|/half`` over ``window_days`` days (WB2's ``create_window_weights``;
the end points weigh 0), wrapping around the year, a NaN-aware weighted mean of all samples in the
window (pooled over years and ensemble members), and day 366 of non-leap years taking the values
of day 365. Unlike WB2, whose wrap assumes whole years, the day-of-year axis is always 1..366 and
days with no sample within the window stay NaN: a month of training data gives values on the days
within ``window_days // 2 - 1`` days of it and NaN elsewhere. Stored at ``entry.climatology`` with
dims ``(hour, dayofyear, [level], latitude, longitude)``, float32. A fluid on the sphere (the
shallow-water sources) has no seasons or time of day: its climatology is the training split's mean
at each grid point, pooled over time and trajectories, dims ``([level], latitude, longitude)``; it
stands for every valid time.

Stored results are reused. Their provenance records the dataset, the train split's definition,
the variables (and, for the climatology, the window); if the entry has changed since, reusing
them would silently normalise with the wrong numbers, so a mismatch raises ``ValidationError``
telling the user to recompute with ``--overwrite`` rather than replacing files that a trained
model may depend on.
"""

from __future__ import annotations

import itertools
import json
import shutil
import warnings
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from earthsim import catalog
from earthsim.catalog import DatasetEntry
from earthsim.data import store
from earthsim.data.cluster import TASK_RECHUNK
from earthsim.errors import CatalogError, ValidationError
from earthsim.data.conventions import LATITUDE_DIM, LEVEL_DIM, LONGITUDE_DIM, TIME_DIM, TRAJECTORY_DIM

STATISTICS = ("mean", "std", "diff_std")
SPLIT = "train"
DEFAULT_WINDOW_DAYS = 61
DAYS_IN_YEAR = 366
POINT_DIMS = (TIME_DIM, LEVEL_DIM, LATITUDE_DIM, LONGITUDE_DIM)
#: float32 bytes of one climatology tile: every training sample at the points of a tile of one level.
CLIMATOLOGY_TILE_BYTES = 64 * 2**20


def _entry(entry: DatasetEntry | str) -> DatasetEntry:
    return entry if isinstance(entry, DatasetEntry) else catalog.get_entry(entry)


def _write_by_blocks(path: Path, lazy: dict[str, xr.DataArray], record: dict, counts: dict[str, xr.DataArray],
                     progress: bool, overwrite: bool, what: str, split: tuple[str, ...] = ()
                     ) -> tuple[store.PartialStore, dict[str, float]]:
    """Write each of ``lazy``'s variables, or each of its chunks along the ``split`` dims, as its own region
    (:func:`earthsim.data.store.write_regions`): a killed run resumes with the regions not yet written, and no
    task holds more than one such block. Returns the store and, unless it was found complete, each
    variable's count of non-finite inputs (``counts``; 0 where none is given), computed with the variable's
    first region."""
    regions = []
    for name, da in lazy.items():
        dims = [d for d in split if d in da.dims]
        blocks = [[slice(start, start + size) for start, size in zip(np.cumsum((0,) + chunks[:-1]), chunks)]
                  for chunks in (da.chunks[da.dims.index(d)] for d in dims)]
        regions += [([name], dict(zip(dims, combination))) for combination in itertools.product(*blocks)]
    first = {name: next(i for i, (names, _) in enumerate(regions) if names == [name]) for name in lazy}
    reports = [counts.get(names[0], 0) if i == first[names[0]] else 0 for i, (names, _) in enumerate(regions)]
    with warnings.catch_warnings():  # numpy's warnings about inf and NaN: the counts say it in one line
        warnings.simplefilter("ignore", RuntimeWarning)
        partial = store.write_regions(xr.Dataset(lazy), path, record, regions, reports=reports, progress=progress,
                                      overwrite=overwrite, what=what)
    if partial.complete:
        return partial, {}
    flags = partial.flags()
    return partial, {name: float(sum(flags[i] for i, (names, _) in enumerate(regions) if names == [name]))
                     for name in lazy}


def _training_data(entry: DatasetEntry, names: list[str]) -> tuple[xr.Dataset, xr.Dataset]:
    """The whole dataset (lazy) and its training split, checked to hold ``names`` and some data."""
    split = entry.split(SPLIT)
    ds = catalog.open_dataset(entry)
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        raise ValidationError(
            f"dataset {entry.name!r} ({entry.store}): variable(s) {missing} of the catalog entry are not in the "
            f"store; it has {sorted(ds.data_vars)}")
    train = split.select(ds)
    if any(train.sizes.get(dim, 1) == 0 for dim in (TIME_DIM, TRAJECTORY_DIM)):
        raise ValidationError(f"dataset {entry.name!r}: split {SPLIT!r} {split} selects no data from {entry.store}")
    return ds, train


def _expectation(entry: DatasetEntry, variables: list[str], **extra) -> dict:
    """What a stored result must have been computed from: dataset, train split definition, variables."""
    split = entry.split(SPLIT)
    return json.loads(json.dumps({
        "dataset": entry.name,
        "split": SPLIT,
        "split_definition": {"start": split.start, "stop": split.stop,
                             "trajectory": list(split.trajectory) if split.trajectory else None},
        "variables": variables,
        **extra,
    }))


def _record(entry: DatasetEntry, train: xr.Dataset, variables: list[str], **extra) -> dict:
    """The provenance configuration: the expectation plus the time range and trajectories used."""
    record = _expectation(entry, variables, **extra)
    if TIME_DIM in train.coords and train.sizes.get(TIME_DIM, 0):
        ends = train.time.values[[0, -1]]
        record["time_range"] = ([pd.Timestamp(t).isoformat() for t in ends]
                                if np.issubdtype(ends.dtype, np.datetime64) else ends.tolist())
    if TRAJECTORY_DIM in train.dims:
        record["trajectories"] = train.sizes[TRAJECTORY_DIM]
    return record


_MATCH_KEYS = ("dataset", "split", "split_definition", "variables", "window_days")


def _check_stored(path: Path, expected: dict, what: str) -> None:
    """Raise if the store at ``path`` was computed for another split, variable set or window."""
    stored = store.open_zarr(path).attrs.get(store.PROVENANCE_ATTR, {}).get("config", {})
    differ = {k: (stored.get(k), expected[k]) for k in _MATCH_KEYS if k in expected and stored.get(k) != expected[k]}
    if differ:
        details = "; ".join(f"{k}: stored {a!r}, entry {b!r}" for k, (a, b) in differ.items())
        raise ValidationError(
            f"{what} at {path} do not match dataset {expected['dataset']!r} as the catalog now defines it ({details}); "
            f"recompute them with `earthsim stats {expected['dataset']} --overwrite`")


def _one_step_apart(time: xr.DataArray, entry: DatasetEntry) -> xr.DataArray:
    """True at each later frame of a pair of consecutive frames exactly one catalog time step apart."""
    spacing = time.diff(TIME_DIM)
    if np.issubdtype(time.dtype, np.datetime64):
        step = entry.time.step
        step = pd.Timedelta(step) if isinstance(step, str) else pd.Timedelta(hours=float(step))
        return spacing == np.timedelta64(step)
    return xr.apply_ufunc(np.isclose, spacing, float(entry.time.step), kwargs={"rtol": 1e-6, "atol": 0.0})


def _statistics(da: xr.DataArray, entry: DatasetEntry) -> xr.DataArray:
    """Lazy mean, std and std of one-step differences of one variable, per level, in float64."""
    x = da.astype(np.float64)
    dims = [d for d in x.dims if d != LEVEL_DIM]
    mean = x.mean(dims)
    std = x.std(dims)
    if TIME_DIM in x.dims:
        diff = x.diff(TIME_DIM)
        if TIME_DIM in x.coords:
            diff = diff.where(_one_step_apart(x.time, entry))
        diff_std = diff.std(dims)
    else:
        diff_std = xr.full_like(mean, np.nan)
    out = xr.concat([mean, std, diff_std], dim=xr.DataArray(np.array(STATISTICS, dtype=object), dims="statistic"))
    out.attrs = {k: da.attrs[k] for k in ("units", "long_name") if k in da.attrs}
    return out.drop_vars([c for c in out.coords if c not in ("statistic", LEVEL_DIM)])


_COUNT_PREFIX = "__nonfinite__"


def _nonfinite(da: xr.DataArray) -> xr.DataArray:
    """Lazy count of the NaN and ±inf values of ``da``."""
    return (~np.isfinite(da)).sum()


def compute_statistics(entry: DatasetEntry | str, progress: bool = True, overwrite: bool = False) -> Path:
    """Mean, std and one-step-difference std of every variable (per level) over the training split.

    Returns the path of the statistics store (``entry.statistics``). An existing store is reused
    unless ``overwrite``; one computed for another split or variable set raises ValidationError.
    """
    entry = _entry(entry)
    path = Path(entry.statistics)
    dynamic, static = list(entry.variables), list(entry.static)
    if path.exists() and not overwrite:
        _check_stored(path, _expectation(entry, dynamic + static), "statistics")
        return path
    ds, train = _training_data(entry, dynamic + static)
    sources = {**{name: train[name] for name in dynamic}, **{name: ds[name] for name in static}}
    lazy = {name: _statistics(da, entry) for name, da in sources.items()}
    counts = {name: _nonfinite(da) for name, da in sources.items() if np.issubdtype(da.dtype, np.inexact)}
    record = store.provenance(
        "earthsim.data.stats.compute_statistics", [entry.store],
        _record(entry, train, dynamic + static, statistics=list(STATISTICS), accumulation="float64", ddof=0))
    partial, found = _write_by_blocks(path, lazy, record, counts, progress, overwrite, "statistics computation")
    if partial.complete:  # checked before its flags were dropped
        return partial.finish()
    try:
        for name, count in found.items():
            if count:
                where = f"split {SPLIT!r}" if name in dynamic else "the store (a static field)"
                raise ValidationError(
                    f"dataset {entry.name!r} ({entry.store}): variable {name!r} holds {int(count)} non-finite value(s) "
                    f"(NaN or ±inf) in {where}; statistics are not computed from them, so training never starts from "
                    f"NaN or inf statistics: mend the store (`earthsim check {entry.store}` counts them per array)")
        result = store.open_zarr(partial.partial, dask=False)
        for name in dynamic + static:
            for stat in ("mean", "std") + (("diff_std",) if name in dynamic else ()):
                if bool(result[name].sel(statistic=stat).isnull().any()):
                    raise ValidationError(
                        f"dataset {entry.name!r}: {stat} of variable {name!r} over split {SPLIT!r} is NaN; "
                        + ("no two frames in the split are one time step "
                           f"({entry.time.step}) apart" if stat == "diff_std" else "the variable has no valid values"))
    except ValidationError:
        shutil.rmtree(partial.partial)  # computed from data that must be mended first: nothing to resume
        raise
    return partial.finish()


def load_statistics(entry: DatasetEntry | str, progress: bool = True) -> xr.Dataset:
    """The entry's statistics in memory (dims ``statistic``, [``level``]), computed first if missing."""
    entry = _entry(entry)
    path = compute_statistics(entry, progress=progress)
    return store.open_zarr(path).load()


def window_weights(window_days: int) -> np.ndarray:
    """Circular smoothing matrix ``W[source_day, day]`` over days of year 1..366.

    Triangular weights ``1 - |Δ|/half`` for circular distances ``|Δ| <= half = window_days // 2``,
    as WeatherBench 2's ``create_window_weights`` (whose end points weigh 0); one day means no
    smoothing.
    """
    if not isinstance(window_days, (int, np.integer)) or window_days < 1 or window_days % 2 == 0 \
            or window_days >= DAYS_IN_YEAR:
        raise ValidationError(f"window_days must be an odd integer between 1 and 365, got {window_days!r}")
    half = window_days // 2
    days = np.arange(DAYS_IN_YEAR)
    distance = (days[:, None] - days[None, :] + DAYS_IN_YEAR // 2) % DAYS_IN_YEAR - DAYS_IN_YEAR // 2
    if half == 0:
        return (distance == 0).astype(np.float64)
    return np.clip(1.0 - np.abs(distance) / half, 0.0, None)


def _day_of_year_rows(doy: np.ndarray, leap: np.ndarray) -> np.ndarray:
    """One row per sample: 1 in the column of its day of year (columns are days 1..366).

    In non-leap years day 365 also counts for day 366, as WeatherBench 2 fills day 366 from day 365.
    """
    rows = np.zeros((doy.size, DAYS_IN_YEAR))
    rows[np.arange(doy.size), doy - 1] = 1.0
    rows[~leap & (doy == 365), DAYS_IN_YEAR - 1] = 1.0
    return rows


def climatology_tile(samples: int, height: int, width: int) -> tuple[int, int]:
    """Latitude rows and longitude columns of a climatology tile of ``samples`` float32 samples per point:
    whole rows while they fit in ``CLIMATOLOGY_TILE_BYTES``, else part of one row."""
    rows = CLIMATOLOGY_TILE_BYTES // (samples * width * 4)
    if rows >= 1:
        return min(height, rows), width
    return 1, max(1, min(width, CLIMATOLOGY_TILE_BYTES // (samples * 4)))


def climatology_task_bytes(samples: int, height: int, width: int) -> int:
    """Peak bytes of one climatology task (:func:`_climatology`), whatever the store's chunks: one tile
    (:func:`climatology_tile`) of ``samples`` samples per point in float32, its float64 values with NaN
    filled, its float64 counts, and the two 366-day float64 sums at the tile's points. An estimate
    (temporaries within an operation are not counted)."""
    rows, columns = climatology_tile(samples, height, width)
    points = rows * columns
    return samples * points * (4 + 8 + 8 + 8) + 2 * DAYS_IN_YEAR * points * 8


def _tiled(da: xr.DataArray) -> xr.DataArray:
    """``da`` rechunked so that each chunk holds every sample (time, members) at one tile of one level
    (:func:`climatology_tile`): each task then contracts its samples once, instead of every chunk of time
    steps adding a 366-day float64 partial sum over its whole field. Rechunked by dask's task-based method
    (:data:`earthsim.data.cluster.TASK_RECHUNK`), whatever client is active: the peer-to-peer one wrote
    wrong values here for variables on four or more levels."""
    across = {d: -1 for d in da.dims if d not in (LEVEL_DIM, LATITUDE_DIM, LONGITUDE_DIM)}
    rows, columns = climatology_tile(int(np.prod([da.sizes[d] for d in across])), da.sizes[LATITUDE_DIM],
                                     da.sizes[LONGITUDE_DIM])
    with dask.config.set(TASK_RECHUNK):
        return da.chunk({**across, **({LEVEL_DIM: 1} if LEVEL_DIM in da.dims else {}), LATITUDE_DIM: rows,
                         LONGITUDE_DIM: columns})


def _climatology(da: xr.DataArray, hours: np.ndarray, weights: np.ndarray) -> xr.DataArray:
    """Lazy window-smoothed mean of ``da`` by hour × day of year (NaN where the window holds no sample).

    For each hour, each sample's weight towards each target day is its day-of-year row times the
    circular window; the climatology is the weighted sum of the valid samples (pooled over ensemble
    members) over the weighted count, two contractions over time that dask does tile by tile (:func:`_tiled`).
    """
    pooled = [d for d in da.dims if d not in POINT_DIMS]
    da = _tiled(da)
    values = da.astype(np.float64).fillna(0.0).sum(pooled)
    counts = da.notnull().sum(pooled).astype(np.float64)
    doy, leap = da.time.dt.dayofyear.values, da.time.dt.is_leap_year.values
    hour_of_sample = da.time.dt.hour.values
    means = []
    for hour in hours:
        chosen = np.flatnonzero(hour_of_sample == hour)
        to_days = xr.DataArray(_day_of_year_rows(doy[chosen], leap[chosen]) @ weights, dims=(TIME_DIM, "dayofyear"),
                               coords={"dayofyear": np.arange(1, DAYS_IN_YEAR + 1)})
        total = xr.dot(values.isel({TIME_DIM: chosen}), to_days, dim=TIME_DIM)
        weight = xr.dot(counts.isel({TIME_DIM: chosen}), to_days, dim=TIME_DIM)
        means.append(total / weight.where(weight > 0))
    mean = xr.concat(means, dim=xr.DataArray(hours, dims="hour")).astype(np.float32)
    order = ["hour", "dayofyear"] + [d for d in (LEVEL_DIM, LATITUDE_DIM, LONGITUDE_DIM) if d in mean.dims]
    mean = mean.transpose(*order)
    mean.attrs = {k: da.attrs[k] for k in ("units", "long_name") if k in da.attrs}
    return mean


def compute_climatology(entry: DatasetEntry | str, progress: bool = True, overwrite: bool = False,
                        window_days: int = DEFAULT_WINDOW_DAYS) -> Path:
    """Day-of-year × hour climatology of a weather entry over its training split, WeatherBench 2 style.

    ``window_days`` (odd, default 61 as WB2's hourly climatology) sets the triangular smoothing
    window. NaN samples are skipped as missing (ERA5's sea-surface fields are NaN over land); ±inf is
    refused. Returns the path of ``entry.climatology``; an existing store is reused unless
    ``overwrite``, and one computed for another split, variable set or window raises ValidationError.
    """
    entry = _entry(entry)
    if entry.kind != "weather" and entry.grid.kind != "latlon":
        raise CatalogError(f"{entry.path}: a climatology needs a weather entry or a fluid on a latitude/longitude "
                           f"grid; {entry.name!r} is a {entry.kind} entry on a {entry.grid.kind} grid")
    if entry.climatology is None:
        raise CatalogError(f"{entry.path}: entry {entry.name!r} has no 'climatology' path")
    seasonal = entry.kind == "weather"
    window = window_days if seasonal else None
    weights = window_weights(window_days) if seasonal else None
    path = Path(entry.climatology)
    variables = list(entry.variables)
    if path.exists() and not overwrite:
        _check_stored(path, _expectation(entry, variables, window_days=window), "climatology")
        return path
    ds, train = _training_data(entry, variables)
    for name in variables:
        absent = [d for d in (TIME_DIM, LATITUDE_DIM, LONGITUDE_DIM) if d not in train[name].dims]
        if absent:
            raise ValidationError(f"dataset {entry.name!r}: variable {name!r} lacks dim(s) {absent} needed for a "
                                  f"climatology; it has {train[name].dims}")
    if seasonal:
        hours = np.unique(ds.time.dt.hour.values)  # every hour of the data; hours absent from train stay NaN
        clim = {name: _climatology(train[name], hours, weights) for name in variables}
        clim = {name: da.chunk({"hour": 1, "dayofyear": -1, **({LEVEL_DIM: 1} if LEVEL_DIM in da.dims else {})})
                for name, da in clim.items()}
        record = _record(entry, train, variables, window_days=window_days, hours=hours.tolist(),
                         weights="triangular 1 - |days|/(window_days // 2), circular over days 1..366 (WeatherBench 2)",
                         statistic="mean")
    else:
        clim = {name: _time_mean(train[name]) for name in variables}
        record = _record(entry, train, variables, window_days=None, statistic="mean over time and trajectories")
    record = store.provenance("earthsim.data.stats.compute_climatology", [entry.store], record)
    infinite = {name: np.isinf(train[name]).sum() for name in variables if np.issubdtype(train[name].dtype, np.inexact)}
    partial, found = _write_by_blocks(path, clim, record, infinite, progress, overwrite, "climatology computation",
                                      split=("hour", LEVEL_DIM))  # a task per hour and level: one 366-day block each
    bad = {name: int(count) for name, count in found.items() if count}
    if bad:
        shutil.rmtree(partial.partial)  # computed from data that must be mended first: nothing to resume
        name, count = next(iter(bad.items()))
        raise ValidationError(
            f"dataset {entry.name!r} ({entry.store}): variable {name!r} holds {count} infinite value(s) in split "
            f"{SPLIT!r}; a climatology skips NaN as missing samples but is not computed from ±inf: mend the store "
            f"(`earthsim check {entry.store}` counts them per array)")
    return partial.finish()


def _time_mean(da: xr.DataArray) -> xr.DataArray:
    """The mean of ``da`` at each point, pooled over every other dim (time, trajectories), float32."""
    spatial = (LEVEL_DIM, LATITUDE_DIM, LONGITUDE_DIM)
    mean = da.astype(np.float64).mean([d for d in da.dims if d not in spatial]).astype(np.float32)
    mean.attrs = {k: da.attrs[k] for k in ("units", "long_name") if k in da.attrs}
    return mean


def load_climatology(entry: DatasetEntry | str, progress: bool = True) -> xr.Dataset:
    """The entry's climatology, opened lazily (dims hour, dayofyear, [level], latitude, longitude; a fluid's
    without hour and dayofyear).

    Computed first with the default window if missing; a stored one is accepted with whatever
    window it was made with, as long as the dataset, split and variables match.
    """
    entry = _entry(entry)
    path = Path(entry.climatology) if entry.climatology else None
    if path is None or not path.exists():
        compute_climatology(entry, progress=progress)
    else:
        _check_stored(path, _expectation(entry, list(entry.variables)), "climatology")
    return store.open_zarr(entry.climatology)


def climatology_source(climatology: xr.Dataset) -> dict:
    """What a climatology store was made from: its dataset, training split and days, and smoothing window (the
    keys of its provenance that decide its values)."""
    config = climatology.attrs.get(store.PROVENANCE_ATTR, {}).get("config", {})
    return {key: config[key] for key in ("dataset", "split_definition", "time_range", "window_days") if key in config}


def climatology_at(climatology: xr.Dataset, name: str, valid_times, levels=None,
                   spatial: tuple[str, str] = (LATITUDE_DIM, LONGITUDE_DIM), where: str = "climatology") -> np.ndarray:
    """Variable ``name`` of a climatology at each valid time: float32 ``[valid, L, H, W]``.

    Selected by the valid time's day of year (1–366) and hour, as WeatherBench 2 does; a climatology
    without a ``dayofyear`` dim (a fluid's time mean) is the same at every valid time. ``levels``
    picks levels (``L`` = 1 for a variable without levels). Valid times at hours the climatology
    lacks, and a missing variable, raise ValidationError naming them.
    """
    if name not in climatology.data_vars:
        raise ValidationError(f"{where} has no variable {name!r}; it has {sorted(climatology.data_vars)}")
    count = np.asarray(valid_times).size
    if "dayofyear" not in climatology.dims:
        field = climatology[name] if levels is None else climatology[name].sel({LEVEL_DIM: list(levels)})
        order = ([LEVEL_DIM] if LEVEL_DIM in field.dims else []) + list(spatial)
        values = np.asarray(field.transpose(*order).values, dtype=np.float32)
        values = values if LEVEL_DIM in field.dims else values[None]
        return np.broadcast_to(values, (count, *values.shape)).copy()
    times = pd.DatetimeIndex(np.asarray(valid_times).ravel())
    selection = {"dayofyear": xr.DataArray(np.asarray(times.day_of_year), dims="valid")}
    if "hour" in climatology.dims:
        hours = climatology["hour"].values.tolist()
        absent = sorted(set(times.hour.tolist()) - set(hours))
        if absent:
            raise ValidationError(f"{where} has hours {hours} but valid times fall at hour(s) {absent}")
        selection["hour"] = xr.DataArray(np.asarray(times.hour), dims="valid")
    field = climatology[name]
    if levels is not None:
        field = field.sel({LEVEL_DIM: list(levels)})
    field = field.sel(selection)
    order = ["valid"] + ([LEVEL_DIM] if LEVEL_DIM in field.dims else []) + list(spatial)
    values = np.asarray(field.transpose(*order).values, dtype=np.float32)
    return values if LEVEL_DIM in field.dims else values[:, None]
