"""Forecast stores aligned with their truth by valid time, checked before any score is computed.

A forecast store (docs/architecture.md, WeatherBench 2 layout) has dims ``time`` (initialisation),
``prediction_timedelta`` (lead), optional ``realization`` (ensemble member), and the field's own
dims: ``[level], latitude, longitude`` for weather, ``trajectory, y, x`` (or ``trajectory,
latitude, longitude`` for fluids on the sphere) for fluids. Weather stores use datetime64 ``time``
and timedelta64 leads; fluid stores use float ``time`` and a float ``prediction_timedelta`` in the
solver's time units (its ``units`` attribute, when present, must equal the truth's ``time`` units).

The valid time of each forecast frame is ``time + prediction_timedelta``; the truth (a catalog
dataset) must hold every valid time (per trajectory for fluids). Grids must agree within
:data:`earthsim.data.grid.GRID_TOLERANCE_DEG` degrees (weather) or have the same ``y``/``x`` sizes (boxes), units
attributes must agree where both sides state them, and every forecast variable, level and
trajectory must exist in the truth. Each failure raises :class:`AlignmentError` naming the store,
the variable and the mismatch.

Nothing is read here but coordinates: the scorer reads the forecast block by block of initial times,
and for each block only the truth frames valid at its forecast frames (:meth:`Aligned.read_truth`),
so memory stays bounded however long the forecast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from earthsim import catalog
from earthsim.catalog import DatasetEntry
from earthsim.data import store
from earthsim.data.grid import LATLON, Grid
from earthsim.data.stats import climatology_at
from earthsim.data.conventions import LATITUDE_DIM, LEAD_DIM, LEVEL_DIM, LONGITUDE_DIM, MEMBER_DIM, TIME_DIM, TRAJECTORY_DIM, lead_numbers
from earthsim.errors import EarthsimError, ValidationError, reason

INIT_DIM = TIME_DIM  # in a forecast store, time is the initialisation time
LISTED = 5  # missing items named in an error before summarising the rest


class AlignmentError(ValidationError):
    """A forecast store that does not line up with its truth (grid, units, times, variables)."""


@dataclass
class Truth:
    """A catalog dataset opened lazily, with what the scorer needs to know about it."""

    name: str
    entry: DatasetEntry
    data: xr.Dataset
    grid: Grid
    datetime: bool

    @property
    def where(self) -> str:
        """The truth in a message: its name and store."""
        return f"{self.name!r} ({self.entry.store})"


@dataclass
class Aligned:
    """One forecast store lined up with the truth.

    ``valid_times`` ``(n_valid,)``: the distinct valid times of the forecast frames, sorted;
    ``frame_index`` ``(n_init, n_lead)``: the one each forecast frame is valid at; ``truth_rows``
    ``(n_valid,)``: their positions along the truth's ``time``; ``truth``: the truth's variables
    (lazily), its trajectories those of the forecast.
    """

    label: str
    path: str
    forecast: xr.Dataset
    variables: list[str]
    levels: dict[str, np.ndarray | None]
    leads: np.ndarray
    inits: np.ndarray
    trajectories: np.ndarray | None
    members: int
    frame_index: np.ndarray
    valid_times: np.ndarray
    truth_rows: np.ndarray
    truth: xr.Dataset
    units: dict[str, str]
    grid_dims: tuple[str, str]
    truth_name: str = ""
    truth_store: str = ""

    def read_truth(self, name: str, valid: np.ndarray) -> np.ndarray:
        """The truth of variable ``name`` at the valid times numbered ``valid`` (indices into ``valid_times``):
        float32 ``[n, R, K, H, W]`` (R trajectories, K levels, 1 where absent)."""
        da = self.truth[name].isel({INIT_DIM: self.truth_rows[valid]})
        if self.levels[name] is not None:
            da = da.sel({LEVEL_DIM: self.levels[name]}, method="nearest")
        order = [INIT_DIM] + [d for d in (TRAJECTORY_DIM, LEVEL_DIM) if d in da.dims] + list(self.grid_dims)
        try:
            values = np.asarray(da.transpose(*order).values, dtype=np.float32)
        except Exception as error:  # codecs raise many types for damaged bytes
            raise AlignmentError(f"truth {self.truth_name!r} ({self.truth_store}), variable {name!r}: cannot be read "
                                 f"at {len(valid)} valid time(s) of forecast {self.label!r} ({reason(error)}); "
                                 f"`earthsim check {self.truth_store}` names the damaged chunks") from None
        if TRAJECTORY_DIM not in da.dims:
            values = values[:, None]
        if LEVEL_DIM not in da.dims:
            values = values[:, :, None]
        return values

    @property
    def samples_per_lead(self) -> int:
        """Forecast frames averaged per lead time (initial times × trajectories)."""
        return len(self.inits) * (len(self.trajectories) if self.trajectories is not None else 1)


def parse_forecast(spec: str) -> tuple[str, str]:
    """``"label=path"`` or ``"path"`` (label: the file or folder name without ``.zarr`` or ``.pt``) as (label,
    path): a forecast store, or a model to forecast with."""
    label, sep, path = spec.partition("=")
    if sep and label and os.sep not in label and "://" not in label:
        return label, path
    path = spec
    name = Path(path.rstrip("/")).name
    for suffix in (".zarr", ".pt"):
        name = name.removesuffix(suffix)
    return name, path


def open_truth(truth: str | os.PathLike | DatasetEntry) -> Truth:
    """Open the truth: a catalog name, a catalog YAML file or an entry."""
    entry = truth if isinstance(truth, DatasetEntry) else catalog.get_entry(truth)
    ds = catalog.open_dataset(entry, generate=False, dask=False)  # scoring reads stores; it never makes them
    where = f"truth {entry.name!r} ({entry.store})"
    if INIT_DIM not in ds.dims:
        raise AlignmentError(f"{where} has no 'time' dim; dims: {dict(ds.sizes)}")
    datetime = np.issubdtype(ds[INIT_DIM].dtype, np.datetime64)
    if entry.kind in catalog.SEQUENCE_KINDS and TRAJECTORY_DIM not in ds.dims:
        raise AlignmentError(f"{where}: a {entry.kind} dataset needs a 'trajectory' dim; dims: {dict(ds.sizes)}")
    return Truth(entry.name, entry, ds, _check_truth_grid(ds, where, entry), datetime)


def _check_truth_grid(ds: xr.Dataset, where: str, entry: DatasetEntry) -> Grid:
    """The entry's grid, after checking that the truth store is laid out on it."""
    grid = entry.grid
    absent = [d for d in grid.dims if d not in ds.dims]
    if absent:
        raise AlignmentError(f"{where}: no {' and '.join(absent)} dim for the entry's {grid.kind} grid; "
                             f"dims: {dict(ds.sizes)}")
    sizes = tuple(ds.sizes[d] for d in grid.dims)
    if sizes != grid.shape:
        raise AlignmentError(f"{where}: grid {dict(zip(grid.dims, sizes))} differs from the entry's {grid.shape}")
    if grid.kind == LATLON:
        try:
            grid.check_coordinates(ds[LATITUDE_DIM].values, ds[LONGITUDE_DIM].values, where)
        except EarthsimError as error:
            raise AlignmentError(str(error)) from error
    return grid


