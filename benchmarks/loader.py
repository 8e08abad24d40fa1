"""Window loading, side by side: earthsim's loader against zarr-python, xbatcher and the physical limit.

Builds an uncompressed Zarr v3 store (default ≥ 1 GB: 1100 frames of 2 variables × 4 levels on a
128 × 256 grid, float32, one chunk per variable and frame) and reads every 3-frame window (T_in = 2,
T_out = 1, 8 channels, 3 MiB) in the same shuffled order, through a torch DataLoader with the same
batch size and worker count, with:

- earthsim: ``WindowDataset`` through ``make_loader`` (tensorstore reads, normalised output, windows
  written straight into the batch; the other readers go through torch's default collate, which
  stacks their windows into the batch: one more copy);
- zarr-python: ``zarr.open_array(...)[t:t + 3]`` per variable (raw values);
- xbatcher: ``xbatcher.loaders.torch.MapDataset`` over a ``BatchGenerator`` (input_dims time=3,
  overlap 2) of the store opened with ``xarray.open_zarr``; its default transform takes a single
  variable, so a transform stacks the two variables' values into channels;
- chunk files: the chunk files' raw bytes read straight into the window buffer by a thread pool
  (no decode; the store has no compression, so the bytes are the values);
- memory copy: a numpy copy of the same window bytes from the whole store held in (shared) memory.

Each reader runs one warm-up pass (starting its workers and warming the page cache), then
``--repeat`` timed passes over all windows; the fastest counts (the machine may be shared). Unless ``--cold`` is given the store is therefore in the page cache when
timed; ``--cold`` evicts its files (posix_fadvise DONTNEED) before each timed pass. MB = 10^6 bytes
of window data delivered.

    python benchmarks/loader.py                 # ≥ 1 GB store, workers 0 and 2
    python benchmarks/loader.py --quick --json loader.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import yaml

from report import add_json_argument, publish

VARIABLES = ("z", "t")
LEVELS = (250, 500, 700, 850)
FRAMES_IN_WINDOW = 3


def build_store(root: Path, frames: int, height: int, width: int) -> tuple[Path, Path]:
    """The benchmark store (uncompressed, chunk = one frame of one variable) and its catalog entry."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    from earthsim.data.store import write_zarr

    times = pd.date_range("2000-01-01", periods=frames, freq="6h")
    shape, chunks = (frames, len(LEVELS), height, width), (1, len(LEVELS), height, width)
    data = {
        name: (("time", "level", "latitude", "longitude"),
               (offset + scale * da.random.RandomState(seed).standard_normal(shape, chunks=chunks)).astype("float32"))
        for seed, (name, offset, scale) in enumerate([("z", 5e4, 3e3), ("t", 260.0, 15.0)])
    }
    ds = xr.Dataset(
        data,
        coords={"time": times, "level": list(LEVELS), "latitude": np.linspace(-89.3, 89.3, height),
                "longitude": np.arange(width) * 360.0 / width},
    )
    store = root / "bench.zarr"
    encoding = {name: {"chunks": chunks, "compressors": None} for name in VARIABLES}
    write_zarr(ds, store, encoding=encoding, progress=True)
    entry = {
        "name": "loader-bench", "kind": "weather", "description": "synthetic store for benchmarks/loader.py",
        "store": str(store), "variables": {"z": {"units": "m**2 s**-2"}, "t": {"units": "K"}}, "levels": list(LEVELS),
        "grid": {"latitude": {"start": -89.3, "stop": 89.3, "size": height},
                 "longitude": {"start": 0.0, "stop": 360.0 - 360.0 / width, "size": width}},
        "time": {"start": str(times[0]), "stop": str(times[-1]), "step": "6h"},
        "splits": {"train": {"start": str(times[0]), "stop": str(times[-1])}},
        "statistics": str(root / "bench.stats.zarr"), "licence": "synthetic", "provenance": "benchmarks/loader.py",
    }
    path = root / "loader-bench.yaml"
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return store, path


def statistics():
    """The generating distribution's mean and std (the differences of independent frames have std·√2)."""
    import xarray as xr

    values = {"z": (5e4, 3e3), "t": (260.0, 15.0)}
    return xr.Dataset(
        {name: (("statistic", "level"), np.array([[m] * 4, [s] * 4, [s * 2**0.5] * 4]))
         for name, (m, s) in values.items()},
        coords={"statistic": ["mean", "std", "diff_std"], "level": list(LEVELS)},
    )


class ZarrWindows(torch.utils.data.Dataset):
    """Windows read with zarr-python, one basic-selection call per variable, arrays opened per process."""

    def __init__(self, store: Path, frames: int):
        self.store, self.count, self.arrays = str(store), frames - FRAMES_IN_WINDOW + 1, None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.arrays is None:
            import zarr

            self.arrays = [zarr.open_array(store=self.store, path=name, mode="r") for name in VARIABLES]
        return torch.from_numpy(np.concatenate([a[i : i + FRAMES_IN_WINDOW] for a in self.arrays], axis=1))

    def __getstate__(self):
        return {**self.__dict__, "arrays": None}


