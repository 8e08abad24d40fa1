"""Window loading, side by side: earthsim's loader against zarr-python, xbatcher and the physical limit.

Builds a Zarr v3 store (default ≥ 1 GB: 1100 frames of 2 variables × 4 levels on a 128 × 256 grid,
float32, one chunk per variable and frame) twice: uncompressed, and compressed with Blosc (zstd,
level 5, byte shuffle by default; ``--cname``/``--clevel``/``--shuffle``) through the xarray encoding
``compressors``. The field is smooth enough for the compression ratio to mean something (random
values do not compress): per variable and level a sum of 12 large-scale waves drifting in time over
a level mean, plus Gaussian noise of 1% of the field's spread, float32; it compresses 1.7×. Every
3-frame window (T_in = 2, T_out = 1, 8 channels, 3 MiB) is read in the
same shuffled order, through a torch DataLoader with the same batch size and worker count, with:

- earthsim: ``WindowDataset`` through ``make_loader`` (tensorstore reads, normalised output, windows
  written straight into the batch; the other readers go through torch's default collate, which
  stacks their windows into the batch: one more copy);
- earthsim, ``file://`` URL: the same entry with the store given as ``file://PATH`` (earthsim maps
  it to the path: the same tensorstore reads);
- earthsim, fsspec URL: the store given as ``local://PATH``, an fsspec URL that earthsim hands to
  zarr-python's fsspec store (as it does ``gs://`` or ``s3://``), over fsspec's local filesystem: the
  remote-store code path without the network;
- zarr-python: ``zarr.open_array(...)[t:t + 3]`` per variable (raw values);
- xbatcher: ``xbatcher.loaders.torch.MapDataset`` over a ``BatchGenerator`` (input_dims time=3,
  overlap 2) of the store opened with ``xarray.open_zarr``; its default transform takes a single
  variable, so a transform stacks the two variables' values into channels;
- chunk files (raw read): the uncompressed store's chunk files read straight into the window buffer
  by a thread pool (no decode: the bytes are the values) — the limit for the uncompressed store;
- memory copy: a numpy copy of the same window bytes from the whole store held in (shared) memory;
- chunk files + decode (compressed store): the chunk files read and decompressed by the codec alone
  (numcodecs' Blosc, the library behind ``zarr.codecs.BloscCodec``) into the window buffer, by the
  same thread pool — the limit for the compressed store as a Python reader reaches it (tensorstore
  decodes on its own threads and may pass it);
- decode only (compressed store): the same decompression from the chunk bytes held in (shared)
  memory: what decoding costs without any file read.

The compressed store's line also gives its compression ratio and the codec's decode rate on one
thread (MB of values per second, every chunk decompressed once in turn).

Each reader runs one warm-up pass (starting its workers and warming the page cache), then
``--repeat`` timed passes over all windows, taken in turn with the other readers' (reader after
reader, pass after pass, so that a change in the machine's load meets them all alike); the fastest
counts (the machine may be shared). The ``file://`` row reads exactly as the first earthsim row, so
the gap between the two shows how much the run's figures vary. Unless
``--cold`` is given the store is therefore in the page cache when timed; ``--cold`` evicts its
files (posix_fadvise DONTNEED) before each timed pass. MB = 10^6 bytes of window data delivered
(decoded values, for the compressed store too).

    python benchmarks/loader.py                 # ≥ 1 GB store (and its compressed copy), workers 0 and 2
    python benchmarks/loader.py --quick --json loader.json
"""

from __future__ import annotations

import argparse
import multiprocessing
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
#: Per variable: the level means and the spread of the field about them (the normalisation statistics).
FIELD = {"z": ((1.0e5, 5.5e4, 3.0e4, 1.4e4), 3e3), "t": ((222.0, 252.0, 268.0, 276.0), 12.0)}
WAVES = 12  # large-scale waves per variable and level
NOISE = 0.01  # Gaussian noise, as a fraction of the field's spread
UNCOMPRESSED, COMPRESSED = "uncompressed", "compressed"
STORES = {UNCOMPRESSED: ("bench.zarr", "loader-bench"), COMPRESSED: ("bench-blosc.zarr", "loader-bench-blosc")}


