"""Score forecast stores against a catalog truth and write the scorecard: netCDF, CSV, Markdown and plots.

    >>> from earthsim.score import score
    >>> card = score(["fno=runs/fno/forecast.zarr", "persistence=runs/persistence.zarr"],
    ...              truth="kolmogorov-64", out="runs/scores")

The scorer reads stores only (it knows nothing of models). Each store is aligned with the truth by
valid time (:mod:`earthsim.score.align`), then read block by block along ``time`` (blocks follow the
store's chunks); each block is cut into cache-sized pieces that are converted to float64 and
reduced, so every sum is accumulated in float64 and no per-sample Python loop runs. Per-sample
scores (one per initial time, lead, trajectory and level) are kept and averaged at the end, which
gives both WeatherBench 2's RMSE (square root after the time mean) and the per-initial-time
variant, and the threshold times of the correlation curve.

The scorecard is an ``xarray.Dataset`` with dims ``model``, ``variable`` (one entry per variable
and level: ``z500``, ``t850``, ``t2m``, ``vorticity``; coords ``name``, ``level``, ``units``) and
``prediction_timedelta`` (timedelta64 for weather, float in solver units for fluids), plus
``threshold``, ``band``, ``lat_band``, ``zonal_wavenumber`` and ``wavenumber`` for the scores that
need them. Every data variable's ``convention`` attribute says how it was computed.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from earthsim.catalog import DatasetEntry
from earthsim.data import store
from earthsim.errors import EarthsimError
from earthsim.score import metrics as m
from earthsim.data.conventions import LATITUDE_DIM, LEAD_DIM, LEVEL_DIM, MEMBER_DIM, TRAJECTORY_DIM, lead_numbers
from earthsim.data.grid import LATLON
from earthsim.score.align import (INIT_DIM, Aligned, Truth, align, climatology_frames, format_lead, lead_value,
                                  open_truth)

THRESHOLDS = (0.95, 0.8)
LAT_BANDS = {"all": (-90.0, 90.0), "south_extratropics": (-60.0, -30.0), "tropics": (-20.0, 20.0),
             "north_extratropics": (30.0, 60.0)}
BLOCK_BYTES = 64 * 2**20  # forecast data read per block (whole store chunks along time)
PIECE_ELEMENTS = 2**18  # elements converted to float64 at a time (cache-sized)
MAP_LEADS = 3

GROUPS = {
    "mse": "error", "rmse": "error", "rmse_per_init": "error", "mae": "mae", "bias": "bias", "acc": "acc",
    "crps": "ensemble", "ensemble_mean_rmse": "ensemble", "spread": "ensemble", "spread_skill": "ensemble",
    "rel_l2": "fluid", "correlation": "fluid", "decorrelation_time": "fluid",
    "spectra": "spectra", "frame_mse": "video", "frame_mae": "video", "ssim": "video", "psnr": "video",
}

_SPATIAL = ("spatial mean with WeatherBench 2 cell-area latitude weights (earthsim.data.grid.latitude_weights, "
            "mean 1) on latitude/longitude grids, uniform on periodic boxes")
_SAMPLES = "averaged over initial times (and trajectories for fluids)"
CONVENTIONS = {
    "mse": f"mean squared error (forecast - truth)^2: {_SPATIAL}; {_SAMPLES}",
    "rmse": "square root of the time-mean MSE (WeatherBench 2's headline RMSE: sqrt after the time mean)",
    "rmse_per_init": f"RMSE of each initial time (sqrt before the time mean, WB2's RMSESqrtBeforeTimeAvg), {_SAMPLES}",
    "mae": f"mean absolute error |forecast - truth|: {_SPATIAL}; {_SAMPLES}",
    "bias": f"mean error (forecast - truth): {_SPATIAL}; {_SAMPLES}",
    "acc": ("uncentred anomaly correlation (WB2's ACC): sum w f'y' / sqrt(sum w f'^2 sum w y'^2) with anomalies "
            "against the day-of-year x hour climatology at the valid time, per initial time, then averaged over "
            "initial times (NaN-skipping where the climatology has no value)"),
    "crps": ("unbiased (fair) ensemble CRPS E|X-Y| - 0.5 E|X-X'| with E|X-X'| = sum_{i!=j}|x_i-x_j| / (M(M-1)) "
             f"(WB2's CRPS, Zamo & Naveau 2018), pointwise then {_SPATIAL}; {_SAMPLES}"),
    "ensemble_mean_rmse": "RMSE of the ensemble mean: square root of the time-mean MSE of the ensemble mean",
    "spread": ("square root of the time-mean spatially averaged ensemble variance (unbiased, M - 1 denominator), "
               "WB2's EnsembleVariance"),
    "spread_skill": ("sqrt((M+1)/M) * spread / ensemble_mean_rmse (Fortin et al. 2014's finite-ensemble "
                     "correction, as WB2 reports it): 1 for a calibrated ensemble"),
    "rel_l2": f"relative L2 error sqrt(sum w (f-y)^2 / sum w y^2) per frame, {_SAMPLES}",
    "correlation": ("uncentred (cosine) correlation over the domain sum w f y / sqrt(sum w f^2 sum w y^2) per frame "
                    "(jax-cfd's correlation, Kochkov et al. 2021, TSM; equals Pearson's r for zero-mean vorticity), "
                    f"{_SAMPLES}"),
    "decorrelation_time": ("lead time at which the averaged correlation first falls below the threshold, linearly "
                           "interpolated between the last lead at or above it and the first below it; NaN: it "
                           "stays above over all leads scored; the first lead if it starts below"),
    "energy_spectrum": ("isotropic spectrum per integer wavenumber shell round(|n|): from vorticity the kinetic "
                        "energy E(k) = sum_shell |w_hat|^2 / (2|k|^2) with w_hat = fft2(w)/(H W) and k = 2 pi n / L "
                        "(sums to 0.5 mean |u|^2); other fields 0.5 sum_shell |u_hat|^2; shells up to min(H, W)//2; "
                        "mean over initial times and trajectories"),
    "energy_spectrum_truth": "energy_spectrum of the truth at the same valid times",
    "spectrum_log_ratio": ("mean over the shells of each band of ln(E_forecast(k) / E_truth(k)): bands low [1, K/4], "
                           "mid (K/4, K/2], high (K/2, K] with K = min(H, W)//2; 0 is right, < 0 too little energy"),
    "zonal_spectrum": ("WB2's ZonalEnergySpectrum: S[k] = C(lat) c_k |rfft(f)/L|^2 along longitude (c_0 = 1, c_k = 2), "
                       "C(lat) = 2 pi R cos(lat), R = 6367.5 km; mean over initial times (and trajectories), then a "
                       "plain mean over the grid latitudes inside each lat_band (all: every latitude but the poles)"),
    "zonal_spectrum_truth": "zonal_spectrum of the truth at the same valid times",
    "frame_mse": f"per-frame mean squared error, unweighted mean over pixels, {_SAMPLES}",
    "frame_mae": f"per-frame mean absolute error, unweighted mean over pixels, {_SAMPLES}",
    "ssim": ("SSIM (Wang et al. 2004) per frame, Gaussian window sigma 1.5 truncated at 3.5 sigma (11 points), "
             "K1 0.01, K2 0.03, population covariances, reflected borders, mean over the interior; as "
             "skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False); "
             f"data_range as the data_range variable; {_SAMPLES}"),
    "psnr": f"PSNR 10 log10(data_range^2 / frame MSE) in dB per frame, {_SAMPLES}",
    "data_range": ("data range R used by SSIM and PSNR: given by the user, else max - min of the truth frames "
                   "scored for the variable"),
}


@dataclass
class Evaluation:
    """Scores of all forecasts (``scorecard``) and the fields drawn on the maps (``fields``)."""

    scorecard: xr.Dataset
    fields: xr.Dataset


def _groups(metrics: Sequence[str] | None, truth: Truth, members: int, climatology: bool, video: bool) -> set[str]:
    """Metric groups to compute for one store: all applicable ones, or those named in ``metrics``."""
    fluid = TRAJECTORY_DIM in truth.data.dims
    applicable = {"error", "mae", "bias", "spectra"}
    if climatology:
        applicable.add("acc")
    if members > 1:
        applicable.add("ensemble")
    if fluid:
        applicable.add("fluid")
    if video:
        applicable.add("video")
    if metrics is None:
        return applicable
    unknown = [name for name in metrics if name not in GROUPS]
    if unknown:
        raise EarthsimError(f"unknown metric(s) {unknown}; valid metrics: {sorted(GROUPS)}")
    wanted = {GROUPS[name] for name in metrics}
    reasons = {"acc": "a weather truth with a climatology (the entry's, or --climatology)",
               "ensemble": "an ensemble forecast (a 'realization' dim with at least 2 members)",
               "fluid": "a fluid truth (dims trajectory, time, ...)", "video": "video=True"}
    for group in sorted(wanted - applicable):
        names = [n for n, g in GROUPS.items() if g == group and n in metrics]
        raise EarthsimError(f"metric(s) {names} need {reasons[group]}")
    return wanted


def _blocks(aligned: Aligned, name: str) -> list[tuple[int, int]]:
    """Ranges of initial times read at once: whole store chunks along ``time``, about BLOCK_BYTES each."""
    da = aligned.forecast[name]
    n = da.sizes[INIT_DIM]
    chunks = da.chunks[da.get_axis_num(INIT_DIM)] if da.chunks is not None else (n,)
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


def _read_block(aligned: Aligned, name: str, grid_dims: tuple[str, str], start: int, stop: int) -> np.ndarray:
    """Forecast block ``[b, L, R, M, K, H, W]`` (size-1 axes for absent dims), in the store's dtype."""
    da = aligned.forecast[name].isel({INIT_DIM: slice(start, stop)})
    order = [INIT_DIM, LEAD_DIM] + [d for d in (TRAJECTORY_DIM, MEMBER_DIM, LEVEL_DIM) if d in da.dims] + list(grid_dims)
    values = np.asarray(da.transpose(*order).values)
    for position, dim in ((2, TRAJECTORY_DIM), (3, MEMBER_DIM), (4, LEVEL_DIM)):
        if dim not in da.dims:
            values = np.expand_dims(values, position)
    return values