def open_forecast(spec: str) -> tuple[str, str, xr.Dataset]:
    """Open one forecast store (``label=path`` or ``path``) lazily and check its layout."""
    label, path = parse_forecast(spec)
    try:
        ds = store.open_zarr(path, dask=False)  # read block by block by the scorer, each region into one array
    except EarthsimError as error:
        raise AlignmentError(f"forecast {label!r}: {error}") from error
    missing = [d for d in (INIT_DIM, LEAD_DIM) if d not in ds.dims]
    if missing:
        raise AlignmentError(f"forecast {label!r} ({path}) lacks dim(s) {missing}: a forecast store has dims "
                             f"time (initialisation) and prediction_timedelta (lead); dims: {dict(ds.sizes)}")
    _check_complete(label, path, ds)
    return label, path, ds


def _check_complete(label: str, path: str, ds: xr.Dataset) -> None:
    """A store earthsim wrote (it has earthsim's provenance record) must also have its completion record, which
    earthsim writes last, just before the store gets its final name."""
    record = ds.attrs.get(store.PROVENANCE_ATTR)
    if not isinstance(record, Mapping) or "producer" not in record or store.is_complete(path):
        return
    made = f"{record.get('producer')}, earthsim {record.get('earthsim_version', '?')}"
    partial = str(path).rstrip("/").endswith(store.PARTIAL_SUFFIX)
    raise AlignmentError(
        f"forecast {label!r} ({path}) was written by earthsim ({made}) but has no completion record: it is "
        "incomplete (interrupted, or still being written) or from an earthsim older than 0.2.0; finish it by running "
        "the `earthsim forecast` command that made it again, which resumes what is not yet written"
        + (f" and renames it to {str(path).rstrip('/')[:-len(store.PARTIAL_SUFFIX)]}" if partial else
           " (a store from an older earthsim: remove it first, then run the command again)"))


