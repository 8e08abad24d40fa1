"""Pipeline jobs on a dask.distributed cluster, side by side: earthsim's statistics and climatology against
xarray + dask's own equivalents, on the same cluster and store.

The pipeline jobs ``python -m pipelines.statistics NAME`` and ``python -m pipelines.climatology NAME`` call
``earthsim.data.stats.compute_statistics`` and ``compute_climatology`` while a ``dask.distributed.Client`` is
active, so that dask computes on the cluster. This runs exactly that: each job's ``main(argv)`` with
``--scheduler`` naming the benchmark's cluster (``--overwrite --no-progress``).

The store is weather-like: 6-hourly frames from 2000-01-01 (a leap year) over ``--days`` days (default 731,
two years; ``--quick`` 90), variables z, t, u on 7 pressure levels and t2m at the surface (``--quick``: z and t
on 4 levels) on a latitude/longitude grid (default 64 × 128, ``--quick`` 40 × 80), float32, uncompressed,
chunked in blocks of whole time steps of about 8 MiB (``--chunk-mib``; ``earthsim ingest`` writes 1 MiB
chunks, on which both statistics and earthsim's climatology ran 3-4 times slower in a ``--quick`` run on 1
worker: the cluster's cost per task, and for earthsim's climatology a whole 366-day partial result per
chunk, grow with the number of chunks), with a catalog entry in a folder on ``EARTHSIM_CATALOGS`` (train split = every frame). Values: a
seasonal and a diurnal cycle over a level mean, plus noise (the values do not change the work).

On a ``LocalCluster`` of 1 and of 2 workers (``--workers``), made as the jobs make theirs
(``earthsim.data.cluster.cluster``: worker processes, 1 thread each), each run connects a Client to it (as a
job does) and computes, with the page cache warm (the store is read once first) and the workers' imports
done:

- statistics: earthsim's ``compute_statistics`` (mean, std, std of one-step differences and the count of
  non-finite values of every variable per level, float64, in one pass; written as a small Zarr store) against
  xarray's ``ds.astype("float64").mean(dims)`` and ``.std(dims)`` over the same dims (every dim but level),
  computed together and written the same way — less work than earthsim's — and against xarray computing
  earthsim's outputs (the same plus ``.diff("time").std(dims)`` and ``(~np.isfinite(ds)).sum()``);
- climatology: earthsim's ``compute_climatology`` (mean by hour of day × day of year, smoothed over a 61-day
  triangular window as WeatherBench 2; ``--window-days``; written as a Zarr store) against xarray's plain
  groupby: for each hour of day, ``ds.astype("float64").isel(time=hour == h).groupby("time.dayofyear").mean()``,
  concatenated over hours, float32, written as a Zarr store — without WB2's smoothing window (a smoothed
  climatology is not one groupby). flox is not installed (not a dependency), so xarray's groupby reduces
  group by group.

Rate = store bytes ÷ wall time (MB = 10^6 bytes; the store's bytes on disk, uncompressed). Each job runs
``--repeat`` times, earthsim and xarray alternating; the fastest counts (the machine may be shared).
With ``--window-days 1`` earthsim's climatology is the plain groupby, and the JSON gives the largest
relative difference between the two (days 1-365; day 366 differs by design: earthsim fills it in non-leap
years from day 365, as WB2); the statistics' difference is always given.

``--quick`` (90 days) runs in under a minute on a shared 2-core machine: xarray's groupby costs about the same
per day × hour group whatever the grid, so the number of days sets its time (a year has 1464 groups per
variable). The default size takes about 17 minutes there.

    python benchmarks/pipelines.py                  # 2.1 GB store, 1 and 2 workers
    python benchmarks/pipelines.py --quick --json pipelines.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from report import add_json_argument, publish

REPO = Path(__file__).resolve().parents[1]
NAME = "pipelines-bench"
LEVELS = (50, 250, 500, 600, 700, 850, 925)
QUICK_LEVELS = (250, 500, 700, 850)
#: name: (units, long name, mean at 1000 hPa or the surface, mean change per hPa lower pressure, spread)
VARIABLES = {
    "z": ("m**2 s**-2", "Geopotential", 1.0e3, 2.0e2, 3.0e3),
    "t": ("K", "Temperature", 290.0, 0.08, 12.0),
    "u": ("m s**-1", "U component of wind", 2.0, -0.02, 10.0),
    "t2m": ("K", "2 metre temperature", 288.0, 0.0, 15.0),
}
QUICK_VARIABLES = ("z", "t")
SURFACE = ("t2m",)
CHUNK_MIB = 8.0  # a block of whole time steps per chunk of about this many MiB (earthsim ingest writes 1 MiB)


# -- the store ---------------------------------------------------------------------------------------------------


def field_block(variable: str, levels: tuple, times: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Values of ``variable`` at ``times``: float32 [time, (level,) lat, lon]: level mean, seasonal cycle growing
    towards the poles, diurnal cycle following the sun, noise."""
    _, _, base, lapse, spread = VARIABLES[variable]
    stamps = times.astype("datetime64[h]").astype(np.int64)
    season = np.cos(2 * np.pi * (stamps / 24.0 / 365.25))[:, None, None] * np.sin(np.deg2rad(lat))[None, :, None]
    sun = np.cos(2 * np.pi * (stamps % 24)[:, None, None] / 24.0 + np.deg2rad(lon)[None, None, :])
    shape = (len(times), len(lat), len(lon))
    rng = np.random.default_rng([list(VARIABLES).index(variable), int(stamps[0])])
    if variable in SURFACE:
        cycle = spread * (0.5 * season + 0.2 * sun)
        return (base + cycle + 0.3 * spread * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    out = np.empty((len(times), len(levels), len(lat), len(lon)), dtype=np.float32)
    for k, level in enumerate(levels):
        cycle = spread * (0.5 * season + 0.1 * sun)
        out[:, k] = base + lapse * (1000 - level) + cycle + 0.3 * spread * rng.standard_normal(shape, dtype=np.float32)
    return out


def build_store(root: Path, days: int, height: int, width: int, variables: tuple, levels: tuple,
                chunk_mib: float) -> tuple[Path, Path, int]:
    """The benchmark store, its catalog entry (``root/catalogs/datasets/NAME.yaml``) and its time chunk."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    from earthsim.data.store import write_zarr

    times = pd.date_range("2000-01-01", periods=days * 4, freq="6h")
    lat = np.linspace(-90 + 90.0 / height, 90 - 90.0 / height, height)
    lon = np.arange(width) * 360.0 / width
    frame_bytes = max((1 if v in SURFACE else len(levels)) * height * width * 4 for v in variables)
    time_chunk = max(1, min(len(times), round(chunk_mib * 2**20 / frame_bytes)))
    data = {}
    for name in variables:
        surface = name in SURFACE
        shape = (len(times), height, width) if surface else (len(times), len(levels), height, width)
        chunks = da.core.normalize_chunks((time_chunk,) + shape[1:], shape)

        def block(name=name, block_info=None):
            first, stop = block_info[None]["array-location"][0]
            return field_block(name, levels, times.values[first:stop], lat, lon)

        dims = ("time", "latitude", "longitude") if surface else ("time", "level", "latitude", "longitude")
        array = da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.array((), np.float32))
        attrs = {"units": VARIABLES[name][0], "long_name": VARIABLES[name][1]}
        data[name] = xr.DataArray(array, dims=dims, attrs=attrs)
    ds = xr.Dataset(data, coords={"time": times, "level": list(levels), "latitude": lat, "longitude": lon})
    store = root / f"{NAME}.zarr"
    encoding = {name: {"chunks": tuple(c[0] for c in data[name].chunks), "compressors": None} for name in variables}
    write_zarr(ds, store, encoding=encoding, progress=True)
    return store, write_entry(root, store, times, lat, lon, variables, levels), time_chunk


def write_entry(root: Path, store: Path, times, lat, lon, variables: tuple, levels: tuple) -> Path:
    """A weather entry as the built-in ones (see catalogs/datasets/wb2-era5-5.625.yaml): the whole period trains."""
    entry = {
        "name": NAME, "kind": "weather",
        "description": "synthetic weather-like store for benchmarks/pipelines.py",
        "store": str(store),
        "variables": {v: {"units": VARIABLES[v][0], "long_name": VARIABLES[v][1]} for v in variables},
        "levels": list(levels),
        "grid": {"latitude": {"start": float(lat[0]), "stop": float(lat[-1]), "size": len(lat)},
                 "longitude": {"start": float(lon[0]), "stop": float(lon[-1]), "size": len(lon)},
                 "longitude_convention": "[0, 360)"},
        "time": {"start": str(times[0]), "stop": str(times[-1]), "step": "6h"},
        "splits": {"train": {"start": str(times[0]), "stop": str(times[-1])}},
        "statistics": str(root / "out" / f"{NAME}.stats.zarr"),
        "climatology": str(root / "out" / f"{NAME}.climatology.zarr"),
        "licence": "synthetic", "provenance": "benchmarks/pipelines.py",
    }
    folder = root / "catalogs" / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return path


def code_version() -> dict:
    """The checkout's commit and whether earthsim/ or pipelines/ differ from it (the code measured)."""
    import subprocess

    def git(*args) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None,
            "uncommitted_changes": git("status", "--short", "--", "earthsim", "pipelines").splitlines()}


