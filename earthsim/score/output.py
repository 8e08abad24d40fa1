"""The scorecard written out: netCDF, CSV (scores and spectra in long form) and Markdown, each to a temporary
name renamed when complete (plots are :mod:`earthsim.score.plots`); the whole output folder too
(:func:`output_folder`), so that a failed or interrupted scoring leaves nothing new under ``--out``."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import xarray as xr

from earthsim.data import store
from earthsim.data.conventions import LEAD_DIM, LEVEL_DIM, lead_numbers
from earthsim.errors import EarthsimError, reason
from earthsim.score.align import format_lead
from earthsim.score.metrics import METRICS


#: What ``earthsim score`` writes into its output folder (anything else there is left alone).
OUTPUTS = ("scorecard.nc", "scorecard.csv", "scorecard.md", "spectra.csv", "plots")


@contextlib.contextmanager
def output_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``out`` (inside it when only ``out`` can be written) to write the scores
    into; when the block succeeds, its contents become ``out``'s (renamed to ``out`` when ``out`` does not exist;
    else each output replaces its older copy and outputs of an earlier run that this one did not write are removed,
    other files being left alone).

    Whether ``out`` can be written is found out before the block runs (by making the temporary), so a scoring that
    could not be saved is refused before any work. On any exception the temporary is removed and
    ``out`` is left as it was; an error writing names ``out``. Temporaries of ``out`` left by killed runs are removed
    first.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EarthsimError(f"--out {out} is a file; the scores need a folder (scorecard.nc, scorecard.csv, "
                            "scorecard.md, plots/)")
    final = Path(os.path.abspath(out))  # "." and "a/.." have a name too
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EarthsimError(f"--out {out}: cannot create its folder {parent}: {error.strerror or reason(error)}") \
            from None
    if out.exists() and not os.access(out, os.W_OK | os.X_OK):
        raise EarthsimError(f"--out {out}: the folder is not writable")
    store.remove_stale_temporaries(final)
    store.remove_stale_temporaries(final / ".scores")
    suffix = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:  # the test write: a temporary beside out, else (out exists, its parent is read-only) inside it
        tmp = parent / f"{final.name}{suffix}"
        tmp.mkdir()
    except OSError as error:
        if not final.is_dir():
            raise EarthsimError(f"--out {out}: cannot write in {parent}: {error.strerror or reason(error)}") from None
        try:
            tmp = final / f".scores{suffix}"
            tmp.mkdir()
        except OSError as error:
            raise EarthsimError(f"--out {out}: cannot write in it: {error.strerror or reason(error)}") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _install(tmp, final)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EarthsimError(f"--out {out}: moving the scores into place failed: {error.strerror or reason(error)}"
                            + (f" ({error.filename})" if error.filename else "")) from None


def _install(tmp: Path, out: Path) -> None:
    """Move the scores written into ``tmp`` to ``out``."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for name in OUTPUTS:  # an earlier run's outputs go, this run's take their place
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        if (tmp / name).exists():
            os.replace(tmp / name, target)
    shutil.rmtree(tmp)


def _atomic_write(path: Path, write) -> Path:
    with store.atomic_output(path, overwrite=True) as tmp:
        write(tmp)
    return path


def _lead_units(card: xr.Dataset) -> str:
    if np.issubdtype(card[LEAD_DIM].dtype, np.timedelta64):
        return "hours"
    return str(card[LEAD_DIM].attrs.get("units", "solver time units"))


def _lead_series(values: pd.Series) -> pd.Series:
    """A column of leads as numbers: hours for timedeltas, solver units otherwise."""
    return pd.Series(lead_numbers(values.to_numpy()), index=values.index, name=values.name)


def spectra(card: xr.Dataset) -> list[str]:
    """The spectra in the scorecard: scores with a ``<name>_truth`` companion."""
    return [key for key in card.data_vars if f"{key}_truth" in card.data_vars]


def _extra_dims(da: xr.DataArray) -> list[str]:
    return [d for d in da.dims if d not in ("model", "variable", LEAD_DIM)]


def _scores(card: xr.Dataset) -> list[str]:
    """Scores with at most one dim besides model, variable and lead (threshold, band, ...); spectra excluded."""
    pairs = set(spectra(card)) | {f"{key}_truth" for key in spectra(card)}
    return [key for key, da in card.data_vars.items()
            if "variable" in da.dims and key not in pairs and len(_extra_dims(da)) <= 1]


def scores_frame(card: xr.Dataset) -> pd.DataFrame:
    """The scorecard's scores (all but the spectra) in long form: model, variable, level, lead, metric, value."""
    rows = []
    for key in _scores(card):
        da = card[key]
        frame = da.drop_vars([c for c in da.coords if c not in da.dims]).to_dataframe(name="value").reset_index()
        extra = _extra_dims(da)
        frame["metric"] = key if not extra else key + "_" + frame[extra[0]].astype(str)
        frame["lead"] = _lead_series(frame[LEAD_DIM]) if LEAD_DIM in frame else np.nan
        rows.append(frame[["model", "variable", "lead", "metric", "value"]])
    frame = pd.concat(rows, ignore_index=True)
    frame["lead_units"] = _lead_units(card)
    level = dict(zip(card["variable"].values.tolist(), card[LEVEL_DIM].values.tolist()))
    frame["level"] = frame["variable"].map(level)
    return frame[["model", "variable", "level", "lead", "lead_units", "metric", "value"]]