def forecast_variables(fc: xr.Dataset) -> list[str]:
    """The variables of a forecast store that are scored: those with dims time and prediction_timedelta."""
    return [name for name in fc.data_vars if INIT_DIM in fc[name].dims and LEAD_DIM in fc[name].dims]


def check_stated_units(forecasts: Sequence[str], stated: Mapping[str, str]) -> None:
    """Units stated by the user (``--units NAME=UNITS``) must name variables scored in some forecast store."""
    if not stated:
        return
    scored: dict[str, None] = {}
    for spec in forecasts:
        scored.update(dict.fromkeys(forecast_variables(open_forecast(spec)[2])))
    unknown = [name for name in stated if name not in scored]
    if unknown:
        raise AlignmentError(f"--units names {unknown}, which {'is' if len(unknown) == 1 else 'are'} not a variable "
                             f"scored in the forecast store(s); they have {list(scored)}")


def _check_grid(label: str, path: str, fc: xr.Dataset, truth: Truth) -> None:
    where = f"forecast {label!r} ({path})"
    grid = truth.grid
    absent = [d for d in grid.dims if d not in fc.dims]
    if absent:
        raise AlignmentError(f"{where}: the truth {truth.where} is on a {grid.kind} grid {grid.dims} but the "
                             f"forecast lacks dim(s) {absent}; dims: {dict(fc.sizes)}")
    if grid.kind == LATLON:
        try:
            grid.check_coordinates(fc[LATITUDE_DIM].values, fc[LONGITUDE_DIM].values,
                                   f"{where}, against the grid of the truth {truth.where}")
        except EarthsimError as error:
            raise AlignmentError(str(error)) from error
    else:
        sizes = {d: fc.sizes.get(d) for d in grid.dims}
        expected = dict(zip(grid.dims, grid.shape))
        if sizes != expected:
            raise AlignmentError(f"{where}: grid sizes {sizes} differ from the truth {truth.where}: {expected}")


def _check_variables(label: str, path: str, fc: xr.Dataset, truth: Truth, variables: list[str],
                     stated: Mapping[str, str]) -> dict[str, str]:
    """Variables and their units: a forecast variable without a ``units`` attribute needs units stated for it
    (``stated``), and the units must be the truth's (no conversion is made)."""
    where = f"forecast {label!r} ({path})"
    missing = [v for v in variables if v not in truth.data.data_vars]
    if missing:
        raise AlignmentError(f"{where}: variable(s) {missing} are not in the truth {truth.where}; "
                             f"it has {sorted(truth.data.data_vars)}")
    units = {}
    for name in variables:
        known = truth.entry.variables.get(name)
        theirs = truth.data[name].attrs.get("units", known.units if known is not None else None)
        ours = fc[name].attrs.get("units", stated.get(name))
        if name in stated and str(stated[name]) != str(ours):
            raise AlignmentError(f"{where}: --units {name}={stated[name]} conflicts with the units the store states "
                                 f"for variable {name!r}, {ours!r}; --units is for variables whose store states none")
        if ours is None:
            raise AlignmentError(f"{where}: variable {name!r} has no units attribute; state them (--units "
                                 f"{name}=UNITS; the truth {truth.where} is in {theirs!r})")
        if theirs is not None and str(ours) != str(theirs):
            raise AlignmentError(f"{where}: variable {name!r} has units {ours!r} but the truth {truth.where} "
                                 f"has {theirs!r}")
        units[name] = str(ours)
        extra = [d for d in fc[name].dims if d not in (INIT_DIM, LEAD_DIM, MEMBER_DIM, TRAJECTORY_DIM, LEVEL_DIM)
                 + truth.grid.dims]
        if extra:
            raise AlignmentError(f"{where}: variable {name!r} has dim(s) {extra} that a forecast store does not "
                                 f"use; dims: {fc[name].dims}")
        if (LEVEL_DIM in fc[name].dims) != (LEVEL_DIM in truth.data[name].dims):
            raise AlignmentError(f"{where}: variable {name!r} has dims {fc[name].dims} but the truth {truth.where} "
                                 f"has {truth.data[name].dims} (one has 'level', the other not)")
    return units