def _waves(variable: int, level: int, height: int, width: int):
    """A variable's level: the latitude profiles [H, K] and wave numbers, phases and drift of its K waves."""
    rng = np.random.default_rng([variable, level])
    lat = np.deg2rad(np.linspace(-89.3, 89.3, height))
    m = rng.integers(0, 8, WAVES)  # zonal wave numbers
    n = rng.integers(1, 6, WAVES)  # meridional
    amplitude = rng.normal(size=WAVES) / (1 + m + n)
    profiles = amplitude * np.cos(n * lat[:, None] + rng.uniform(0, 2 * np.pi, WAVES))
    return profiles, m, rng.uniform(0, 2 * np.pi, WAVES), rng.uniform(-0.2, 0.2, WAVES)


def field_block(variable: int, first: int, count: int, height: int, width: int) -> np.ndarray:
    """Frames ``first``..``first + count`` of a variable, float32 [count, level, H, W]: smooth waves drifting
    eastward or westward over the level's mean, scaled to the variable's spread, plus 1% noise."""
    means, spread = FIELD[VARIABLES[variable]]
    lon = np.deg2rad(np.arange(width) * 360.0 / width)
    out = np.empty((count, len(LEVELS), height, width), dtype=np.float32)
    for k in range(len(LEVELS)):
        profiles, m, phase, drift = _waves(variable, k, height, width)
        scale = spread / np.sqrt(0.5 * (profiles**2).sum(axis=1).mean())  # the waves' spread over the grid
        for i, frame in enumerate(range(first, first + count)):
            zonal = np.cos(m[:, None] * lon[None, :] + phase[:, None] - drift[:, None] * frame)  # [K, W]
            noise = np.random.default_rng([variable, k, frame]).standard_normal((height, width))
            out[i, k] = means[k] + scale * (profiles @ zonal) + NOISE * spread * noise
    return out


