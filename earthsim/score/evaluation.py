"""Score forecast stores against a catalog truth: the scorecard and the fields drawn on its maps.

    >>> from earthsim.score import score
    >>> card = score(["fno=runs/fno/forecast.zarr", "persistence=runs/persistence.zarr"],
    ...              truth="kolmogorov-64", out="runs/scores")

The scorer reads stores only (it knows nothing of models). Each store is aligned with the truth by
valid time (:mod:`earthsim.score.align`), then read block by block of initial times (whole store
chunks, about :data:`BLOCK_BYTES` each) together with the truth frames valid in that block; each
block is cut into cache-sized pieces converted to float64 and handed to every metric that applies
(:mod:`earthsim.score.metrics`), so every sum is accumulated in float64 and no per-sample Python
loop runs. Fields are held one block at a time, whatever the length of the forecast; what grows
with it is the per-sample scores (8 bytes per metric, initial time, lead, trajectory and level).

The scorecard is an ``xarray.Dataset`` with dims ``model``, ``variable`` (one entry per variable
and level: ``z500``, ``t850``, ``t2m``, ``vorticity``; coords ``name``, ``level``, ``units``) and
``prediction_timedelta`` (timedelta64 for weather, float in solver units for fluids), plus the dims
of the metrics that need them (``threshold``, ``band``, ``lat_band``, ``zonal_wavenumber``,
``wavenumber``). Every data variable's ``convention`` attribute says how it was computed. Writing
it out (netCDF, CSV, Markdown, plots) is :mod:`earthsim.score.output`.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from earthsim.catalog import DatasetEntry
from earthsim.data import store
from earthsim.data.conventions import LATITUDE_DIM, LEAD_DIM, LEVEL_DIM, MEMBER_DIM, TRAJECTORY_DIM, lead_numbers
from earthsim.data.grid import LATLON
from earthsim.errors import EarthsimError, reason
from earthsim.score import formulas
from earthsim.score.align import (INIT_DIM, Aligned, AlignmentError, Truth, align, check_climatology,
                                  check_stated_units, climatology_frames, format_lead, lead_value, open_truth)
from earthsim.score.metrics import METRICS, NEEDS, Context, Metric, Piece, conventions

BLOCK_BYTES = 64 * 2**20  # forecast data read per block (whole store chunks along time)
PIECE_ELEMENTS = 2**18  # elements converted to float64 at a time (cache-sized)
MAP_LEADS = 3
DATA_RANGE = ("data range R used by SSIM and PSNR: given by the user, else max - min of the truth frames "
              "scored for the variable")
FRAMES_LEFT_OUT = ("scored with --allow-missing: forecast frames (initial time x lead x trajectory) left out of "
                   "every score because the forecast (side forecast) or the truth valid at them (side truth) holds "
                   "NaN or inf or lies in a missing chunk")


@dataclass
class Evaluation:
    """Scores of all forecasts (``scorecard``) and the fields drawn on the maps (``fields``)."""

    scorecard: xr.Dataset
    fields: xr.Dataset


def _conditions(truth: Truth, members: int, climatology: bool, video: bool) -> set:
    """The ``Metric.needs`` values this store and truth meet."""
    met = {None, truth.grid.kind}
    if climatology:
        met.add("climatology")
    if members > 1:
        met.add("ensemble")
    if TRAJECTORY_DIM in truth.data.dims:
        met.add("fluid")
    if video:
        met.add("video")
    return met


def select_metrics(names: Sequence[str] | None, truth: Truth, members: int, climatology: bool,
                   video: bool) -> list[type[Metric]]:
    """The metrics to compute for one store: every one that applies, or those ``names`` says (each must apply)."""
    met = _conditions(truth, members, climatology, video)
    if names is None:
        return [cls for cls in METRICS.values() if cls.needs in met]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise EarthsimError(f"unknown metric(s) {unknown}; valid metrics: {sorted(METRICS)}")
    for name in names:
        if METRICS[name].needs not in met:
            raise EarthsimError(f"metric {name!r} needs {NEEDS[METRICS[name].needs]}")
    return [METRICS[name] for name in dict.fromkeys(names)]


def _blocks(aligned: Aligned, name: str) -> list[tuple[int, int]]:
    """Ranges of initial times read at once: whole store chunks along ``time``, about BLOCK_BYTES each."""
    da = aligned.forecast[name]
    n = da.sizes[INIT_DIM]
    chunk = (da.encoding.get("chunks") or (n,) * da.ndim)[da.get_axis_num(INIT_DIM)]
    chunks = [min(chunk, n - start) for start in range(0, n, chunk)]
    per_init = da.dtype.itemsize * int(np.prod([s for d, s in da.sizes.items() if d != INIT_DIM]))
    blocks, start, size = [], 0, 0
    for chunk in chunks:
        size += chunk
        if size * per_init >= BLOCK_BYTES:
            blocks.append((start, start + size))
            start, size = start + size, 0
    if size:
        blocks.append((start, start + size))
    return blocks


def _read_block(aligned: Aligned, name: str, start: int, stop: int) -> np.ndarray:
    """Forecast block ``[b, L, R, M, K, H, W]`` (size-1 axes for absent dims), in the store's dtype."""
    da = aligned.forecast[name].isel({INIT_DIM: slice(start, stop)})
    order = [INIT_DIM, LEAD_DIM] + [d for d in (TRAJECTORY_DIM, MEMBER_DIM, LEVEL_DIM) if d in da.dims]
    try:
        values = np.asarray(da.transpose(*order, *aligned.grid_dims).values)
    except Exception as error:  # codecs raise many types for damaged bytes
        raise AlignmentError(f"forecast {aligned.label!r} ({aligned.path}), variable {name!r}: initial times "
                             f"{start}..{stop - 1} cannot be read ({reason(error)}); `earthsim check {aligned.path}` "
                             "names the damaged chunks") from None
    for position, dim in ((2, TRAJECTORY_DIM), (3, MEMBER_DIM), (4, LEVEL_DIM)):
        if dim not in da.dims:
            values = np.expand_dims(values, position)
    return values


