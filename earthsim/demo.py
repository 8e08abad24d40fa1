"""The end-to-end demo behind `make demo`: the whole path on built-in data, in minutes on a laptop CPU.

Kolmogorov flow: simulate → catalog → statistics → stream batches → train an FNO → forecast the test
trajectories → score against persistence and the numerical solver at the same resolution.
ERA5 UK 2 m temperature (real data): ingest → statistics and climatology → persistence and
climatology baselines at 1–24 h → score.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from earthsim import catalog
from earthsim.data.loader import make_loader
from earthsim.data.stats import compute_climatology, compute_statistics
from earthsim.data.windows import WindowDataset
from earthsim.forecast import climatology_forecast, persistence, run_forecast, solver_baseline
from earthsim.score import markdown_table, score
from earthsim.train.config import load_experiment
from earthsim.train.trainer import train

FLUID, WEATHER, EXPERIMENT = "kolmogorov-64", "era5-uk-t2m", "kolmogorov-fno"


def _section(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def _prepare(name: str) -> catalog.DatasetEntry:
    entry = catalog.get_entry(name)
    if not entry.exists():
        print(f"making {entry.store} ({entry.source.command(name)})", flush=True)
    ds = catalog.open_dataset(entry)
    print(f"{name}: {entry.store} " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
    print(f"statistics: {compute_statistics(entry)}")
    if entry.kind == "weather":
        print(f"climatology: {compute_climatology(entry)}")
    return entry


def _stream(entry: catalog.DatasetEntry, t_in: int, batches: int = 2) -> None:
    dataset = WindowDataset(entry, "train", t_in=t_in, t_out=1)
    loader = make_loader(dataset, batch_size=8, num_workers=2, shuffle=True, seed=0)
    start = time.perf_counter()
    for i, batch in zip(range(batches), loader):
        print(f"batch {i}: x {tuple(batch['x'].shape)} y {tuple(batch['y'].shape)}, normalised x mean "
              f"{batch['x'].mean():+.3f} std {batch['x'].std():.3f}, lead_time {batch['lead_time'][0]:g}")
    print(f"{len(dataset)} training windows; {batches} batches streamed in {time.perf_counter() - start:.1f} s "
          f"with 2 workers")


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None) -> None:
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)  # the demo's own previous output
    started = time.perf_counter()

    _section(f"Kolmogorov flow: simulate, statistics, stream ({FLUID})")
    fluid = _prepare(FLUID)
    _stream(fluid, t_in=1)

    _section(f"train {EXPERIMENT}")
    overrides = [] if epochs is None else [f"epochs={epochs}"]
    summary = train(load_experiment(EXPERIMENT, overrides), out / EXPERIMENT)
    print(f"validation after training: {summary['validation']}")

    steps = 10
    _section(f"forecast the test trajectories {steps} steps ahead, and the baselines")
    forecasts = out / "forecasts"
    stores = {
        "fno": run_forecast(out / EXPERIMENT, FLUID, "test", steps=steps, out=forecasts / "fno.zarr"),
        "persistence": persistence(FLUID, "test", steps=steps, out=forecasts / "persistence.zarr"),
        "solver-64": solver_baseline(FLUID, "test", steps=steps, out=forecasts / "solver-64.zarr"),
    }
    _section("scorecard: Kolmogorov flow (test trajectories)")
    card = score([f"{k}={v}" for k, v in stores.items()], FLUID, out / "scores" / FLUID)
    print(markdown_table(card))

    _section(f"ERA5 UK 2 m temperature: ingest, statistics, climatology, stream ({WEATHER})")
    weather = _prepare(WEATHER)
    _stream(weather, t_in=3)
    _section("scorecard: ERA5 UK t2m baselines, test week, 1-24 h")
    baselines = {
        "persistence": persistence(WEATHER, "test", steps=24, out=forecasts / "era5-persistence.zarr"),
        "climatology": climatology_forecast(WEATHER, "test", steps=24, out=forecasts / "era5-climatology.zarr"),
    }
    card = score([f"{k}={v}" for k, v in baselines.items()], WEATHER, out / "scores" / WEATHER,
                 leads=["1h", "6h", "12h", "24h"])
    print(markdown_table(card))

    print(f"\nscorecards and plots: {out / 'scores'} (scorecard.md, scorecard.nc, scorecard.csv, plots/*.png)")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
