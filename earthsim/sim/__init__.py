"""Generators that write datasets: 2-D Navier–Stokes on the periodic box, shallow water on the sphere, and
Moving MNIST (bouncing digits, the video benchmark).

Each solver has a typed config and a ``simulate_*`` function writing a Zarr v3 store; ``SOLVERS``
maps the names used on the command line and in catalog entries to them. ``REGION_SOLVERS`` are
those whose trajectories are independent tasks writing their regions of the store (on the active
dask cluster if there is one); Moving MNIST, a quick generator, writes in one pass.
"""

from __future__ import annotations

from pathlib import Path

from earthsim import config
from earthsim.sim.moving_mnist import MovingMNISTConfig, simulate_moving_mnist
from earthsim.sim.navier_stokes import NavierStokesConfig, simulate_navier_stokes
from earthsim.sim.shallow_water import ShallowWaterConfig, simulate_shallow_water

SOLVERS = {
    "navier-stokes": (NavierStokesConfig, simulate_navier_stokes),
    "shallow-water": (ShallowWaterConfig, simulate_shallow_water),
    "moving-mnist": (MovingMNISTConfig, simulate_moving_mnist),
}
REGION_SOLVERS = ("navier-stokes", "shallow-water")


def generate(entry, progress: bool = True, overwrite: bool = False) -> Path:
    """Make a solver-backed catalog entry's store with the parameters the entry records."""
    from earthsim.errors import CatalogError

    if entry.source is None or entry.source.solver not in SOLVERS:
        raise CatalogError(f"{entry.path}: source.solver must be one of {sorted(SOLVERS)}")
    config_cls, simulate = SOLVERS[entry.source.solver]
    solver_config = config.build(config_cls, entry.source.params, f"{entry.path}: source.params")
    store = Path(entry.store)
    return simulate(solver_config, store, progress=progress, overwrite=overwrite)
