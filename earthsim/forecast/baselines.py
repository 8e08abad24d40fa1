"""Baseline forecasts, written as forecast stores in the same layout as model forecasts.

- :func:`persistence`: every lead repeats the initial frame (any dataset);
- :func:`climatology_forecast`: the day-of-year × hour climatology (:func:`earthsim.data.stats.load_climatology`)
  at each valid time (weather datasets);
- :func:`solver_baseline`: the solver that made the store, run at the dataset's own (coarse)
  resolution from the coarse initial frame, with the physics the store records: earthsim's
  pseudo-spectral Navier–Stokes solver (the baseline the learned-interpolation, Kochkov et al.
  2021, and TSM, Sun et al. 2023, papers beat), or torch-harmonics' shallow-water solver at the
  saved grid, half the resolution the store was solved at.

Baselines take one input frame, so their initial times are every frame of the split with
``steps`` frames after it (``lead_stride`` store frames apart); a model forecast with ``t_in`` > 1 starts
later, and the scorer aligns them by valid time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from earthsim.catalog import DatasetEntry
from earthsim.data.conventions import X_DIM, Y_DIM
from earthsim.errors import ValidationError
from earthsim.forecast.inputs import Block, InitialConditions, resolve_entry
from earthsim.forecast.store import write_forecast
from earthsim.sim.navier_stokes import (NavierStokes2D, grid_coordinates, kolmogorov_forcing, stable_time_step,
                                        steps_per_interval)
from earthsim.sim.shallow_water import PHYSICS_ATTRS as SHALLOW_WATER_ATTRS
from earthsim.sim.shallow_water import StoredPhysicsSolver

SOLVER_ATTRS = ("flow", "viscosity", "drag", "forcing_wavenumber", "forcing_amplitude", "domain_length",
                "cfl_velocity", "cfl_safety")


def _request(kind: str, entry: DatasetEntry, split: str, ic: InitialConditions, inits: list | None, **extra) -> dict:
    return {"baseline": kind, "dataset": entry.name, "store": entry.store, "split": split, "steps": ic.steps,
            "inits": None if inits is None else [str(v) for v in inits], "lead_stride": ic.lead_stride,
            "lead_time": ic.lead_time, **extra}


def _attrs(kind: str, entry: DatasetEntry, split: str) -> dict:
    return {"forecast": kind, "dataset": entry.name, "split": split}


def persistence(dataset: str | DatasetEntry, split: str = "test", *, steps: int, out: str | os.PathLike,
                inits: list | None = None, lead_stride: int = 1, batch_size: int = 64, progress: bool = True,
                overwrite: bool = False, keep: bool = False) -> Path:
    """Persistence forecast store: the value at every lead is the truth at the initial time."""
    entry = resolve_entry(dataset)
    ic = InitialConditions(entry, split, steps, t_in=1, lead_stride=lead_stride, inits=inits)

    def compute(block: Block) -> np.ndarray:
        first = ic.read(block)  # [inits, 1, C, H, W]
        return np.broadcast_to(first[:, :, None], (first.shape[0], ic.steps, 1, *first.shape[2:]))

    return write_forecast(ic, out, compute, producer="earthsim.forecast.persistence",
                          request=_request("persistence", entry, split, ic, inits), inputs=[entry.store],
                          attrs=_attrs("persistence", entry, split), block_size=batch_size, progress=progress,
                          overwrite=overwrite, keep=keep, description=f"persistence {entry.name}")


def climatology_forecast(dataset: str | DatasetEntry, split: str = "test", *, steps: int, out: str | os.PathLike,
                         inits: list | None = None, lead_stride: int = 1, batch_size: int = 64, progress: bool = True,
                         overwrite: bool = False, keep: bool = False) -> Path:
    """Climatology forecast store (weather): the day-of-year × hour climatology at each valid time,
    selected by the valid time's day of year (1–366) and hour, as WeatherBench 2 does."""
    from earthsim.data.stats import climatology_at, load_climatology

    entry = resolve_entry(dataset)
    if entry.kind != "weather":
        raise ValidationError(f"dataset {entry.name!r} is a {entry.kind} dataset; a climatology forecast needs a "
                              "weather dataset (for fluids use persistence or the solver baseline)")
    ic = InitialConditions(entry, split, steps, t_in=1, lead_stride=lead_stride, inits=inits)
    climatology = load_climatology(entry, progress=progress)
    where = f"climatology of {entry.name!r} ({entry.climatology})"
    valid = pd.DatetimeIndex(ic.valid_times().ravel())
    one_per_hour = valid[np.unique(valid.hour, return_index=True)[1]]
    for name in ic.variables:  # fail on missing hours or variables before any store is made
        climatology_at(climatology, name, one_per_hour, ic.levels.get(name), ic.entry.grid.dims, where)

    def compute(block: Block) -> np.ndarray:
        times = ic.valid_times()[block.inits].ravel()
        values = np.concatenate([climatology_at(climatology, name, times, ic.levels.get(name), ic.entry.grid.dims, where)
                                 for name in ic.variables], axis=1)  # [valid, C, H, W]
        n = block.inits.stop - block.inits.start
        per_init = values.reshape(n, ic.steps, 1, *values.shape[1:])
        # samples run sequence-major: every member/trajectory of the block shares the same valid times
        return np.tile(per_init, (block.size // n,) + (1,) * (per_init.ndim - 1))

    return write_forecast(ic, out, compute, producer="earthsim.forecast.climatology_forecast",
                          request=_request("climatology", entry, split, ic, inits, climatology=entry.climatology),
                          inputs=[entry.store, str(entry.climatology)], attrs=_attrs("climatology", entry, split),
                          block_size=batch_size, progress=progress, overwrite=overwrite, keep=keep,
                          description=f"climatology {entry.name}")


def navier_stokes_solver(entry: DatasetEntry, ic: InitialConditions, dtype: torch.dtype = torch.float64,
                         device: str = "cpu") -> NavierStokes2D:
    """The Navier–Stokes solver at the dataset's own resolution with the physics its store records, its time
    step the largest within the store's CFL rule that divides the forecast interval."""
    attrs = ic.ds.attrs
    missing = [k for k in SOLVER_ATTRS if k not in attrs]
    if missing:
        raise ValidationError(f"store {entry.store}{'/' + entry.group if entry.group else ''} of dataset "
                              f"{entry.name!r} does not record Navier–Stokes physics (missing attributes {missing}); "
                              "the solver baseline needs a store written by earthsim's Navier–Stokes solver")
    if ic.variables != ["vorticity"] or entry.grid.x != entry.grid.y:
        raise ValidationError(f"dataset {entry.name!r}: the solver baseline needs vorticity alone on a square grid; "
                              f"it has variables {ic.variables} on {entry.grid.shape}")
    n = entry.grid.x
    for dim in (Y_DIM, X_DIM):
        if not np.allclose(ic.ds[dim].values, grid_coordinates(n) * float(attrs["domain_length"]) / (2 * np.pi)):
            raise ValidationError(f"dataset {entry.name!r}: {dim} is not the solver grid j·L/{n} of the periodic box")
    _, dt = steps_per_interval(ic.lead_time, stable_time_step(n, float(attrs["cfl_velocity"]),
                                                             float(attrs["cfl_safety"])))
    forcing = (kolmogorov_forcing(n, int(attrs["forcing_wavenumber"]), float(attrs["forcing_amplitude"]))
               if attrs["flow"] == "kolmogorov" else None)
    return NavierStokes2D(n, float(attrs["viscosity"]), dt, drag=float(attrs["drag"]), forcing=forcing,
                          device=device, dtype=dtype)


def solver_baseline(dataset: str | DatasetEntry, split: str = "test", *, steps: int, out: str | os.PathLike,
                    inits: list | None = None, lead_stride: int = 1, batch_size: int = 16, progress: bool = True,
                    device: str = "cpu", overwrite: bool = False, keep: bool = False,
                    resolution: int | None = None) -> Path:
    """Numerical-solver forecast store (Navier–Stokes and shallow-water fluid datasets): the solver at the
    dataset's resolution, in float64, started from the stored coarse frame at each initial time,
    saving a frame every ``lead_stride`` store frames. A staggered store gets the finite-volume solver,
    at ``resolution`` if given (see :func:`_finite_volume_baseline`)."""
    entry = resolve_entry(dataset)
    if entry.kind != "fluid":
        raise ValidationError(f"dataset {entry.name!r} is a {entry.kind} dataset; the solver baseline needs a "
                              "Navier–Stokes or shallow-water fluid dataset")
    ic = InitialConditions(entry, split, steps, t_in=1, lead_stride=lead_stride, inits=inits)
    if ic.ds.attrs.get("staggered"):
        return _finite_volume_baseline(entry, split, ic, inits, out, batch_size, progress, device, overwrite, keep,
                                       entry.grid.x if resolution is None else resolution)
    if resolution is not None:
        raise ValidationError(f"dataset {entry.name!r}: a solver resolution applies to staggered (finite-volume) "
                              "stores only")
    if all(k in ic.ds.attrs for k in SHALLOW_WATER_ATTRS):
        return _shallow_water_baseline(entry, split, ic, inits, out, batch_size, progress, device, overwrite, keep)
    solver = navier_stokes_solver(entry, ic, device=device)

    def compute(block: Block) -> np.ndarray:
        start = torch.from_numpy(ic.read(block)[:, 0, 0]).to(torch.float64)  # [inits, H, W]
        frames = solver.rollout(start, ic.steps, ic.lead_time).to(torch.float32).cpu().numpy()
        return frames[:, :, None, None]  # [inits, steps, 1 member, 1 channel, H, W]

    return write_forecast(ic, out, compute, producer="earthsim.forecast.solver_baseline",
                          request=_request("solver", entry, split, ic, inits, solver_dt=solver.dt,
                                           resolution=solver.resolution, solver_dtype="float64"),
                          inputs=[entry.store], attrs=_attrs("solver", entry, split), block_size=batch_size,
                          progress=progress, overwrite=overwrite, keep=keep, description=f"solver {entry.name}")


def _finite_volume_baseline(entry: DatasetEntry, split: str, ic: InitialConditions, inits: list | None,
                            out: str | os.PathLike, batch_size: int, progress: bool, device: str, overwrite: bool,
                            keep: bool, resolution: int) -> Path:
    """The finite-volume solver (van Leer convection, the learned-solver papers' numerical baseline) at
    ``resolution``², started from the store's group of that resolution at each initial time and coarse-grained
    to the dataset's grid: face averages of its velocity and their curl, the channels the dataset holds."""
    import dataclasses

    from earthsim.data.conventions import physics_attributes
    from earthsim.errors import EarthsimError
    from earthsim.sim.finite_volume import FiniteVolumeNavierStokes, coarsen, curl

    n = entry.grid.x
    if resolution < n or resolution % n or entry.grid.x != entry.grid.y or not {"u", "v"} <= set(ic.channels) \
            or not set(ic.channels) <= {"u", "v", "vorticity"}:
        raise ValidationError(f"dataset {entry.name!r}: the finite-volume baseline needs u, v (and vorticity) on a "
                              f"square grid and a resolution that is a positive multiple of {n}; got channels {ic.channels}, "
                              f"grid {entry.grid.shape}, resolution {resolution}")
    fine_ic = ic
    if resolution != n:
        fine_entry = dataclasses.replace(entry, group=str(resolution), grid=dataclasses.replace(
            entry.grid, x=resolution, y=resolution))
        try:
            fine_ic = InitialConditions(fine_entry, split, ic.steps, t_in=1, lead_stride=ic.lead_stride, inits=inits)
        except (EarthsimError, FileNotFoundError, KeyError) as error:  # the store has no group at that resolution
            raise ValidationError(f"dataset {entry.name!r}: no start at {resolution}² in {entry.store} (group "
                                  f"{resolution!r}): {error}") from error
    try:
        solver, _ = FiniteVolumeNavierStokes.from_physics(physics_attributes(ic.ds.attrs), resolution, ic.lead_time,
                                                          device=device)
    except EarthsimError as error:
        raise ValidationError(f"dataset {entry.name!r}: {error}") from error
    index = [fine_ic.channels.index(name) for name in ("u", "v")]

    def compute(block: Block) -> np.ndarray:
        start = torch.from_numpy(fine_ic.read(block)[:, 0][:, index]).to(torch.float64)  # [samples, 2, N, N]
        frames = coarsen(solver.rollout(start.to(device), ic.steps, ic.lead_time), resolution // n)
        channels = {"u": frames[:, :, 0], "v": frames[:, :, 1], "vorticity": curl(frames)}
        out_frames = torch.stack([channels[name] for name in ic.channels], dim=2)
        return out_frames.to(torch.float32).cpu().numpy()[:, :, None]  # [samples, steps, 1 member, C, H, W]

    return write_forecast(ic, out, compute, producer="earthsim.forecast.solver_baseline",
                          request=_request("solver", entry, split, ic, inits, solver_dt=solver.dt,
                                           resolution=resolution, solver="finite-volume van-leer",
                                           solver_dtype="float64"),
                          inputs=[entry.store], attrs=_attrs("solver", entry, split), block_size=batch_size,
                          progress=progress, overwrite=overwrite, keep=keep,
                          description=f"finite-volume solver {resolution}² {entry.name}")


def _shallow_water_baseline(entry: DatasetEntry, split: str, ic: InitialConditions, inits: list | None,
                            out: str | os.PathLike, batch_size: int, progress: bool, device: str,
                            overwrite: bool, keep: bool) -> Path:
    """The shallow-water solver at the store's saved grid from each stored initial frame (one run per sample)."""
    height, width = entry.grid.shape
    solver = StoredPhysicsSolver(ic.ds.attrs, height, width, ic.lead_time, device=device)

    def compute(block: Block) -> np.ndarray:
        start = ic.read(block)[:, 0]  # [samples, C, H, W]
        frames = [solver.forecast(dict(zip(ic.channels, sample)), ic.steps, ic.channels) for sample in start]
        return np.stack(frames).astype(np.float32)[:, :, None]  # [samples, steps, 1 member, C, H, W]

    return write_forecast(ic, out, compute, producer="earthsim.forecast.solver_baseline",
                          request=_request("solver", entry, split, ic, inits, solver_dt=solver.step.dt,
                                           resolution=[height, width], lmax=solver.config.lmax,
                                           solver_dtype="float64"),
                          inputs=[entry.store], attrs=_attrs("solver", entry, split), block_size=batch_size,
                          progress=progress, overwrite=overwrite, keep=keep, description=f"solver {entry.name}")
