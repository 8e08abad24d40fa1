"""2-D incompressible Navier–Stokes in velocity form on a periodic staggered (MAC) grid: a differentiable
finite-volume solver in torch, the numerical core of the learned-interpolation and TSM solvers.

    ∂u/∂t = -∇·(u ⊗ u) + ν∇²u - αu + f - ∇p,   ∇·u = 0,   on [0, 2π)²

Grid (jax-cfd's offsets, arrays indexed ``[..., y, x]``, cell size h = 2π/n): cell (i, j) has its
centre at ((i+½)h, (j+½)h), where pressure and divergence live; ``u[j, i]`` is the x-velocity on its
east face ((i+1)h, (j+½)h), ``v[j, i]`` the y-velocity on its north face ((i+½)h, (j+1)h); the
vorticity ``curl[j, i]`` = (v[j, i+1] − v[j, i])/h − (u[j+1, i] − u[j, i])/h lives on the corner
((i+1)h, (j+1)h). A velocity is one tensor ``[..., 2, n, n]`` (channel 0 = u, 1 = v).

One step follows jax-cfd's ``implicit_diffusion_navier_stokes`` (the solver the learned-interpolation
paper, Kochkov et al. 2021, and TSM, Sun et al. 2023, build on): explicit convection and forcing by
forward Euler, pressure projection, then implicit diffusion. Convection is in flux form over each
velocity component's control volume: the face value of the advected component ("c") times the
advecting velocity at that face ("u"), both from an :class:`Interpolation` that can be swapped —
linear, first-order upwind, van Leer (the flux-limited Lax–Wendroff the paper's numerical baseline
uses for "c", with linear "u"), or per-cell stencils predicted by a network (:class:`StencilInterpolation`).

Each interpolation moves a component half a cell along one axis: u to +½x (its control volume's
east face, the cell centre) and +½y (its north face, a corner); v to +½x (a corner) and +½y (the cell
centre). The four moves, keyed ``(component, axis)``, serve both roles, so a learned scheme has
2 tags × 4 keys = 8 stencils per cell.

The Poisson solve of the projection and the implicit diffusion are exact inverses of the discrete
operators, diagonal in Fourier space on the periodic grid; after projection the discrete divergence
is zero to round-off. Time step by the CFL rule dt = C·h/u_max, as the spectral solver.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import nn

from earthsim.errors import EarthsimError
from earthsim.sim.navier_stokes import (LENGTH, rfft_wavenumbers, stable_time_step, steps_per_interval,
                                        whole_steps)

#: The four half-cell moves of a staggered velocity, as (component, axis): component 0 = u, 1 = v; axis
#: 0 = x (the last array dim), 1 = y.
MOVES = ((0, 0), (0, 1), (1, 0), (1, 1))
#: Roles an interpolated value plays in the convective flux: the advecting velocity and the advected component.
TAGS = ("u", "c")
STENCIL = 4
#: Store attributes the solver is built from (besides ``flow``).
PHYSICS_KEYS = ("viscosity", "drag", "forcing_wavenumber", "forcing_amplitude", "domain_length", "cfl_velocity",
                "cfl_safety")


def _shift(field: torch.Tensor, offset: int, axis: int) -> torch.Tensor:
    """``field`` at index + ``offset`` along ``axis`` (0 = x, the last dim; 1 = y), periodically."""
    return torch.roll(field, -offset, dims=-1 - axis)


def half_cell_linear(field: torch.Tensor, axis: int) -> torch.Tensor:
    """Field moved +½ cell along ``axis`` by the two-point mean."""
    return 0.5 * (field + _shift(field, 1, axis))


def curl(velocity: torch.Tensor, length: float = LENGTH) -> torch.Tensor:
    """Vorticity ∂v/∂x − ∂u/∂y ``[..., n, n]`` on the cell corners of a staggered velocity ``[..., 2, n, n]``."""
    h = length / velocity.shape[-1]
    u, v = velocity[..., 0, :, :], velocity[..., 1, :, :]
    return (_shift(v, 1, 0) - v - _shift(u, 1, 1) + u) / h


def divergence(velocity: torch.Tensor, length: float = LENGTH) -> torch.Tensor:
    """Discrete divergence ``[..., n, n]`` at the cell centres of a staggered velocity ``[..., 2, n, n]``."""
    h = length / velocity.shape[-1]
    u, v = velocity[..., 0, :, :], velocity[..., 1, :, :]
    return (u - _shift(u, -1, 0) + v - _shift(v, -1, 1)) / h


def coarsen(velocity: torch.Tensor, factor: int) -> torch.Tensor:
    """Face averages of a staggered velocity ``[..., 2, n, n]`` on the grid ``factor`` times coarser.

    A coarse east face at x = (I+1)H is made of the ``factor`` fine faces at the same x; its average
    is their mean (so the coarse field's fluxes, and its zero divergence, are those of the fine one).
    """
    if factor == 1:
        return velocity
    n = velocity.shape[-1]
    if n % factor:
        raise EarthsimError(f"coarsen: a {n}² grid does not coarsen by {factor}")
    u, v = velocity[..., 0, :, :], velocity[..., 1, :, :]
    # fine u faces with (i+1) a multiple of factor: i = factor-1, 2 factor-1, ...; average over the y cells they span
    u = u[..., :, factor - 1::factor].unflatten(-2, (n // factor, factor)).mean(-2)
    v = v[..., factor - 1::factor, :].unflatten(-1, (n // factor, factor)).mean(-1)
    return torch.stack([u, v], dim=-3)


class Interpolation(abc.ABC):
    """Face values of a velocity component moved half a cell: ``(field, move, tag, advecting) → face``.

    ``field`` ``[..., n, n]`` is component ``move[0]``, moved +½ along ``move[1]``; ``advecting`` is the
    advecting velocity at the target faces (given for tag "c", so upwind schemes can see the flow).
    """

    @abc.abstractmethod
    def __call__(self, field: torch.Tensor, move: tuple[int, int], tag: str,
                 advecting: torch.Tensor | None, dt: float, h: float) -> torch.Tensor:
        """The face values ``[..., n, n]``."""


class LinearInterpolation(Interpolation):
    """Second-order central: the mean of the two neighbours (both roles)."""

    def __call__(self, field, move, tag, advecting, dt, h):
        return half_cell_linear(field, move[1])


def upwind(field: torch.Tensor, axis: int, advecting: torch.Tensor) -> torch.Tensor:
    """Field moved +½ cell along ``axis`` by taking the upstream neighbour of each face."""
    return torch.where(advecting > 0, field, _shift(field, 1, axis))


def tvd_limit(field: torch.Tensor, axis: int, advecting: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A high-order face value ``high`` limited towards upwind by van Leer's limiter: upwind + φ(r)(high − upwind),
    r the ratio of the upstream to the local jump (jax-cfd's ``tvd_limiter_transformation``, which the learned
    solvers of Kochkov et al. 2021 and TSM apply to their learned "c" interpolation too)."""
    minus, here, plus, plus2 = (_shift(field, k, axis) for k in (-1, 0, 1, 2))
    jump = plus - here
    safe = torch.where(jump == 0, torch.ones_like(jump), jump)
    ratio = torch.where(advecting > 0, here - minus, plus2 - plus) / safe
    ratio = torch.where(jump == 0, torch.zeros_like(ratio), ratio)
    limiter = (ratio + ratio.abs()) / (1 + ratio.abs())
    low = upwind(field, axis, advecting)
    return low + limiter * (high - low)


class UpwindInterpolation(Interpolation):
    """First-order upwind for the advected component (the upstream neighbour), linear for the advecting velocity."""

    def __call__(self, field, move, tag, advecting, dt, h):
        if tag == "u":
            return half_cell_linear(field, move[1])
        return upwind(field, move[1], advecting)


class VanLeerInterpolation(Interpolation):
    """Lax–Wendroff limited by van Leer's TVD limiter for the advected component (jax-cfd's
    ``tvd_limiter_transformation(lax_wendroff)``, the numerical baseline of the learned-solver papers);
    linear for the advecting velocity."""

    def __call__(self, field, move, tag, advecting, dt, h):
        axis = move[1]
        if tag == "u":
            return half_cell_linear(field, axis)
        here, plus = field, _shift(field, 1, axis)
        courant = advecting * dt / h
        lax_wendroff = torch.where(advecting > 0, here + 0.5 * (1 - courant) * (plus - here),
                                   plus - 0.5 * (1 + courant) * (plus - here))
        return tvd_limit(field, axis, advecting, lax_wendroff)


#: (dx, dy) of the 4 × 4 stencil of every +½ move: −1…2 on both axes (the target sits between 0 and 1 along the
#: move's axis, on 0 along the other, as jax-cfd's ``get_stencils`` places them), row-major over (dy, dx).
STENCIL_OFFSETS = [(dx, dy) for dy in range(-1, STENCIL - 1) for dx in range(-1, STENCIL - 1)]


def stencil_basis(axis: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear-interpolation stencil (jax-cfd's low-order bias) ``[16]`` and an orthonormal basis ``[16, 15]``
    of stencils whose coefficients sum to zero: bias + basis @ logits reproduces constants for any logits."""
    bias = torch.zeros(STENCIL * STENCIL, dtype=torch.float64)
    for index, (dx, dy) in enumerate(STENCIL_OFFSETS):
        along, across = (dx, dy) if axis == 0 else (dy, dx)
        if across == 0 and along in (0, 1):
            bias[index] = 0.5
    ones = torch.ones(1, STENCIL * STENCIL, dtype=torch.float64)
    _, _, vh = torch.linalg.svd(ones)  # rows 1.. span the null space of the sum
    return bias.to(dtype), vh[1:].T.contiguous().to(dtype)


class StencilInterpolation(Interpolation):
    """Per-cell 4 × 4 stencils for every move and tag, from coefficients a network predicted; the advected
    component's face values limited by :func:`tvd_limit`, as the learned solvers of the references do.

    ``coefficients`` ``[..., 8, 16, n, n]``: for tag t and move m (index ``t * 4 + m`` in :data:`TAGS` ×
    :data:`MOVES` order), the weights of the 16 neighbours :data:`STENCIL_OFFSETS`.
    """

    def __init__(self, coefficients: torch.Tensor):
        self.coefficients = coefficients

    def __call__(self, field, move, tag, advecting, dt, h):
        weights = self.coefficients[..., TAGS.index(tag) * len(MOVES) + MOVES.index(move), :, :, :]
        n = field.shape[-1]
        # the 16 neighbours −1…2 of every cell in one unfold of the periodically padded field, row-major (dy, dx)
        padded = torch.nn.functional.pad(field.reshape(-1, 1, n, n), (1, 2, 1, 2), mode="circular")
        patches = torch.nn.functional.unfold(padded, STENCIL).view(*field.shape[:-2], STENCIL * STENCIL, n, n)
        value = (weights * patches).sum(-3)
        return value if tag == "u" else tvd_limit(field, move[1], advecting, value)


SCHEMES = {"linear": LinearInterpolation, "upwind": UpwindInterpolation, "van-leer": VanLeerInterpolation}


class FiniteVolumeNavierStokes(nn.Module):
    """Staggered-grid finite-volume Navier–Stokes on [0, 2π)² (see the module docstring), batched and differentiable.

    ``step(velocity)`` advances ``[..., 2, n, n]`` by ``dt`` with the configured interpolation, or with one
    given per call (a network's stencils).
    """

    def __init__(self, resolution: int, viscosity: float, dt: float, drag: float = 0.0,
                 forcing_wavenumber: int = 0, forcing_amplitude: float = 0.0, interpolation: str = "van-leer",
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if resolution < 4:
            raise EarthsimError(f"FiniteVolumeNavierStokes: resolution must be ≥ 4, got {resolution}")
        if not dt > 0:
            raise EarthsimError(f"FiniteVolumeNavierStokes: dt must be > 0, got {dt}")
        if interpolation not in SCHEMES:
            raise EarthsimError(f"FiniteVolumeNavierStokes: interpolation must be one of {list(SCHEMES)}, "
                                f"got {interpolation!r}")
        self.resolution, self.viscosity, self.dt, self.drag = resolution, viscosity, dt, drag
        self.h = LENGTH / resolution
        self.interpolation_name = interpolation
        self.interpolation = SCHEMES[interpolation]()
        device = torch.device(device)
        # Eigenvalues of the 5-point Laplacian on the periodic grid, in rfft2 layout [n, n/2 + 1].
        ky, kx = rfft_wavenumbers(resolution, device, dtype)
        laplacian = -(4 / self.h**2) * (torch.sin(math.pi * kx / resolution) ** 2
                                        + torch.sin(math.pi * ky / resolution) ** 2)
        safe = torch.where(laplacian == 0, torch.ones_like(laplacian), laplacian)
        self.register_buffer("inverse_laplacian", torch.where(laplacian == 0, torch.zeros_like(laplacian), 1 / safe),
                             persistent=False)
        self.register_buffer("implicit_diffusion", 1 / (1 - dt * viscosity * laplacian), persistent=False)
        y_u = (torch.arange(resolution, dtype=dtype, device=device) + 0.5) * self.h  # u sits at y = (j+½)h
        forcing = torch.zeros(2, resolution, resolution, dtype=dtype, device=device)
        forcing[0] = (forcing_amplitude * torch.sin(forcing_wavenumber * y_u))[:, None]
        self.register_buffer("forcing", forcing, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.forcing.dtype

    @classmethod
    def from_physics(cls, physics: dict, resolution: int, interval: float, interpolation: str = "van-leer",
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64
                     ) -> tuple["FiniteVolumeNavierStokes", int]:
        """The solver of the flow a store's physics attributes record, at ``resolution``, and the number of its steps
        per ``interval``: the CFL step of the store's rule that divides ``interval`` evenly."""
        flow = physics.get("flow")
        if flow not in ("kolmogorov", "decaying"):
            raise EarthsimError(f"finite-volume solver: flow {flow!r} is not one it takes (kolmogorov, decaying)")
        missing = [k for k in PHYSICS_KEYS if k not in physics]
        if missing:
            raise EarthsimError(f"finite-volume solver: the store records no {missing} (physics the solver needs)")
        if abs(float(physics["domain_length"]) - LENGTH) > 1e-9:
            raise EarthsimError(f"finite-volume solver: expected the [0, 2π)² box, got side {physics['domain_length']}")
        steps, dt = steps_per_interval(interval, stable_time_step(resolution, float(physics["cfl_velocity"]),
                                                                  float(physics["cfl_safety"])))
        kolmogorov = flow == "kolmogorov"
        solver = cls(resolution, float(physics["viscosity"]), dt, drag=float(physics["drag"]),
                     forcing_wavenumber=int(physics["forcing_wavenumber"]) if kolmogorov else 0,
                     forcing_amplitude=float(physics["forcing_amplitude"]) if kolmogorov else 0.0,
                     interpolation=interpolation, device=device, dtype=dtype)
        return solver, steps

    def convection(self, velocity: torch.Tensor, interpolation: Interpolation | None = None) -> torch.Tensor:
        """−∇·(u ⊗ u) on each component's control volume, ``[..., 2, n, n]``."""
        interpolate = interpolation or self.interpolation
        dt, h = self.dt, self.h
        components = (velocity[..., 0, :, :], velocity[..., 1, :, :])
        # Advecting velocity on the faces of component c's control volume along axis a: component a moved along c.
        out = []
        for c in (0, 1):
            total = 0.0
            for a in (0, 1):
                advecting = interpolate(components[a], (a, c), "u", None, dt, h)
                advected = interpolate(components[c], (c, a), "c", advecting, dt, h)
                flux = advected * advecting
                total = total + (flux - _shift(flux, -1, a)) / h
            out.append(-total)
        return torch.stack(out, dim=-3)

    def project(self, velocity: torch.Tensor) -> torch.Tensor:
        """The divergence-free part: subtract ∇p with ∇²p = ∇·u solved exactly in Fourier space."""
        n = self.resolution
        pressure = torch.fft.irfft2(torch.fft.rfft2(divergence(velocity)) * self.inverse_laplacian, s=(n, n))
        gradient = torch.stack([(_shift(pressure, 1, 0) - pressure) / self.h,
                                (_shift(pressure, 1, 1) - pressure) / self.h], dim=-3)
        return velocity - gradient

    def diffuse(self, velocity: torch.Tensor) -> torch.Tensor:
        """Backward-Euler diffusion: (1 − ν dt ∇²)⁻¹ u, per component."""
        n = self.resolution
        return torch.fft.irfft2(torch.fft.rfft2(velocity) * self.implicit_diffusion, s=(n, n))

    def step(self, velocity: torch.Tensor, interpolation: Interpolation | None = None) -> torch.Tensor:
        """One step dt: forward Euler on convection, forcing and drag; projection; implicit diffusion."""
        if velocity.shape[-3:] != (2, self.resolution, self.resolution):
            raise EarthsimError(f"FiniteVolumeNavierStokes: expected velocity [..., 2, {self.resolution}, "
                                f"{self.resolution}], got {tuple(velocity.shape)}")
        with torch.autocast(velocity.device.type, enabled=False):  # the solver keeps its dtype under mixed precision
            tendency = self.convection(velocity, interpolation) + self.forcing - self.drag * velocity
            return self.diffuse(self.project(velocity + self.dt * tendency))

    def steps_for(self, duration: float) -> int:
        """Number of steps that make ``duration``; it must be a whole number of steps dt."""
        return whole_steps(duration, self.dt, type(self).__name__)

    def rollout(self, velocity: torch.Tensor, frames: int, interval: float) -> torch.Tensor:
        """Frames ``[B, frames, 2, n, n]`` at times interval, 2·interval, … after ``velocity`` ``[B, 2, n, n]``."""
        steps = self.steps_for(interval)
        state = velocity.to(self.dtype)
        out = []
        for _ in range(frames):
            for _ in range(steps):
                state = self.step(state)
            out.append(state.to(velocity.dtype))
        return torch.stack(out, dim=1)


def face_averages(vorticity_hat: torch.Tensor, fine: int, coarse: int) -> torch.Tensor:
    """Exact face averages on the staggered ``coarse``² grid of the band-limited velocity of a spectral vorticity field.

    ``vorticity_hat``: rfft2 coefficients (``norm="forward"``, as :mod:`earthsim.sim.navier_stokes`) of a field on
    the ``fine``² grid. The average of a Fourier mode over a face of length H is the mode at the face centre
    times sinc(k H/2); evaluated at the coarse faces (u: x = (I+1)H, y = (J+½)H; v: x = (I+½)H, y = (J+1)H) by a
    phase shift, an inverse transform on the fine grid and sampling every ``fine/coarse`` points. Returns
    ``[..., 2, coarse, coarse]``; its discrete divergence is zero to round-off (the fluxes are exact).
    """
    if fine % coarse:
        raise EarthsimError(f"face_averages: the solver grid {fine}² is not a multiple of {coarse}²")
    r = fine // coarse
    size = LENGTH / coarse
    dtype = vorticity_hat.real.dtype
    ky, kx = rfft_wavenumbers(fine, vorticity_hat.device, dtype)
    k2 = kx**2 + ky**2
    psi_hat = vorticity_hat / torch.where(k2 > 0, k2, torch.ones_like(k2))
    sinc = lambda k: torch.sinc(k * size / 2 / math.pi)  # noqa: E731 (torch.sinc is sin(πz)/(πz))
    u_hat = 1j * ky * psi_hat * sinc(ky) * torch.exp(1j * (kx * size + ky * size / 2))
    v_hat = -1j * kx * psi_hat * sinc(kx) * torch.exp(1j * (kx * size / 2 + ky * size))
    u, v = (torch.fft.irfft2(f, s=(fine, fine), norm="forward")[..., ::r, ::r] for f in (u_hat, v_hat))
    return torch.stack([u, v], dim=-3)