def stack_variables(batch) -> torch.Tensor:
    """xbatcher transform: a window Dataset → tensor [time, channel, lat, lon]."""
    return torch.from_numpy(np.concatenate([batch[name].values for name in VARIABLES], axis=1))


def xbatcher_dataset(store: Path, height: int, width: int):
    import xarray as xr
    import xbatcher
    from xbatcher.loaders.torch import MapDataset

    ds = xr.open_zarr(str(store), consolidated=False, chunks={})[list(VARIABLES)]
    generator = xbatcher.BatchGenerator(
        ds, input_dims={"time": FRAMES_IN_WINDOW, "level": len(LEVELS), "latitude": height, "longitude": width},
        input_overlap={"time": FRAMES_IN_WINDOW - 1},
    )
    return MapDataset(generator, transform=stack_variables)


class ChunkFiles(torch.utils.data.Dataset):
    """The window's chunk files read as raw bytes straight into the window buffer (no decode), all
    files of a window at once from a thread pool, as a parallel reader would."""

    def __init__(self, store: Path, frames: int, height: int, width: int):
        self.store, self.count = store, frames - FRAMES_IN_WINDOW + 1
        self.shape = (FRAMES_IN_WINDOW, len(VARIABLES) * len(LEVELS), height, width)
        self.chunk_bytes = len(LEVELS) * height * width * 4
        self.pool = None

    def __len__(self) -> int:
        return self.count

    def _read(self, path: Path, buffer: memoryview) -> None:
        with open(path, "rb", buffering=0) as f:
            if f.readinto(buffer) != len(buffer):
                raise RuntimeError(f"short chunk file {path}")

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(FRAMES_IN_WINDOW * len(VARIABLES))
        out = np.empty(self.shape, dtype=np.float32)
        view = memoryview(out.reshape(-1).view(np.uint8))
        files = [self.store / name / "c" / str(frame) / "0" / "0" / "0"
                 for frame in range(i, i + FRAMES_IN_WINDOW) for name in VARIABLES]
        reads = [self.pool.submit(self._read, path, view[k * self.chunk_bytes : (k + 1) * self.chunk_bytes])
                 for k, path in enumerate(files)]
        for read in reads:
            read.result()
        return torch.from_numpy(out)

    def __getstate__(self):
        return {**self.__dict__, "pool": None}


class MemoryCopy(torch.utils.data.Dataset):
    """A copy of the window's bytes from the whole store held in shared memory."""

    def __init__(self, data: torch.Tensor):
        self.data = data.share_memory_()

    def __len__(self) -> int:
        return self.data.shape[0] - FRAMES_IN_WINDOW + 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.data[i : i + FRAMES_IN_WINDOW].numpy().copy())


def load_in_memory(store: Path) -> torch.Tensor:
    """The whole store as one tensor [time, channel, lat, lon]."""
    import zarr

    arrays = [zarr.open_array(store=str(store), path=name, mode="r") for name in VARIABLES]
    frames, levels, height, width = arrays[0].shape
    data = torch.empty((frames, len(VARIABLES) * levels, height, width), dtype=torch.float32)
    for k, array in enumerate(arrays):
        data[:, k * levels : (k + 1) * levels] = torch.from_numpy(array[:])
    return data


def evict(store: Path) -> None:
    """Drop the store's files from the page cache (no root needed for files we can read)."""
    for path in store.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed_passes(loader, store: Path, cold: bool, repeat: int) -> tuple[int, list[float]]:
    """One warm-up pass, then ``repeat`` timed passes: (samples per pass, seconds of each pass)."""
    for _ in loader:
        pass
    seconds = []
    for _ in range(repeat):
        if cold:
            evict(store)
        samples, start = 0, time.perf_counter()
        for batch in loader:
            samples += (batch["x"] if isinstance(batch, dict) else batch).shape[0]
        seconds.append(time.perf_counter() - start)
    return samples, seconds


