"""The end-to-end demo behind `make demo`: data flows from solver and reanalysis files to torch batches.

simulate (Kolmogorov flow) → catalog → statistics → stream batches; and the same path for the real
ERA5 UK 2 m temperature sample: ingest → statistics and climatology → stream batches.
"""

from __future__ import annotations

import time

import torch

from earthsim import catalog
from earthsim.data.loader import make_loader
from earthsim.data.stats import compute_climatology, compute_statistics
from earthsim.data.windows import WindowDataset


def _stream(entry, split: str, t_in: int, t_out: int, batches: int, num_workers: int) -> list[str]:
    dataset = WindowDataset(entry, split, t_in=t_in, t_out=t_out)
    loader = make_loader(dataset, batch_size=8, num_workers=num_workers, shuffle=True, seed=0)
    lines = [f"  {split} windows: {len(dataset)} (T_in={t_in}, T_out={t_out}, lead time {dataset.time_step:g} "
             f"{'h' if entry.kind == 'weather' else 'solver units'}), channels {dataset.channels}"]
    start, seen = time.perf_counter(), 0
    for i, batch in enumerate(loader):
        if i == batches:
            break
        seen += batch["x"].shape[0]
        x, y = batch["x"], batch["y"]
        lines.append(f"  batch {i}: x {tuple(x.shape)} y {tuple(y.shape)} {x.dtype}, "
                     f"normalised x mean {x.mean():+.3f} std {x.std():.3f}, lead_time {batch['lead_time'][0]:g}")
    lines.append(f"  {seen} samples in {time.perf_counter() - start:.2f} s with {num_workers} workers")
    return lines


def run_demo() -> None:
    torch.manual_seed(0)
    report = []
    for name, t_in, t_out in (("kolmogorov-64", 2, 1), ("era5-uk-t2m", 3, 1)):
        entry = catalog.get_entry(name)
        print(f"== {name}: {entry.description}")
        if not entry.exists():
            print(f"   making {entry.store} ({entry.source.command(name)})")
        ds = catalog.open_dataset(name)
        print(f"   store {entry.store}: " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
        stats_path = compute_statistics(entry)
        print(f"   statistics: {stats_path}")
        if entry.kind == "weather":
            print(f"   climatology: {compute_climatology(entry)}")
        report.append(f"{name}")
        report.extend(_stream(entry, "train", t_in, t_out, batches=3, num_workers=2))
    print("\n== streamed batches")
    print("\n".join(report))
