"""Small synthetic datasets shared by the tests: travelling waves on a periodic box, with a catalog entry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

from conftest import write_store_entry


def advected_waves(trajectories: int = 6, frames: int = 12, n: int = 16) -> xr.Dataset:
    """Vorticity-like fields translating at fixed speeds, 0.1 solver time units apart: a map an FNO learns quickly."""
    x = np.arange(n) * 2 * np.pi / n
    rng = np.random.default_rng(0)
    data = np.empty((trajectories, frames, n, n), np.float32)
    for i in range(trajectories):
        phase, amp = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.5, 1.5, 2)
        for t in range(frames):
            data[i, t] = (amp[0] * np.sin(x[None, :] - 0.3 * t + phase[0])
                          + amp[1] * np.cos(2 * x[:, None] + 0.2 * t + phase[1]))
    return xr.Dataset({"vorticity": (("trajectory", "time", "y", "x"), data, {"units": "1", "long_name": "vorticity"})},
                      coords={"trajectory": np.arange(trajectories), "time": np.arange(frames) * 0.1, "y": x, "x": x})


def write_waves_entry(root: Path, trajectories: int = 6, frames: int = 12, n: int = 16) -> Path:
    """Write the waves store and its catalog entry (train 0-3, validation 4, test the rest) into ``root``."""
    return write_store_entry(
        root, "waves", advected_waves(trajectories, frames, n), "fluid", grid={"x": n, "y": n, "length": 2 * math.pi},
        time={"step": 0.1, "units": "solver time units"},
        splits={"train": {"trajectory": [0, 4]}, "validation": {"trajectory": [4, 5]},
                "test": {"trajectory": [5, trajectories]}})
