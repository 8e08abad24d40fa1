"""2-D incompressible Navier–Stokes on the periodic box [0, 2π)²: a pseudo-spectral vorticity solver.

The equation, in vorticity form with stream function ψ (u = ∂ψ/∂y, v = -∂ψ/∂x, ω = ∂v/∂x - ∂u/∂y = -∇²ψ):

    ∂ω/∂t + u·∇ω = ν∇²ω - αω + F,

with viscosity ν (Reynolds number Re = 1/ν for unit length and velocity scales, as in Kochkov et al.
2021), linear drag α and F the curl of a body force. Kolmogorov flow uses the body force
(A sin(k y), 0), so F = -A k cos(k y); with A = 1, k = 4, α = 0.1 and ν = 1e-3 it is the Re = 1000
flow of the learned-interpolation paper (Kochkov et al. 2021, PNAS 118 e2101784118) and of the
temporal-stencil paper (Sun et al. 2023, TSM-PDE). Decaying turbulence has F = 0 and α = 0.

The FNO paper's flow (Li et al. 2021, ICLR; the data of the Spectral-Refiner paper, Cao et al.
2025) lives on the unit box with ν = 1e-3, no drag, F = 0.1(sin(2π(x+y)) + cos(2π(x+y))) and
initial vorticity from the Gaussian random field N(0, 7^{3/2}(−Δ+49I)^{−2.5}). It maps onto this
solver's box exactly by x' = 2πx with time unchanged: velocity scales by 2π, vorticity is
unchanged, the viscosity becomes 4π²ν and the forcing 0.1(sin(x'+y') + cos(x'+y')); so the
``fno-paper`` flow solves, and stores, the same fields on [0, 2π)² at the same times.

Numerics follow jax-cfd's spectral ``NavierStokes2D``: Fourier (rfft2) representation, the advection
term evaluated in physical space and dealiased with the 2/3 rule (Orszag: after the product only
modes with |k_x|, |k_y| < N/3 are kept, which removes every aliased product of retained modes, so
the nonlinear term conserves energy and enstrophy exactly), viscosity and drag treated implicitly.
Time stepping is the low-storage IMEX scheme "Crank–Nicolson / RK4" of Canuto et al. (2007,
Spectral Methods, Appendix D.3) with the five-stage fourth-order coefficients of Carpenter &
Kennedy (1994, NASA TM-109112): explicit RK4 for advection and forcing, a Crank–Nicolson solve for
the linear terms at each stage. The time step comes from a CFL rule, dt ≤ C·dx/u_max (C =
``cfl_safety``, u_max = ``max_velocity``, the initial peak speed, as jax-cfd's ``stable_time_step``),
shortened so that the saved interval is a whole number of steps.

Initial vorticity follows jax-cfd's ``filtered_velocity_field``: each velocity component is white
noise filtered in amplitude by a log-normal spectrum peaked at ``peak_wavenumber`` (log-variance
0.25) divided by k, made divergence-free, scaled to a peak speed of ``max_velocity``, and its curl
taken. Each trajectory draws its noise from its own seed, ``numpy.random.default_rng([seed, i])``,
so a trajectory does not depend on how trajectories are batched.

Frames are saved on coarser grids by spectral truncation (keeping |k_x|, |k_y| < n/2 of an n² grid)
and inverse transform, so a coarse grid point holds exactly the value of the truncated field there.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from earthsim import config as config_lib
from earthsim.errors import EarthsimError
from earthsim.data.conventions import TIME_DIM, TRAJECTORY_DIM, X_DIM, Y_DIM

LENGTH = 2 * math.pi
FLOWS = ("kolmogorov", "decaying", "fno-paper")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
KOLMOGOROV_DRAG = 0.1
FNO_PAPER_FORCING = (1, 0.1)  # wavenumber k and amplitude A of A(sin(k(x'+y')) + cos(k(x'+y'))) on [0, 2π)²
FNO_PAPER_FIELD = (2.5, 7.0)  # α, τ of the initial field N(0, τ^{3/2}(−Δ+τ²I)^{−α}) on the unit box


class _ConfigError(EarthsimError, ValueError):
    """A config field out of range; also a ValueError, so ``config.build`` prefixes where the config came from."""

# Carpenter & Kennedy (1994) five-stage, fourth-order, 2N-storage RK coefficients, in the form of
# Canuto et al. (2007) Appendix D.3 (as jax-cfd's ``crank_nicolson_rk4``): stage k takes the
# explicit update h ← F(u) + β_k h, u ← u + γ_k dt h, and Crank–Nicolson for the linear terms over
# the stage's share (α_{k+1} - α_k) dt of the step.
_ALPHAS = (0.0, 0.1496590219993, 0.3704009573644, 0.6222557631345, 0.9582821306748, 1.0)
_BETAS = (0.0, -0.4178904745, -1.192151694643, -1.697784692471, -1.514183444257)
_GAMMAS = (0.1496590219993, 0.3792103129999, 0.8229550293869, 0.6994504559488, 0.1530572479681)


@dataclass
class NavierStokesConfig:
    """2-D incompressible Navier–Stokes on the periodic box: Kolmogorov flow, decaying turbulence or the FNO
    paper's flow."""

    flow: str = field(default="kolmogorov", metadata={
        "help": "kolmogorov: forced by (sin(k y), 0) with drag; decaying: unforced, no drag; fno-paper: the FNO "
                "paper's unit-box flow (forcing 0.1(sin(2π(x+y)) + cos(2π(x+y))), Gaussian random initial "
                "vorticity) solved on [0, 2π)² by x' = 2πx",
        "choices": list(FLOWS)})
    viscosity: float = field(default=1e-3, metadata={
        "help": "kinematic viscosity ν; Reynolds number Re = 1/ν (unit length and velocity scales); fno-paper: ν "
                "on the unit box (the solver runs with 4π²ν)"})
    drag: float | None = field(default=None, metadata={
        "help": f"linear drag α in -αω; unset: {KOLMOGOROV_DRAG} for kolmogorov, 0 otherwise"})
    forcing_wavenumber: int = field(default=4, metadata={
        "help": "k of the Kolmogorov body force (A sin(k y), 0)"})
    forcing_amplitude: float = field(default=1.0, metadata={
        "help": "A of the Kolmogorov body force (A sin(k y), 0)"})
    resolution: int = field(default=128, metadata={"help": "grid points per side the solver runs at"})
    save_resolutions: tuple[int, ...] = field(default=(64, 32), metadata={
        "help": "grids saved, by spectral truncation of the solver's field (each ≤ resolution, even)"})
    trajectories: int = field(default=4, metadata={"help": "number of independent trajectories"})
    frames: int = field(default=20, metadata={"help": "frames saved per trajectory"})
    save_interval: float = field(default=0.2, metadata={
        "help": "time between saved frames, in solver time units (a whole number of solver steps)"})
    spinup_time: float = field(default=2.0, metadata={
        "help": "time run from the random initial state before the first saved frame (not saved)"})
    coarse_spinup_time: float = field(default=0.0, metadata={
        "help": "time first run on the coarser grid coarse_resolution, before spinup_time at resolution: a cheap way "
                "to reach the statistically steady state (rounded to whole coarse steps; not saved)"})
    coarse_resolution: int = field(default=64, metadata={
        "help": "grid points per side of the coarse spin-up (even, ≤ resolution)"})
    peak_wavenumber: float = field(default=4.0, metadata={
        "help": "wavenumber where the initial velocity spectrum peaks (not used by fno-paper)"})
    max_velocity: float = field(default=7.0, metadata={
        "help": "peak speed of the initial velocity (fno-paper keeps its random field's own) and the speed the CFL "
                "rule uses"})
    cfl_safety: float = field(default=0.5, metadata={
        "help": "Courant number C in dt ≤ C·dx/max_velocity"})
    seed: int = field(default=0, metadata={"help": "random seed; trajectory i uses numpy's default_rng([seed, i])"})
    batch_size: int = field(default=2, metadata={
        "help": "trajectories solved at once (on CPU small batches run fastest, as they stay in cache)"})
    chunk_frames: int = field(default=10, metadata={"help": "frames per Zarr chunk (chunks hold one trajectory)"})
    device: str = field(default="cpu", metadata={"help": "torch device the solver runs on (cpu, cuda, cuda:1, ...)"})
    threads: int = field(default=1, metadata={
        "help": "CPU threads torch uses while solving (its small FFTs gain little from more, and lose much on a busy machine)"})
    dtype: str = field(default="float64", metadata={
        "help": "floating-point precision of the solver (frames are stored as float32)", "choices": list(DTYPES)})
    staggered: bool = field(default=False, metadata={
        "help": "save each grid as the finite-volume solvers hold it: velocity u, v averaged over the faces of its "
                "staggered cells (exact, from the spectral field) and vorticity as their discrete curl on the cell "
                "corners, instead of vorticity by spectral truncation"})

    def __post_init__(self) -> None:
        def require(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise _ConfigError(f"{key}: expected {expected}, got {getattr(self, key)!r}")

        require(self.flow in FLOWS, "flow", f"one of {list(FLOWS)}")
        require(self.viscosity > 0, "viscosity", "a number > 0")
        require(self.drag is None or self.drag >= 0, "drag", "a number ≥ 0 or unset")
        require(self.resolution >= 8 and self.resolution % 2 == 0, "resolution", "an even integer ≥ 8")
        require(1 <= self.forcing_wavenumber <= dealias_cutoff(self.resolution), "forcing_wavenumber",
                f"an integer in [1, {dealias_cutoff(self.resolution)}] (the 2/3 cutoff at resolution {self.resolution})")
        self.save_resolutions = tuple(self.save_resolutions)
        require(len(self.save_resolutions) > 0 and len(set(self.save_resolutions)) == len(self.save_resolutions)
                and all(isinstance(r, int) and 2 <= r <= self.resolution and r % 2 == 0 for r in self.save_resolutions),
                "save_resolutions", f"distinct even integers in [2, resolution={self.resolution}]")
        require(not self.staggered or all(self.resolution % r == 0 for r in self.save_resolutions), "save_resolutions",
                f"divisors of resolution={self.resolution} when staggered (face averages sample the solver grid)")
        for key in ("trajectories", "frames", "batch_size", "chunk_frames", "threads"):
            require(getattr(self, key) >= 1, key, "an integer ≥ 1")
        for key in ("save_interval", "peak_wavenumber", "max_velocity", "cfl_safety"):
            require(getattr(self, key) > 0, key, "a number > 0")
        require(self.spinup_time >= 0, "spinup_time", "a number ≥ 0")
        require(self.coarse_spinup_time >= 0, "coarse_spinup_time", "a number ≥ 0")
        require(self.coarse_spinup_time == 0 or self.coarse_resolution % 2 == 0
                and self.forcing_wavenumber <= dealias_cutoff(self.coarse_resolution) <= dealias_cutoff(self.resolution),
                "coarse_resolution", f"an even integer ≤ resolution={self.resolution} whose 2/3 cutoff keeps the "
                                     f"forcing wavenumber {self.forcing_wavenumber}")
        require(self.dtype in DTYPES, "dtype", f"one of {list(DTYPES)}")
        try:
            torch.device(self.device)
        except RuntimeError as error:
            raise _ConfigError(f"device: {error}") from error

    @property
    def linear_drag(self) -> float:
        """α: the configured drag, or the flow's default (0.1 for Kolmogorov flow, 0 for decaying)."""
        if self.drag is not None:
            return self.drag
        return KOLMOGOROV_DRAG if self.flow == "kolmogorov" else 0.0

    @property
    def solver_viscosity(self) -> float:
        """ν on the solver's [0, 2π)²: the configured one, or 4π²ν for the FNO paper's unit box (x' = 2πx)."""
        return (2 * math.pi) ** 2 * self.viscosity if self.flow == "fno-paper" else self.viscosity


def dealias_cutoff(resolution: int) -> int:
    """Largest |k| the 2/3 rule keeps on an n² grid: K = ⌊(n - 1)/3⌋, so 3K < n and no product aliases."""
    return (resolution - 1) // 3


def grid_coordinates(resolution: int) -> np.ndarray:
    """Positions x_j = j·2π/n, j = 0…n-1, of the grid points along one side (the FFT sampling)."""
    return np.arange(resolution) * (LENGTH / resolution)


def rfft_wavenumbers(resolution: int, device=None, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer angular wavenumbers (k_y as a column [n, 1], k_x as a row [1, n/2 + 1]) of an rfft2 grid."""
    ky = torch.fft.fftfreq(resolution, 1.0 / resolution, dtype=dtype, device=device)
    kx = torch.fft.rfftfreq(resolution, 1.0 / resolution, dtype=dtype, device=device)
    return ky[:, None], kx[None, :]


def _rfft2(field: torch.Tensor) -> torch.Tensor:
    """Fourier coefficients normalised by n² (``norm="forward"``), so a mode's amplitude does not depend on n."""
    return torch.fft.rfft2(field, norm="forward")


def _irfft2(coefficients: torch.Tensor, resolution: int) -> torch.Tensor:
    return torch.fft.irfft2(coefficients, s=(resolution, resolution), norm="forward")


def _resample_hat(coefficients: torch.Tensor, resolution: int) -> torch.Tensor:
    """Coefficients of an n² rfft2 grid moved to an m² grid, keeping the modes |k_x|, |k_y| < min(n, m)/2."""
    n = coefficients.shape[-2]
    keep = min(n, resolution) // 2
    out = coefficients.new_zeros(coefficients.shape[:-2] + (resolution, resolution // 2 + 1))
    out[..., :keep, :keep] = coefficients[..., :keep, :keep]
    if keep > 1:
        out[..., -(keep - 1):, :keep] = coefficients[..., -(keep - 1):, :keep]
    return out


def resample(field: torch.Tensor, resolution: int) -> torch.Tensor:
    """A periodic field [..., n, n] on an m² grid by spectral truncation (m < n) or zero-padding (m > n).

    Modes with |k_x| or |k_y| ≥ min(n, m)/2 (the Nyquist modes included) are dropped.
    """
    return _irfft2(_resample_hat(_rfft2(field), resolution), resolution)


def velocity_from_vorticity(vorticity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity (u, v) of a periodic vorticity field [..., n, n] on [0, 2π)², from ψ̂ = ω̂/|k|²."""
    n = vorticity.shape[-1]
    ky, kx = rfft_wavenumbers(n, vorticity.device, vorticity.dtype)
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    psi_hat = _rfft2(vorticity) / k2
    return _irfft2(1j * ky * psi_hat, n), _irfft2(-1j * kx * psi_hat, n)


def kolmogorov_forcing(resolution: int, wavenumber: int = 4, amplitude: float = 1.0) -> torch.Tensor:
    """Vorticity forcing -A k cos(k y) [n, n]: the curl of the Kolmogorov body force (A sin(k y), 0)."""
    y = torch.as_tensor(grid_coordinates(resolution), dtype=torch.float64)
    return (-amplitude * wavenumber * torch.cos(wavenumber * y))[:, None].expand(resolution, resolution).clone()


def fno_paper_forcing(resolution: int) -> torch.Tensor:
    """Vorticity forcing 0.1(sin(x+y) + cos(x+y)) [n, n] on [0, 2π)²: the FNO paper's 0.1(sin(2π(x+y)) +
    cos(2π(x+y))) on the unit box, at x = x'/2π."""
    k, amplitude = FNO_PAPER_FORCING
    y = torch.as_tensor(grid_coordinates(resolution), dtype=torch.float64)
    phase = k * (y[:, None] + y[None, :])
    return amplitude * (torch.sin(phase) + torch.cos(phase))


def vorticity_forcing(physics: dict, resolution: int) -> torch.Tensor:
    """The vorticity forcing F [n, n] (float64) of a store's flow, from the physics attributes it records."""
    flow = physics.get("flow")
    if flow == "kolmogorov":
        missing = [k for k in ("forcing_wavenumber", "forcing_amplitude") if k not in physics]
        if missing:
            raise EarthsimError(f"physics: a Kolmogorov store must record {missing} (its forcing)")
        return kolmogorov_forcing(resolution, int(physics["forcing_wavenumber"]), float(physics["forcing_amplitude"]))
    if flow == "fno-paper":
        return fno_paper_forcing(resolution)
    if flow == "decaying":
        return torch.zeros(resolution, resolution, dtype=torch.float64)
    raise EarthsimError(f"physics: flow {flow!r} is not a Navier–Stokes flow of earthsim's solver ({list(FLOWS)})")


def fno_paper_vorticity(trajectories: list[int] | range, resolution: int, seed: int) -> torch.Tensor:
    """The FNO paper's initial vorticity [B, n, n] (float64): a Gaussian random field on the unit box.

    As its generator (``GaussianRF(2, s, alpha=2.5, tau=7)``) draws it: complex white noise on every
    Fourier mode times √2·σ·(4π²|k|² + τ²)^{−α/2} with σ = τ^{(2α−2)/2} = 7^{3/2}, the mean mode
    zero, and the real part of the field those amplitudes make. Trajectory i draws from
    ``numpy.random.default_rng([seed, i])``.
    """
    alpha, tau = FNO_PAPER_FIELD
    noise = np.stack([np.random.default_rng([seed, int(i)]).standard_normal((2, resolution, resolution))
                      for i in trajectories])
    coefficients = torch.complex(torch.from_numpy(noise[:, 0]), torch.from_numpy(noise[:, 1]))
    k = torch.fft.fftfreq(resolution, 1.0 / resolution, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sigma = tau ** (0.5 * (2 * alpha - 2))
    amplitude = math.sqrt(2) * sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    amplitude[0, 0] = 0.0
    return torch.fft.ifft2(coefficients * amplitude, norm="forward").real


def stable_time_step(resolution: int, max_velocity: float, cfl_safety: float) -> float:
    """The CFL time step C·dx/u_max on an n² grid of [0, 2π)²."""
    return cfl_safety * (LENGTH / resolution) / max_velocity


def steps_per_interval(interval: float, max_dt: float) -> tuple[int, float]:
    """The fewest steps n with interval/n ≤ max_dt, and that step dt = interval/n."""
    steps = max(1, math.ceil(interval / max_dt - 1e-9))
    return steps, interval / steps


def whole_steps(duration: float, dt: float, solver: str) -> int:
    """Number of steps dt that make ``duration``, refused unless it is a whole number of them."""
    steps = round(duration / dt)
    if steps < 0 or abs(steps * dt - duration) > 1e-9 * max(1.0, abs(duration)):
        raise EarthsimError(f"{solver}: duration {duration} is not a whole number of steps dt = {dt}")
    return steps


def _dealias_mask(resolution: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """1 on the modes the 2/3 rule keeps (|k_x|, |k_y| ≤ K), 0 elsewhere, shaped [n, n/2 + 1]."""
    ky, kx = rfft_wavenumbers(resolution, device, dtype)
    cutoff = dealias_cutoff(resolution)
    return ((ky.abs() <= cutoff) & (kx.abs() <= cutoff)).to(dtype)


def random_vorticity(
    trajectories: list[int] | range, resolution: int, seed: int, peak_wavenumber: float, max_velocity: float,
) -> torch.Tensor:
    """Random initial vorticity [B, n, n] (float64) with jax-cfd's filtered-velocity spectrum.

    Per trajectory i: white-noise velocity from ``default_rng([seed, i])``, amplitude filter
    lognormal(k; mode ``peak_wavenumber``, log-variance 0.25)/k, curl (which keeps only the
    divergence-free part), truncation to the 2/3-rule band, scaled so the peak speed is ``max_velocity``.
    """
    noise = np.stack([np.random.default_rng([seed, int(i)]).standard_normal((2, resolution, resolution))
                      for i in trajectories])
    velocity_hat = _rfft2(torch.from_numpy(noise))
    ky, kx = rfft_wavenumbers(resolution)
    k = torch.sqrt(kx**2 + ky**2)
    variance = 0.25
    mean = math.log(peak_wavenumber) + variance
    safe_k = torch.where(k > 0, k, torch.ones_like(k))
    amplitude = torch.where(k > 0, torch.exp(-(torch.log(safe_k) - mean) ** 2 / (2 * variance)) / safe_k**2,
                            torch.zeros_like(k))
    velocity_hat = velocity_hat * amplitude
    vorticity_hat = 1j * kx * velocity_hat[:, 1] - 1j * ky * velocity_hat[:, 0]
    vorticity_hat = vorticity_hat * _dealias_mask(resolution)
    vorticity = _irfft2(vorticity_hat, resolution)
    u, v = velocity_from_vorticity(vorticity)
    speed = torch.sqrt(u**2 + v**2).amax(dim=(-2, -1), keepdim=True)
    return vorticity * (max_velocity / speed)


class NavierStokes2D(nn.Module):
    """Batched pseudo-spectral solver of the vorticity equation on [0, 2π)², one fixed time step.

    States are vorticity fields [B, n, n] (y rows, x columns, points at j·2π/n) in physical space for
    :meth:`advance` and :meth:`rollout`, or their rfft2 coefficients (``norm="forward"``) for
    :meth:`step` (also the module's ``forward``). ``forcing`` is the vorticity forcing F on the grid
    (the curl of the body force). A module, so that a model using it as a layer carries it: its
    spectral operators are buffers that move with ``.to(device)``; its precision is ``dtype``, fixed
    at construction, and it runs with autocast off.
    """

    def __init__(self, resolution: int, viscosity: float, dt: float, drag: float = 0.0,
                 forcing: torch.Tensor | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if resolution < 4 or resolution % 2:
            raise EarthsimError(f"NavierStokes2D: resolution must be an even integer ≥ 4, got {resolution}")
        if not dt > 0:
            raise EarthsimError(f"NavierStokes2D: dt must be > 0, got {dt}")
        self.resolution, self.viscosity, self.drag, self.dt = resolution, viscosity, drag, dt
        device = torch.device(device)
        ky, kx = rfft_wavenumbers(resolution, device, dtype)
        k2 = kx**2 + ky**2
        inverse_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, torch.ones_like(k2)), torch.zeros_like(k2))
        mask = _dealias_mask(resolution, device, dtype)
        linear = -viscosity * k2 - drag
        buffers = {
            "mask": mask, "linear": linear,
            # Multipliers taking ω̂ to û and v̂, and the fluxes (uω)^, (vω)^ to their dealiased divergence.
            "velocity_u": 1j * ky * inverse_k2, "velocity_v": -1j * kx * inverse_k2,
            "divergence_x": 1j * kx * mask, "divergence_y": 1j * ky * mask,
            "forcing_hat": None if forcing is None else _rfft2(torch.as_tensor(forcing, dtype=dtype, device=device))
            * mask,
        }
        self.betas = []
        for k, (beta, gamma) in enumerate(zip(_BETAS, _GAMMAS)):
            mu = 0.5 * dt * (_ALPHAS[k + 1] - _ALPHAS[k])
            solve = 1.0 / (1.0 - mu * linear)
            self.betas.append(beta)
            buffers[f"implicit_{k}"] = (1.0 + mu * linear) * solve
            buffers[f"explicit_{k}"] = gamma * dt * solve
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mask.device

    def _apply(self, fn, recurse: bool = True):
        """Move with the model (``.to(device)``); refuse a cast (``.float()``, ``.to(dtype)``), which would leave the
        complex operators in the old precision: build the solver in the precision wanted instead."""
        if fn(self.mask).dtype != self.mask.dtype:
            raise EarthsimError(f"NavierStokes2D runs in the precision it was built with ({self.dtype}); build "
                                "another for a different dtype instead of casting it")
        return super()._apply(fn, recurse)

    @property
    def dtype(self) -> torch.dtype:
        return self.mask.dtype

    @classmethod
    def from_config(cls, config: NavierStokesConfig, resolution: int | None = None) -> "NavierStokes2D":
        """The solver for ``config``'s flow at ``resolution`` (default: the config's), with its CFL time step.

        The step is the largest one within the CFL rule that divides ``save_interval`` evenly.
        """
        n = config.resolution if resolution is None else resolution
        _, dt = steps_per_interval(config.save_interval, stable_time_step(n, config.max_velocity, config.cfl_safety))
        forcing = {"kolmogorov": lambda: kolmogorov_forcing(n, config.forcing_wavenumber, config.forcing_amplitude),
                   "fno-paper": lambda: fno_paper_forcing(n), "decaying": lambda: None}[config.flow]()
        return cls(n, config.solver_viscosity, dt, drag=config.linear_drag, forcing=forcing,
                   device=config.device, dtype=DTYPES[config.dtype])

    def to_spectral(self, vorticity: torch.Tensor) -> torch.Tensor:
        """rfft2 coefficients of physical vorticity [..., n, n] on the solver's device and precision.

        Modes outside the 2/3-rule band are set to zero: the solver evolves only that band, so a
        field with finer detail (e.g. a dataset frame at the solver's resolution) loses it here.
        """
        if vorticity.shape[-2:] != (self.resolution, self.resolution):
            raise EarthsimError(f"NavierStokes2D: expected vorticity [..., {self.resolution}, {self.resolution}], "
                                f"got {tuple(vorticity.shape)}")
        return _rfft2(torch.as_tensor(vorticity).to(device=self.device, dtype=self.dtype)) * self.mask

    def to_physical(self, vorticity_hat: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """Physical vorticity from coefficients, on the solver grid or resampled (see :func:`resample`) to ``resolution``."""
        n = self.resolution if resolution is None else resolution
        return _irfft2(vorticity_hat if n == self.resolution else _resample_hat(vorticity_hat, n), n)

    def explicit_terms(self, vorticity_hat: torch.Tensor) -> torch.Tensor:
        """Dealiased -u·∇ω plus the forcing, in Fourier space.

        The advection is evaluated as ∇·(uω), equal to u·∇ω because the spectral velocity is exactly
        divergence-free; it takes three inverse transforms and two forward ones instead of four and one.
        Each field gets its own transform: stacking them into one call is several times slower on CPU.
        """
        n = self.resolution
        u, v = (_irfft2(m * vorticity_hat, n) for m in (self.velocity_u, self.velocity_v))
        omega = _irfft2(vorticity_hat, n)
        terms = -(self.divergence_x * _rfft2(u * omega) + self.divergence_y * _rfft2(v * omega))
        return terms if self.forcing_hat is None else terms + self.forcing_hat

    def step(self, vorticity_hat: torch.Tensor) -> torch.Tensor:
        """One time step dt of the Crank–Nicolson/RK4 scheme on rfft2 coefficients [..., n, n/2 + 1]."""
        with torch.autocast(vorticity_hat.device.type, enabled=False):
            h = torch.zeros_like(vorticity_hat)
            for k, beta in enumerate(self.betas):
                h = self.explicit_terms(vorticity_hat) + beta * h
                vorticity_hat = getattr(self, f"implicit_{k}") * vorticity_hat + getattr(self, f"explicit_{k}") * h
            return vorticity_hat

    def forward(self, vorticity_hat: torch.Tensor) -> torch.Tensor:
        return self.step(vorticity_hat)

    def steps_for(self, duration: float) -> int:
        """Number of steps that make ``duration``; it must be a whole number of steps dt."""
        return whole_steps(duration, self.dt, type(self).__name__)

    def advance(self, vorticity: torch.Tensor, duration: float) -> torch.Tensor:
        """Physical vorticity [B, n, n] advanced by ``duration`` (a whole number of steps), in its input dtype."""
        state = self.to_spectral(vorticity)
        for _ in range(self.steps_for(duration)):
            state = self.step(state)
        return self.to_physical(state).to(vorticity.dtype)

    def rollout(self, vorticity: torch.Tensor, frames: int, interval: float) -> torch.Tensor:
        """Frames [B, frames, n, n] at times interval, 2·interval, … after ``vorticity``, in its input dtype."""
        state = self.to_spectral(vorticity)
        steps = self.steps_for(interval)
        out = []
        for _ in range(frames):
            for _ in range(steps):
                state = self.step(state)
            out.append(self.to_physical(state).to(vorticity.dtype))
        return torch.stack(out, dim=1)

    def max_courant(self, vorticity_hat: torch.Tensor) -> float:
        """max |u|·dt/dx over the batch: the Courant number the state runs at."""
        u, v = (self.to_physical(m * vorticity_hat) for m in (self.velocity_u, self.velocity_v))
        return float(torch.sqrt(u**2 + v**2).max()) * self.dt / (LENGTH / self.resolution)


def _forcing_description(config: NavierStokesConfig) -> str:
    if config.flow == "decaying":
        return "none (decaying turbulence)"
    if config.flow == "fno-paper":
        return "FNO paper: vorticity forcing 0.1(sin(x+y) + cos(x+y)) on [0, 2π)², i.e. 0.1(sin(2π(x+y)) + cos(2π(x+y))) on the unit box"
    k, a = config.forcing_wavenumber, config.forcing_amplitude
    return f"Kolmogorov: body force ({a:g} sin({k} y), 0), vorticity forcing -{a * k:g} cos({k} y)"


def coarse_spinup_steps(config: NavierStokesConfig, coarse: "NavierStokes2D") -> int:
    """Whole steps of the coarse solver that make (at least) ``config.coarse_spinup_time``."""
    return math.ceil(config.coarse_spinup_time / coarse.dt - 1e-9)


def _store_attributes(config: NavierStokesConfig, solver: NavierStokes2D, spinup_steps: int) -> dict:
    """The physics, numerics and provenance every group of the store records."""
    from earthsim.data.store import provenance

    forcing = {"kolmogorov": (config.forcing_wavenumber, config.forcing_amplitude), "fno-paper": FNO_PAPER_FORCING,
               "decaying": (0, 0.0)}[config.flow]
    if config.flow == "fno-paper":
        initial = (f"FNO paper: Gaussian random field N(0, 7^(3/2)(-Δ+49I)^(-2.5)) on the unit box as its GaussianRF "
                   f"draws it, seeds default_rng([{config.seed}, trajectory])")
        setting = {"physical_setting": (
            f"FNO paper (Li et al. 2021): unit box, viscosity {config.viscosity:g}, no drag, forcing "
            "0.1(sin(2π(x+y)) + cos(2π(x+y))); stored on [0, 2π)² by x' = 2πx with time unchanged: vorticity "
            f"unchanged, velocity × 2π, viscosity 4π²ν = {config.solver_viscosity:.6g}")}
    else:
        initial = (f"jax-cfd filtered velocity: log-normal spectrum peaked at k={config.peak_wavenumber:g}, "
                   f"peak speed {config.max_velocity:g}, seeds default_rng([{config.seed}, trajectory])")
        setting = {}
    return {
        "flow": config.flow,
        "viscosity": config.solver_viscosity,
        "reynolds_number": 1.0 / config.viscosity,
        "drag": config.linear_drag,
        "forcing": _forcing_description(config),
        "forcing_wavenumber": forcing[0],
        "forcing_amplitude": forcing[1],
        **setting,
        "domain_length": LENGTH,
        "staggered": config.staggered,
        "save_interval": config.save_interval,
        "solver_dt": solver.dt,
        "steps_per_frame": solver.steps_for(config.save_interval),
        "spinup_time": spinup_steps * solver.dt,
        "coarse_spinup": (f"{config.coarse_spinup_time:g} time units at {config.coarse_resolution}² before the spin-up, "
                          "then zero-padded to the solver grid" if config.coarse_spinup_time > 0 else "none"),
        "solver_resolution": config.resolution,
        "cfl_safety": config.cfl_safety,
        "cfl_velocity": config.max_velocity,
        "initial_condition": initial,
        "numerics": ("pseudo-spectral vorticity form, 2/3-rule dealiasing, Crank-Nicolson/RK4 IMEX "
                     "(Carpenter-Kennedy; Canuto et al. 2007 App. D.3), "
                     + ("saved as exact face averages on staggered (MAC) grids, jax-cfd offsets: u on east faces, v on "
                        "north faces, vorticity on corners" if config.staggered else "saved by spectral truncation")),
        "provenance": provenance("earthsim.sim.navier_stokes.simulate_navier_stokes", [], config_lib.to_dict(config)),
    }


def _template(config: NavierStokesConfig, resolution: int, attrs: dict):
    """The group for one saved resolution, its data still unwritten (lazy zeros), and its encoding."""
    import dask.array as da
    import xarray as xr

    shape = (config.trajectories, config.frames, resolution, resolution)
    chunks = (1, min(config.chunk_frames, config.frames), resolution, resolution)
    coords = grid_coordinates(resolution)
    variables = {"vorticity": {"units": "1", "long_name": "vorticity (∂v/∂x - ∂u/∂y)"}}
    if config.staggered:
        variables = {
            "u": {"units": "1", "long_name": "x-velocity averaged over the face x = x + h, y ∈ [y, y + h] (staggered)"},
            "v": {"units": "1", "long_name": "y-velocity averaged over the face y = y + h, x ∈ [x, x + h] (staggered)"},
            "vorticity": {"units": "1", "long_name": "vorticity at the corner (x + h, y + h): discrete curl of the "
                                                     "face-averaged velocity"}}
    dims = (TRAJECTORY_DIM, TIME_DIM, Y_DIM, X_DIM)
    ds = xr.Dataset(
        {name: (dims, da.zeros(shape, chunks=chunks, dtype=np.float32), attrs) for name, attrs in variables.items()},
        coords={
            TRAJECTORY_DIM: (TRAJECTORY_DIM, np.arange(config.trajectories), {"long_name": "trajectory index"}),
            TIME_DIM: (TIME_DIM, np.arange(config.frames) * config.save_interval,
                     {"units": "solver time units", "long_name": "time since the end of spin-up"}),
            Y_DIM: (Y_DIM, coords, {"units": "1", "long_name": "y position in [0, 2π)"}),
            X_DIM: (X_DIM, coords, {"units": "1", "long_name": "x position in [0, 2π)"}),
        },
        attrs={**attrs, "resolution": resolution},
    )
    return ds, {name: {"chunks": chunks} for name in variables}


def _solve_batch(solver: NavierStokes2D, config: NavierStokesConfig, batch: range, spinup_steps: int,
                 bar) -> tuple[dict[int, dict[str, np.ndarray]], float]:
    """Frames {resolution: {variable: [B, frames, r, r] float32}} of one batch of trajectories, and its peak Courant
    number."""
    from earthsim.sim.finite_volume import curl, face_averages

    steps_per_frame = solver.steps_for(config.save_interval)
    start = config.coarse_resolution if config.coarse_spinup_time > 0 else config.resolution
    initial = (fno_paper_vorticity(batch, start, config.seed) if config.flow == "fno-paper" else
               random_vorticity(batch, start, config.seed, config.peak_wavenumber, config.max_velocity))
    if config.coarse_spinup_time > 0:  # spin up on the coarse grid, then zero-pad the spectrum to the solver's
        coarse = NavierStokes2D.from_config(config, resolution=config.coarse_resolution)
        state = coarse.to_spectral(initial)
        for _ in range(coarse_spinup_steps(config, coarse)):
            state = coarse.step(state)
        bar.update(coarse_spinup_steps(config, coarse))
        initial = resample(coarse.to_physical(state), config.resolution)
    state = solver.to_spectral(initial)
    names = ("u", "v", "vorticity") if config.staggered else ("vorticity",)
    frames = {r: {name: np.empty((len(batch), config.frames, r, r), np.float32) for name in names}
              for r in config.save_resolutions}
    courant = 0.0
    for index in range(config.frames):
        steps = spinup_steps if index == 0 else steps_per_frame
        for _ in range(steps):
            state = solver.step(state)
        bar.update(steps)
        frame_courant = solver.max_courant(state)
        if not frame_courant <= 2 * config.cfl_safety:  # also catches NaN
            raise EarthsimError(
                f"navier-stokes: trajectories {batch.start}-{batch.stop - 1} ran at Courant number {frame_courant:.3g} "
                f"by frame {index}, over twice the cfl_safety {config.cfl_safety} the time step was chosen for; "
                f"raise max_velocity (now {config.max_velocity}) or lower cfl_safety")
        courant = max(courant, frame_courant)
        for r in config.save_resolutions:
            if config.staggered:
                faces = face_averages(state, config.resolution, r)
                for name, values in (("u", faces[:, 0]), ("v", faces[:, 1]), ("vorticity", curl(faces))):
                    frames[r][name][:, index] = values.cpu().numpy()
            else:
                frames[r]["vorticity"][:, index] = solver.to_physical(state, r).cpu().numpy()
    return frames, courant


def solve_region(config: NavierStokesConfig, partial: str, index: int, batch: range, spinup_steps: int,
                 progress: bool = False) -> float:
    """Solve one batch of trajectories and write it into its region of the partial store (a task a dask worker
    can run); returns the batch's peak Courant number, which becomes the region's flag."""
    import xarray as xr
    from tqdm.auto import tqdm

    from earthsim.data.store import write_region

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        solver = NavierStokes2D.from_config(config)
        with tqdm(total=total_steps(config, solver, spinup_steps), unit="step", disable=not progress,
                  desc=f"navier-stokes {config.flow} {config.resolution}², trajectories {batch.start}-{batch.stop - 1}",
                  leave=False) as bar:
            frames, courant = _solve_batch(solver, config, batch, spinup_steps, bar)
    finally:
        torch.set_num_threads(threads)
    parts = {str(r): xr.Dataset({name: ((TRAJECTORY_DIM, TIME_DIM, Y_DIM, X_DIM), values)
                                 for name, values in variables.items()}) for r, variables in frames.items()}
    write_region(partial, index, parts, {TRAJECTORY_DIM: slice(batch.start, batch.stop)}, courant)
    return courant


def total_steps(config: NavierStokesConfig, solver: NavierStokes2D, spinup_steps: int) -> int:
    """Solver steps one batch of trajectories takes, the coarse spin-up included."""
    steps = spinup_steps + (config.frames - 1) * solver.steps_for(config.save_interval)
    if config.coarse_spinup_time > 0:
        steps += coarse_spinup_steps(config, NavierStokes2D.from_config(config, resolution=config.coarse_resolution))
    return steps


def simulate_navier_stokes(config: NavierStokesConfig, out, progress: bool = True, overwrite: bool = False) -> Path:
    """Solve ``config.trajectories`` flows and write their frames to one Zarr v3 store at ``out``.

    One group per saved resolution (named by it, e.g. "64"), each with ``vorticity`` (trajectory, time,
    y, x) float32, chunked one trajectory × ``chunk_frames`` frames; time 0 is the end of the spin-up.
    Trajectories are solved ``batch_size`` at a time, each batch an independent task (on the active
    dask cluster if there is one) writing its region of ``OUT.partial``; a run killed part-way resumes
    with the batches not yet written, and the store is renamed to ``out`` only when every frame is.
    """
    from earthsim.data.cluster import current_client, run_tasks
    from earthsim.data.store import PartialStore

    solver = NavierStokes2D.from_config(config)
    spinup_steps = math.ceil(config.spinup_time / solver.dt - 1e-9)
    attrs = _store_attributes(config, solver, spinup_steps)
    batches = [range(start, min(start + config.batch_size, config.trajectories))
               for start in range(0, config.trajectories, config.batch_size)]
    templates, encodings = {}, {}
    for resolution in config.save_resolutions:
        templates[str(resolution)], encodings[str(resolution)] = _template(config, resolution, attrs)
    store = PartialStore(out, templates, len(batches), attrs["provenance"], encoding=encodings, overwrite=overwrite,
                         what="simulation")
    pending = store.pending()
    here = current_client() is None
    try:
        run_tasks(solve_region, [(config, str(store.partial), i, batches[i], spinup_steps, progress and here)
                                 for i in pending],
                  progress=progress, description=f"navier-stokes {config.flow}: batches of {config.batch_size} "
                                                 "trajectories")
    except EarthsimError:  # a refusal (the flow outran its time step) would recur: nothing worth resuming
        shutil.rmtree(store.partial, ignore_errors=True)
        raise
    if store.complete:  # killed after it was finished but before the rename
        return store.finish()
    max_courant = float(np.max(store.flags())) if len(batches) else 0.0
    return store.finish({str(r): {"max_courant_number": max_courant} for r in config.save_resolutions})