def run(args) -> dict:
    from earthsim.data.loader import ShardSampler, make_loader, worker_context
    from earthsim.data.windows import WindowDataset

    frames = args.frames or (64 if args.quick else 1100)
    height, width = 128, 256
    root = Path(args.dir or tempfile.mkdtemp(prefix="earthsim-loader-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    store = root / "bench.zarr"
    try:
        if store.exists():
            import zarr

            entry_path = root / "loader-bench.yaml"
            frames = zarr.open_array(store=str(store), path=VARIABLES[0], mode="r").shape[0]
            print(f"reusing {store} ({frames} frames)")
        else:
            store, entry_path = build_store(root, frames, height, width)
        store_bytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        window_bytes = FRAMES_IN_WINDOW * len(VARIABLES) * len(LEVELS) * height * width * 4
        stats = statistics()

        earthsim = WindowDataset(entry_path, None, t_in=2, t_out=1, statistics=stats)
        readers = {
            "earthsim": lambda: earthsim,
            "zarr-python": lambda: ZarrWindows(store, frames),
            "xbatcher MapDataset": lambda: xbatcher_dataset(store, height, width),
            "chunk files (raw read)": lambda: ChunkFiles(store, frames, height, width),
            "memory copy": lambda: MemoryCopy(load_in_memory(store)),
        }
        check = ChunkFiles(store, frames, height, width)[7]  # every reader reads the same window 7
        np.testing.assert_array_equal(ZarrWindows(store, frames)[7].numpy(), check.numpy())
        np.testing.assert_array_equal(xbatcher_dataset(store, height, width)[7].numpy(), check.numpy())
        np.testing.assert_allclose(
            (earthsim[7]["x"] * earthsim.std[:, None, None] + earthsim.mean[:, None, None]).numpy(), check[:2].numpy(),
            rtol=1e-6,
        )

        results = []
        for workers in args.workers:
            for name, make in readers.items():
                dataset = make()
                if len(dataset) != len(earthsim):
                    raise RuntimeError(f"{name} has {len(dataset)} windows, earthsim {len(earthsim)}")
                if name == "earthsim":
                    loader = make_loader(dataset, args.batch_size, num_workers=workers, shuffle=True, seed=0)
                else:
                    loader = torch.utils.data.DataLoader(
                        dataset, batch_size=args.batch_size, sampler=ShardSampler(len(dataset), shuffle=True, seed=0),
                        num_workers=workers, persistent_workers=workers > 0,
                        multiprocessing_context=worker_context() if workers else None,
                    )
                samples, passes = timed_passes(loader, store, args.cold, args.repeat)
                del loader
                seconds = min(passes)
                row = {"reader": name, "workers": workers, "samples": samples, "seconds": seconds, "passes": passes,
                       "samples_per_s": samples / seconds, "mb_per_s": samples * window_bytes / seconds / 1e6}
                results.append(row)
                print(f"  {name:24s} workers={workers}: {row['samples_per_s']:8.1f} samples/s "
                      f"{row['mb_per_s']:9.1f} MB/s", flush=True)

        ratios = {}
        for workers in args.workers:
            rate = {r["reader"]: r["mb_per_s"] for r in results if r["workers"] == workers}
            ratios[f"workers={workers}"] = {
                "earthsim/xbatcher": rate["earthsim"] / rate["xbatcher MapDataset"],
                "earthsim/zarr-python": rate["earthsim"] / rate["zarr-python"],
                "earthsim/chunk files": rate["earthsim"] / rate["chunk files (raw read)"],
            }
        return {
            "store": {"bytes": store_bytes, "frames": frames, "channels": len(VARIABLES) * len(LEVELS),
                      "grid": [height, width], "dtype": "float32", "compression": "none",
                      "chunks": "one frame x one variable (4 levels) = %d KiB" % (len(LEVELS) * height * width * 4 // 1024)},
            "windows": {"count": len(earthsim), "frames": FRAMES_IN_WINDOW, "bytes": window_bytes},
            "batch_size": args.batch_size,
            "timing": f"fastest of {args.repeat} timed passes after a warm-up pass",
            "page_cache": "evicted before each timed pass" if args.cold else "warm (store read once in the warm-up pass)",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
            "results": results,
            "ratios": ratios,
        }
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
        elif not args.keep:
            shutil.rmtree(store, ignore_errors=True)


def markdown(report: dict) -> str:
    store = report["store"]
    lines = [
        f"Store: {store['bytes'] / 1e9:.2f} GB, {store['frames']} frames × {store['channels']} channels × "
        f"{store['grid'][0]}×{store['grid'][1]} {store['dtype']}, compression {store['compression']}, chunks "
        f"{store['chunks']}. Windows: {report['windows']['count']} of {report['windows']['frames']} frames "
        f"({report['windows']['bytes'] / 2**20:.0f} MiB), batch {report['batch_size']}, {report['timing']}, "
        f"page cache {report['page_cache']}; {report['machine']['cpus']} CPUs.",
        "",
        "| reader | workers | samples/s | MB/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(f"| {r['reader']} | {r['workers']} | {r['samples_per_s']:.1f} | {r['mb_per_s']:.0f} |")
    lines += ["", "| workers | earthsim/xbatcher (target ≥ 3) | earthsim/zarr-python (target ≥ 1) | earthsim/chunk files |",
              "| --- | ---: | ---: | ---: |"]
    for workers, ratio in report["ratios"].items():
        lines.append(f"| {workers.split('=')[1]} | {ratio['earthsim/xbatcher']:.2f} | "
                     f"{ratio['earthsim/zarr-python']:.2f} | {ratio['earthsim/chunk files']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small store (64 frames, 67 MB); runs in under a minute")
    parser.add_argument("--frames", type=int, help="frames in the store (default 1100, 1.15 GB; 64 with --quick)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts (default 0 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per batch (default 8)")
    parser.add_argument("--repeat", type=int, help="timed passes per reader; the fastest counts (default 3; 2 with --quick)")
    parser.add_argument("--cold", action="store_true", help="evict the store from the page cache before each timed pass")
    parser.add_argument("--dir", help="where to build the store (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (2 if args.quick else 3)
    report = run(args)
    publish(markdown(report), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
