"""Physics solvers that write datasets: 2-D Navier–Stokes on the periodic box, shallow water on the sphere.

Each solver has a typed config and a ``simulate_*`` function writing a Zarr v3 store; ``SOLVERS``
names the solvers of the command line and catalog entries, and :func:`solver` imports one when it is
used (shallow water needs torch-harmonics; Navier–Stokes needs torch alone).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from earthsim import config

#: Solver name -> (module, config class, simulate function).
SOLVERS = {
    "navier-stokes": ("earthsim.sim.navier_stokes", "NavierStokesConfig", "simulate_navier_stokes"),
    "shallow-water": ("earthsim.sim.shallow_water", "ShallowWaterConfig", "simulate_shallow_water"),
}


def solver(name: str) -> tuple[type, Callable]:
    """The config class and simulate function of solver ``name``."""
    module, config_cls, simulate = SOLVERS[name]
    loaded = importlib.import_module(module)
    return getattr(loaded, config_cls), getattr(loaded, simulate)


def generate(entry, progress: bool = True, overwrite: bool = False) -> Path:
    """Make a solver-backed catalog entry's store with the parameters the entry records."""
    from earthsim.errors import CatalogError

    if entry.source is None or entry.source.solver not in SOLVERS:
        raise CatalogError(f"{entry.path}: source.solver must be one of {sorted(SOLVERS)}")
    config_cls, simulate = solver(entry.source.solver)
    solver_config = config.build(config_cls, entry.source.params, f"{entry.path}: source.params")
    return simulate(solver_config, Path(entry.store), progress=progress, overwrite=overwrite)
