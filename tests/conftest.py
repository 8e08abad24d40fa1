"""What the tests share: where the real sample files are, and fixtures that keep stores out of the checkout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import xarray as xr
import yaml

from earthsim import catalog
from earthsim.data.conventions import TIME_DIM
from earthsim.sim.navier_stokes import stable_time_step

#: The real samples the built-in catalog entries ingest, installed with the package.
SAMPLE_DATA = catalog.SAMPLE_DATA
#: Real files only the tests use (see tests/data/README.md).
TEST_DATA = Path(__file__).resolve().parent / "data"
#: The benchmark scripts, which import their neighbours (``report``) by plain name.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str, register: bool = False):
    """Yield the script ``benchmarks/NAME.py`` as module ``benchmark_NAME`` with ``benchmarks/`` on the path, and
    with ``register`` in ``sys.modules`` (dataclasses look their module up by name; but then dask pickles the
    module's functions by name, which its workers cannot import); undone afterwards. For a module-scoped
    fixture: ``yield from load_benchmark("loader")``."""
    import importlib.util
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    module_name = f"benchmark_{name}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        if register:
            sys.modules[module_name] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(module_name, None)
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture
def stores(tmp_path, monkeypatch) -> Path:
    """``${EARTHSIM_STORES}`` resolves to ``tmp_path/stores`` and entries in ``tmp_path/catalogs/datasets`` are found
    by name, so nothing is written into the checkout."""
    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path / "stores"))
    monkeypatch.setenv("EARTHSIM_CATALOGS", str(tmp_path / "catalogs"))
    return tmp_path / "stores"


def write_store_entry(folder: Path, name: str, ds, kind: str, *, entry_folder: Path | None = None,
                      encoding: dict | None = None, **fields) -> Path:
    """Write ``ds`` as the store ``folder/NAME.zarr`` and its catalog entry as ``NAME.yaml``; return the YAML's path.

    ``ds`` is a Dataset, or a mapping of Zarr group to Dataset (then give ``group=``), or None for a
    store that exists already (give ``store=`` and ``variables=``). The entry
    names the store and ``NAME.stats.zarr`` beside it; its variables are the time-dependent data variables with their ``units`` attributes ("1" when
    absent). ``fields`` add or replace entry keys (grid, time, splits, levels, ...). The YAML goes
    into ``entry_folder`` (default ``folder``), e.g. a ``catalogs/datasets`` folder on
    ``$EARTHSIM_CATALOGS`` so that the entry is found by name.
    """
    from earthsim.data.store import write_zarr

    folder.mkdir(parents=True, exist_ok=True)
    raw = {"name": name, "kind": kind, "description": f"synthetic {kind} data for tests",
           "statistics": str(folder / f"{name}.stats.zarr"), "licence": "test", "provenance": "tests"}
    if ds is not None:
        write_zarr(ds, folder / f"{name}.zarr", encoding=encoding, progress=False)
        sample = ds if isinstance(ds, xr.Dataset) else next(iter(ds.values()))
        raw["store"] = str(folder / f"{name}.zarr")
        raw["variables"] = {v: {"units": sample[v].attrs.get("units", "1")} for v in sample.data_vars
                            if TIME_DIM in sample[v].dims}
    raw.update(fields)
    entry_folder = entry_folder or folder
    entry_folder.mkdir(parents=True, exist_ok=True)
    path = entry_folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def small_spec(inputs=("a",), outputs=None, static=(), grid: str = "box", shape=(16, 16), time_step: float = 0.1,
               mean=0.0, std=1.0, **changes):
    """A DataSpec for model tests: ``grid`` "box" (periodic, ``shape``) or "latlon" (pole to pole, ``shape``),
    statistics ``mean``/``std`` (a number for every channel, or one per input channel; 0 and 1: normalisation is
    the identity; static fields get the first channel's; the difference std is half the std)."""
    from earthsim.data.grid import Axis, Grid
    from earthsim.models import DataSpec, Statistics

    height, width = shape
    if grid == "box":
        grid = Grid(x=width, y=height, length=2 * math.pi)
    else:
        grid = Grid(latitude=Axis(-90.0, 90.0, height), longitude=Axis(0.0, 360.0 - 360.0 / width, width),
                    longitude_convention="[0, 360)")
    n, k = len(inputs), len(static)
    mean = tuple(float(v) for v in mean) if isinstance(mean, (list, tuple)) else (float(mean),) * n
    std = tuple(float(v) for v in std) if isinstance(std, (list, tuple)) else (float(std),) * n
    statistics = Statistics(mean=mean, std=std, diff_std=tuple(s / 2 for s in std), static_mean=(mean[0],) * k,
                            static_std=(std[0],) * k)
    return DataSpec(inputs=tuple(inputs), outputs=tuple(outputs or inputs), grid=grid, static=tuple(static),
                    time_step=time_step, statistics=statistics, **changes)


def limited_linear_interpolation():
    """What the learned solvers' stencils make with zero logits: linear "u" and van-Leer-limited linear "c" face
    values (an interpolation for ``FiniteVolumeNavierStokes.step``)."""
    from earthsim.sim.finite_volume import Interpolation, half_cell_linear, tvd_limit

    class LimitedLinear(Interpolation):
        def __call__(self, field, move, tag, advecting, dt, h):
            value = half_cell_linear(field, move[1])
            return value if tag == "u" else tvd_limit(field, move[1], advecting, value)

    return LimitedLinear()


#: The learned solvers' data in tests (tests/test_tsm.py and the contract test): a Kolmogorov flow on a 16² staggered
#: grid, frames one CFL step apart, as a store made by ``earthsim simulate navier-stokes --staggered`` records it.
STAGGERED_N = 16
STAGGERED_PHYSICS = {"flow": "kolmogorov", "viscosity": 1e-3, "drag": 0.1, "forcing_wavenumber": 4,
                     "forcing_amplitude": 1.0, "domain_length": 2 * math.pi, "cfl_velocity": 7.0, "cfl_safety": 0.5,
                     "staggered": True}
STAGGERED_DT = stable_time_step(STAGGERED_N, STAGGERED_PHYSICS["cfl_velocity"], STAGGERED_PHYSICS["cfl_safety"])


def staggered_spec(**physics):
    """The DataSpec of a staggered store: u, v and vorticity in and out, no static field, ``physics`` changed."""
    return small_spec(inputs=("u", "v", "vorticity"), shape=(STAGGERED_N, STAGGERED_N), time_step=STAGGERED_DT,
                      physics={**STAGGERED_PHYSICS, **physics})


def staggered_frames(frames: int, batch: int = 2, dtype=None, seed: int = 0):
    """``frames`` frames [B, T, 3, N, N] (u, v, vorticity) of the linear finite-volume solver from a random flow
    (``seed`` picks the flows)."""
    import torch

    from earthsim.sim.finite_volume import FiniteVolumeNavierStokes, curl, face_averages
    from earthsim.sim.navier_stokes import random_vorticity

    n = STAGGERED_N
    start = face_averages(torch.fft.rfft2(random_vorticity(range(batch), 64, seed, 4, 3), norm="forward"), 64, n)
    solver = FiniteVolumeNavierStokes(n, 1e-3, STAGGERED_DT, drag=0.1, forcing_wavenumber=4, forcing_amplitude=1.0,
                                      interpolation="linear")
    out, state = [], start
    for _ in range(frames):
        out.append(torch.cat([state, curl(state)[:, None]], dim=1))
        state = solver.step(state)
    return torch.stack(out, dim=1).to(dtype or torch.float32)