def build_store(root: Path, frames: int, height: int, width: int) -> tuple[Path, Path]:
    """The uncompressed benchmark store (chunk = one frame of one variable) and its catalog entry."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    from earthsim.data.store import write_zarr

    times = pd.date_range("2000-01-01", periods=frames, freq="6h")
    shape, chunks = (frames, len(LEVELS), height, width), (1, len(LEVELS), height, width)

    def data(v: int):
        def block(block_info=None):
            (first, stop), *_ = block_info[None]["array-location"]
            return field_block(v, first, stop - first, height, width)

        return da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape), dtype=np.float32,
                             meta=np.array((), np.float32))

    ds = xr.Dataset(
        {name: (("time", "level", "latitude", "longitude"), data(v)) for v, name in enumerate(VARIABLES)},
        coords={"time": times, "level": list(LEVELS), "latitude": np.linspace(-89.3, 89.3, height),
                "longitude": np.arange(width) * 360.0 / width},
    )
    store = root / STORES[UNCOMPRESSED][0]
    encoding = {name: {"chunks": chunks, "compressors": None} for name in VARIABLES}
    write_zarr(ds, store, encoding=encoding, progress=True)
    return store, write_entry(root, UNCOMPRESSED, str(store), frames, height, width)


def blosc_codec(cname: str, clevel: int, shuffle: str):
    import zarr.codecs

    return zarr.codecs.BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle)


def build_compressed_store(root: Path, source: Path, cname: str, clevel: int, shuffle: str) -> tuple[Path, Path]:
    """The same data, chunks and coordinates, Blosc-compressed (a copy of the uncompressed store)."""
    import xarray as xr

    from earthsim.data.store import write_zarr

    ds = xr.open_zarr(str(source), consolidated=False)
    store = root / STORES[COMPRESSED][0]
    encoding = {name: {"chunks": ds[name].encoding["chunks"], "compressors": (blosc_codec(cname, clevel, shuffle),)}
                for name in VARIABLES}
    write_zarr(ds, store, encoding=encoding, progress=True)
    frames, height, width = ds.sizes["time"], ds.sizes["latitude"], ds.sizes["longitude"]
    return store, write_entry(root, COMPRESSED, str(store), frames, height, width)


def write_entry(root: Path, which: str, store: str, frames: int, height: int, width: int, suffix: str = "") -> Path:
    """The catalog entry of one of the stores, given as ``store`` (a path or URL); ``suffix`` names a variant."""
    import pandas as pd

    name = STORES[which][1] + suffix
    times = pd.date_range("2000-01-01", periods=frames, freq="6h")
    entry = {
        "name": name, "kind": "weather", "description": f"synthetic {which} store for benchmarks/loader.py",
        "store": store, "variables": {"z": {"units": "m**2 s**-2"}, "t": {"units": "K"}}, "levels": list(LEVELS),
        "grid": {"latitude": {"start": -89.3, "stop": 89.3, "size": height},
                 "longitude": {"start": 0.0, "stop": 360.0 - 360.0 / width, "size": width}},
        "time": {"start": str(times[0]), "stop": str(times[-1]), "step": "6h"},
        "splits": {"train": {"start": str(times[0]), "stop": str(times[-1])}},
        "statistics": str(root / "bench.stats.zarr"), "licence": "synthetic", "provenance": "benchmarks/loader.py",
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return path


def statistics():
    """Normalisation statistics: the level means and the field's spread (its frame-to-frame change is smaller;
    the scale only needs to be about right)."""
    import xarray as xr

    return xr.Dataset(
        {name: (("statistic", "level"), np.array([list(means), [spread] * 4, [spread * 0.2] * 4]))
         for name, (means, spread) in FIELD.items()},
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


def chunk_files(store: Path, frame: int) -> list[Path]:
    """The chunk files of one frame, variable by variable (one chunk per variable and frame)."""
    return [store / name / "c" / str(frame) / "0" / "0" / "0" for name in VARIABLES]


class ChunkFiles(torch.utils.data.Dataset):
    """The window's chunk files read straight into the window buffer, all files of a window at once from a
    thread pool, as a parallel reader would: raw bytes (no decode), or with ``decode`` Blosc-compressed bytes
    decompressed into the buffer by the codec alone."""

    def __init__(self, store: Path, frames: int, height: int, width: int, decode: bool = False):
        self.store, self.count, self.decode = store, frames - FRAMES_IN_WINDOW + 1, decode
        self.shape = (FRAMES_IN_WINDOW, len(VARIABLES) * len(LEVELS), height, width)
        self.chunk_bytes = len(LEVELS) * height * width * 4
        self.pool = None

    def __len__(self) -> int:
        return self.count

    def _read(self, path: Path, buffer: memoryview) -> None:
        with open(path, "rb", buffering=0) as f:
            if self.decode:
                decompress(f.read(), buffer)
            elif f.readinto(buffer) != len(buffer):
                raise RuntimeError(f"short chunk file {path}")

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(FRAMES_IN_WINDOW * len(VARIABLES))
        out = np.empty(self.shape, dtype=np.float32)
        view = memoryview(out.reshape(-1).view(np.uint8))
        files = [path for frame in range(i, i + FRAMES_IN_WINDOW) for path in chunk_files(self.store, frame)]
        reads = [self.pool.submit(self._read, path, view[k * self.chunk_bytes : (k + 1) * self.chunk_bytes])
                 for k, path in enumerate(files)]
        for read in reads:
            read.result()
        return torch.from_numpy(out)

    def __getstate__(self):
        return {**self.__dict__, "pool": None}


def decompress(source, dest) -> None:
    """Blosc-decompress ``source`` into ``dest`` (numcodecs; one blosc thread per call, the GIL released)."""
    from numcodecs import blosc

    blosc.decompress(source, dest)


class CompressedChunks:
    """Every compressed chunk of the store in one (shared-memory) byte tensor, with each chunk's offset."""

    def __init__(self, store: Path, frames: int):
        paths = [path for frame in range(frames) for path in chunk_files(store, frame)]
        sizes = np.array([p.stat().st_size for p in paths])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.data = torch.empty(int(self.offsets[-1]), dtype=torch.uint8)
        view = self.data.numpy()
        for k, path in enumerate(paths):
            view[self.offsets[k] : self.offsets[k + 1]] = np.fromfile(path, dtype=np.uint8)
        self.data.share_memory_()

    def chunk(self, index: int) -> np.ndarray:
        return self.data.numpy()[self.offsets[index] : self.offsets[index + 1]]