def _levels(label: str, path: str, fc: xr.Dataset, truth: Truth, name: str) -> np.ndarray | None:
    if LEVEL_DIM not in fc[name].dims:
        return None
    ours = np.asarray(fc[LEVEL_DIM].values, np.float64)
    theirs = np.asarray(truth.data[LEVEL_DIM].values, np.float64)
    missing = [lvl for lvl in ours if not np.any(np.isclose(theirs, lvl, rtol=0, atol=1e-6))]
    if missing:
        raise AlignmentError(f"forecast {label!r} ({path}): level(s) {missing} of variable {name!r} are not in the "
                             f"truth {truth.where}, which has levels {theirs.tolist()}")
    return ours


def _time_units(label: str, path: str, fc: xr.Dataset, truth: Truth) -> None:
    """Fluids: float times whose stated units must agree with the truth's ``time`` units."""
    where = f"forecast {label!r} ({path})"
    for dim in (INIT_DIM, LEAD_DIM):
        values = fc[dim].values
        if truth.datetime:
            wanted = np.datetime64 if dim == INIT_DIM else np.timedelta64
            if not np.issubdtype(values.dtype, wanted):
                raise AlignmentError(f"{where}: {dim} has dtype {values.dtype} but the truth {truth.where} has "
                                     f"datetime64 times; weather stores use datetime64 time and timedelta64 leads")
        else:
            if not np.issubdtype(values.dtype, np.number):
                raise AlignmentError(f"{where}: {dim} has dtype {values.dtype} but the truth {truth.where} counts "
                                     f"time in {_truth_time_units(truth)} (float); "
                                     f"fluid stores use a float {dim} in solver time units")
            ours, theirs = fc[dim].attrs.get("units"), _truth_time_units(truth)
            if ours is not None and theirs is not None and str(ours) != str(theirs):
                raise AlignmentError(f"{where}: {dim} has units {ours!r} but the truth {truth.where} has time "
                                     f"units {theirs!r}")


def _truth_time_units(truth: Truth) -> str:
    """Units of the truth's float times: the store's ``time`` attribute, else the catalog entry's."""
    return str(truth.data[INIT_DIM].attrs.get("units", truth.entry.time.units))


def _format_times(times: np.ndarray) -> list[str]:
    if np.issubdtype(times.dtype, np.datetime64):
        return [pd.Timestamp(t).isoformat() for t in times]
    return [f"{float(t):g}" for t in times]