def _truth_block(aligned: Aligned, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The truth frames valid in a block of initial times ``[n, R, K, H, W]``, the valid times they are (indices
    into ``valid_times``), and each forecast frame's row among them ``[b, L]``."""
    index = aligned.frame_index[start:stop]
    valid = np.unique(index)
    return aligned.read_truth(name, valid), valid, np.searchsorted(valid, index)


def _pieces(block: np.ndarray, start: int):
    """``(piece, (init slice, lead slice))`` of a block, each about PIECE_ELEMENTS elements."""
    b, n_lead = block.shape[:2]
    per_init = block[0].size
    inits = max(1, PIECE_ELEMENTS // per_init)
    leads = n_lead if inits > 1 else max(1, min(n_lead, PIECE_ELEMENTS * n_lead // per_init))
    for i0 in range(0, b, inits):
        for l0 in range(0, n_lead, leads):
            piece = block[i0:i0 + inits, l0:l0 + leads]
            yield piece, (slice(start + i0, start + i0 + piece.shape[0]), slice(l0, l0 + piece.shape[1]))


def _data_range(value, name: str, aligned: Aligned) -> float:
    """SSIM and PSNR's value range of variable ``name``: given, else the range of the truth frames scored."""
    if isinstance(value, Mapping):
        if name not in value:
            raise EarthsimError(f"data_range gives no value for variable {name!r}; it names {sorted(value)}")
        value = value[name]
    if value is None:
        low, high = np.inf, -np.inf
        for start, stop in _blocks(aligned, name):
            frames = _truth_block(aligned, name, start, stop)[0]
            finite = frames[np.isfinite(frames)]
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        if not np.isfinite(low):
            raise EarthsimError(f"variable {name!r}: the truth {aligned.truth_name!r} ({aligned.truth_store}) holds no "
                                "finite value in the frames scored to take a data range from; pass --data-range")
        value = high - low
    value = float(value)
    if not value > 0:
        raise EarthsimError(f"variable {name!r}: data_range must be positive, got {value}")
    return value


def _map_lead_indices(leads: np.ndarray, map_leads: Sequence | None, datetime: bool) -> list[int]:
    if map_leads is None:
        n = len(leads)
        return sorted({0, n // 2, n - 1})[:MAP_LEADS]
    wanted = [lead_value(v, datetime) for v in map_leads]
    index = []
    for value in wanted:
        hits = np.flatnonzero(leads == value if datetime else np.isclose(leads, value))
        if hits.size:
            index.append(int(hits[0]))
    if not index:
        raise EarthsimError(f"none of the map lead times {list(map_leads)} is among the leads scored "
                            f"{[format_lead(v) for v in leads]}")
    return index


def _labels(name: str, levels: np.ndarray | None) -> list[tuple[str, float]]:
    if levels is None:
        return [(name, float("nan"))]
    return [(f"{name}{level:g}", float(level)) for level in levels]


@dataclass
class Missing:
    """Forecast frames (initial time × lead × trajectory) of one variable holding NaN or ±inf, in the forecast or in
    the truth valid at them."""

    forecast: int = 0
    truth: int = 0


def _score_variable(aligned: Aligned, truth: Truth, name: str, selected: list[type[Metric]],
                    climatology: xr.Dataset | None, data_range, map_index: list[int], allow_missing: bool, bar
                    ) -> tuple[dict[str, np.ndarray], dict[str, list], float | None, np.ndarray, np.ndarray, Missing]:
    """One variable of one store: every selected metric's outputs, their coordinates, the data range used, the
    forecast and truth maps of the first initial time (first trajectory, ensemble mean) ``[K, map_lead, H, W]``,
    and the frames left out for NaN or ±inf (refused unless ``allow_missing``)."""
    grid = truth.grid
    n_init, n_lead = aligned.frame_index.shape
    n_traj = len(aligned.trajectories) if aligned.trajectories is not None else 1
    levels = aligned.levels[name]
    video = any(cls.needs == "video" for cls in selected)
    value_range = _data_range(data_range, name, aligned) if video else None
    context = Context(shape=(n_init, n_lead, n_traj, 1 if levels is None else len(levels)),
                      leads=lead_numbers(aligned.leads), grid=grid,
                      weights=formulas.grid_weights(grid.shape, grid.latitudes()), members=aligned.members,
                      vorticity="vorticity" in name.lower(), data_range=value_range, skip_missing=allow_missing)
    metrics = [cls(context) for cls in selected]
    acc = any(cls.needs == "climatology" for cls in selected)
    maps, missing = None, Missing()
    for start, stop in _blocks(aligned, name):
        first = _accumulate_block(aligned, name, start, stop, metrics, context, climatology if acc else None,
                                  map_index if start == 0 else None, missing)
        maps = first if start == 0 else maps
        bar.update(stop - start)
    if (missing.forecast or missing.truth) and not allow_missing:
        raise AlignmentError(
            f"forecast {aligned.label!r} ({aligned.path}), variable {name!r}: {missing.forecast} forecast frame(s) "
            f"hold NaN or inf (non-finite values), and the truth {truth.name!r} ({truth.entry.store}) holds them at "
            f"{missing.truth} of the frames they are scored against (of "
            f"{context.shape[0] * context.shape[1] * context.shape[2]} frames); a non-finite value is never scored: "
            "mend the stores, or pass --allow-missing to score what is there")
    outputs, coords = {}, {}
    for metric in metrics:
        outputs.update(metric.finish())
        coords.update(metric.coords())
    return outputs, coords, value_range, *maps, missing


def _accumulate_block(aligned: Aligned, name: str, start: int, stop: int, metrics: list[Metric], context: Context,
                      climatology: xr.Dataset | None, map_index: list[int] | None, missing: Missing):
    """Read one block of initial times and its truth, count the frames holding NaN or ±inf into ``missing`` (marking
    them NaN on both sides, so every metric leaves them out when the context skips missing samples), and hand each
    piece to every metric; with ``map_index``, return the forecast and truth maps of its first initial time (first
    trajectory, ensemble mean) ``[K, map_lead, H, W]``. A function of its own, so that nothing of one block is alive
    when the next is read."""
    size = context.grid.shape[0] * context.grid.shape[1]
    block = _read_block(aligned, name, start, stop)
    frames, valid, rows = _truth_block(aligned, name, start, stop)
    clim = None if climatology is None else climatology_frames(climatology, aligned, name, valid, "(ACC)")
    for piece, where in _pieces(block, start):
        s, n_l, n_r, n_m, n_k = piece.shape[:5]
        index = rows[where[0].start - start:where[0].stop - start, where[1]]
        forecast = piece.reshape(s, n_l, n_r, n_m, n_k, size).astype(np.float64)
        truth = frames[index].reshape(s, n_l, n_r, n_k, size).astype(np.float64)
        # NaN, +inf and -inf alike: [s, L, R, K]
        bad_forecast, bad_truth = (~np.isfinite(forecast)).any(axis=(3, 5)), (~np.isfinite(truth)).any(axis=-1)
        missing.forecast += int(bad_forecast.any(axis=-1).sum())
        missing.truth += int(bad_truth.any(axis=-1).sum())
        if context.skip_missing and (bad_forecast.any() or bad_truth.any()):
            bad = bad_forecast | bad_truth
            forecast = np.where(bad[:, :, :, None, :, None], np.nan, forecast)
            truth = np.where(bad[..., None], np.nan, truth)
        shared = Piece(forecast, truth,
                       None if clim is None else clim[index].reshape(s, n_l, 1, n_k, size).astype(np.float64),
                       where, context)
        for metric in metrics:
            metric.accumulate(shared)
    if map_index is None:
        return None
    return (block[0, map_index, 0].astype(np.float64).mean(axis=1).swapaxes(0, 1),
            frames[rows[0, map_index], 0].swapaxes(0, 1).astype(np.float64))


def _score_store(aligned: Aligned, truth: Truth, selected: list[type[Metric]], climatology: xr.Dataset | None,
                 data_range, map_leads: Sequence | None, allow_missing: bool, progress: bool
                 ) -> tuple[xr.Dataset, xr.Dataset, list]:
    """Scorecard, map fields and variable labels (label, name, level, units) of one aligned forecast store."""
    grid = truth.grid
    if any(cls.needs == "climatology" for cls in selected):
        check_climatology(climatology, aligned, truth, "(ACC)")
    map_index = _map_lead_indices(aligned.leads, map_leads, truth.datetime)
    dims = {key: ("variable", *extra) for cls in selected for key, extra in cls.output_dims().items()}
    parts: dict[str, list[np.ndarray]] = {key: [] for key in dims}
    labels: list[tuple[str, str, float, str]] = []
    ranges, forecast_maps, truth_maps, coords, skipped = [], [], [], {}, []
    total = len(aligned.inits) * len(aligned.variables)
    with tqdm(total=total, desc=f"score {aligned.label}", unit="init", disable=not progress) as bar:
        for name in aligned.variables:
            outputs, extra, value_range, forecast_map, truth_map, missing = _score_variable(
                aligned, truth, name, selected, climatology, data_range, map_index, allow_missing, bar)
            for key, values in outputs.items():
                parts[key].append(values)
            coords.update(extra)
            variable_labels = _labels(name, aligned.levels[name])
            labels += [(label, name, level, aligned.units[name]) for label, level in variable_labels]
            ranges += [value_range if value_range is not None else np.nan] * len(variable_labels)
            skipped += [[missing.forecast, missing.truth]] * len(variable_labels)
            forecast_maps.append(forecast_map)
            truth_maps.append(truth_map)
    card = xr.Dataset({key: (dims[key], np.concatenate(values, axis=0)) for key, values in parts.items()},
                      coords={"variable": [lbl for lbl, *_ in labels], LEAD_DIM: aligned.leads})
    card = card.assign_coords({k: v for k, v in coords.items() if k in card.dims})
    if any(cls.needs == "video" for cls in selected):
        card["data_range"] = ("variable", np.asarray(ranges))
    if allow_missing:
        card["frames_left_out"] = (("variable", "side"), np.asarray(skipped, dtype=np.int64))
        card = card.assign_coords(side=["forecast", "truth"])
    card = card.expand_dims(model=[aligned.label])
    card["store"] = ("model", [aligned.path])
    card["samples"] = ("model", [aligned.samples_per_lead])
    card["members"] = ("model", [aligned.members])
    space = {dim: (dim, (grid.latitudes() if dim == LATITUDE_DIM else grid.longitudes()) if grid.kind == LATLON
                   else np.arange(size)) for dim, size in zip(grid.dims, grid.shape)}
    fields = xr.Dataset(
        {"forecast": (("variable", "map_lead") + grid.dims, np.concatenate(forecast_maps, axis=0)),
         "truth": (("variable", "map_lead") + grid.dims, np.concatenate(truth_maps, axis=0))},
        coords={"variable": card["variable"].values, "map_lead": aligned.leads[map_index], **space,
                "initial_time": aligned.inits[0]},
    ).expand_dims(model=[aligned.label])
    return card, fields, labels


def _climatology(climatology, truth: Truth, progress: bool) -> xr.Dataset | None:
    """The climatology for ACC: given (path or Dataset), else the truth entry's stored one, else None."""
    if climatology is not None:
        climatology = climatology if isinstance(climatology, xr.Dataset) else store.open_zarr(climatology)
        if "dayofyear" in climatology.dims and not truth.datetime:
            raise EarthsimError(f"a day-of-year climatology (for ACC) needs a truth with datetime times; "
                                f"{truth.name!r} is a {truth.entry.kind} dataset")
        return climatology
    if truth.entry.climatology:
        if not Path(truth.entry.climatology).exists():  # scoring reads stores; it never computes them
            warnings.warn(f"no climatology store at {truth.entry.climatology}: ACC is left out; make it with "
                          f"`earthsim stats {truth.entry.name}` or pass --climatology", stacklevel=2)
            return None
        from earthsim.data.stats import load_climatology

        return load_climatology(truth.entry, progress=progress)
    return None


def evaluate(forecasts: Sequence[str], truth: str | os.PathLike | DatasetEntry, climatology=None,
             progress: bool = True, *, leads: Sequence | None = None, video: bool = False,
             data_range: float | Mapping[str, float] | None = None, metrics: Sequence[str] | None = None,
             map_leads: Sequence | None = None, units: Mapping[str, str] | None = None,
             allow_missing: bool = False) -> Evaluation:
    """Score every forecast store against ``truth`` and return the scorecard and the map fields.

    ``forecasts``: store paths, optionally ``label=path``. ``truth``: a catalog name or YAML file.
    ``climatology``: a climatology store path or Dataset for ACC (default: the weather entry's
    stored climatology; none for fluids). ``leads``: lead times to score (default all; weather
    ``"6h"`` or hours, fluids solver units). ``video``: add per-frame MSE, MAE, SSIM and PSNR with
    ``data_range`` (default: the truth's max - min per variable). ``metrics``: names from
    :data:`earthsim.score.metrics.METRICS` to restrict the work to (default: all that apply).
    ``map_leads``: lead times whose fields are kept for the maps (default: first, middle and last).
    ``units``: units of forecast variables whose store does not state them (none are guessed).
    ``allow_missing``: score what is there when forecast or truth has missing chunks, NaN or ±inf (refused
    otherwise): such frames are left out of every score and counted in ``frames_left_out``.
    """
    if isinstance(forecasts, (str, os.PathLike)):
        forecasts = [str(forecasts)]
    if not forecasts:
        raise EarthsimError("score needs at least one forecast store")
    opened = open_truth(truth)
    wanted = METRICS.values() if metrics is None else [METRICS[n] for n in metrics if n in METRICS]
    clim = _climatology(climatology, opened, progress) if any(m.needs == "climatology" for m in wanted) else None
    check_stated_units(forecasts, units or {})
    every = []  # every store checked against the truth (coordinates only) before any is scored
    for spec in forecasts:
        every.append(align(spec, opened, leads, units=units, allow_missing=allow_missing))
        if every[-1].label in [a.label for a in every[:-1]]:
            raise EarthsimError(f"two forecasts are labelled {every[-1].label!r}; label them as LABEL=PATH")
    cards, fields, labels = [], [], {}
    for aligned in every:
        selected = select_metrics(metrics, opened, aligned.members, clim is not None, video)
        card, field, store_labels = _score_store(aligned, opened, selected, clim, data_range, map_leads,
                                                 allow_missing, progress)
        cards.append(card)
        fields.append(field)
        labels.update({lbl: rest for lbl, *rest in store_labels})
    card = xr.concat(cards, dim="model", join="outer")
    order = list(labels)
    card = card.sel(variable=[v for v in order if v in card["variable"].values])
    card = card.assign_coords(
        name=("variable", [labels[v][0] for v in card["variable"].values]),
        level=("variable", [labels[v][1] for v in card["variable"].values]),
        units=("variable", [labels[v][2] for v in card["variable"].values]),
    )
    known = {**conventions(), "data_range": DATA_RANGE, "frames_left_out": FRAMES_LEFT_OUT}
    for key in card.data_vars:
        if key in known:
            card[key].attrs["convention"] = known[key]
    card[LEAD_DIM].attrs["long_name"] = "lead time (prediction_timedelta)"
    if not opened.datetime:
        card[LEAD_DIM].attrs["units"] = str(opened.data[INIT_DIM].attrs.get("units", opened.entry.time.units))
    for cls in METRICS.values():
        for key in cls.output_dims() if cls.lead_units else ():
            if key in card:
                card[key].attrs["units"] = "hours" if opened.datetime else card[LEAD_DIM].attrs["units"]
    card.attrs.update({
        "title": f"earthsim scorecard against {opened.name}",
        "truth": opened.name,
        "truth_store": opened.entry.store,
        "kind": opened.entry.kind,
        "grid": opened.grid.kind,
        "climatology": ("given" if climatology is not None else "the truth entry's") if clim is not None
        else "none (no ACC)",
        "missing_data": ("allowed: frames with NaN or inf or in missing chunks are left out (frames_left_out "
                         "counts them)") if allow_missing
        else "refused: no forecast or truth frame holds NaN or inf or lies in a missing chunk",
        "variable_labels": "one entry per variable and level: name followed by the level (z500), or the name alone",
        "provenance": json.dumps(store.provenance("earthsim.score.evaluation", [opened.entry.store, *forecasts],
                                                  {"leads": [str(v) for v in leads] if leads else None,
                                                   "video": video, "metrics": list(metrics) if metrics else None,
                                                   "units_stated": dict(units) if units else None,
                                                   "allow_missing": allow_missing})),
    })
    field = xr.concat(fields, dim="model", join="outer")
    return Evaluation(card, field)


def score(forecasts: Sequence[str], truth: str | os.PathLike | DatasetEntry, out: str | os.PathLike,
          climatology=None, progress: bool = True, *, leads: Sequence | None = None, video: bool = False,
          data_range: float | Mapping[str, float] | None = None, metrics: Sequence[str] | None = None,
          map_leads: Sequence | None = None, units: Mapping[str, str] | None = None,
          allow_missing: bool = False) -> xr.Dataset:
    """Score forecast stores against a catalog truth and write the scorecard into ``out``.

    Writes ``scorecard.nc``, ``scorecard.csv``, ``spectra.csv`` (when spectra were computed),
    ``scorecard.md`` and ``plots/*.png`` into a temporary folder beside ``out`` (made before any work,
    so that an ``out`` that cannot be written is refused at once) whose contents become ``out``'s when
    all are written. Returns the scorecard Dataset. See :func:`evaluate` for the arguments.
    """
    from earthsim.score import output, plots

    with output.output_folder(out) as folder:  # refused here, before any work, when out cannot be written
        result = evaluate(forecasts, truth, climatology, progress, leads=leads, video=video, data_range=data_range,
                          metrics=metrics, map_leads=map_leads, units=units, allow_missing=allow_missing)
        try:
            output.write_scorecard(result.scorecard, folder)
            plots.plot_all(result, folder / "plots")
        except EarthsimError as error:  # named after the temporary folder: name the output instead
            raise EarthsimError(f"--out {out}: {str(error).replace(str(folder), str(out))}") from None
        except (OSError, RuntimeError) as error:  # netCDF4 reports HDF and NetCDF failures as RuntimeError
            raise EarthsimError(f"--out {out}: writing the scores failed ({reason(error)})") from None
    return result.scorecard