class DecodeOnly(torch.utils.data.Dataset):
    """The window's compressed chunks decompressed from memory into the window buffer (no file read), by the
    same thread pool as ``ChunkFiles``."""

    def __init__(self, chunks: CompressedChunks, frames: int, height: int, width: int):
        self.chunks, self.count = chunks, frames - FRAMES_IN_WINDOW + 1
        self.shape = (FRAMES_IN_WINDOW, len(VARIABLES) * len(LEVELS), height, width)
        self.chunk_bytes = len(LEVELS) * height * width * 4
        self.pool = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(FRAMES_IN_WINDOW * len(VARIABLES))
        out = np.empty(self.shape, dtype=np.float32)
        view = memoryview(out.reshape(-1).view(np.uint8))
        first = i * len(VARIABLES)
        decodes = [self.pool.submit(decompress, self.chunks.chunk(first + k),
                                    view[k * self.chunk_bytes : (k + 1) * self.chunk_bytes])
                   for k in range(FRAMES_IN_WINDOW * len(VARIABLES))]
        for decode in decodes:
            decode.result()
        return torch.from_numpy(out)

    def __getstate__(self):
        return {**self.__dict__, "pool": None}


def decode_rate(chunks: CompressedChunks, chunk_bytes: int) -> float:
    """MB of values per second that one thread decompresses, every chunk once in turn."""
    from numcodecs import blosc

    out = np.empty(chunk_bytes, dtype=np.uint8)
    previous, blosc.use_threads = blosc.use_threads, False  # one thread: blosc's own pool off
    try:
        count = len(chunks.offsets) - 1
        start = time.perf_counter()
        for k in range(count):
            blosc.decompress(chunks.chunk(k), out)
        return count * chunk_bytes / (time.perf_counter() - start) / 1e6
    finally:
        blosc.use_threads = previous


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


def one_pass(loader) -> tuple[int, float]:
    """One pass over every window: (samples, seconds)."""
    samples, start = 0, time.perf_counter()
    for batch in loader:
        samples += (batch["x"] if isinstance(batch, dict) else batch).shape[0]
    return samples, time.perf_counter() - start


def store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def chunk_bytes_stored(store: Path, frames: int) -> int:
    return sum(p.stat().st_size for frame in range(frames) for p in chunk_files(store, frame))


def check_kept_store(packed: Path, store: Path, codec: dict) -> None:
    """Refuse a kept compressed store with another codec or frame count than the uncompressed one beside it."""
    import zarr

    stored = zarr.open_array(store=str(packed), path=VARIABLES[0], mode="r")
    frames = zarr.open_array(store=str(store), path=VARIABLES[0], mode="r").shape[0] if store.exists() else None
    blosc = [c for c in stored.metadata.codecs if type(c).__name__ == "BloscCodec"]
    found = blosc and {"cname": blosc[0].cname.value, "clevel": blosc[0].clevel, "shuffle": blosc[0].shuffle.value}
    if stored.shape[0] != frames or found != codec:
        raise SystemExit(f"{packed} holds {stored.shape[0]} frames compressed with {found or 'no Blosc codec'}; this "
                         f"run asks for {frames} frames with {codec}: remove it or use another --dir")