def store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def read_once(store: Path) -> None:
    """Read every file of the store (the page cache is then warm for every implementation alike)."""
    for path in store.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass


# -- the jobs ----------------------------------------------------------------------------------------------------


def load_jobs() -> dict:
    """The job modules ``pipelines.statistics`` and ``pipelines.climatology`` of this checkout (this file is also
    called pipelines.py: the repository's package is imported ahead of it)."""
    cached = sys.modules.get("pipelines")
    if cached is not None and Path(getattr(cached, "__file__", "") or "").resolve() == Path(__file__).resolve():
        del sys.modules["pipelines"]  # this benchmark, imported under the package's name
    sys.path.insert(0, str(REPO))
    try:
        return {job: importlib.import_module(f"pipelines.{job}") for job in ("statistics", "climatology")}
    finally:
        sys.path.remove(str(REPO))


def _run_job(module, argv: list[str]) -> None:
    """``module.main(argv)`` as ``python -m pipelines.NAME`` runs it, its output kept unless it fails."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = module.main(argv)
    if status != 0:
        raise RuntimeError(f"{module.__name__} {' '.join(argv)} exited with {status}:\n{out.getvalue()}")


def earthsim_statistics(jobs: dict, address: str, root: Path, window_days: int) -> None:
    _run_job(jobs["statistics"], [NAME, "--scheduler", address, "--overwrite", "--no-progress"])


def earthsim_climatology(jobs: dict, address: str, root: Path, window_days: int) -> None:
    _run_job(jobs["climatology"], [NAME, "--scheduler", address, "--overwrite", "--no-progress",
                                   "--window-days", str(window_days)])


def _open(entry):
    from earthsim import catalog

    return entry.split("train").select(catalog.open_dataset(entry))


def _xarray_statistics(address: str, path: Path, same_outputs: bool) -> None:
    """Mean and std (and with ``same_outputs`` the std of one-step differences and the count of non-finite
    values, as earthsim's) over every dim but level, float64, computed together, written as a small Zarr store."""
    import xarray as xr
    from distributed import Client

    from earthsim import catalog

    train = _open(catalog.get_entry(NAME))
    statistics = ["mean", "std"] + (["diff_std"] if same_outputs else [])
    out = {}
    for name, var in train.data_vars.items():
        x = var.astype("float64")
        dims = [d for d in x.dims if d != "level"]
        values = [x.mean(dims), x.std(dims)] + ([x.diff("time").std(dims)] if same_outputs else [])
        out[name] = xr.concat(values, dim=xr.DataArray(np.array(statistics, dtype=object), dims="statistic"))
        if same_outputs:
            out[f"nonfinite_{name}"] = (~np.isfinite(var)).sum()
    with Client(address):
        xr.Dataset(out).to_zarr(path, mode="w", zarr_format=3, consolidated=False)


def xarray_statistics(jobs: dict, address: str, root: Path, window_days: int) -> None:
    _xarray_statistics(address, root / "out" / "xarray.stats.zarr", same_outputs=False)


def xarray_statistics_same_outputs(jobs: dict, address: str, root: Path, window_days: int) -> None:
    _xarray_statistics(address, root / "out" / "xarray-same.stats.zarr", same_outputs=True)


def xarray_climatology(jobs: dict, address: str, root: Path, window_days: int) -> None:
    """For each hour of day, the plain groupby mean by day of year (no smoothing window), float32, as a Zarr store."""
    import xarray as xr
    from distributed import Client

    from earthsim import catalog

    train = _open(catalog.get_entry(NAME)).astype("float64")
    hours = np.unique(train.time.dt.hour.values)
    means = [train.isel(time=np.flatnonzero(train.time.dt.hour.values == hour)).groupby("time.dayofyear").mean()
             for hour in hours]
    clim = xr.concat(means, dim=xr.DataArray(hours, dims="hour")).astype("float32")
    clim = clim.transpose("hour", "dayofyear", ...).chunk({"hour": 1, "dayofyear": -1})
    with Client(address):
        clim.to_zarr(root / "out" / "xarray.climatology.zarr", mode="w", zarr_format=3, consolidated=False)


XARRAY_SAME = "xarray, earthsim's outputs"
JOBS = {
    "statistics": {"earthsim": earthsim_statistics, "xarray": xarray_statistics,
                   XARRAY_SAME: xarray_statistics_same_outputs},
    "climatology": {"earthsim": earthsim_climatology, "xarray": xarray_climatology},
}


def warm_imports() -> None:
    """Run on each worker before timing: the imports the tasks need."""
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    import earthsim.data.stats  # noqa: F401


def warm_up(store: Path, time_chunk: int) -> None:
    """One small read and reduction on the cluster before timing (the first computation's one-off costs)."""
    import xarray as xr

    xr.open_zarr(store, consolidated=False).isel(time=slice(0, time_chunk)).astype("float64").mean().compute()


def differences(root: Path, window_days: int) -> dict:
    """Largest relative differences between earthsim's and xarray's results (of the last runs)."""
    import xarray as xr

    from earthsim import catalog

    entry = catalog.get_entry(NAME)
    ours = xr.open_zarr(entry.statistics, consolidated=False).load()
    theirs = xr.open_zarr(root / "out" / "xarray.stats.zarr", consolidated=False).load()
    same = xr.open_zarr(root / "out" / "xarray-same.stats.zarr", consolidated=False).load()

    def worst(other, statistics) -> float:
        return max(float(np.max(np.abs(ours[v].sel(statistic=s).values - other[v].sel(statistic=s).values)
                                / np.abs(other[v].sel(statistic=s).values)))
                   for v in ours.data_vars for s in statistics)

    out = {"statistics_max_relative": max(worst(theirs, ("mean", "std")), worst(same, ("mean", "std", "diff_std")))}
    if window_days == 1:
        ours = xr.open_zarr(entry.climatology, consolidated=False)
        theirs = xr.open_zarr(root / "out" / "xarray.climatology.zarr", consolidated=False)
        days = [d for d in theirs.dayofyear.values if d <= 365]
        worst = 0.0
        for v in theirs.data_vars:
            a = ours[v].sel(dayofyear=days).values
            b = theirs[v].sel(dayofyear=days).transpose(*ours[v].dims).values
            worst = max(worst, float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-6))))
        out["climatology_max_relative_days_1_365"] = worst
    else:
        out["climatology_max_relative_days_1_365"] = None  # earthsim's is smoothed: not the same quantity
    return out


