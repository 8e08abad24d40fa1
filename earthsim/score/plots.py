"""Scorecard plots as PNG files, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- ``scores_<variable>.png``: each score against lead time, all models and baselines on one axis per score;
- ``fields_<model>_<variable>.png``: forecast, truth and error at the map lead times (first initial time,
  first trajectory, ensemble mean);
- ``<spectrum>_<variable>.png`` (``energy_spectrum_vorticity.png``): forecast and truth spectra at the last lead scored (isotropic on boxes,
  zonal per latitude band on the sphere), log-log.

Every file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from earthsim.data.store import atomic_output
from earthsim.data.conventions import LATITUDE_DIM, LEAD_DIM, LONGITUDE_DIM, lead_numbers
from earthsim.score.align import format_lead
from earthsim.score.metrics import METRICS
from earthsim.score.output import spectra


def _line_scores(card: xr.Dataset) -> list[str]:
    """The headline scores along the lead (model × variable × lead), in the scorecard's order."""
    headline = {key for cls in METRICS.values() if cls.headline for key in cls.output_dims()}
    return [key for key, da in card.data_vars.items()
            if key in headline and set(da.dims) == {"model", "variable", LEAD_DIM}]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    with atomic_output(path, overwrite=True) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    return path


def _lead_axis(card: xr.Dataset) -> tuple[np.ndarray, str]:
    leads = card[LEAD_DIM].values
    if np.issubdtype(leads.dtype, np.timedelta64):
        return lead_numbers(leads), "lead time (hours)"
    return lead_numbers(leads), f"lead time ({card[LEAD_DIM].attrs.get('units', 'solver time units')})"


def plot_scores(card: xr.Dataset, out: Path) -> list[Path]:
    """One figure per variable: a panel per score against lead time, every model on each panel."""
    leads, xlabel = _lead_axis(card)
    scores = _line_scores(card)
    written = []
    for variable in card["variable"].values:
        present = [k for k in scores if np.isfinite(card[k].sel(variable=variable).values).any()]
        if not present:
            continue
        columns = min(3, len(present))
        rows = -(-len(present) // columns)
        figure = Figure(figsize=(4.5 * columns, 3.2 * rows))
        for i, key in enumerate(present):
            ax = figure.add_subplot(rows, columns, i + 1)
            for model in card["model"].values:
                values = card[key].sel(model=model, variable=variable).values
                if np.isfinite(values).any():
                    ax.plot(leads, values, marker="o", markersize=3, label=str(model))
            ax.set_title(f"{variable}: {key}")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.legend(fontsize=8)
        figure.subplots_adjust(left=0.08, right=0.98, bottom=0.12 / rows, top=1 - 0.1 / rows, hspace=0.45, wspace=0.3)
        written.append(_save(figure, out / f"scores_{_safe(variable)}.png"))
    return written


def plot_fields(fields: xr.Dataset, out: Path) -> list[Path]:
    """Forecast, truth and error maps at the map lead times, one figure per model and variable."""
    written = []
    spatial = [d for d in fields["forecast"].dims if d not in ("model", "variable", "map_lead")]
    for model in fields["model"].values:
        for variable in fields["variable"].values:
            forecast = fields["forecast"].sel(model=model, variable=variable)
            if not np.isfinite(forecast.values).any():
                continue
            truth = fields["truth"].sel(model=model, variable=variable)
            leads = [i for i in range(fields.sizes["map_lead"]) if np.isfinite(forecast.isel(map_lead=i).values).any()]
            figure = Figure(figsize=(12, 3.2 * len(leads)))
            for row, i in enumerate(leads):
                f, t = forecast.isel(map_lead=i).values, truth.isel(map_lead=i).values
                lo, hi = np.nanmin(t), np.nanmax(t)
                error = f - t
                bound = np.nanmax(np.abs(error)) or 1.0
                extent = None
                if spatial == [LATITUDE_DIM, LONGITUDE_DIM]:
                    lat, lon = fields[LATITUDE_DIM].values, fields[LONGITUDE_DIM].values
                    extent = [lon[0], lon[-1], lat[0], lat[-1]]
                lead = format_lead(fields["map_lead"].values[i])
                for column, (title, data, kwargs) in enumerate((
                        ("forecast", f, {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
                        ("truth", t, {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
                        ("error (forecast - truth)", error, {"vmin": -bound, "vmax": bound, "cmap": "RdBu_r"}))):
                    ax = figure.add_subplot(len(leads), 3, 3 * row + column + 1)
                    image = ax.imshow(data, origin="lower", extent=extent, aspect="auto", **kwargs)
                    ax.set_title(f"{model} {variable} {title}, lead {lead}", fontsize=9)
                    figure.colorbar(image, ax=ax, shrink=0.8)
            figure.subplots_adjust(left=0.05, right=0.97, bottom=0.08 / len(leads), top=1 - 0.08 / len(leads),
                                   hspace=0.35, wspace=0.25)
            written.append(_save(figure, out / f"fields_{_safe(model)}_{_safe(variable)}.png"))
    return written


def plot_spectra(card: xr.Dataset, out: Path) -> list[Path]:
    """Forecast and truth spectra (log-log) at the last lead scored, one figure per variable and spectrum (a panel
    per latitude band, or per other dim between lead and wavenumber)."""
    written = []
    for key in spectra(card):
        written += _plot_spectrum(card, key, out)
    return written


def _plot_spectrum(card: xr.Dataset, key: str, out: Path) -> list[Path]:
    wavenumber = card[key].dims[-1]
    between = [d for d in card[key].dims if d not in ("model", "variable", LEAD_DIM, wavenumber)]
    bands = list(card[between[0]].values) if between else [None]
    lead = card[LEAD_DIM].values[-1]
    written = []
    k = card[wavenumber].values
    keep = k > 0
    for variable in card["variable"].values:
        figure = Figure(figsize=(4.5 * len(bands), 3.8))
        for column, band in enumerate(bands):
            ax = figure.add_subplot(1, len(bands), column + 1)
            select = {"variable": variable, LEAD_DIM: lead, **({between[0]: band} if band else {})}
            truth_drawn = False
            for model in card["model"].values:
                values = card[key].sel(model=model, **select).values
                if not np.isfinite(values).any():
                    continue
                if not truth_drawn:
                    truth = card[key + "_truth"].sel(model=model, **select).values[keep]
                    ax.loglog(k[keep], truth, "k-", linewidth=2, label="truth")
                    peak = np.nanmax(truth)
                    truth_drawn = True
                ax.loglog(k[keep], values[keep], label=str(model))
            if truth_drawn and peak > 0:  # rounding-level energies would stretch the axis over dozens of decades
                ax.set_ylim(bottom=1e-8 * peak)
            ax.set_title(f"{variable} {key}{' ' + band if band else ''}, lead {format_lead(lead)}", fontsize=9)
            ax.set_xlabel(wavenumber)
            ax.grid(alpha=0.3, which="both")
            if column == 0:
                ax.legend(fontsize=8)
        figure.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.9, wspace=0.3)
        written.append(_save(figure, out / f"{key}_{_safe(variable)}.png"))
    return written


def plot_all(result, out: str | Path) -> list[Path]:
    """Every plot of an :class:`earthsim.score.evaluation.Evaluation` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return plot_scores(result.scorecard, out) + plot_fields(result.fields, out) + plot_spectra(result.scorecard, out)