class _Accumulator:
    """Per-sample scores ``[I, L, R, K]`` and spectrum sums of one variable of one forecast store."""

    def __init__(self, aligned: Aligned, name: str, truth: Truth, groups: set[str],
                 climatology: np.ndarray | None, data_range: float | None):
        self.aligned, self.name, self.grid, self.groups = aligned, name, truth.grid, groups
        self.frames = aligned.frames[name]
        self.climatology = climatology
        self.data_range = data_range
        self.weights = m.grid_weights(self.grid.shape, self.grid.latitudes())
        self.vorticity = "vorticity" in name.lower()
        n_init, n_lead = aligned.frame_index.shape
        n_traj, n_level = self.frames.shape[1], self.frames.shape[2]
        self.shape = (n_init, n_lead, n_traj, n_level)
        self.samples: dict[str, np.ndarray] = {}
        self.spectrum: np.ndarray | None = None
        self.truth_spectrum: np.ndarray | None = None
        if "spectra" in groups:
            self.truth_spectrum = self._truth_spectrum()

    def _spectrum(self, fields: np.ndarray) -> np.ndarray:
        """Spectrum of fields ``[..., R, K, H, W]`` summed over R: ``[..., K, H, k]`` (zonal) or ``[..., K, k]``."""
        if self.grid.kind == LATLON:
            spectrum = m.zonal_energy_spectrum(fields, self.grid.latitudes(), self.grid.longitudes())
        else:
            spectrum = m.isotropic_energy_spectrum(fields, self.grid.box_length, from_vorticity=self.vorticity)
        return spectrum.sum(axis=fields.ndim - 4)

    def _truth_spectrum(self) -> np.ndarray:
        """Truth spectra summed over initial times per lead: each distinct valid frame transformed once.

        ``counts[lead, frame]`` says how often a frame is the truth at that lead; frames are transformed
        in cache-sized groups and contracted with their counts.
        """
        index = self.aligned.frame_index
        n_frames = self.frames.shape[0]
        counts = np.stack([np.bincount(index[:, lead], minlength=n_frames)
                           for lead in range(index.shape[1])]).astype(np.float64)
        step = max(1, PIECE_ELEMENTS // self.frames[0].size)
        total = None
        for start in range(0, n_frames, step):
            spectrum = self._spectrum(self.frames[start:start + step])
            part = counts[:, start:start + step] @ spectrum.reshape(spectrum.shape[0], -1)
            total = part if total is None else total + part
        return total.reshape((index.shape[1],) + spectrum.shape[1:])

    def _store(self, key: str, values: np.ndarray, where: tuple[slice, slice]) -> None:
        if key not in self.samples:
            self.samples[key] = np.full(self.shape, np.nan)
        self.samples[key][where] = values

    def add(self, block: np.ndarray, start: int) -> np.ndarray:
        """Score a forecast block ``[b, L, R, M, K, H, W]`` whose first initial time is ``start``.

        Returns the ensemble-mean (or only) forecast of the block's first initial time ``[L, R, K, H, W]``.
        """
        b, n_lead, n_traj, n_member, n_level = block.shape[:5]
        per_init = block[0].size
        inits = max(1, PIECE_ELEMENTS // per_init)
        leads = n_lead if inits > 1 else max(1, min(n_lead, PIECE_ELEMENTS * n_lead // per_init))
        first = None
        for i0 in range(0, b, inits):
            for l0 in range(0, n_lead, leads):
                piece = block[i0:i0 + inits, l0:l0 + leads]
                where = (slice(start + i0, start + i0 + piece.shape[0]), slice(l0, l0 + piece.shape[1]))
                mean = self._piece(piece, where)
                if i0 == 0:
                    first = mean[0] if first is None else np.concatenate([first, mean[0]], axis=0)
        return first

    def _piece(self, piece: np.ndarray, where: tuple[slice, slice]) -> np.ndarray:
        """All per-sample scores of one piece, in float64; returns its ensemble-mean forecast fields."""
        s, n_lead, n_traj, n_member, n_level, height, width = piece.shape
        size = height * width
        w, groups = self.weights, self.groups
        index = self.aligned.frame_index[where]
        x = piece.reshape(s, n_lead, n_traj, n_member, n_level, size).astype(np.float64)
        y = self.frames[index].reshape(s, n_lead, n_traj, n_level, size).astype(np.float64)
        if n_member > 1:
            f = x.mean(axis=3)
            if "ensemble" in groups:
                self._store("crps", m.crps_fair(x, y, axis=3) @ w, where)
                self._store("ensemble_variance", x.var(axis=3, ddof=1) @ w, where)
        else:
            f = x[:, :, :, 0]
        d = f - y
        if groups & {"error", "ensemble", "fluid"}:
            self._store("mse", (d * d) @ w, where)
        if "mae" in groups:
            self._store("mae", np.abs(d) @ w, where)
        if "bias" in groups:
            self._store("bias", d @ w, where)
        if "acc" in groups:
            c = self.climatology[index].reshape(s, n_lead, 1, n_level, size).astype(np.float64)
            self._store("acc", m.uncentred_correlation(f - c, y - c, w), where)
        if "fluid" in groups:
            self._store("truth_norm", (y * y) @ w, where)
            self._store("correlation", m.uncentred_correlation(f, y, w), where)
        fields = f.reshape(s, n_lead, n_traj, n_level, height, width)
        if "video" in groups:
            frame_mse = (d * d).mean(axis=-1)
            self._store("frame_mse", frame_mse, where)
            self._store("frame_mae", np.abs(d).mean(axis=-1), where)
            self._store("ssim", m.ssim(fields, y.reshape(fields.shape), self.data_range), where)
            self._store("psnr", m.psnr(frame_mse, self.data_range), where)
        if "spectra" in groups:
            spectrum = self._spectrum(fields).sum(axis=0)
            if self.spectrum is None:
                self.spectrum = np.zeros((self.shape[1],) + spectrum.shape[1:])
            self.spectrum[where[1]] += spectrum
        return fields

    def finish(self, leads_numeric: np.ndarray) -> dict[str, np.ndarray]:
        """Averages over initial times and trajectories: ``{score: [L, K, ...]}``."""
        count = self.shape[0] * self.shape[2]
        mean = {key: values.mean(axis=(0, 2)) for key, values in self.samples.items() if key != "acc"}
        out: dict[str, np.ndarray] = {}
        if "error" in self.groups:
            out["mse"] = mean["mse"]
            out["rmse"] = np.sqrt(mean["mse"])
            out["rmse_per_init"] = np.sqrt(self.samples["mse"]).mean(axis=(0, 2))
        for key in ("mae", "bias", "crps", "frame_mse", "frame_mae", "ssim", "psnr", "correlation"):
            if key in mean:
                out[key] = mean[key]
        if "acc" in self.samples:
            finite = np.isfinite(self.samples["acc"])
            total = np.where(finite, self.samples["acc"], 0.0).sum(axis=(0, 2))
            number = finite.sum(axis=(0, 2))
            out["acc"] = np.where(number > 0, total / np.maximum(number, 1), np.nan)
        if "ensemble" in self.groups:
            members = self.aligned.members
            out["ensemble_mean_rmse"] = np.sqrt(mean["mse"])
            out["spread"] = np.sqrt(mean["ensemble_variance"])
            with np.errstate(divide="ignore", invalid="ignore"):
                out["spread_skill"] = np.sqrt((members + 1) / members) * out["spread"] / out["ensemble_mean_rmse"]
        if "fluid" in self.groups:
            with np.errstate(divide="ignore", invalid="ignore"):
                out["rel_l2"] = np.sqrt(self.samples["mse"] / self.samples["truth_norm"]).mean(axis=(0, 2))
            out["decorrelation_time"] = np.array(
                [[m.threshold_crossing(leads_numeric, mean["correlation"][:, k], t) for t in THRESHOLDS]
                 for k in range(self.shape[3])])
        if "spectra" in self.groups:
            forecast, truth = self.spectrum / count, self.truth_spectrum / count
            if self.grid.kind == LATLON:
                out["zonal_spectrum"], out["zonal_spectrum_truth"] = _band_average(forecast, self.grid.latitudes()), \
                    _band_average(truth, self.grid.latitudes())
            else:
                out["energy_spectrum"], out["energy_spectrum_truth"] = forecast, truth
                last = min(self.grid.shape) // 2
                with np.errstate(divide="ignore", invalid="ignore"):
                    bands = m.band_log_ratio(forecast, truth, last)
                out["spectrum_log_ratio"] = np.stack([bands[b] for b in m.spectrum_bands(last)], axis=-1)
        return out


def _lat_bands(latitude: np.ndarray) -> dict[str, np.ndarray]:
    """Grid latitudes in each band of LAT_BANDS (``all``: every latitude but the poles); empty bands dropped."""
    bands = {}
    for name, (lo, hi) in LAT_BANDS.items():
        inside = (np.abs(latitude) < 90.0) if name == "all" else (latitude >= lo) & (latitude <= hi)
        if inside.any():
            bands[name] = inside
    return bands


def _band_average(spectrum: np.ndarray, latitude: np.ndarray) -> np.ndarray:
    """``[L, K, lat, k]`` averaged over the latitudes of each band: ``[L, K, band, k]``."""
    return np.stack([spectrum[:, :, inside].mean(axis=2) for inside in _lat_bands(latitude).values()], axis=2)


def _labels(name: str, levels: np.ndarray | None) -> list[tuple[str, float]]:
    if levels is None:
        return [(name, float("nan"))]
    return [(f"{name}{level:g}", float(level)) for level in levels]


def _data_range(value, name: str, frames: np.ndarray) -> float:
    if isinstance(value, Mapping):
        if name not in value:
            raise EarthsimError(f"data_range gives no value for variable {name!r}; it names {sorted(value)}")
        value = value[name]
    if value is None:
        finite = frames[np.isfinite(frames)]
        if finite.size == 0:
            raise EarthsimError(f"variable {name!r}: the truth frames hold no finite value to take a data range from")
        value = float(finite.max(initial=-np.inf)) - float(finite.min(initial=np.inf))
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


def _score_store(aligned: Aligned, truth: Truth, groups: set[str], climatology: xr.Dataset | None,
                 data_range, map_leads: Sequence | None, progress: bool) -> tuple[xr.Dataset, xr.Dataset, list]:
    """Scorecard, map fields and variable labels (label, name, level, units) of one aligned forecast store."""
    grid = truth.grid
    clim = climatology_frames(climatology, aligned, truth, "(ACC)") if "acc" in groups else {}
    leads_numeric = lead_numbers(aligned.leads)
    map_index = _map_lead_indices(aligned.leads, map_leads, truth.datetime)
    per_metric: dict[str, list[np.ndarray]] = {}
    labels: list[tuple[str, str, float, str]] = []
    ranges, forecast_maps, truth_maps = [], [], []
    total = len(aligned.inits) * len(aligned.variables)
    with tqdm(total=total, desc=f"score {aligned.label}", unit="init", disable=not progress) as bar:
        for name in aligned.variables:
            value_range = _data_range(data_range, name, aligned.frames[name]) if "video" in groups else None
            accumulator = _Accumulator(aligned, name, truth, groups, clim.get(name), value_range)
            first = None
            for start, stop in _blocks(aligned, name):
                fields = accumulator.add(_read_block(aligned, name, grid.dims, start, stop), start)
                first = fields if first is None else first
                bar.update(stop - start)
            results = accumulator.finish(leads_numeric)
            for key, values in results.items():
                per_metric.setdefault(key, []).append(np.moveaxis(values, 0, 1) if values.ndim >= 2
                                                      and key != "decorrelation_time" else values)
            variable_labels = _labels(name, aligned.levels[name])
            labels += [(label, name, level, aligned.units[name]) for label, level in variable_labels]
            ranges += [value_range if value_range is not None else np.nan] * len(variable_labels)
            first_frames = aligned.frames[name][aligned.frame_index[0]]  # [L, R, K, H, W]
            forecast_maps.append(np.moveaxis(first[map_index, 0], 1, 0))
            truth_maps.append(np.moveaxis(first_frames[map_index, 0], 1, 0))
    coords = {"variable": [lbl for lbl, *_ in labels], LEAD_DIM: aligned.leads}
    dims = {
        "decorrelation_time": ("variable", "threshold"),
        "spectrum_log_ratio": ("variable", LEAD_DIM, "band"),
        "zonal_spectrum": ("variable", LEAD_DIM, "lat_band", "zonal_wavenumber"),
        "energy_spectrum": ("variable", LEAD_DIM, "wavenumber"),
    }
    dims["zonal_spectrum_truth"], dims["energy_spectrum_truth"] = dims["zonal_spectrum"], dims["energy_spectrum"]
    data = {}
    for key, parts in per_metric.items():
        data[key] = (dims.get(key, ("variable", LEAD_DIM)), np.concatenate(parts, axis=0))
    card = xr.Dataset(data, coords=coords)
    if "decorrelation_time" in card:
        card = card.assign_coords(threshold=list(THRESHOLDS))
    if "spectrum_log_ratio" in card:
        card = card.assign_coords(band=list(m.spectrum_bands(min(grid.shape) // 2)))
    if "zonal_spectrum" in card:
        card = card.assign_coords(lat_band=list(_lat_bands(grid.latitudes())),
                                  zonal_wavenumber=np.arange(card.sizes["zonal_wavenumber"]))
    if "energy_spectrum" in card:
        card = card.assign_coords(wavenumber=np.arange(card.sizes["wavenumber"]))
    if "video" in groups:
        card["data_range"] = ("variable", np.asarray(ranges))
    card = card.expand_dims(model=[aligned.label])
    card["store"] = ("model", [aligned.path])
    card["samples"] = ("model", [aligned.samples_per_lead])
    card["members"] = ("model", [aligned.members])
    space = {dim: (dim, (grid.latitudes() if dim == LATITUDE_DIM else grid.longitudes()) if grid.kind == LATLON
                   else np.arange(size)) for dim, size in zip(grid.dims, grid.shape)}
    fields = xr.Dataset(
        {"forecast": (("variable", "map_lead") + grid.dims, np.concatenate(forecast_maps, axis=0)),
         "truth": (("variable", "map_lead") + grid.dims, np.concatenate(truth_maps, axis=0))},
        coords={"variable": coords["variable"], "map_lead": aligned.leads[map_index], **space,
                "initial_time": aligned.inits[0]},
    ).expand_dims(model=[aligned.label])
    return card, fields, labels


def _climatology(climatology, truth: Truth, progress: bool) -> xr.Dataset | None:
    """The climatology for ACC: given (path or Dataset), else the weather truth entry's stored one, else None."""
    if climatology is not None:
        if not truth.datetime:
            raise EarthsimError(f"a climatology (for ACC) needs a weather truth with datetime times; "
                                f"{truth.name!r} is a {truth.entry.kind} dataset")
        return climatology if isinstance(climatology, xr.Dataset) else store.open_zarr(climatology)
    if truth.entry.kind == "weather" and truth.entry.climatology:
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
             map_leads: Sequence | None = None) -> Evaluation:
    """Score every forecast store against ``truth`` and return the scorecard and the map fields.

    ``forecasts``: store paths, optionally ``label=path``. ``truth``: a catalog name or YAML file.
    ``climatology``: a climatology store path or Dataset for ACC (default: the weather entry's
    stored climatology; none for fluids). ``leads``: lead times to score (default all; weather
    ``"6h"`` or hours, fluids solver units). ``video``: add per-frame MSE, MAE, SSIM and PSNR with
    ``data_range`` (default: the truth's max - min per variable). ``metrics``: names from
    :data:`GROUPS` to restrict the work to (default: all that apply). ``map_leads``: lead times
    whose fields are kept for the maps (default: first, middle and last).
    """
    if isinstance(forecasts, (str, os.PathLike)):
        forecasts = [str(forecasts)]
    if not forecasts:
        raise EarthsimError("score needs at least one forecast store")
    opened = open_truth(truth)
    clim = _climatology(climatology, opened, progress) if metrics is None or "acc" in metrics else None
    cards, fields, labels = [], [], {}
    seen = set()
    for spec in forecasts:
        aligned = align(spec, opened, leads)
        if aligned.label in seen:
            raise EarthsimError(f"two forecasts are labelled {aligned.label!r}; label them as LABEL=PATH")
        seen.add(aligned.label)
        groups = _groups(metrics, opened, aligned.members, clim is not None and opened.datetime, video)
        card, field, store_labels = _score_store(aligned, opened, groups, clim, data_range, map_leads, progress)
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
    for key in card.data_vars:
        if key in CONVENTIONS:
            card[key].attrs["convention"] = CONVENTIONS[key]
    card[LEAD_DIM].attrs["long_name"] = "lead time (prediction_timedelta)"
    if not opened.datetime:
        card[LEAD_DIM].attrs["units"] = str(opened.data[INIT_DIM].attrs.get("units", opened.entry.time.units))
    if "decorrelation_time" in card:
        card["decorrelation_time"].attrs["units"] = "hours" if opened.datetime else card[LEAD_DIM].attrs["units"]
    card.attrs.update({
        "title": f"earthsim scorecard against {opened.name}",
        "truth": opened.name,
        "truth_store": opened.entry.store,
        "kind": opened.entry.kind,
        "grid": opened.grid.kind,
        "climatology": ("given" if climatology is not None else "the truth entry's") if clim is not None
        else "none (no ACC)",
        "variable_labels": "one entry per variable and level: name followed by the level (z500), or the name alone",
        "provenance": json.dumps(store.provenance("earthsim.score.evaluate", [opened.entry.store, *forecasts],
                                                  {"leads": [str(v) for v in leads] if leads else None,
                                                   "video": video, "metrics": list(metrics) if metrics else None})),
    })
    field = xr.concat(fields, dim="model", join="outer")
    return Evaluation(card, field)


def score(forecasts: Sequence[str], truth: str | os.PathLike | DatasetEntry, out: str | os.PathLike,
          climatology=None, progress: bool = True, *, leads: Sequence | None = None, video: bool = False,
          data_range: float | Mapping[str, float] | None = None, metrics: Sequence[str] | None = None,
          map_leads: Sequence | None = None) -> xr.Dataset:
    """Score forecast stores against a catalog truth and write the scorecard into ``out``.

    Writes ``scorecard.nc``, ``scorecard.csv``, ``spectra.csv`` (when spectra were computed),
    ``scorecard.md`` and ``plots/*.png``, each to a temporary name renamed when complete. Returns
    the scorecard Dataset. See :func:`evaluate` for the arguments.
    """
    from earthsim.score import plots

    result = evaluate(forecasts, truth, climatology, progress, leads=leads, video=video, data_range=data_range,
                      metrics=metrics, map_leads=map_leads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_scorecard(result.scorecard, out)
    plots.plot_all(result, out / "plots")
    return result.scorecard


# ---------------------------------------------------------------------------------------- outputs

def _atomic_write(path: Path, write) -> Path:
    with store.atomic_output(path, overwrite=True) as tmp:
        write(tmp)
    return path


def _lead_units(card: xr.Dataset) -> str:
    if np.issubdtype(card[LEAD_DIM].dtype, np.timedelta64):
        return "hours"
    return str(card[LEAD_DIM].attrs.get("units", "solver time units"))


_TABLE_DIMS = {"model", "variable", LEAD_DIM, "threshold", "band"}


def _lead_series(values: pd.Series) -> pd.Series:
    """A column of leads as numbers: hours for timedeltas, solver units otherwise."""
    return pd.Series(lead_numbers(values.to_numpy()), index=values.index, name=values.name)


def scores_frame(card: xr.Dataset) -> pd.DataFrame:
    """The scorecard's scores (all but the spectra) in long form: model, variable, level, lead, metric, value."""
    lead_units = _lead_units(card)
    rows = []
    for key, da in card.data_vars.items():
        if not set(da.dims) <= _TABLE_DIMS or "variable" not in da.dims:
            continue
        frame = da.drop_vars([c for c in da.coords if c not in da.dims]).to_dataframe(name="value").reset_index()
        extra = [d for d in da.dims if d in ("threshold", "band")]
        frame["metric"] = key if not extra else key + "_" + frame[extra[0]].astype(str)
        frame["lead"] = _lead_series(frame[LEAD_DIM]) if LEAD_DIM in frame else np.nan
        rows.append(frame[["model", "variable", "lead", "metric", "value"]])
    frame = pd.concat(rows, ignore_index=True)
    frame["lead_units"] = lead_units
    level = dict(zip(card["variable"].values.tolist(), card["level"].values.tolist()))
    frame["level"] = frame["variable"].map(level)
    return frame[["model", "variable", "level", "lead", "lead_units", "metric", "value"]]


def spectra_frame(card: xr.Dataset) -> pd.DataFrame | None:
    """Spectra in long form (model, variable, lead, [lat_band], wavenumber, forecast, truth), or None."""
    lead_units = _lead_units(card)
    parts = []
    for key, wavenumber in (("energy_spectrum", "wavenumber"), ("zonal_spectrum", "zonal_wavenumber")):
        if key not in card:
            continue
        pair = xr.Dataset({"forecast": card[key], "truth": card[key + "_truth"]})
        pair = pair.drop_vars([c for c in pair.coords if c not in pair.dims])
        frame = pair.to_dataframe().reset_index().rename(columns={wavenumber: "wavenumber"})
        frame["spectrum"] = key
        frame["lead"] = _lead_series(frame[LEAD_DIM])
        parts.append(frame)
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True)
    frame["lead_units"] = lead_units
    columns = ["model", "variable", "lead", "lead_units", "spectrum"] + (["lat_band"] if "lat_band" in frame else []) \
        + ["wavenumber", "forecast", "truth"]
    return frame[columns]


HEADLINE = ("rmse", "rmse_per_init", "acc", "bias", "mae", "crps", "ensemble_mean_rmse", "spread", "spread_skill",
            "rel_l2", "correlation", "frame_mse", "ssim", "psnr")


def _fmt(value: float) -> str:
    return "—" if not np.isfinite(value) else f"{value:.4g}"


def markdown_table(card: xr.Dataset, max_leads: int = 8) -> str:
    """The scorecard as Markdown: one table per headline score (rows model × variable, columns leads)."""
    leads = card[LEAD_DIM].values
    chosen = np.unique(np.linspace(0, len(leads) - 1, min(max_leads, len(leads))).round().astype(int))
    header_leads = [format_lead(leads[i]) for i in chosen]
    lines = [f"# Scorecard against {card.attrs.get('truth', '?')}", ""]
    for key in HEADLINE:
        if key not in card:
            continue
        lines += [f"## {key}", "", f"_{card[key].attrs.get('convention', '')}_", "",
                  "| model | variable | " + " | ".join(header_leads) + " |",
                  "|---|---|" + "---|" * len(chosen)]
        for model in card["model"].values:
            for variable in card["variable"].values:
                row = card[key].sel(model=model, variable=variable).values[chosen]
                if np.isfinite(row).any():
                    lines.append(f"| {model} | {variable} | " + " | ".join(_fmt(v) for v in row) + " |")
        lines.append("")
    if "decorrelation_time" in card:
        units = card["decorrelation_time"].attrs.get("units", "")
        lines += ["## decorrelation_time", "", f"_{card['decorrelation_time'].attrs['convention']}; units {units}_", "",
                  "| model | variable | " + " | ".join(f"corr < {t:g}" for t in card["threshold"].values) + " |",
                  "|---|---|" + "---|" * card.sizes["threshold"]]
        for model in card["model"].values:
            for variable in card["variable"].values:
                row = card["decorrelation_time"].sel(model=model, variable=variable).values
                lines.append(f"| {model} | {variable} | " + " | ".join(
                    "> last lead" if not np.isfinite(v) else _fmt(v) for v in row) + " |")
        lines.append("")
    if "spectrum_log_ratio" in card:
        last = format_lead(leads[-1])
        convention = card["spectrum_log_ratio"].attrs["convention"]
        lines += [f"## spectrum_log_ratio at lead {last}", "", f"_{convention}_", "",
                  "| model | variable | " + " | ".join(card["band"].values) + " |",
                  "|---|---|" + "---|" * card.sizes["band"]]
        for model in card["model"].values:
            for variable in card["variable"].values:
                row = card["spectrum_log_ratio"].sel(model=model, variable=variable).isel({LEAD_DIM: -1}).values
                if np.isfinite(row).any():
                    lines.append(f"| {model} | {variable} | " + " | ".join(_fmt(v) for v in row) + " |")
        lines.append("")
    return "\n".join(lines)


def write_scorecard(card: xr.Dataset, out: str | os.PathLike) -> dict[str, Path]:
    """Write ``scorecard.nc``, ``scorecard.csv``, ``spectra.csv`` (if any) and ``scorecard.md`` atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"netcdf": _atomic_write(out / "scorecard.nc", lambda tmp: card.to_netcdf(tmp)),
               "csv": _atomic_write(out / "scorecard.csv", lambda tmp: scores_frame(card).to_csv(tmp, index=False))}
    spectra = spectra_frame(card)
    if spectra is not None:
        written["spectra"] = _atomic_write(out / "spectra.csv", lambda tmp: spectra.to_csv(tmp, index=False))
    text = markdown_table(card)
    written["markdown"] = _atomic_write(out / "scorecard.md", lambda tmp: tmp.write_text(text + "\n"))
    return written


__all__ = ["Evaluation", "evaluate", "score", "write_scorecard", "markdown_table", "scores_frame",
           "spectra_frame", "CONVENTIONS", "GROUPS"]
