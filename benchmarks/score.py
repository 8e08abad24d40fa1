"""Scoring, side by side: earthsim's scorer against xskillscore on the same forecast store, checked against float64.

Builds a weather forecast store in the WeatherBench 2 layout (default 840 initial times 6 h apart ×
10 leads × 3 variables on a 32 × 64 equiangular grid, float32: 206 MB, chunked by 40 initial
times, Zarr's default compression), its truth (a catalog entry over a store of every valid time)
and a day-of-year × hour climatology, then computes in one run, on the same data:

- earthsim: ``earthsim.score.evaluate(..., metrics=("rmse", "acc"))``: latitude-weighted RMSE (sqrt of
  the time-mean MSE) and the uncentred ACC, from opening the stores to the scorecard;
- xskillscore: the same alignment with xarray (truth and climatology selected at each valid time),
  ``xs.mse(..., weights=w)`` averaged over initial times then square-rooted, and ``xs.pearson_r`` on
  anomalies (xskillscore's ACC is centred: the nearest it offers, with the same work), computed
  with dask from the same stores;
- numpy float64 (the reference): every field read into float64 arrays and reduced with plain numpy;
  the uncentred ACC is the reference for earthsim's, the centred one for xskillscore's;
- numpy float32: the same formulas without float64 accumulation, to show the drift it causes.

Each scorer runs ``--repeat`` times after one warm-up (page cache warm); the fastest counts (the
machine may be shared). The table gives seconds, the speed-up over xskillscore and the largest
relative difference to the float64 reference over leads and variables. A second table gives
the memory earthsim's scorer allocates at its peak (tracemalloc) at the store's size and at four
times as many initial times: it reads forecast and truth block by block, so the peak stays flat.

    python benchmarks/score.py                  # 206 MB store
    python benchmarks/score.py --quick --json score.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tracemalloc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from report import add_json_argument, publish

VARIABLES = {"z500": ("m**2 s**-2", 54000.0, 900.0), "t850": ("K", 272.0, 8.0), "u200": ("m s**-1", 15.0, 12.0)}
STEP_HOURS = 6


def grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Equiangular grid without poles (WeatherBench 2's 64 × 32 layout)."""
    lat = -90.0 + (np.arange(height) + 0.5) * 180.0 / height
    return lat, np.arange(width) * 360.0 / width


