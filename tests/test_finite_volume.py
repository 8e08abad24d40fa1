"""The staggered finite-volume Navier–Stokes solver: against the Taylor–Green analytic solution, its projection at
round-off, its convergence to the pseudo-spectral solver, and its gradients."""

import math

import numpy as np
import pytest
import torch

from conftest import limited_linear_interpolation
from earthsim.sim.finite_volume import (MOVES, STENCIL_OFFSETS, TAGS, FiniteVolumeNavierStokes, StencilInterpolation,
                                        coarsen, curl, divergence, face_averages, stencil_basis)
from earthsim.sim.navier_stokes import NavierStokes2D, random_vorticity, resample

LENGTH = 2 * math.pi


def taylor_green(n: int, t: float, viscosity: float) -> torch.Tensor:
    """u = sin x cos y, v = −cos x sin y, decaying as exp(−2νt), sampled on the staggered faces."""
    h = LENGTH / n
    i = torch.arange(n, dtype=torch.float64)
    x_u, y_u = (i[None, :] + 1) * h, (i[:, None] + 0.5) * h
    x_v, y_v = (i[None, :] + 0.5) * h, (i[:, None] + 1) * h
    decay = math.exp(-2 * viscosity * t)
    return torch.stack([torch.sin(x_u) * torch.cos(y_u), -torch.cos(x_v) * torch.sin(y_v)]) * decay


@pytest.mark.parametrize("scheme", ["linear", "van-leer"])
def test_taylor_green_decays_at_the_analytic_rate_and_converges(scheme):
    viscosity, duration = 0.05, 1.0
    errors = []
    for n in (16, 32, 64):
        dt = 0.25 * (LENGTH / n)  # Courant 0.25 for the unit peak speed
        steps = round(duration / dt)
        solver = FiniteVolumeNavierStokes(n, viscosity, duration / steps, interpolation=scheme)
        state = taylor_green(n, 0.0, viscosity)
        for _ in range(steps):
            state = solver.step(state)
        exact = taylor_green(n, duration, viscosity)
        errors.append(float((state - exact).abs().max() / exact.abs().max()))
    assert errors[-1] < 0.01, errors
    assert errors[0] / errors[-1] > 3, f"no convergence with resolution: {errors}"


def test_projection_leaves_no_divergence_and_keeps_divergence_free_fields():
    torch.manual_seed(0)
    solver = FiniteVolumeNavierStokes(32, 1e-3, 0.01)
    noisy = torch.randn(3, 2, 32, 32, dtype=torch.float64)
    projected = solver.project(noisy)
    assert float(divergence(noisy).abs().max()) > 1
    assert float(divergence(projected).abs().max()) < 1e-12
    torch.testing.assert_close(solver.project(projected), projected, atol=1e-12, rtol=0)


def test_face_averages_of_a_spectral_field_are_divergence_free_and_match_a_quadrature():
    vorticity = random_vorticity(range(1), 64, seed=3, peak_wavenumber=4, max_velocity=7)
    hat = torch.fft.rfft2(vorticity, norm="forward")
    faces = face_averages(hat, 64, 16)
    assert faces.shape == (1, 2, 16, 16)
    assert float(divergence(faces).abs().max()) < 1e-10
    # Independent check: the exact point values of u along the face, integrated by Simpson's rule.
    from earthsim.sim.navier_stokes import velocity_from_vorticity

    u, _ = velocity_from_vorticity(resample(vorticity, 1024))  # band-limited, so exact on any finer grid
    r = 1024 // 16
    # coarse u[J, I] averages x = (I+1)H over y ∈ [J H, (J+1) H]: fine columns (I+1) r, rows J r … (J+1) r
    column = u[0, :, r * 3]  # I = 2
    rows = torch.cat([column, column[:1]])[r * 5: r * 6 + 1]  # J = 5, both ends
    weights = torch.ones(r + 1, dtype=torch.float64)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    quadrature = float((weights * rows).sum() / (3 * r))
    assert abs(float(faces[0, 0, 5, 2]) - quadrature) < 1e-6


def test_coarsening_keeps_fluxes_so_divergence_free_stays_divergence_free():
    torch.manual_seed(1)
    fine = FiniteVolumeNavierStokes(64, 1e-3, 0.01).project(torch.randn(2, 2, 64, 64, dtype=torch.float64))
    coarse = coarsen(fine, 4)
    assert coarse.shape == (2, 2, 16, 16)
    assert float(divergence(coarse).abs().max()) < 1e-10
    # the spectral route agrees with the staggered route: coarsening 128² face averages equals 32² face averages
    hat = torch.fft.rfft2(random_vorticity(range(1), 128, seed=0, peak_wavenumber=4, max_velocity=7), norm="forward")
    torch.testing.assert_close(coarsen(face_averages(hat, 128, 128), 4), face_averages(hat, 128, 32),
                               atol=1e-12, rtol=0)


