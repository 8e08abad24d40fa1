"""Shallow-water equations on the rotating sphere, solved with torch-harmonics' spectral solver.

``torch_harmonics.examples.ShallowWaterSolver`` (the solver behind the SFNO paper's training data)
supplies the physics: the spectral state (geopotential, vorticity, divergence), the transforms,
the nonlinear tendencies and the hyperdiffusion. This module adds what a dataset needs on top of it:

- a third-order Adams–Bashforth integration that keeps its tendency history from one saved frame
  to the next (the solver's ``timestep`` restarts its multistep scheme with a forward-Euler step at
  every call);
- random initial conditions whose amplitudes are set in physical units (RMS depth perturbation and
  RMS wind), seeded per trajectory, so that they do not shrink with the truncation as the solver's
  own do (those are scaled for 120 spherical-harmonic degrees: at 32 × 64 their winds stay under
  4 m/s);
- balanced random initial conditions: a random streamfunction whose energy peaks at a chosen
  spherical-harmonic degree, no divergence, and the depth that balances it (the linear balance
  equation ∇²Φ = ∇·(f ∇ψ)), so that the flow evolves as slow Rossby waves rather than the fast
  gravity waves that white noise in depth, vorticity and divergence sets off;
- the Galewsky initial state as published: the solver's version makes the bump four times wider
  in latitude than the paper's and its mean depth about 15.7 m lower (see ``galewsky_state``);
- frames saved on an equiangular grid in physical units, latitude increasing, longitude in [0, 360),
  written atomically to a Zarr v3 store with provenance.

The solver runs in float64 on a grid ``refine`` times finer than the saved one, with triangular
truncation at a third of its latitude count (alias-free for the quadratic and cubic terms on
Clenshaw–Curtis grids, as in torch-harmonics' ``PdeDataset``); frames are evaluated from the
spectral coefficients on the saved grid, truncated to degrees below ``nlat``.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from earthsim import config as _config
from earthsim.data.store import provenance
from earthsim.errors import EarthsimError, ValidationError
from earthsim.data.conventions import LATITUDE_DIM, LONGITUDE_DIM, TIME_DIM, TRAJECTORY_DIM

INITIAL_CONDITIONS = ("random", "balanced", "galewsky")
RADIUS = 6.37122e6  # m, Williamson et al. (1992) and torch-harmonics
OMEGA = 7.292e-5  # rad s**-1
GRAVITY = 9.80616  # m s**-2
HAVG = 1.0e4  # m, mean depth (Galewsky et al. 2004: 10 km)
WIND_BOUND = 100.0  # m s**-1, least wind speed added to the gravity-wave speed in the CFL rule
VARIABLES = {
    "h": {"units": "m", "long_name": "fluid layer depth (geopotential height, geopotential / gravity)"},
    "u": {"units": "m s**-1", "long_name": "eastward wind", "standard_name": "eastward_wind"},
    "v": {"units": "m s**-1", "long_name": "northward wind", "standard_name": "northward_wind"},
    "vorticity": {"units": "s**-1", "long_name": "relative vorticity",
                  "standard_name": "atmosphere_relative_vorticity"},
    "divergence": {"units": "s**-1", "long_name": "horizontal divergence", "standard_name": "divergence_of_wind"},
}


@dataclass
class ShallowWaterConfig:
    """Shallow water on the rotating sphere (torch-harmonics spectral solver): random or Galewsky initial conditions."""

    initial_condition: str = field(default="random", metadata={
        "help": "random: white spectral noise in depth, vorticity and divergence (as torch-harmonics' PdeDataset) "
                "scaled to hamp and wind_rms; balanced: a random streamfunction peaked at peak_degree, scaled to "
                "wind_rms, with the depth of linear balance; galewsky: the barotropically unstable jet of Galewsky et "
                "al. (2004)",
        "choices": list(INITIAL_CONDITIONS)})
    nlat: int = field(default=32, metadata={"help": "latitudes of the saved equiangular grid, poles included"})
    nlon: int = field(default=64, metadata={"help": "longitudes of the saved grid, from 0 degrees east"})
    refine: int = field(default=2, metadata={
        "help": "solve on a grid this many times finer in each direction (truncation: a third of its latitudes)"})
    dt: float | None = field(default=None, metadata={
        "help": "solver time step in seconds; unset: the largest that divides save_interval_hours into whole steps "
                "with courant * radius / ((sqrt(gravity * havg) + max(100 m/s, 4 * wind_rms)) * sqrt(L (L - 1)))"})
    courant: float = field(default=0.5, metadata={"help": "Courant number of the time-step rule (AB3 is stable below ~0.72)"})
    save_interval_hours: float = field(default=1.0, metadata={"help": "hours between saved frames"})
    frames: int = field(default=48, metadata={"help": "frames saved per trajectory, the first at the end of spin-up"})
    spinup_hours: float | None = field(default=None, metadata={
        "help": "hours integrated and discarded before the first frame; unset: 24 for random, 0 for galewsky"})
    trajectories: int | None = field(default=None, metadata={
        "help": "independent runs; unset: 4 for random, 1 for galewsky (deterministic, so exactly 1)"})
    hamp: float = field(default=120.0, metadata={
        "help": "random: RMS of the initial depth perturbation in m; galewsky: the bump amplitude (120 m in the paper)"})
    wind_rms: float = field(default=20.0, metadata={"help": "random, balanced: RMS initial wind speed in m/s"})
    peak_degree: float = field(default=6.0, metadata={
        "help": "balanced: the spherical-harmonic degree where the initial streamfunction's energy peaks"})
    havg: float = field(default=HAVG, metadata={"help": "mean depth in m (10 km: Galewsky et al. 2004)"})
    omega: float = field(default=OMEGA, metadata={"help": "rotation rate of the sphere in rad/s (Earth: 7.292e-5)"})
    variables: list[str] = field(default_factory=lambda: list(VARIABLES), metadata={
        "help": f"variables stored (of {list(VARIABLES)}): a source may store any subset"})
    chunk_frames: int = field(default=24, metadata={"help": "frames per Zarr chunk (one trajectory per chunk)"})
    seed: int = field(default=0, metadata={"help": "random seed; trajectory i uses the seed sequence (seed, i)"})
    device: str = field(default="cpu", metadata={"help": "torch device for the solver, e.g. cpu or cuda"})

    def __post_init__(self) -> None:
        where = "ShallowWaterConfig"
        if self.initial_condition not in INITIAL_CONDITIONS:
            raise ValidationError(f"{where}.initial_condition: {self.initial_condition!r} is not one of "
                                  f"{list(INITIAL_CONDITIONS)}")
        random = self.initial_condition != "galewsky"
        if self.spinup_hours is None:
            self.spinup_hours = 24.0 if random else 0.0
        if self.trajectories is None:
            self.trajectories = 4 if random else 1
        positive = {"nlat": self.nlat - 3, "nlon": self.nlon - 3, "refine": self.refine, "frames": self.frames,
                    "trajectories": self.trajectories, "chunk_frames": self.chunk_frames,
                    "save_interval_hours": self.save_interval_hours, "courant": self.courant}
        minimum = {"nlat": 4, "nlon": 4}
        for key, value in positive.items():
            if value <= 0:
                raise ValidationError(f"{where}.{key}: expected at least {minimum[key]}, got {getattr(self, key)}"
                                      if key in minimum else f"{where}.{key}: expected > 0, got {getattr(self, key)}")
        for key in ("spinup_hours", "hamp", "wind_rms", "omega"):
            if getattr(self, key) < 0:
                raise ValidationError(f"{where}.{key}: expected >= 0, got {getattr(self, key)}")
        if self.havg <= 0:
            raise ValidationError(f"{where}.havg: expected a positive depth in m, got {self.havg}")
        unknown = [v for v in self.variables if v not in VARIABLES]
        if unknown or not self.variables or len(set(self.variables)) != len(self.variables):
            raise ValidationError(f"{where}.variables: expected distinct names among {list(VARIABLES)}, got "
                                  f"{self.variables}")
        if self.dt is not None and self.dt <= 0:
            raise ValidationError(f"{where}.dt: expected a positive number of seconds, got {self.dt}")
        if self.initial_condition == "galewsky" and self.trajectories != 1:
            raise ValidationError(f"{where}.trajectories: the galewsky initial condition is deterministic, "
                                  f"so trajectories must be 1, got {self.trajectories}")

    @property
    def solver_shape(self) -> tuple[int, int]:
        """Latitudes and longitudes of the grid the solver runs on."""
        return self.nlat * self.refine, self.nlon * self.refine

    @property
    def lmax(self) -> int:
        """Spectral truncation of the solver: degrees 0 … lmax - 1 (torch-harmonics' ``PdeDataset`` rule)."""
        return math.ceil(self.solver_shape[0] / 3)


@dataclass(frozen=True)
class TimeStep:
    """The solver time step and how many steps make a saved interval and the spin-up."""

    dt: float
    steps_per_frame: int
    spinup_steps: int


def time_step(config: ShallowWaterConfig) -> TimeStep:
    """The solver time step: ``config.dt`` or the CFL rule, a whole fraction of the save interval."""
    interval = config.save_interval_hours * 3600.0
    if config.dt is None:
        lmax = config.lmax
        speed = math.sqrt(GRAVITY * config.havg) + max(WIND_BOUND, 4.0 * config.wind_rms)
        limit = config.courant * RADIUS / (speed * math.sqrt(lmax * (lmax - 1)))
        steps = math.ceil(interval / limit - 1e-9)
    else:
        steps = round(interval / config.dt)
        if steps < 1 or abs(steps * config.dt - interval) > 1e-6 * interval:
            raise ValidationError(f"ShallowWaterConfig.dt: {config.dt} s does not divide save_interval_hours "
                                  f"({interval} s) into whole steps")
    dt = interval / steps
    spinup = config.spinup_hours * 3600.0 / dt
    if abs(spinup - round(spinup)) > 1e-6 * max(spinup, 1.0):
        raise ValidationError(f"ShallowWaterConfig.spinup_hours: {config.spinup_hours} h is not a whole number of "
                              f"solver steps of {dt:g} s; make it a multiple of save_interval_hours")
    return TimeStep(dt=dt, steps_per_frame=steps, spinup_steps=round(spinup))


def make_solver(config: ShallowWaterConfig, dt: float | None = None):
    """torch-harmonics' ``ShallowWaterSolver`` on the solver grid, in float64, on ``config.device``."""
    from torch_harmonics.examples import ShallowWaterSolver

    try:
        device = torch.device(config.device)
    except RuntimeError as error:
        raise ValidationError(f"ShallowWaterConfig.device: {config.device!r} is not a torch device: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValidationError(f"ShallowWaterConfig.device: {config.device!r} asked for, but CUDA is not available")
    nlat, nlon = config.solver_shape
    solver = ShallowWaterSolver(
        nlat, nlon, dt if dt is not None else time_step(config).dt, lmax=config.lmax, mmax=config.lmax,
        grid="equiangular", radius=RADIUS, omega=config.omega, gravity=GRAVITY, havg=config.havg, hamp=config.hamp,
    )
    return solver.double().to(device)


class AdamsBashforth3:
    """Third-order Adams–Bashforth on the solver's tendencies, then its implicit hyperdiffusion.

    The scheme of ``ShallowWaterSolver.timestep``, with two differences: that method restarts at
    every call (forward Euler, then a first-order two-step blend 28/12, -16/12), so calling it once
    per saved frame degrades every frame; this one starts once, with forward Euler and true
    second-order Adams–Bashforth, and keeps the last tendencies between calls.
    """

    def __init__(self, solver, state: torch.Tensor):
        self.solver = solver
        self.state = state
        self.history: list[torch.Tensor] = []

    def advance(self, steps: int) -> torch.Tensor:
        """Integrate ``steps`` time steps and return the spectral state (geopotential, vorticity, divergence)."""
        dt = self.solver.dt
        for _ in range(steps):
            self.history = [self.solver.dudtspec(self.state)] + self.history[:2]
            if len(self.history) == 1:
                increment = self.history[0]
            elif len(self.history) == 2:
                increment = 1.5 * self.history[0] - 0.5 * self.history[1]
            else:
                increment = (23.0 * self.history[0] - 16.0 * self.history[1] + 5.0 * self.history[2]) / 12.0
            state = self.state + dt * increment
            state[1:] = self.solver.hyperdiff * state[1:]
            self.state = state
        return self.state


def _mean(solver, grid: torch.Tensor) -> torch.Tensor:
    """Area mean over the sphere by the solver's Clenshaw–Curtis quadrature."""
    return solver.integrate_grid(grid, dimensionless=True) / (4.0 * math.pi)


def galewsky_zonal_wind(latitude: torch.Tensor, umax: float = 80.0) -> torch.Tensor:
    """The jet of Galewsky et al. (2004), eq. 2: ``umax`` at 45°N, zero outside (π/7, 5π/14)."""
    phi0, phi1 = math.pi / 7.0, math.pi / 2.0 - math.pi / 7.0
    inside = (latitude > phi0) & (latitude < phi1)
    safe = torch.where(inside, latitude, torch.full_like(latitude, math.pi / 4.0))
    jet = umax * math.exp(4.0 / (phi1 - phi0) ** 2) * torch.exp(1.0 / ((safe - phi0) * (safe - phi1)))
    return torch.where(inside, jet, torch.zeros_like(jet))


def galewsky_bump(latitude: torch.Tensor, longitude: torch.Tensor, amplitude: float = 120.0) -> torch.Tensor:
    """The depth perturbation of Galewsky et al. (2004), eq. 4, centred at 45°N, 180°E (their λ = 0)."""
    alpha, beta, phi2 = 1.0 / 3.0, 1.0 / 15.0, math.pi / 4.0
    return (amplitude * torch.cos(latitude) * torch.exp(-(((longitude - math.pi) / alpha) ** 2))
            * torch.exp(-(((phi2 - latitude) / beta) ** 2)))


def galewsky_state(solver, amplitude: float = 120.0) -> torch.Tensor:
    """The Galewsky et al. (2004) initial state, built with the solver's spectral operators.

    The jet is balanced as in the paper (the solver's nonlinear balance: Laplacian inversion of the
    absolute-vorticity flux minus the kinetic energy), the balanced depth's global mean is the
    paper's 10 km (``havg``), and the bump has the paper's latitudinal width β = 1/15. The solver's
    own ``galewsky_initial_condition`` differs on both counts: it divides (φ2 - φ)² by β instead of
    β², a bump about four times wider (mean 1.29 m instead of 0.33 m), and its mean depth lies lower
    by the jet's mean kinetic energy over g (about 15.7 m).
    """
    lats = solver.lats.reshape(-1, 1).expand(solver.nlat, solver.nlon)
    lons = solver.lons.reshape(1, -1).expand(solver.nlat, solver.nlon)
    zonal = galewsky_zonal_wind(lats)
    wind = torch.stack((zonal, torch.zeros_like(zonal)))
    vrtdiv = solver.vrtdivspec(wind)
    vorticity = solver.spec2grid(vrtdiv[0])
    flux = solver.vrtdivspec(wind * (vorticity + solver.coriolis))
    geopotential = solver.invlap * flux[0] - solver.grid2spec(0.5 * zonal**2)
    geopotential[0, 0] = solver.gravity * solver.havg * math.sqrt(4.0 * math.pi)
    geopotential = geopotential + solver.gravity * solver.grid2spec(galewsky_bump(lats, lons, amplitude))
    return torch.tril(torch.stack((geopotential, vrtdiv[0], vrtdiv[1])))


def trajectory_seed(seed: int, trajectory: int) -> int:
    """The torch seed of one trajectory: independent of how many trajectories a run has."""
    return int(np.random.SeedSequence([seed, trajectory]).generate_state(1, dtype=np.uint64)[0] >> 1)


def random_state(solver, hamp: float, wind_rms: float, generator: torch.Generator) -> torch.Tensor:
    """White spectral noise in depth, vorticity and divergence for degrees 1 … lmax - 1, in physical units.

    The mean depth is exactly ``havg``; the depth perturbation has area-weighted RMS ``hamp`` (m)
    and the wind ``wind_rms`` (m/s). Drawn on the CPU, so a seed gives the same state on any device.
    """
    lmax, mmax = solver.lmax, solver.mmax
    noise = torch.randn(3, lmax, mmax, dtype=torch.complex128, generator=generator)
    noise = torch.tril(noise)
    noise[:, 0, :] = 0.0
    noise[:, :, 0] = noise[:, :, 0].real.to(noise.dtype)
    noise = noise.to(solver.lap.device)
    height = solver.spec2grid(noise[0])
    wind = solver.getuv(noise[1:])
    height_scale = hamp / torch.sqrt(_mean(solver, height**2))
    wind_scale = wind_rms / torch.sqrt(_mean(solver, (wind**2).sum(dim=0)))
    state = torch.empty_like(noise)
    state[0] = solver.gravity * height_scale * noise[0]
    state[0, 0, 0] = solver.gravity * solver.havg * math.sqrt(4.0 * math.pi)
    state[1:] = wind_scale * noise[1:]
    return state


def balanced_state(solver, wind_rms: float, peak_degree: float, generator: torch.Generator) -> torch.Tensor:
    """A random non-divergent flow in linear balance, in physical units.

    Vorticity coefficients are complex white noise under a Gaussian envelope in degree l centred on
    ``peak_degree`` (width 3), scaled to an area-weighted RMS wind of ``wind_rms``; the divergence is
    zero; the geopotential perturbation Φ' solves ∇²Φ' = ∇·(f ∇ψ) for the streamfunction ψ = ∇⁻²ζ
    (geostrophic at mid-latitudes, smooth through the equator), on the mean depth ``havg``.
    """
    lmax, mmax = solver.lmax, solver.mmax
    noise = torch.tril(torch.randn(lmax, mmax, dtype=torch.complex128, generator=generator))
    noise[0, :] = 0.0
    noise[:, 0] = noise[:, 0].real.to(noise.dtype)
    degree = torch.arange(lmax, dtype=torch.float64).view(-1, 1)
    vorticity = (noise * torch.exp(-((degree - peak_degree) / 3.0) ** 2)).to(solver.lap.device)
    zero = torch.zeros_like(vorticity)
    wind = solver.getuv(torch.stack([vorticity, zero]))
    vorticity = vorticity * (wind_rms / torch.sqrt(_mean(solver, (wind**2).sum(dim=0))))
    streamfunction = solver.invlap * vorticity
    gradient = solver.getuv(torch.stack([zero, solver.lap * streamfunction]))  # ∇ψ: the flow of potential ψ
    _, flux_divergence = solver.vrtdivspec(solver.coriolis * gradient)
    state = torch.zeros(3, lmax, mmax, dtype=torch.complex128, device=solver.lap.device)
    state[0] = solver.invlap * flux_divergence
    state[0, 0, 0] = solver.gravity * solver.havg * math.sqrt(4.0 * math.pi)
    state[1] = vorticity
    return state


def initial_state(config: ShallowWaterConfig, solver, trajectory: int) -> torch.Tensor:
    """The spectral initial state of one trajectory."""
    if config.initial_condition == "galewsky":
        return galewsky_state(solver, config.hamp)
    generator = torch.Generator().manual_seed(trajectory_seed(config.seed, trajectory))
    if config.initial_condition == "balanced":
        return balanced_state(solver, config.wind_rms, config.peak_degree, generator)
    return random_state(solver, config.hamp, config.wind_rms, generator)


class _Sampler:
    """Evaluates spectral states on the saved equiangular grid (truncated to degrees below ``nlat``)."""

    def __init__(self, config: ShallowWaterConfig, solver):
        from torch_harmonics import InverseRealSHT, InverseRealVectorSHT

        self.lmax = min(solver.lmax, config.nlat)
        self.mmax = min(solver.mmax, self.lmax, config.nlon // 2 + 1)
        kwargs = dict(lmax=self.lmax, mmax=self.mmax, grid="equiangular", csphase=False)
        device = solver.lap.device
        self.isht = InverseRealSHT(config.nlat, config.nlon, **kwargs).double().to(device)
        self.ivsht = InverseRealVectorSHT(config.nlat, config.nlon, **kwargs).double().to(device)
        self.invlap = solver.invlap[: self.lmax, : self.mmax]
        self.radius = solver.radius
        self.gravity = solver.gravity

    def __call__(self, state: torch.Tensor) -> dict[str, np.ndarray]:
        """Depth (m), winds (m/s), vorticity and divergence (1/s) in float64, latitude increasing."""
        spec = state[:, : self.lmax, : self.mmax]
        grids = self.isht(spec)
        winds = self.ivsht(self.invlap * spec[1:] / self.radius)
        fields = {"h": grids[0] / self.gravity, "u": winds[0], "v": winds[1],
                  "vorticity": grids[1], "divergence": grids[2]}
        return {name: value.flip(-2).cpu().numpy() for name, value in fields.items()}


def run_trajectory(config: ShallowWaterConfig, trajectory: int) -> dict[str, np.ndarray]:
    """Integrate one trajectory and return its frames in float64: ``{variable: [frames, nlat, nlon]}``.

    The first frame is the state after ``spinup_hours``.
    """
    step = time_step(config)
    solver = make_solver(config, step.dt)
    sample = _Sampler(config, solver)
    integrator = AdamsBashforth3(solver, initial_state(config, solver, trajectory))
    frames = {name: np.empty((config.frames, config.nlat, config.nlon)) for name in config.variables}
    with torch.no_grad():
        for index in range(config.frames):
            steps = step.spinup_steps if index == 0 else step.steps_per_frame
            state = integrator.advance(steps)
            if not bool(torch.isfinite(torch.view_as_real(state)).all()):
                raise EarthsimError(
                    f"shallow-water trajectory {trajectory} blew up before frame {index} with dt = {step.dt:g} s; "
                    f"lower dt or courant ({config.courant})")
            fields = sample(state)
            for name in config.variables:
                frames[name][index] = fields[name]
    return frames


def _grid_description(config: ShallowWaterConfig) -> str:
    nlat, nlon = config.solver_shape
    return (f"equiangular {config.nlat} x {config.nlon}: latitudes -90 to 90 by {180 / (config.nlat - 1):g} degrees "
            f"(poles included, Clenshaw-Curtis nodes), longitudes 0 to {360 - 360 / config.nlon:g} by "
            f"{360 / config.nlon:g} degrees; solved on the equiangular {nlat} x {nlon} grid with triangular "
            f"truncation at degree {config.lmax - 1}, saved by spectral evaluation truncated below degree "
            f"{min(config.lmax, config.nlat)}")


def solve_region(config: ShallowWaterConfig, partial: str, trajectory: int) -> float:
    """Integrate one trajectory and write it into its region of the partial store (a task a dask worker can
    run)."""
    from earthsim.data.store import write_region

    frames = run_trajectory(config, trajectory)
    part = xr.Dataset({name: ((TRAJECTORY_DIM, TIME_DIM, LATITUDE_DIM, LONGITUDE_DIM),
                              values[None].astype(np.float32)) for name, values in frames.items()})
    return write_region(partial, trajectory, {"": part}, {TRAJECTORY_DIM: slice(trajectory, trajectory + 1)})


def simulate_shallow_water(config: ShallowWaterConfig, out: str | Path, progress: bool = True,
                           overwrite: bool = False) -> Path:
    """Run ``config.trajectories`` shallow-water trajectories and write them to a Zarr v3 store at ``out``.

    Dims ``(trajectory, time, latitude, longitude)``; ``time`` in hours since the end of spin-up;
    float32 variables (those of ``config.variables``) ``h`` (m), ``u``, ``v`` (m s**-1), ``vorticity``,
    ``divergence`` (s**-1); chunks of one trajectory × ``chunk_frames`` frames. Each trajectory is an
    independent task (on the active dask cluster if there is one) writing its region of
    ``OUT.partial``: a run killed part-way resumes with the trajectories not yet written.
    """
    import dask.array as da

    from earthsim.data.cluster import run_tasks
    from earthsim.data.store import PartialStore

    step = time_step(config)
    shape = (config.trajectories, config.frames, config.nlat, config.nlon)
    chunks = (1, min(config.chunk_frames, config.frames), config.nlat, config.nlon)
    dims = (TRAJECTORY_DIM, TIME_DIM, LATITUDE_DIM, LONGITUDE_DIM)
    coords = {
        TRAJECTORY_DIM: (TRAJECTORY_DIM, np.arange(config.trajectories), {"long_name": "trajectory index"}),
        TIME_DIM: (TIME_DIM, np.arange(config.frames) * config.save_interval_hours,
                 {"units": "hours", "long_name": "time since the end of spin-up"}),
        LATITUDE_DIM: (LATITUDE_DIM, np.linspace(-90.0, 90.0, config.nlat),
                     {"units": "degrees_north", "long_name": "latitude"}),
        LONGITUDE_DIM: (LONGITUDE_DIM, np.arange(config.nlon) * (360.0 / config.nlon),
                      {"units": "degrees_east", "long_name": "longitude"}),
    }
    ds = xr.Dataset({name: (dims, da.zeros(shape, chunks=chunks, dtype=np.float32), dict(VARIABLES[name]))
                     for name in config.variables}, coords=coords)
    ds.attrs.update({
        "title": f"shallow water on the rotating sphere, {config.initial_condition} initial conditions",
        "solver": "torch_harmonics.examples.ShallowWaterSolver (torch-harmonics "
                  f"{_torch_harmonics_version()}), float64, third-order Adams-Bashforth with implicit hyperdiffusion",
        "initial_condition": config.initial_condition,
        "radius": RADIUS, "omega": config.omega, "gravity": GRAVITY, "havg": config.havg, "hamp": config.hamp,
        "wind_rms": config.wind_rms if config.initial_condition != "galewsky" else 0.0,
        **({"peak_degree": config.peak_degree} if config.initial_condition == "balanced" else {}),
        "solver_dt": step.dt, "steps_per_frame": step.steps_per_frame,
        "save_interval_hours": config.save_interval_hours, "spinup_hours": config.spinup_hours,
        "lmax": config.lmax, "seed": config.seed,
        "hyperdiffusion": "vorticity and divergence of degree l multiplied by exp(-dt / (2 h) * (l (l + 1) / (L (L - 1)))**4) "
                          "each step, L = lmax",
        "grid": _grid_description(config),
        "provenance": provenance("earthsim.sim.shallow_water.simulate_shallow_water", [], _config.to_dict(config)),
    })
    store = PartialStore(out, ds, config.trajectories, ds.attrs["provenance"], overwrite=overwrite,
                         what="simulation")
    try:
        run_tasks(solve_region, [(config, str(store.partial), i) for i in store.pending()], progress=progress,
                  description="shallow-water trajectories")
    except EarthsimError:  # a refusal (a trajectory blew up) would recur: nothing worth resuming
        shutil.rmtree(store.partial, ignore_errors=True)
        raise
    return store.finish()


def _torch_harmonics_version() -> str:
    from importlib.metadata import version

    return version("torch-harmonics")


#: What a store must record for its physics to be solved again (the solver baseline).
PHYSICS_ATTRS = ("havg", "omega", "hamp", "wind_rms")


class StoredPhysicsSolver:
    """torch-harmonics' solver with the physics a shallow-water store records, on the store's own grid.

    The store's frames were solved ``refine`` (2) times finer and truncated; this solver starts from
    a stored frame and runs at the saved resolution (triangular truncation at a third of its
    latitudes, the same rule), the "numerical solver at half resolution" baseline a learned model
    must beat. Depth and either the winds or vorticity and divergence must be among the fields.
    """

    def __init__(self, attrs: dict, nlat: int, nlon: int, interval_hours: float, device: str = "cpu"):
        missing = [k for k in PHYSICS_ATTRS if k not in attrs]
        if missing:
            raise ValidationError(f"the store records no shallow-water physics (missing attributes {missing}); the "
                                  "solver baseline needs a store written by earthsim's shallow-water solver")
        self.config = ShallowWaterConfig(nlat=nlat, nlon=nlon, refine=1, save_interval_hours=interval_hours,
                                         frames=1, spinup_hours=0.0, trajectories=1, hamp=float(attrs["hamp"]),
                                         wind_rms=float(attrs["wind_rms"]), havg=float(attrs["havg"]),
                                         omega=float(attrs["omega"]), device=device)
        self.step = time_step(self.config)
        self.solver = make_solver(self.config, self.step.dt)
        self.sample = _Sampler(self.config, self.solver)

    def initial_state(self, fields: dict[str, np.ndarray]) -> torch.Tensor:
        """The spectral state of one stored frame (``{variable: [nlat, nlon]}``, latitude increasing)."""
        solver = self.solver
        grid = {k: torch.as_tensor(np.asarray(v, np.float64)).flip(-2).to(solver.lap.device) for k, v in fields.items()}
        if "h" not in grid:
            raise ValidationError(f"the shallow-water solver needs the depth h; the fields are {sorted(fields)}")
        if "vorticity" in grid and "divergence" in grid:
            vrtdiv = solver.grid2spec(torch.stack((grid["vorticity"], grid["divergence"])))
        elif "u" in grid and "v" in grid:
            vrtdiv = solver.vrtdivspec(torch.stack((grid["u"], grid["v"])))
        else:
            raise ValidationError(f"the shallow-water solver needs u and v, or vorticity and divergence, beside h; the "
                                  f"fields are {sorted(fields)}")
        geopotential = solver.grid2spec(solver.gravity * grid["h"])
        return torch.tril(torch.stack((geopotential, vrtdiv[0], vrtdiv[1])))

    def forecast(self, fields: dict[str, np.ndarray], steps: int, variables: list[str]) -> np.ndarray:
        """``steps`` frames ``[steps, len(variables), nlat, nlon]`` (float64), one per saved interval."""
        integrator = AdamsBashforth3(self.solver, self.initial_state(fields))
        frames = np.empty((steps, len(variables), self.config.nlat, self.config.nlon))
        with torch.no_grad():
            for index in range(steps):
                state = integrator.advance(self.step.steps_per_frame)
                sampled = self.sample(state)
                frames[index] = np.stack([sampled[name] for name in variables])
        return frames