def build(root: Path, inits: int, leads: int, height: int, width: int, chunk: int) -> dict:
    """Forecast, truth and climatology stores plus the truth's catalog entry."""
    from earthsim.data.store import write_zarr

    rng = np.random.default_rng(0)
    lat, lon = grid(height, width)
    frames = inits + leads - 1
    times = pd.date_range("2020-01-01", periods=frames, freq=f"{STEP_HOURS}h")
    pattern = np.cos(np.deg2rad(lat))[:, None] * np.cos(np.deg2rad(lon))[None, :]
    truth, forecast, clim = {}, {}, {}
    doy, hours = np.arange(1, 367), np.arange(0, 24, STEP_HOURS)
    seasonal = np.cos(2 * np.pi * doy / 366.0)
    for name, (units, mean, scale) in VARIABLES.items():
        climate = mean + scale * (pattern[None, None] * seasonal[None, :, None, None]
                                  + 0.1 * hours[:, None, None, None] / 24.0)
        clim[name] = (("hour", "dayofyear", "latitude", "longitude"), climate.astype(np.float32), {"units": units})
        t_index = pd.DatetimeIndex(times)
        base = climate[t_index.hour.values // STEP_HOURS, t_index.day_of_year.values - 1]
        values = base + scale * 0.5 * rng.standard_normal((frames, height, width))
        truth[name] = (("time", "latitude", "longitude"), values.astype(np.float32), {"units": units})
        index = np.arange(inits)[:, None] + np.arange(leads)[None, :]
        error_scale = scale * 0.05 * (1 + np.arange(leads))[None, :, None, None]
        fc = np.empty((inits, leads, height, width), np.float32)
        for start in range(0, inits, 100):  # bounded memory while building
            part = slice(start, min(inits, start + 100))
            fc[part] = values[index[part]] + error_scale * rng.standard_normal((fc[part].shape[0], leads, height,
                                                                               width))
        forecast[name] = (("time", "prediction_timedelta", "latitude", "longitude"), fc, {"units": units})
    space = {"latitude": lat, "longitude": lon}
    root.mkdir(parents=True, exist_ok=True)
    paths = {"forecast": root / "forecast.zarr", "truth": root / "truth.zarr", "climatology": root / "clim.zarr"}
    write_zarr(xr.Dataset(forecast, coords={"time": times[:inits], "prediction_timedelta":
                                            pd.to_timedelta(np.arange(leads) * STEP_HOURS, "h").values, **space}),
               paths["forecast"], encoding={n: {"chunks": (chunk, leads, height, width)} for n in VARIABLES},
               progress=False)
    write_zarr(xr.Dataset(truth, coords={"time": times, **space}), paths["truth"],
               encoding={n: {"chunks": (chunk, height, width)} for n in VARIABLES}, progress=False)
    write_zarr(xr.Dataset(clim, coords={"hour": hours, "dayofyear": doy, **space}), paths["climatology"],
               encoding={n: {"chunks": (1, 366, height, width)} for n in VARIABLES}, progress=False)
    entry = {
        "name": "score-bench-truth", "kind": "weather", "description": "benchmark truth", "store": str(paths["truth"]),
        "variables": {n: {"units": u} for n, (u, _, _) in VARIABLES.items()},
        "grid": {"latitude": {"start": float(lat[0]), "stop": float(lat[-1]), "size": height},
                 "longitude": {"start": 0.0, "stop": float(lon[-1]), "size": width},
                 "longitude_convention": "[0, 360)"},
        "time": {"start": times[0].isoformat(), "stop": times[-1].isoformat(), "step": f"{STEP_HOURS}h"},
        "splits": {"train": {"start": times[0].isoformat(), "stop": times[-1].isoformat()}},
        "statistics": str(root / "stats.zarr"), "licence": "synthetic", "provenance": "benchmarks/score.py",
    }
    paths["entry"] = root / "score-bench-truth.yaml"
    paths["entry"].write_text(yaml.safe_dump(entry))
    return paths


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_earthsim(paths: dict) -> dict:
    from earthsim.score import evaluate

    card = evaluate([f"earthsim={paths['forecast']}"], str(paths["entry"]), climatology=str(paths["climatology"]),
                    progress=False, metrics=("rmse", "acc")).scorecard.sel(model="earthsim", variable=list(VARIABLES))
    return {"rmse": card["rmse"].transpose("variable", "prediction_timedelta").values,
            "acc": card["acc"].transpose("variable", "prediction_timedelta").values}


def _aligned_xarray(paths: dict):
    """Forecast, truth and climatology with xarray/dask, truth and climatology taken at each valid time."""
    forecast = xr.open_zarr(paths["forecast"], consolidated=False)
    truth = xr.open_zarr(paths["truth"], consolidated=False)
    clim = xr.open_zarr(paths["climatology"], consolidated=False)
    valid = forecast.time + forecast.prediction_timedelta
    truth_at = truth.sel(time=valid).drop_vars("time").assign_coords(time=forecast.time)
    clim_at = clim.sel(dayofyear=valid.dt.dayofyear, hour=valid.dt.hour).drop_vars(["dayofyear", "hour"])
    return forecast, truth_at, clim_at


def peak_memory(paths: dict) -> dict:
    """Peak memory earthsim's scorer allocates (tracemalloc: Python and numpy buffers) while scoring, in MB."""
    tracemalloc.start()
    try:
        run_earthsim(paths)
        return {"peak_mb": tracemalloc.get_traced_memory()[1] / 1e6}
    finally:
        tracemalloc.stop()


def run_xskillscore(paths: dict, weights: np.ndarray) -> dict:
    import xskillscore as xs

    forecast, truth, clim = _aligned_xarray(paths)
    w = xr.DataArray(np.broadcast_to(weights[:, None], (forecast.sizes["latitude"], forecast.sizes["longitude"])),
                     dims=("latitude", "longitude"),
                     coords={"latitude": forecast.latitude, "longitude": forecast.longitude})
    space = ["latitude", "longitude"]
    rmse = np.sqrt(xs.mse(forecast, truth, dim=space, weights=w).mean("time"))
    acc = xs.pearson_r(forecast - clim, truth - clim, dim=space, weights=w).mean("time")
    rmse, acc = rmse.compute(), acc.compute()
    names = list(VARIABLES)
    return {"rmse": np.stack([rmse[n].values for n in names]), "acc": np.stack([acc[n].values for n in names])}


def run_numpy(paths: dict, weights: np.ndarray, dtype) -> dict:
    """Plain numpy in ``dtype`` (float64: the reference; float32: no float64 accumulation).

    Returns RMSE, the uncentred ACC and the centred ACC (Pearson's r on anomalies, weighted).
    """
    forecast, truth, clim = _aligned_xarray(paths)
    w = (weights / weights.sum() / forecast.sizes["longitude"]).astype(dtype)[:, None]
    out = {"rmse": [], "acc": [], "acc_centred": []}
    for name in VARIABLES:
        f = forecast[name].values.astype(dtype)
        t = truth[name].transpose(*forecast[name].dims).values.astype(dtype)
        c = clim[name].transpose(*forecast[name].dims).values.astype(dtype)
        mse = (((f - t) ** 2) * w).sum(axis=(-2, -1), dtype=dtype)
        out["rmse"].append(np.sqrt(mse.mean(axis=0, dtype=dtype)))
        fa, ta = f - c, t - c
        out["acc"].append(((fa * ta * w).sum(axis=(-2, -1), dtype=dtype) / np.sqrt(
            (fa * fa * w).sum(axis=(-2, -1), dtype=dtype) * (ta * ta * w).sum(axis=(-2, -1), dtype=dtype)))
            .mean(axis=0, dtype=dtype))
        fc = fa - (fa * w).sum(axis=(-2, -1), keepdims=True, dtype=dtype)
        tc = ta - (ta * w).sum(axis=(-2, -1), keepdims=True, dtype=dtype)
        out["acc_centred"].append(((fc * tc * w).sum(axis=(-2, -1), dtype=dtype) / np.sqrt(
            (fc * fc * w).sum(axis=(-2, -1), dtype=dtype) * (tc * tc * w).sum(axis=(-2, -1), dtype=dtype)))
            .mean(axis=0, dtype=dtype))
    return {k: np.stack(v).astype(np.float64) for k, v in out.items()}


def timed(function, repeat: int) -> tuple[float, dict]:
    """Fastest of ``repeat`` runs after one warm-up, and the result."""
    result = function()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small store (120 initial times, 29 MB); under a minute")
    parser.add_argument("--inits", type=int, help="initial times (default 840: 206 MB; 120 with --quick)")
    parser.add_argument("--leads", type=int, default=10, help="lead times, 6 h apart (default 10)")
    parser.add_argument("--height", type=int, default=32, help="latitudes (default 32)")
    parser.add_argument("--width", type=int, default=64, help="longitudes (default 64)")
    parser.add_argument("--repeat", type=int,
                        help="timed runs per scorer; the fastest counts (default 3; 1 with --quick)")
    parser.add_argument("--dir", help="where to build the stores (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    inits = args.inits or (120 if args.quick else 840)
    repeat = args.repeat or (1 if args.quick else 3)
    root = Path(args.dir or tempfile.mkdtemp(prefix="earthsim-score-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        print(f"building stores in {root} ...", file=sys.stderr)
        paths = build(root, inits, args.leads, args.height, args.width, chunk=40)
        from earthsim.data.grid import latitude_weights

        weights = latitude_weights(grid(args.height, args.width)[0])
        size = args.leads * inits * len(VARIABLES) * args.height * args.width * 4
        runs = {}
        for name, function in (("earthsim", lambda: run_earthsim(paths)),
                               ("xskillscore", lambda: run_xskillscore(paths, weights)),
                               ("numpy float64 (reference)", lambda: run_numpy(paths, weights, np.float64)),
                               ("numpy float32", lambda: run_numpy(paths, weights, np.float32))):
            print(f"timing {name} ...", file=sys.stderr)
            runs[name] = timed(function, repeat)
        reference = runs["numpy float64 (reference)"][1]
        baseline = runs["xskillscore"][0]
        rows = []
        for name, (seconds, result) in runs.items():
            acc_reference = reference["acc_centred"] if name == "xskillscore" else reference["acc"]
            rows.append({
                "scorer": name, "seconds": seconds, "speedup_vs_xskillscore": baseline / seconds,
                "max_rel_diff_rmse": relative(result["rmse"], reference["rmse"]),
                "max_rel_diff_acc": relative(result["acc"], acc_reference),
                "acc": "centred (pearson_r on anomalies)" if name == "xskillscore" else "uncentred (WB2)",
            })
        print("peak memory at two sizes ...", file=sys.stderr)
        memory = [{"initial_times": inits, "data_bytes": size, **peak_memory(paths)}]
        larger = build(root / "larger", 4 * inits, args.leads, args.height, args.width, chunk=40)
        memory.append({"initial_times": 4 * inits, "data_bytes": 4 * size, **peak_memory(larger)})
        report = {
            "memory": memory,
            "store": {"initial_times": inits, "leads": args.leads, "variables": len(VARIABLES),
                      "grid": [args.height, args.width], "dtype": "float32", "data_bytes": size,
                      "bytes_on_disk": store_bytes(paths["forecast"]), "chunk_initial_times": 40},
            "repeat": repeat, "rows": rows,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        }
        lines = [f"forecast store: {inits} initial times × {args.leads} leads × {len(VARIABLES)} variables × "
                 f"{args.height} × {args.width} float32 = {size / 1e6:.0f} MB "
                 f"({store_bytes(paths['forecast']) / 1e6:.0f} MB on disk); RMSE and ACC per variable and lead; "
                 f"fastest of {repeat}", "",
                 "| scorer | seconds | speed-up vs xskillscore | max rel. diff RMSE | max rel. diff ACC | ACC |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {row['scorer']} | {row['seconds']:.3f} | {row['speedup_vs_xskillscore']:.1f}× | "
                  f"{row['max_rel_diff_rmse']:.1e} | {row['max_rel_diff_acc']:.1e} | {row['acc']} |" for row in rows]
        lines += ["", "earthsim's peak allocated memory while scoring (tracemalloc; RMSE and ACC as above):", "",
                  "| initial times | forecast data (MB) | peak allocated (MB) |", "|---|---|---|"]
        lines += [f"| {m['initial_times']} | {m['data_bytes'] / 1e6:.0f} | {m['peak_mb']:.0f} |" for m in memory]
        publish("\n".join(lines), report, args.json)
        return report
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