def run(args) -> dict:
    from earthsim.data.loader import ShardSampler, make_loader, worker_context
    from earthsim.data.windows import WindowDataset

    load_before = os.getloadavg()
    frames = args.frames or (64 if args.quick else 1100)
    height, width = 128, 256
    root = Path(args.dir or tempfile.mkdtemp(prefix="earthsim-loader-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    store, packed = root / STORES[UNCOMPRESSED][0], root / STORES[COMPRESSED][0]
    codec = {"cname": args.cname, "clevel": args.clevel, "shuffle": args.shuffle}
    if packed.exists():  # a kept compressed store is reused only if made as this run asks (refused before any removal)
        check_kept_store(packed, store, codec)
    try:
        if store.exists():
            import zarr

            entry_path = root / f"{STORES[UNCOMPRESSED][1]}.yaml"
            frames = zarr.open_array(store=str(store), path=VARIABLES[0], mode="r").shape[0]
            print(f"reusing {store} ({frames} frames)")
        else:
            store, entry_path = build_store(root, frames, height, width)
        if packed.exists():
            packed_entry = root / f"{STORES[COMPRESSED][1]}.yaml"
            print(f"reusing {packed}")
        else:
            packed, packed_entry = build_compressed_store(root, store, **codec)
        os.sync()  # the new stores' pages written out now, not while the first readers are timed
        url_entries = {
            "file": write_entry(root, UNCOMPRESSED, "file://" + str(store), frames, height, width, "-file-url"),
            "fsspec": write_entry(root, UNCOMPRESSED, "local://" + str(store), frames, height, width, "-fsspec-url"),
            "fsspec packed": write_entry(root, COMPRESSED, "local://" + str(packed), frames, height, width, "-fsspec-url"),
        }
        window_bytes = FRAMES_IN_WINDOW * len(VARIABLES) * len(LEVELS) * height * width * 4
        chunk_bytes = len(LEVELS) * height * width * 4
        values_bytes = frames * len(VARIABLES) * chunk_bytes
        stats = statistics()

        def windows(entry: Path) -> WindowDataset:
            return WindowDataset(entry, None, t_in=2, t_out=1, statistics=stats)

        earthsim = windows(entry_path)
        compressed_chunks = CompressedChunks(packed, frames)
        readers = {  # (store, reader name): (store path, dataset factory)
            (UNCOMPRESSED, "earthsim"): (store, lambda: earthsim),
            (UNCOMPRESSED, "earthsim, file:// URL"): (store, lambda: windows(url_entries["file"])),
            (UNCOMPRESSED, "earthsim, fsspec URL"): (store, lambda: windows(url_entries["fsspec"])),
            (UNCOMPRESSED, "zarr-python"): (store, lambda: ZarrWindows(store, frames)),
            (UNCOMPRESSED, "xbatcher MapDataset"): (store, lambda: xbatcher_dataset(store, height, width)),
            (UNCOMPRESSED, "chunk files (raw read)"): (store, lambda: ChunkFiles(store, frames, height, width)),
            (UNCOMPRESSED, "memory copy"): (store, lambda: MemoryCopy(load_in_memory(store))),
            (COMPRESSED, "earthsim"): (packed, lambda: windows(packed_entry)),
            (COMPRESSED, "earthsim, fsspec URL"): (packed, lambda: windows(url_entries["fsspec packed"])),
            (COMPRESSED, "zarr-python"): (packed, lambda: ZarrWindows(packed, frames)),
            (COMPRESSED, "xbatcher MapDataset"): (packed, lambda: xbatcher_dataset(packed, height, width)),
            (COMPRESSED, "chunk files + decode"): (packed, lambda: ChunkFiles(packed, frames, height, width, decode=True)),
            (COMPRESSED, "decode only (chunks in memory)"):
                (packed, lambda: DecodeOnly(compressed_chunks, frames, height, width)),
        }
        check = ChunkFiles(store, frames, height, width)[7].numpy()  # every reader reads the same window 7
        for (which, name), (_, make) in readers.items():
            if name == "memory copy":
                continue
            dataset = make()
            window = dataset[7]
            if isinstance(window, dict):  # earthsim: normalised input frames
                np.testing.assert_allclose((window["x"] * dataset.std[:, None, None] + dataset.mean[:, None, None]).numpy(),
                                           check[:2], rtol=1e-6, err_msg=f"{which} {name}")
            else:
                np.testing.assert_array_equal(window.numpy(), check, err_msg=f"{which} {name}")
        decode_mb_per_s = decode_rate(compressed_chunks, chunk_bytes)

        results = []
        for workers in args.workers:
            loaders = {}
            for (which, name), (path, make) in readers.items():  # each started and warmed up: one untimed pass
                dataset = make()
                if len(dataset) != len(earthsim):
                    raise RuntimeError(f"{name} has {len(dataset)} windows, earthsim {len(earthsim)}")
                if isinstance(dataset, WindowDataset):
                    loader = make_loader(dataset, args.batch_size, num_workers=workers, shuffle=True, seed=0)
                else:
                    loader = torch.utils.data.DataLoader(
                        dataset, batch_size=args.batch_size, sampler=ShardSampler(len(dataset), shuffle=True, seed=0),
                        num_workers=workers, persistent_workers=workers > 0,
                        multiprocessing_context=worker_context() if workers else None,
                    )
                one_pass(loader)
                loaders[(which, name)] = (loader, path)
            passes = {key: [] for key in loaders}
            for _ in range(args.repeat):  # readers in turn, pass after pass: a change of load meets them all alike
                for key, (loader, path) in loaders.items():
                    if args.cold:
                        evict(path)
                    samples, seconds = one_pass(loader)
                    passes[key].append(seconds)
            del loaders, loader, dataset
            for (which, name), seconds in passes.items():
                row = {"store": which, "reader": name, "workers": workers, "samples": samples, "seconds": min(seconds),
                       "passes": seconds, "samples_per_s": samples / min(seconds),
                       "mb_per_s": samples * window_bytes / min(seconds) / 1e6}
                results.append(row)
                print(f"  {which:12s} {name:30s} workers={workers}: {row['samples_per_s']:8.1f} samples/s "
                      f"{row['mb_per_s']:9.1f} MB/s", flush=True)

        ratios = {}
        for workers in args.workers:
            rate = {(r["store"], r["reader"]): r["mb_per_s"] for r in results if r["workers"] == workers}
            plain = {name: value for (which, name), value in rate.items() if which == UNCOMPRESSED}
            zipped = {name: value for (which, name), value in rate.items() if which == COMPRESSED}
            ratios[f"workers={workers}"] = {
                "earthsim/xbatcher": plain["earthsim"] / plain["xbatcher MapDataset"],
                "earthsim/zarr-python": plain["earthsim"] / plain["zarr-python"],
                "earthsim/chunk files": plain["earthsim"] / plain["chunk files (raw read)"],
                "file:// URL/path": plain["earthsim, file:// URL"] / plain["earthsim"],
                "fsspec URL/path": plain["earthsim, fsspec URL"] / plain["earthsim"],
                COMPRESSED: {
                    "earthsim/xbatcher": zipped["earthsim"] / zipped["xbatcher MapDataset"],
                    "earthsim/zarr-python": zipped["earthsim"] / zipped["zarr-python"],
                    "earthsim/chunk files + decode": zipped["earthsim"] / zipped["chunk files + decode"],
                    "fsspec URL/path": zipped["earthsim, fsspec URL"] / zipped["earthsim"],
                    "earthsim compressed/uncompressed": zipped["earthsim"] / plain["earthsim"],
                },
            }
        stored = chunk_bytes_stored(packed, frames)
        chunks = "one frame x one variable (4 levels) = %d KiB" % (chunk_bytes // 1024)
        return {
            "store": {"bytes": store_bytes(store), "frames": frames, "channels": len(VARIABLES) * len(LEVELS),
                      "grid": [height, width], "dtype": "float32", "compression": "none", "chunks": chunks,
                      "field": f"{WAVES} drifting large-scale waves per variable and level over the level mean, "
                               f"plus Gaussian noise of {NOISE:.0%} of the field's spread"},
            "compressed_store": {
                "bytes": store_bytes(packed), "chunk_bytes": stored, "compression": "blosc", "codec": codec,
                "compression_ratio": values_bytes / stored,
                "decode_mb_per_s_one_thread": decode_mb_per_s,
                "decoder": "numcodecs.blosc.decompress (what zarr.codecs.BloscCodec calls), one thread",
            },
            "windows": {"count": len(earthsim), "frames": FRAMES_IN_WINDOW, "bytes": window_bytes},
            "batch_size": args.batch_size,
            "timing": f"fastest of {args.repeat} timed passes after a warm-up pass, the readers in turn",
            "page_cache": "evicted before each timed pass" if args.cold else "warm (store read once in the warm-up pass)",
            "urls": {"file": "file://PATH (earthsim reads it as the path, with tensorstore)",
                     "fsspec": "local://PATH (fsspec's local filesystem through zarr-python's FsspecStore)"},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]}},
            "results": results,
            "ratios": ratios,
        }
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
        elif not args.keep:
            for path in (store, packed):
                shutil.rmtree(path, ignore_errors=True)