def test_finite_volume_converges_to_the_spectral_solution():
    """Kolmogorov flow from one band-limited start: the finite-volume error against the 128² pseudo-spectral
    solution, both on the 32² face averages after 0.5 time units, falls as the finite-volume grid is refined."""
    viscosity, drag, duration = 1e-3, 0.1, 0.5
    start = random_vorticity(range(2), 128, seed=7, peak_wavenumber=4, max_velocity=3)
    spectral = NavierStokes2D(128, viscosity, 0.005, drag=drag,
                              forcing=-4 * torch.cos(4 * torch.arange(128, dtype=torch.float64) * LENGTH / 128)[:, None]
                              .expand(128, 128))
    truth = face_averages(spectral.to_spectral(start), 128, 128)
    hat = spectral.to_spectral(start)
    for _ in range(spectral.steps_for(duration)):
        hat = spectral.step(hat)
    target = coarsen(face_averages(hat, 128, 128), 4)
    errors = []
    for n in (32, 64, 128):
        solver = FiniteVolumeNavierStokes(n, viscosity, 0.005, drag=drag, forcing_wavenumber=4, forcing_amplitude=1.0)
        state = coarsen(truth, 128 // n)
        for _ in range(solver.steps_for(duration)):
            state = solver.step(state)
        errors.append(float((coarsen(state, n // 32) - target).norm() / target.norm()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.05 and errors[0] / errors[2] > 3, errors


def test_stencils_reproduce_constants_and_start_as_linear_interpolation():
    assert len(set(STENCIL_OFFSETS)) == 16
    for axis in (0, 1):
        bias, basis = stencil_basis(axis)
        assert abs(float(bias.sum()) - 1) < 1e-12 and float(basis.sum(0).abs().max()) < 1e-12
        assert basis.shape == (16, 15)
        torch.testing.assert_close(basis.T @ basis, torch.eye(15, dtype=torch.float64))
    torch.manual_seed(0)
    n = 16
    solver = FiniteVolumeNavierStokes(n, 1e-3, 0.01, interpolation="linear")
    state = solver.project(torch.randn(2, 2, n, n, dtype=torch.float64))
    biases = torch.stack([stencil_basis(axis)[0] for _, axis in MOVES] * len(TAGS))  # [8, 16]
    linear = StencilInterpolation(biases[None, :, :, None, None].expand(2, -1, -1, n, n))
    torch.testing.assert_close(solver.step(state, linear), solver.step(state, limited_linear_interpolation()),
                               atol=1e-12, rtol=0)
    assert float((solver.step(state, linear) - solver.step(state)).abs().max()) > 1e-6  # the limiter acts
    # any coefficients built as bias + null-space keep a uniform flow uniform (constants reproduced)
    _, basis = stencil_basis(0)
    random = biases[None, :, :, None, None] + torch.einsum("sk,bmkyx->bmsyx", basis,
                                                           torch.randn(2, 8, 15, n, n, dtype=torch.float64))
    uniform = torch.ones(2, 2, n, n, dtype=torch.float64) * torch.tensor([0.7, -0.2], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(solver.convection(uniform, StencilInterpolation(random)), torch.zeros_like(uniform),
                               atol=1e-12, rtol=0)


def test_gradients_flow_through_many_steps_and_match_finite_differences():
    torch.manual_seed(0)
    n = 8
    solver = FiniteVolumeNavierStokes(n, 1e-2, 0.02, drag=0.1, forcing_wavenumber=1, forcing_amplitude=1.0,
                                      interpolation="linear")
    start = solver.project(torch.randn(1, 2, n, n, dtype=torch.float64))
    coefficients = torch.zeros(1, 8, 15, n, n, dtype=torch.float64, requires_grad=True)

    def loss(logits):
        bias = torch.stack([stencil_basis(axis)[0] for _, axis in MOVES] * len(TAGS))
        basis = stencil_basis(0)[1]
        weights = bias[None, :, :, None, None] + torch.einsum("sk,bmkyx->bmsyx", basis, logits)
        state = start
        for _ in range(5):
            state = solver.step(state, StencilInterpolation(weights))
        return (curl(state) ** 2).mean()

    torch.autograd.gradcheck(loss, (coefficients,), eps=1e-6, atol=1e-6, nondet_tol=0, fast_mode=True)


def test_a_staggered_store_holds_divergence_free_face_averages_and_their_curl(tmp_path):
    import xarray as xr

    from earthsim.sim.navier_stokes import NavierStokesConfig, simulate_navier_stokes

    config = NavierStokesConfig(resolution=32, save_resolutions=(32, 16), staggered=True, trajectories=2, frames=3,
                                spinup_time=0.1, save_interval=0.1)
    store = simulate_navier_stokes(config, tmp_path / "fv.zarr", progress=False)
    fine = xr.open_zarr(store, group="32", consolidated=False)
    coarse = xr.open_zarr(store, group="16", consolidated=False)
    assert fine.attrs["staggered"] is True and set(coarse.data_vars) == {"u", "v", "vorticity"}
    for group, n in ((fine, 32), (coarse, 16)):
        velocity = torch.from_numpy(np.stack([group.u.values, group.v.values], axis=2)).double()
        assert float(divergence(velocity).abs().max()) < 1e-4 * float(velocity.abs().max()) * n  # float32 storage
        np.testing.assert_allclose(curl(velocity).numpy(), group.vorticity.values, atol=1e-4)
    # the 16² faces are the 32² faces coarse-grained (both exact averages of one field)
    fine_velocity = torch.from_numpy(np.stack([fine.u.values, fine.v.values], axis=2)).double()
    np.testing.assert_allclose(coarsen(fine_velocity, 2)[:, :, 0].numpy(), coarse.u.values, atol=1e-5)
    with pytest.raises(ValueError, match="divisors"):
        NavierStokesConfig(resolution=48, save_resolutions=(32,), staggered=True)