def spectra_frame(card: xr.Dataset) -> pd.DataFrame | None:
    """Spectra in long form (model, variable, lead, [lat_band], wavenumber, forecast, truth), or None."""
    parts = []
    for key in spectra(card):
        wavenumber = card[key].dims[-1]
        pair = xr.Dataset({"forecast": card[key], "truth": card[key + "_truth"]})
        pair = pair.drop_vars([c for c in pair.coords if c not in pair.dims])
        frame = pair.to_dataframe().reset_index().rename(columns={wavenumber: "wavenumber"})
        frame["spectrum"] = key
        frame["lead"] = _lead_series(frame[LEAD_DIM])
        parts.append(frame)
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True)
    frame["lead_units"] = _lead_units(card)
    extra = [c for c in frame.columns if c not in ("model", "variable", LEAD_DIM, "lead", "lead_units", "spectrum",
                                                    "wavenumber", "forecast", "truth")]
    return frame[["model", "variable", "lead", "lead_units", "spectrum", *extra, "wavenumber", "forecast", "truth"]]


def _fmt(value: float, missing: str = "—", infinite: str = "—") -> str:
    return missing if np.isnan(value) else infinite if np.isinf(value) else f"{value:.4g}"


def _scored_pairs(card: xr.Dataset) -> set[tuple[str, str]]:
    """The (model, variable) pairs with any finite score: the variables each model forecast."""
    pairs = set()
    for model in card["model"].values:
        for variable in card["variable"].values:
            if any(np.isfinite(card[key].sel(model=model, variable=variable).values).any() for key in _scores(card)):
                pairs.add((model, variable))
    return pairs


def markdown_table(card: xr.Dataset, max_leads: int = 8) -> str:
    """The scorecard as Markdown: a table per headline score (rows model × variable, columns leads), and per score
    with another dim a table of its values along that dim (at the last lead)."""
    leads = card[LEAD_DIM].values
    chosen = np.unique(np.linspace(0, len(leads) - 1, min(max_leads, len(leads))).round().astype(int))
    header_leads = [format_lead(leads[i]) for i in chosen]
    lines = [f"# Scorecard against {card.attrs.get('truth', '?')}", ""]
    owners = {key: cls for cls in METRICS.values() for key in cls.output_dims()}
    scored = _scored_pairs(card)
    for key in _scores(card):
        da, owner = card[key], owners.get(key)
        extra = _extra_dims(da)
        if not extra and (LEAD_DIM not in da.dims or owner is None or not owner.headline):
            continue  # not a headline score along the lead (mse, data_range, ...)
        convention = da.attrs.get("convention", "") + (f"; units {da.attrs['units']}" if "units" in da.attrs else "")
        if extra:
            title = f"{key} at lead {format_lead(leads[-1])}" if LEAD_DIM in da.dims else key
            columns = [f"{extra[0]} {v:g}" if isinstance(v, (float, np.floating)) else str(v)
                       for v in card[extra[0]].values]
        else:
            title, columns = key, header_leads
        lines += [f"## {title}", "", f"_{convention}_", "", "| model | variable | " + " | ".join(columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        missing, infinite = (owner.missing_text, owner.infinite_text) if owner is not None else ("—", "—")
        for model in card["model"].values:
            for variable in card["variable"].values:
                if (model, variable) not in scored:
                    continue  # a variable the model does not forecast: no row, rather than a "missing" one
                values = da.sel(model=model, variable=variable)
                row = values.isel({LEAD_DIM: -1}).values if extra and LEAD_DIM in da.dims else \
                    values.values if extra else values.values[chosen]
                if not np.isnan(row).all() or missing != "—":
                    lines.append(f"| {model} | {variable} | " + " | ".join(_fmt(v, missing, infinite) for v in row)
                                 + " |")
        lines.append("")
    return "\n".join(lines)


def write_scorecard(card: xr.Dataset, out: str | os.PathLike) -> dict[str, Path]:
    """Write ``scorecard.nc``, ``scorecard.csv``, ``spectra.csv`` (if any) and ``scorecard.md`` atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"netcdf": _atomic_write(out / "scorecard.nc", lambda tmp: card.to_netcdf(tmp)),
               "csv": _atomic_write(out / "scorecard.csv", lambda tmp: scores_frame(card).to_csv(tmp, index=False))}
    table = spectra_frame(card)
    if table is not None:
        written["spectra"] = _atomic_write(out / "spectra.csv", lambda tmp: table.to_csv(tmp, index=False))
    text = markdown_table(card)
    written["markdown"] = _atomic_write(out / "scorecard.md", lambda tmp: tmp.write_text(text + "\n"))
    return written