def _frame_rows(label: str, path: str, truth: Truth, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct valid times, the truth's time index of each, and each of ``valid``'s row among them.

    Float (solver) times match the nearest truth time within a thousandth of its time step.
    """
    times = truth.data[INIT_DIM].values
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    flat = valid.ravel()
    right = np.clip(np.searchsorted(sorted_times, flat), 0, len(times) - 1)
    if truth.datetime:
        pos = right
        found = sorted_times[pos] == flat
    else:
        left = np.clip(right - 1, 0, len(times) - 1)
        pos = np.where(np.abs(sorted_times[left] - flat) < np.abs(sorted_times[right] - flat), left, right)
        step = float(np.min(np.diff(sorted_times))) if len(times) > 1 else 1.0
        found = np.abs(sorted_times[pos] - flat) <= 1e-3 * step
    if not found.all():
        missing = np.unique(flat[~found] if truth.datetime else np.round(flat[~found], 9))
        shown = ", ".join(_format_times(missing[:LISTED]))
        more = f" and {missing.size - LISTED} more" if missing.size > LISTED else ""
        raise AlignmentError(
            f"forecast {label!r} ({path}): {missing.size} valid time(s) (time + prediction_timedelta) are missing in "
            f"the truth {truth.where}: {shown}{more}; the truth covers "
            f"{' to '.join(_format_times(sorted_times[[0, -1]]))}")
    rows, inverse = np.unique(order[pos], return_inverse=True)
    return times[rows], rows, inverse.reshape(valid.shape)


def _select_leads(label: str, path: str, fc: xr.Dataset, leads: Sequence | None, datetime: bool) -> xr.Dataset:
    if leads is None:
        return fc
    available = fc[LEAD_DIM].values
    wanted = [lead_value(v, datetime) for v in leads]
    index = []
    for value in wanted:
        hits = np.flatnonzero(available == value if datetime else np.isclose(available, value, rtol=1e-9, atol=1e-9))
        if hits.size == 0:
            raise AlignmentError(f"forecast {label!r} ({path}): lead time {format_lead(value)} is not in the store; "
                                 f"its leads are {[format_lead(v) for v in available]}")
        index.append(int(hits[0]))
    return fc.isel({LEAD_DIM: index})


def lead_value(value, datetime: bool):
    """A lead time from user input: weather ``"6h"``, ``"1D"``, a timedelta or a number of hours; fluids a float."""
    if datetime:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            return np.timedelta64(int(round(float(value) * 3600e9)), "ns")
        try:
            text = str(value)
            delta = pd.Timedelta(float(text), "h") if _is_number(text) else pd.Timedelta(text)
        except (ValueError, TypeError) as error:
            raise EarthsimError(f"lead time {value!r} is not a time span such as '6h', '1D' or hours") from error
        return np.timedelta64(delta.value, "ns")
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise EarthsimError(f"lead time {value!r} is not a number (fluid leads are in solver time units)") from error


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_lead(value) -> str:
    """``"6h"`` for timedeltas (hours), ``"0.5"`` for solver-unit floats."""
    hours_or_units = float(lead_numbers(value))
    return f"{hours_or_units:g}h" if np.issubdtype(np.asarray(value).dtype, np.timedelta64) else f"{hours_or_units:g}"


def align(spec: str, truth: Truth, leads: Sequence | None = None, units: Mapping[str, str] | None = None,
          allow_missing: bool = False) -> Aligned:
    """Open forecast ``spec`` and check it against ``truth``: grid, units (``units`` states those of variables
    that have no ``units`` attribute), variables, levels, trajectories, every valid time, and that no chunk of
    forecast or truth is missing (unless ``allow_missing``). Coordinates only: the fields are read later, block
    by block."""
    label, path, fc = open_forecast(spec)
    variables = forecast_variables(fc)
    if not variables:
        raise AlignmentError(f"forecast {label!r} ({path}) has no variable with dims time and prediction_timedelta; "
                             f"variables: {sorted(fc.data_vars)}")
    units = _check_variables(label, path, fc, truth, variables, units or {})
    _check_chunks(f"forecast {label!r} ({path})", path, None, fc, variables, allow_missing)
    _check_chunks(f"truth {truth.where}", truth.entry.store, truth.entry.group, truth.data,
                  variables, allow_missing, truth.entry.store_name)
    _check_grid(label, path, fc, truth)
    _time_units(label, path, fc, truth)
    fc = _select_leads(label, path, fc, leads, truth.datetime)
    levels = {name: _levels(label, path, fc, truth, name) for name in variables}

    fluid = TRAJECTORY_DIM in truth.data.dims
    trajectories = None
    truth_ds = truth.data
    if fluid:
        if TRAJECTORY_DIM not in fc.dims:
            raise AlignmentError(f"forecast {label!r} ({path}): the truth {truth.where} has trajectories but the "
                                 f"forecast has no 'trajectory' dim; dims: {dict(fc.sizes)}")
        trajectories = np.asarray(fc[TRAJECTORY_DIM].values)
        known = np.asarray(truth_ds[TRAJECTORY_DIM].values)
        missing = [t for t in trajectories.tolist() if t not in set(known.tolist())]
        if missing:
            raise AlignmentError(f"forecast {label!r} ({path}): trajectory(ies) {missing[:LISTED]} are not in the "
                                 f"truth {truth.where}, which has trajectories {known.min()}..{known.max()}")
        truth_ds = truth_ds.sel({TRAJECTORY_DIM: trajectories})
    elif TRAJECTORY_DIM in fc.dims:
        raise AlignmentError(f"forecast {label!r} ({path}) has a 'trajectory' dim but the truth {truth.where} has "
                             "none")

    inits = fc[INIT_DIM].values
    lead_values = fc[LEAD_DIM].values
    if truth.datetime:
        valid = inits.astype("datetime64[ns]")[:, None] + lead_values.astype("timedelta64[ns]")[None, :]
    else:
        valid = inits.astype(np.float64)[:, None] + lead_values.astype(np.float64)[None, :]
    valid_times, rows, frame_index = _frame_rows(label, path, truth, valid)
    members = fc.sizes.get(MEMBER_DIM, 1)
    return Aligned(label, path, fc, variables, levels, lead_values, inits, trajectories, members, frame_index,
                   valid_times, rows, truth_ds[variables], units, truth.grid.dims, truth.name, str(truth.entry.store))


def _check_chunks(where: str, path: str, group: str | None, ds: xr.Dataset, variables: list[str],
                  allow_missing: bool, store_name=lambda name: name) -> None:
    """Refuse a store with missing chunks, naming the variable and how many frames they hold; with
    ``allow_missing`` the frames read as the fill value, which must be NaN (so that the scorer leaves them out).
    ``store_name`` gives a variable's name in the store (a catalog entry's mapping)."""
    try:
        status = store.chunk_status(path, group, [store_name(name) for name in variables])
    except Exception as error:  # zarr raises many types for damaged metadata
        raise AlignmentError(f"{where}: cannot list its chunks ({reason(error)})") from None
    for name in variables:
        lost = status[store_name(name)].missing
        if not lost:
            continue
        var = ds[name]
        time_axis = var.get_axis_num(INIT_DIM)
        chunk = var.encoding.get("chunks", var.shape)[time_axis]
        frames = len({c[time_axis] for c in lost}) * chunk
        fill = var.encoding.get("_FillValue", np.nan)
        if not allow_missing:
            raise AlignmentError(f"{where}: variable {name!r} has {len(lost)} of {status[name].expected} chunks missing "
                                 f"(up to {frames} time steps); the store is damaged: write it again, or pass "
                                 "--allow-missing to score what is there")
        if fill is not None and not np.isnan(fill):
            raise AlignmentError(f"{where}: variable {name!r} has {len(lost)} chunks missing and fill value {fill}: "
                                 "what is missing cannot be told from data, even with --allow-missing")


def check_climatology(climatology: xr.Dataset, aligned: Aligned, truth: Truth, where: str) -> None:
    """The climatology must be on the truth's grid, with the forecast's variables in the truth's units."""
    for name in (LATITUDE_DIM, LONGITUDE_DIM):
        if name not in climatology.dims:
            raise AlignmentError(f"climatology {where}: no {name!r} dim; dims: {dict(climatology.sizes)}")
    try:
        truth.grid.check_coordinates(climatology[LATITUDE_DIM].values, climatology[LONGITUDE_DIM].values,
                                     f"climatology {where}, against the grid of the truth {truth.where}")
    except EarthsimError as error:
        raise AlignmentError(str(error)) from error
    for name in aligned.variables:
        clim_units, units = (climatology[name].attrs.get("units") if name in climatology else None,
                             aligned.units.get(name))
        if clim_units is not None and units and str(clim_units) != units:
            raise AlignmentError(f"climatology {where}: variable {name!r} has units {clim_units!r}, the truth "
                                 f"{units!r}")


def climatology_frames(climatology: xr.Dataset, aligned: Aligned, name: str, valid: np.ndarray,
                       where: str) -> np.ndarray:
    """The climatology of ``name`` at the valid times numbered ``valid`` (by hour × day of year), shaped like
    :meth:`Aligned.read_truth`'s frames ``[n, 1, K, H, W]``."""
    try:
        values = climatology_at(climatology, name, aligned.valid_times[valid], aligned.levels[name],
                                aligned.grid_dims, f"climatology {where}")
    except ValidationError as error:
        raise AlignmentError(str(error)) from error
    return values[:, None]