# -- the run -----------------------------------------------------------------------------------------------------


def run(args) -> dict:
    import dask
    import distributed
    import xarray as xr

    from earthsim.data.cluster import cluster

    days = args.days or (90 if args.quick else 731)
    height, width = args.grid or ((40, 80) if args.quick else (64, 128))
    variables = QUICK_VARIABLES if args.quick else tuple(VARIABLES)
    levels = QUICK_LEVELS if args.quick else LEVELS
    root = Path(args.dir or tempfile.mkdtemp(prefix="earthsim-pipelines-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    store = root / f"{NAME}.zarr"
    previous = os.environ.get("EARTHSIM_CATALOGS")
    os.environ["EARTHSIM_CATALOGS"] = os.pathsep.join([str(root / "catalogs")] + ([previous] if previous else []))
    load_before = os.getloadavg()
    try:
        if store.exists() and (root / "catalogs" / "datasets" / f"{NAME}.yaml").exists():
            print(f"reusing {store}")
            kept = xr.open_zarr(store, consolidated=False)
            time_chunk = kept[next(iter(kept.data_vars))].encoding["chunks"][0]
        else:
            start = time.perf_counter()
            store, _, time_chunk = build_store(root, days, height, width, variables, levels, args.chunk_mib)
            print(f"built {store} in {time.perf_counter() - start:.1f} s")
        (root / "out").mkdir(exist_ok=True)
        ds = xr.open_zarr(store, consolidated=False)
        size = store_bytes(store)
        shape = {"frames": ds.sizes["time"], "days": ds.sizes["time"] // 4, "grid": [ds.sizes["latitude"],
                 ds.sizes["longitude"]], "variables": {v: list(ds[v].dims) for v in VARIABLES if v in ds.data_vars},
                 "levels": ds["level"].values.tolist(), "time_chunk": int(time_chunk),
                 "chunks": sum(int(np.prod([len(c) for c in ds[v].chunks])) for v in ds.data_vars),
                 "chunk_mib": max(int(np.prod([c[0] for c in ds[v].chunks])) * 4 for v in ds.data_vars) / 2**20}
        code = code_version()  # before the runs: the code they import
        jobs = load_jobs()
        how = ("pipelines.statistics and pipelines.climatology main(argv) with --scheduler (the benchmark's cluster), "
               "--overwrite, --no-progress")
        read_once(store)

        results = []
        for workers in args.workers:
            with cluster(None, workers, threads_per_worker=1, quiet=True) as client:  # the jobs' own LocalCluster
                address = client.scheduler.address
                client.run(warm_imports)
                warm_up(store, int(time_chunk))
                for job, implementations in JOBS.items():
                    passes = {name: [] for name in implementations}
                    for _ in range(args.repeat):
                        for name, function in implementations.items():
                            start = time.perf_counter()
                            function(jobs, address, root, args.window_days)
                            passes[name].append(time.perf_counter() - start)
                    for name, seconds in passes.items():
                        row = {"workers": workers, "job": job, "implementation": name, "seconds": min(seconds),
                               "passes": seconds, "mb_per_s": size / min(seconds) / 1e6}
                        results.append(row)
                        print(f"  workers={workers} {job:11s} {name:26s}: {row['seconds']:7.2f} s "
                              f"{row['mb_per_s']:8.1f} MB/s", flush=True)
        checks = differences(root, args.window_days)
        out_bytes = {"earthsim climatology": store_bytes(root / "out" / f"{NAME}.climatology.zarr"),
                     "xarray climatology": store_bytes(root / "out" / "xarray.climatology.zarr")}

        ratios = {}
        for workers in args.workers:
            rate = {(r["job"], r["implementation"]): r["mb_per_s"] for r in results if r["workers"] == workers}
            ratios[f"workers={workers}"] = {f"{job}: earthsim/{name}": rate[(job, "earthsim")] / rate[(job, name)]
                                            for job, implementations in JOBS.items() for name in implementations
                                            if name != "earthsim"}
        scaling = {}
        if len(args.workers) > 1:
            first, last = args.workers[0], args.workers[-1]
            for job, implementations in JOBS.items():
                for name in implementations:
                    rate = {r["workers"]: r["mb_per_s"] for r in results
                            if (r["job"], r["implementation"]) == (job, name)}
                    scaling[f"{job}, {name}"] = rate[last] / rate[first]
        return {
            "store": {"bytes": size, **shape, "dtype": "float32", "compression": "none"},
            "jobs": how,
            "climatology_output_bytes": out_bytes,
            "window_days": args.window_days,
            "cluster": "The pipeline jobs' LocalCluster (earthsim.data.cluster.cluster): worker processes, 1 thread "
                       "each, default memory limit; every timed run connects its own Client, as a job does",
            "timing": f"fastest of {args.repeat} runs, earthsim and xarray alternating; page cache warm",
            "differences": checks,
            "code": code,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "dask": dask.__version__,
                        "distributed": distributed.__version__, "xarray": xr.__version__,
                        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]}},
            "results": results,
            "ratios": ratios,
            "scaling": scaling,
        }
    finally:
        if previous is None:
            os.environ.pop("EARTHSIM_CATALOGS", None)
        else:
            os.environ["EARTHSIM_CATALOGS"] = previous
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
        elif not args.keep:
            for path in (store, root / "out"):
                shutil.rmtree(path, ignore_errors=True)