def markdown(report: dict) -> str:
    store, packed = report["store"], report["compressed_store"]
    codec = packed["codec"]
    lines = [
        f"Store: {store['bytes'] / 1e9:.2f} GB, {store['frames']} frames × {store['channels']} channels × "
        f"{store['grid'][0]}×{store['grid'][1]} {store['dtype']} ({store['field']}), chunks {store['chunks']}. "
        f"Compressed copy: Blosc {codec['cname']} level {codec['clevel']} {codec['shuffle']}, "
        f"{packed['bytes'] / 1e9:.2f} GB, compression ratio {packed['compression_ratio']:.2f}, decode "
        f"{packed['decode_mb_per_s_one_thread']:.0f} MB/s of values on one thread. "
        f"Windows: {report['windows']['count']} of {report['windows']['frames']} frames "
        f"({report['windows']['bytes'] / 2**20:.0f} MiB), batch {report['batch_size']}, {report['timing']}, "
        f"page cache {report['page_cache']}; fsspec URL = {report['urls']['fsspec']}; "
        f"{report['machine']['cpus']} CPUs, load average {report['machine']['load_average_1min']['start']:.1f} at the "
        f"start, {report['machine']['load_average_1min']['end']:.1f} at the end.",
        "",
        "| store | reader | workers | samples/s | MB/s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(f"| {r['store']} | {r['reader']} | {r['workers']} | {r['samples_per_s']:.1f} | {r['mb_per_s']:.0f} |")
    lines += ["", "| workers | store | earthsim/xbatcher (target ≥ 3) | earthsim/zarr-python (target ≥ 1) | "
              "earthsim/limit (raw read; read + decode) | fsspec URL/path | file:// URL/path |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for workers, ratio in report["ratios"].items():
        w = workers.split("=")[1]
        zipped = ratio[COMPRESSED]
        lines.append(f"| {w} | {UNCOMPRESSED} | {ratio['earthsim/xbatcher']:.2f} | {ratio['earthsim/zarr-python']:.2f} | "
                     f"{ratio['earthsim/chunk files']:.2f} | {ratio['fsspec URL/path']:.2f} | "
                     f"{ratio['file:// URL/path']:.2f} |")
        lines.append(f"| {w} | {COMPRESSED} | {zipped['earthsim/xbatcher']:.2f} | {zipped['earthsim/zarr-python']:.2f} | "
                     f"{zipped['earthsim/chunk files + decode']:.2f} | {zipped['fsspec URL/path']:.2f} | — |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small store (64 frames, 67 MB, and its compressed copy); runs in under a minute")
    parser.add_argument("--frames", type=int,
                        help="frames in the store (default 1100: 1.15 GB uncompressed; 64 with --quick)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts (default 0 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per batch (default 8)")
    parser.add_argument("--repeat", type=int, help="timed passes per reader; the fastest counts (default 3; 2 with --quick)")
    parser.add_argument("--cold", action="store_true", help="evict the store from the page cache before each timed pass")
    parser.add_argument("--cname", default="zstd", choices=["zstd", "lz4", "lz4hc", "blosclz", "zlib"],
                        help="Blosc compressor of the compressed store (default zstd)")
    parser.add_argument("--clevel", type=int, default=5, help="Blosc compression level (default 5)")
    parser.add_argument("--shuffle", default="shuffle", choices=["shuffle", "bitshuffle", "noshuffle"],
                        help="Blosc shuffle (default shuffle: byte shuffle)")
    parser.add_argument("--dir", help="where to build the stores (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (2 if args.quick else 3)
    # Each reader's DataLoader starts its own workers; preloaded in the forkserver, their imports take a fraction
    # of a second instead of seconds (only the untimed warm-up pass sees it). tensorstore stays out: it is not
    # imported before a fork.
    if any(args.workers):
        multiprocessing.set_forkserver_preload(["torch", "numpy", "yaml", "xarray", "zarr", "numcodecs", "xbatcher",
                                                "earthsim.data.windows", "earthsim.data.loader"])
    report = run(args)
    publish(markdown(report), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