def markdown(report: dict) -> str:
    store = report["store"]
    levelled = [v for v, dims in store["variables"].items() if "level" in dims]
    surface = [v for v in store["variables"] if v not in levelled]
    lines = [
        f"Store: {store['bytes'] / 1e9:.2f} GB, {store['frames']} 6-hourly frames ({store['days']} days from "
        f"2000-01-01), {', '.join(levelled)} on {len(store['levels'])} levels"
        + (f" and {', '.join(surface)} at the surface" if surface else "")
        + f", {store['grid'][0]} × {store['grid'][1]} grid, float32, uncompressed, {store['chunks']} chunks of "
        f"{store['time_chunk']} time steps (largest {store['chunk_mib']:.1f} MiB). {report['cluster']}; "
        f"{report['timing']}. earthsim: {report['jobs']}. Climatology: earthsim's with a window of "
        f"{report['window_days']} day(s), xarray's a plain groupby (no window); stores written: earthsim "
        f"{report['climatology_output_bytes']['earthsim climatology'] / 1e9:.2f} GB, xarray "
        f"{report['climatology_output_bytes']['xarray climatology'] / 1e9:.2f} GB. Statistics of earthsim and xarray "
        f"agree to {report['differences']['statistics_max_relative']:.1e} (largest relative difference). "
        f"{report['machine']['cpus']} CPUs, load average {report['machine']['load_average_1min']['start']:.1f} at "
        f"the start, {report['machine']['load_average_1min']['end']:.1f} at the end.",
        "",
        "| workers | job | implementation | s | MB/s | earthsim/this |",
        "| ---: | --- | --- | ---: | ---: | ---: |",
    ]
    by = {(r["workers"], r["job"], r["implementation"]): r for r in report["results"]}
    for r in report["results"]:
        ours = by[(r["workers"], r["job"], "earthsim")]
        ratio = "—" if r["implementation"] == "earthsim" else f"**{ours['mb_per_s'] / r['mb_per_s']:.2f}**"
        lines.append(f"| {r['workers']} | {r['job']} | {r['implementation']} | {r['seconds']:.2f} | "
                     f"{r['mb_per_s']:.0f} | {ratio} |")
    if report["scaling"]:
        most, fewest = max(r["workers"] for r in report["results"]), min(r["workers"] for r in report["results"])
        lines += ["", f"Rate with {most} workers over {fewest}: " + ", ".join(
            f"{key} {value:.2f}" for key, value in report["scaling"].items()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small store (90 days, 2 variables × 4 levels, 40 × 80: 37 MB; under a minute)")
    parser.add_argument("--days", type=int,
                        help="days of 6-hourly frames from 2000-01-01 (default 731; 90 with --quick)")
    parser.add_argument("--grid", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="latitude × longitude points (default 64 128; 40 80 with --quick)")
    parser.add_argument("--chunk-mib", type=float, default=CHUNK_MIB,
                        help=f"MiB per stored chunk, a block of whole time steps (default {CHUNK_MIB:g}; earthsim "
                             "ingest writes 1)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="cluster sizes, one LocalCluster each (default 1 2)")
    parser.add_argument("--window-days", type=int, default=61,
                        help="earthsim's climatology window (default 61, WB2's; 1 = the plain groupby)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each job; the fastest counts (default 1)")
    parser.add_argument("--dir", help="where to build the store (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store and the results afterwards")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = run(args)
    publish(markdown(report), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
