"""The 2-D Navier–Stokes solver against independent truth, and the stores it writes.

Truth used here: exact solutions (Taylor–Green decay), hand-derived advection and velocity of a
band-limited stream function, the energy and enstrophy budgets of the continuous equations, and
trigonometric sums evaluated directly on coarse grids. Diagnostics are computed with numpy, not
with the solver's own helpers.

Budget conventions (domain averages < >): E = ½<|u|²>, Z = ½<ω²>, P = ½<|∇ω|²>;
dE/dt = -2νZ - 2αE + <u·f> and dZ/dt = -2νP - 2αZ + <ω curl f>.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from earthsim import catalog, config
from earthsim.errors import EarthsimError
from earthsim.sim import navier_stokes as ns


def _mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) with y along rows and x along columns, points at j·2π/n."""
    x = np.arange(n) * 2 * np.pi / n
    y_grid, x_grid = np.meshgrid(x, x, indexing="ij")
    return x_grid, y_grid


def _numpy_velocity_and_gradient(omega: np.ndarray) -> dict[str, np.ndarray]:
    """u, v, ∂ω/∂x, ∂ω/∂y of periodic fields [..., n, n] with numpy's FFT (independent of the solver)."""
    n = omega.shape[-1]
    k = np.fft.fftfreq(n, 1.0 / n)
    kx, ky = k[None, :], k[:, None]
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    w = np.fft.fft2(omega)
    psi = w / k2
    psi[..., 0, 0] = 0.0
    back = lambda a: np.fft.ifft2(a).real  # noqa: E731
    return {"u": back(1j * ky * psi), "v": back(-1j * kx * psi), "wx": back(1j * kx * w), "wy": back(1j * ky * w)}


def _budgets(omega: np.ndarray, viscosity: float, drag: float, forcing_k: int = 0, amplitude: float = 0.0):
    """E, Z and the right-hand sides of dE/dt and dZ/dt for vorticity [T, B, n, n]."""
    d = _numpy_velocity_and_gradient(omega)
    x_grid, y_grid = _mesh(omega.shape[-1])
    body_force = amplitude * np.sin(forcing_k * y_grid)          # f = (A sin(k y), 0)
    curl_force = -amplitude * forcing_k * np.cos(forcing_k * y_grid)
    mean = lambda a: a.mean(axis=(-2, -1))  # noqa: E731
    energy = 0.5 * mean(d["u"] ** 2 + d["v"] ** 2)
    enstrophy = 0.5 * mean(omega**2)
    palinstrophy = 0.5 * mean(d["wx"] ** 2 + d["wy"] ** 2)
    energy_rhs = -2 * viscosity * enstrophy - 2 * drag * energy + mean(d["u"] * body_force)
    enstrophy_rhs = -2 * viscosity * palinstrophy - 2 * drag * enstrophy + mean(omega * curl_force)
    return energy, enstrophy, energy_rhs, enstrophy_rhs


def _run(solver: ns.NavierStokes2D, omega: torch.Tensor, steps: int) -> np.ndarray:
    """Physical vorticity at every step 0…steps, [steps + 1, B, n, n]."""
    state = solver.to_spectral(omega)
    out = [solver.to_physical(state).numpy()]
    for _ in range(steps):
        state = solver.step(state)
        out.append(solver.to_physical(state).numpy())
    return np.stack(out)


# --- exact solutions ---------------------------------------------------------------------------


@pytest.mark.parametrize("viscosity, drag", [(0.05, 0.0), (1e-3, 0.1), (0.02, 0.3)])
def test_taylor_green_vortex_decays_as_exp_minus_2_nu_t(viscosity, drag):
    # ω = 2 sin x sin y is a steady Euler flow (ω = 2ψ, so u·∇ω = 0): only the linear terms act and
    # ω(t) = ω(0) exp(-(2ν + α) t). A second mode on the same shell |k|² = 2 adds a non-trivial
    # velocity field whose advection must still cancel exactly.
    n, dt, steps = 32, 0.02, 100
    x_grid, y_grid = _mesh(n)
    omega0 = 2 * np.sin(x_grid) * np.sin(y_grid) + 0.7 * np.cos(x_grid + y_grid - 0.3)
    solver = ns.NavierStokes2D(n, viscosity, dt, drag=drag)
    omega = solver.advance(torch.from_numpy(omega0)[None], steps * dt)[0].numpy()
    exact = omega0 * math.exp(-(2 * viscosity + drag) * steps * dt)
    assert np.linalg.norm(omega - exact) / np.linalg.norm(exact) <= 1e-6


def test_advection_and_velocity_match_hand_derived_fields():
    # ψ = sin x cos 2y + ½ cos(3x + a) sin(y + b): ω = -∇²ψ = 5ψ₁ + 10ψ₂, u = ∂ψ/∂y, v = -∂ψ/∂x, all by hand.
    n, a, b = 32, 0.4, -0.7
    x, y = _mesh(n)
    psi1, psi2 = np.sin(x) * np.cos(2 * y), 0.5 * np.cos(3 * x + a) * np.sin(y + b)
    psi1_x, psi1_y = np.cos(x) * np.cos(2 * y), -2 * np.sin(x) * np.sin(2 * y)
    psi2_x, psi2_y = -1.5 * np.sin(3 * x + a) * np.sin(y + b), 0.5 * np.cos(3 * x + a) * np.cos(y + b)
    omega = 5 * psi1 + 10 * psi2
    u, v = psi1_y + psi2_y, -(psi1_x + psi2_x)
    omega_x, omega_y = 5 * psi1_x + 10 * psi2_x, 5 * psi1_y + 10 * psi2_y
    advection = u * omega_x + v * omega_y

    u_solver, v_solver = ns.velocity_from_vorticity(torch.from_numpy(omega))
    np.testing.assert_allclose(u_solver.numpy(), u, atol=1e-12)
    np.testing.assert_allclose(v_solver.numpy(), v, atol=1e-12)
    solver = ns.NavierStokes2D(n, 1e-3, 0.01)
    state = solver.to_spectral(torch.from_numpy(omega)[None])
    np.testing.assert_allclose(solver.to_physical(solver.explicit_terms(state))[0].numpy(), -advection, atol=1e-11)


def test_kolmogorov_forcing_is_the_curl_of_sin_ky():
    n, k = 16, 4
    x_grid, y_grid = _mesh(n)
    forcing = ns.kolmogorov_forcing(n, k, amplitude=2.0).numpy()
    # curl (2 sin(k y), 0) = ∂(0)/∂x - ∂(2 sin(k y))/∂y = -2k cos(k y)
    np.testing.assert_allclose(forcing, -2.0 * k * np.cos(k * y_grid), atol=1e-13)


# --- budgets -----------------------------------------------------------------------------------


def _check_budgets(omega, dt, viscosity, drag, forcing_k=0, amplitude=0.0, rtol=1e-4):
    energy, enstrophy, energy_rhs, enstrophy_rhs = _budgets(omega, viscosity, drag, forcing_k, amplitude)
    # Central differences in time (O(dt²)) against the budget right-hand sides at the middle step.
    for name, value, rhs in (("energy", energy, energy_rhs), ("enstrophy", enstrophy, enstrophy_rhs)):
        rate = (value[2:] - value[:-2]) / (2 * dt)
        scale = np.abs(rhs[1:-1]).max()
        residual = np.abs(rate - rhs[1:-1]).max() / scale
        assert residual < rtol, f"{name} budget residual {residual:.2e} (scale {scale:.3e})"


def test_energy_and_enstrophy_budgets_close_for_decaying_flow():
    n, viscosity, dt = 32, 5e-3, 2e-3
    omega0 = ns.random_vorticity(range(2), n, seed=3, peak_wavenumber=4, max_velocity=1.0)
    solver = ns.NavierStokes2D(n, viscosity, dt)
    omega = _run(solver, omega0, 30)
    energy = _budgets(omega, viscosity, 0.0)[0]
    assert np.all(np.diff(energy, axis=0) < 0), "unforced energy must decrease"
    _check_budgets(omega, dt, viscosity, 0.0)


def test_energy_and_enstrophy_budgets_close_for_forced_flow_with_drag():
    n, viscosity, drag, k, amplitude, dt = 32, 5e-3, 0.1, 4, 1.0, 2e-3
    omega0 = ns.random_vorticity(range(2), n, seed=4, peak_wavenumber=3, max_velocity=1.0)
    solver = ns.NavierStokes2D(n, viscosity, dt, drag=drag, forcing=ns.kolmogorov_forcing(n, k, amplitude))
    omega = _run(solver, omega0, 30)
    # The forcing must matter to the budget for this check to test it.
    d = _numpy_velocity_and_gradient(omega)
    work = np.abs((d["u"] * amplitude * np.sin(k * _mesh(n)[1])).mean(axis=(-2, -1))).max()
    assert work > 0.05 * np.abs(_budgets(omega, viscosity, drag, k, amplitude)[2]).max()
    _check_budgets(omega, dt, viscosity, drag, k, amplitude)


# --- dealiasing and spectral truncation --------------------------------------------------------


def test_modes_above_the_two_thirds_cutoff_stay_zero():
    n = 24
    cutoff = ns.dealias_cutoff(n)
    assert cutoff == 7 and 3 * cutoff < n
    solver = ns.NavierStokes2D(n, 1e-3, 0.01, drag=0.1, forcing=ns.kolmogorov_forcing(n, 4))
    k = np.abs(np.fft.fftfreq(n, 1.0 / n))
    outside = (k[:, None] > cutoff) | (k[None, : n // 2 + 1] > cutoff)
    state = solver.to_spectral(ns.random_vorticity(range(2), n, seed=0, peak_wavenumber=6, max_velocity=3.0))
    assert np.abs(state.numpy()[:, outside]).max() == 0.0
    for _ in range(10):
        state = solver.step(state)
    assert np.abs(state.numpy()[:, outside]).max() == 0.0
    assert np.abs(state.numpy()[:, ~outside]).max() > 0.1
    # The nonlinear term of a field with every mode filled is still band-limited to the 2/3 band.
    white = torch.from_numpy(np.random.default_rng(0).standard_normal((1, n, n)))
    assert np.abs(solver.explicit_terms(ns.NavierStokes2D(n, 0.0, 0.01).to_spectral(white)).numpy()[:, outside]).max() < 1e-14


def test_spectral_truncation_equals_the_analytic_coarse_field():
    fine, coarse = 48, 16
    modes = [(1, 2, 1.0, 0.3), (3, -5, 0.5, -1.1), (7, 7, 0.25, 0.0), (-4, 6, 0.4, 2.0),  # kept: |k| < 8
             (8, 1, 0.8, 0.5), (1, -8, 0.6, 0.2), (12, 3, 0.9, -0.4), (20, 20, 0.3, 1.0)]  # dropped: |k| ≥ 8
    def field(n, keep_below=None):
        x_grid, y_grid = _mesh(n)
        total = np.zeros((n, n))
        for kx, ky, amp, phase in modes:
            if keep_below is None or (abs(kx) < keep_below and abs(ky) < keep_below):
                total += amp * np.cos(kx * x_grid + ky * y_grid + phase)
        return total
    truncated = ns.resample(torch.from_numpy(field(fine))[None], coarse)[0].numpy()
    np.testing.assert_allclose(truncated, field(coarse, keep_below=coarse // 2), atol=1e-12)
    solver = ns.NavierStokes2D(fine, 1e-3, 0.01)
    state = solver.to_spectral(torch.from_numpy(field(fine))[None])
    np.testing.assert_allclose(solver.to_physical(state, coarse)[0].numpy(), truncated, atol=1e-12)
    # Zero-padding a band-limited coarse field onto a finer grid interpolates it exactly.
    band_limited = field(coarse, keep_below=coarse // 2)
    padded = ns.resample(torch.from_numpy(band_limited)[None], fine)[0].numpy()
    np.testing.assert_allclose(padded, field(fine, keep_below=coarse // 2), atol=1e-12)


# --- time step ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution, save_interval, cfl, velocity", [
    (128, 0.2, 0.5, 7.0), (64, 0.1, 0.5, 7.0), (32, 0.013, 0.9, 2.0), (256, 1.0, 0.3, 10.0), (16, 0.5, 2.0, 0.1)])
def test_time_step_obeys_the_cfl_rule_and_divides_the_save_interval(resolution, save_interval, cfl, velocity):
    cfg = ns.NavierStokesConfig(resolution=resolution, save_resolutions=(resolution,), save_interval=save_interval,
                                cfl_safety=cfl, max_velocity=velocity)
    solver = ns.NavierStokes2D.from_config(cfg)
    limit = cfl * (2 * np.pi / resolution) / velocity
    steps = save_interval / solver.dt
    assert solver.dt <= limit * (1 + 1e-12)
    assert abs(steps - round(steps)) < 1e-9 and solver.steps_for(save_interval) == round(steps)
    assert round(steps) == 1 or save_interval / (round(steps) - 1) > limit  # the largest step that fits
    with pytest.raises(EarthsimError, match="whole number of steps"):
        solver.advance(torch.zeros(1, resolution, resolution), 0.5 * solver.dt)


# --- the store ---------------------------------------------------------------------------------


def _small_config(**changes) -> ns.NavierStokesConfig:
    base = dict(resolution=32, save_resolutions=(32, 16), trajectories=3, frames=4, save_interval=0.1,
                spinup_time=0.05, batch_size=2, chunk_frames=3, max_velocity=2.0, viscosity=0.01)
    return ns.NavierStokesConfig(**{**base, **changes})


def test_written_store_layout_attributes_and_provenance(tmp_path):
    cfg = _small_config()
    out = ns.simulate_navier_stokes(cfg, tmp_path / "ns.zarr", progress=False)
    assert out == tmp_path / "ns.zarr"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ns.zarr"]
    root = zarr.open_group(out, mode="r")
    assert sorted(root.group_keys()) == ["16", "32"] and root.metadata.zarr_format == 3
    solver = ns.NavierStokes2D.from_config(cfg)
    groups = {}
    for r in (32, 16):
        ds = xr.open_zarr(out, group=str(r), consolidated=False)
        groups[r] = ds
        assert ds.vorticity.dims == ("trajectory", "time", "y", "x")
        assert ds.vorticity.shape == (3, 4, r, r) and ds.vorticity.dtype == np.float32
        assert root[f"{r}/vorticity"].chunks == (1, 3, r, r)
        np.testing.assert_allclose(ds.time.values, [0.0, 0.1, 0.2, 0.3])
        np.testing.assert_allclose(ds.x.values, np.arange(r) * 2 * np.pi / r)
        np.testing.assert_array_equal(ds.trajectory.values, [0, 1, 2])
        attrs = ds.attrs
        assert attrs["viscosity"] == 0.01 and attrs["reynolds_number"] == pytest.approx(100.0)
        assert attrs["drag"] == 0.1 and "sin(4 y)" in attrs["forcing"]
        assert attrs["domain_length"] == pytest.approx(2 * np.pi) and attrs["save_interval"] == 0.1
        assert attrs["solver_dt"] == pytest.approx(solver.dt) and attrs["solver_resolution"] == 32
        assert attrs["resolution"] == r and 0 < attrs["max_courant_number"] < 1
        assert attrs["provenance"]["producer"].endswith("simulate_navier_stokes")
        assert config.build(ns.NavierStokesConfig, attrs["provenance"]["config"]) == cfg
        assert ds.vorticity.attrs["units"] == "1"
        assert np.isfinite(ds.vorticity.values).all()
    # The coarse group is the truncation of the fine one, and frame 0 is the spun-up initial state.
    np.testing.assert_allclose(groups[16].vorticity.values,
                               ns.resample(torch.from_numpy(groups[32].vorticity.values.astype(np.float64)), 16).numpy(),
                               atol=1e-5)
    omega0 = ns.random_vorticity([2], 32, cfg.seed, cfg.peak_wavenumber, cfg.max_velocity)
    spun_up = solver.advance(omega0, solver.dt * math.ceil(cfg.spinup_time / solver.dt - 1e-9))
    np.testing.assert_allclose(groups[32].vorticity.values[2, 0], spun_up[0].numpy(), atol=1e-5)
    later = solver.rollout(spun_up, 3, cfg.save_interval)
    np.testing.assert_allclose(groups[32].vorticity.values[2, 1:], later[0].numpy(), atol=1e-5)


def test_solver_at_the_saved_resolution_tracks_the_stored_trajectory(tmp_path):
    # What a fluid benchmark's "numerical solver at the model's resolution" baseline does: rebuild the
    # run's config from the store, solve at the coarse grid from a stored frame, compare later frames.
    cfg = _small_config(resolution=64, save_resolutions=(32,), viscosity=0.02, peak_wavenumber=2.0)
    ds = xr.open_zarr(ns.simulate_navier_stokes(cfg, tmp_path / "ns.zarr", progress=False), group="32",
                      consolidated=False)
    rebuilt = config.build(ns.NavierStokesConfig, ds.attrs["provenance"]["config"])
    solver = ns.NavierStokes2D.from_config(rebuilt, resolution=32)
    truth = ds.vorticity.values.astype(np.float64)
    predicted = solver.rollout(torch.from_numpy(truth[:, 0]), 3, rebuilt.save_interval).numpy()
    norm = np.linalg.norm(truth[:, 1:], axis=(-2, -1))
    error = np.linalg.norm(predicted - truth[:, 1:], axis=(-2, -1)) / norm
    persistence = np.linalg.norm(truth[:, :1] - truth[:, 1:], axis=(-2, -1)) / norm
    assert error.max() < 0.02 and np.all(error < 0.1 * persistence)


def test_decaying_flow_has_no_forcing_or_drag(tmp_path):
    cfg = _small_config(flow="decaying", trajectories=2, save_resolutions=(16,))
    out = ns.simulate_navier_stokes(cfg, tmp_path / "decay.zarr", progress=False)
    ds = xr.open_zarr(out, group="16", consolidated=False)
    assert ds.attrs["drag"] == 0.0 and ds.attrs["forcing"].startswith("none")
    enstrophy = (ds.vorticity.values.astype(np.float64) ** 2).mean(axis=(-2, -1))
    assert np.all(np.diff(enstrophy, axis=1) < 0)


def test_failed_run_leaves_no_store_and_resumes(tmp_path, monkeypatch):
    calls = {"n": 0}
    step = ns.NavierStokes2D.step

    def failing_step(self, state):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("solver failure injected by the test")
        return step(self, state)

    monkeypatch.setattr(ns.NavierStokes2D, "step", failing_step)
    with pytest.raises(RuntimeError, match="injected"):
        ns.simulate_navier_stokes(_small_config(), tmp_path / "ns.zarr", progress=False)
    assert calls["n"] > 20
    assert list(tmp_path.iterdir()) == [tmp_path / "ns.zarr.partial"]  # nothing under the final name
    monkeypatch.setattr(ns.NavierStokes2D, "step", step)
    resumed = ns.simulate_navier_stokes(_small_config(), tmp_path / "ns.zarr", progress=False)
    whole = ns.simulate_navier_stokes(_small_config(), tmp_path / "whole.zarr", progress=False)
    assert sorted(tmp_path.iterdir()) == [resumed, whole]
    for group in _small_config().save_resolutions:
        xr.testing.assert_identical(xr.open_zarr(resumed, group=str(group), consolidated=False).load().drop_attrs(),
                                    xr.open_zarr(whole, group=str(group), consolidated=False).load().drop_attrs())


def test_flow_outrunning_the_cfl_speed_fails_cleanly(tmp_path):
    # Started at peak speed 0.5, the Kolmogorov forcing drives the flow towards its laminar speed
    # 1/(16ν + α) ≈ 8.6, so the time step chosen for speed 0.5 stops obeying the CFL rule.
    cfg = _small_config(resolution=16, save_resolutions=(16,), trajectories=1, frames=10, save_interval=1.0,
                        max_velocity=0.5, viscosity=1e-3)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(EarthsimError, match="Courant number"):
            ns.simulate_navier_stokes(cfg, tmp_path / "ns.zarr", progress=False)
        assert torch.get_num_threads() == 2, "the solver's thread setting must be undone after a failure"
    finally:
        torch.set_num_threads(previous)
    assert list(tmp_path.iterdir()) == []


def test_existing_store_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "ns.zarr"
    cfg = _small_config(trajectories=1, save_resolutions=(16,), frames=2)
    ns.simulate_navier_stokes(cfg, out, progress=False)
    with pytest.raises(EarthsimError, match="already exists"):
        ns.simulate_navier_stokes(dataclasses.replace(cfg, seed=1), out, progress=False)
    assert xr.open_zarr(out, group="16", consolidated=False).attrs["provenance"]["config"]["seed"] == 0
    ns.simulate_navier_stokes(dataclasses.replace(cfg, seed=1), out, progress=False, overwrite=True)
    assert xr.open_zarr(out, group="16", consolidated=False).attrs["provenance"]["config"]["seed"] == 1


def test_same_seed_same_frames_whatever_the_batching(tmp_path):
    def frames(name, **changes):
        out = ns.simulate_navier_stokes(_small_config(save_resolutions=(16,), **changes), tmp_path / name,
                                        progress=False)
        return xr.open_zarr(out, group="16", consolidated=False).vorticity.values

    first, again = frames("a.zarr"), frames("b.zarr")
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(frames("c.zarr", batch_size=1), first, rtol=0, atol=1e-6)
    other = frames("d.zarr", seed=1)
    assert np.abs(other - first).max() > 0.1
    # Trajectories differ from each other (each has its own seed).
    assert np.abs(first[0] - first[1]).max() > 0.1


# --- configuration and catalog entries ---------------------------------------------------------


@pytest.mark.parametrize("changes, key", [
    ({"flow": "channel"}, "flow"), ({"resolution": 33}, "resolution"), ({"save_resolutions": (256,)}, "save_resolutions"),
    ({"save_resolutions": ()}, "save_resolutions"), ({"save_interval": 0.0}, "save_interval"),
    ({"forcing_wavenumber": 50}, "forcing_wavenumber"), ({"trajectories": 0}, "trajectories"),
    ({"dtype": "float16"}, "dtype"), ({"viscosity": -1.0}, "viscosity")])
def test_bad_config_names_the_key(changes, key):
    with pytest.raises(EarthsimError, match=f"^{key}: expected"):
        ns.NavierStokesConfig(**changes)


def test_config_from_command_line_flags():
    import argparse

    parser = argparse.ArgumentParser()
    config.add_arguments(parser, ns.NavierStokesConfig)
    args = parser.parse_args(["--flow", "decaying", "--save-resolutions", "32", "16", "--resolution", "64"])
    cfg = config.from_arguments(ns.NavierStokesConfig, args)
    assert cfg.flow == "decaying" and cfg.save_resolutions == (32, 16) and cfg.linear_drag == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--flow", "channel"])


def test_bad_solver_params_in_a_catalog_entry_name_the_file(tmp_path, monkeypatch):
    from earthsim.sim import generate

    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path))
    text = (catalog.BUILTIN_CATALOGS / "datasets" / "kolmogorov-64.yaml").read_text()
    bad = tmp_path / "bad-kolmogorov.yaml"
    bad.write_text(text.replace("name: kolmogorov-64", "name: bad-kolmogorov").replace("resolution: 128", "resolution: 127"))
    with pytest.raises(EarthsimError, match=r"bad-kolmogorov\.yaml: source\.params: resolution: expected an even integer"):
        generate(catalog.get_entry(bad), progress=False)
    assert not list(tmp_path.glob("*.zarr*"))


@pytest.mark.parametrize("name, group", [("kolmogorov-64", "64"), ("kolmogorov-32", "32")])
def test_catalog_entries_record_a_valid_run(name, group):
    entry = catalog.get_entry(name)
    assert entry.kind == "fluid" and entry.group == group and entry.source.solver == "navier-stokes"
    assert entry.store.endswith("kolmogorov.zarr") and entry.statistics.endswith(f"{name}.stats.zarr")
    cfg = config.build(ns.NavierStokesConfig, entry.source.params, name)
    assert cfg.flow == "kolmogorov" and cfg.viscosity == 1e-3 and cfg.linear_drag == 0.1 and cfg.forcing_wavenumber == 4
    assert int(group) in cfg.save_resolutions and entry.grid.shape == (int(group), int(group))
    assert entry.grid.length == pytest.approx(2 * np.pi) and entry.time_step == cfg.save_interval
    ranges = sorted(entry.splits[s].trajectory for s in ("train", "validation", "test"))
    assert ranges[0][0] == 0 and ranges[-1][1] == cfg.trajectories
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), f"splits overlap or leave gaps: {ranges}"
    # The two entries share one store, so they must record the same run.
    other = catalog.get_entry("kolmogorov-32" if name == "kolmogorov-64" else "kolmogorov-64")
    assert other.store == entry.store and other.source.params == entry.source.params


def test_coarse_spinup_reaches_a_statistically_steady_flow(tmp_path):
    """Without a long spin-up the rms vorticity still decays from its random start; after one it holds steady."""
    common = dict(resolution=64, save_resolutions=(32,), trajectories=2, frames=20, save_interval=0.1,
                  spinup_time=0.5, batch_size=2, coarse_resolution=32)
    rms = {}
    for coarse_time in (0.0, 20.0):
        config = ns.NavierStokesConfig(coarse_spinup_time=coarse_time, **common)
        path = ns.simulate_navier_stokes(config, tmp_path / f"ns{coarse_time:g}.zarr", progress=False)
        vorticity = xr.open_zarr(path, group="32", consolidated=False).vorticity.values
        rms[coarse_time] = np.sqrt((vorticity ** 2).mean(axis=(0, 2, 3)))
        assert ("none" if coarse_time == 0 else "20 time units at 32²") in xr.open_zarr(
            path, group="32", consolidated=False).attrs["coarse_spinup"]
    decay = lambda r: abs(r[-1] - r[0]) / r[0]  # noqa: E731
    assert decay(rms[0.0]) > 0.2 and decay(rms[20.0]) < 0.1


def test_coarse_resolution_must_fit_the_solver_and_the_forcing():
    with pytest.raises(EarthsimError, match="coarse_resolution"):
        ns.NavierStokesConfig(resolution=64, coarse_spinup_time=1.0, coarse_resolution=128)
    with pytest.raises(EarthsimError, match="coarse_resolution"):
        ns.NavierStokesConfig(resolution=64, coarse_spinup_time=1.0, coarse_resolution=8)  # 2/3 cutoff 2 < forcing wavenumber 4


def test_solver_is_a_module_whose_operators_move_with_it_and_ignore_autocast():
    """A learned solver carries the numerical one as a layer: its operators are buffers, moved by .to(), and
    a step under a bfloat16 autocast is the float64 step."""
    solver = ns.NavierStokes2D(16, 1e-3, 0.01, drag=0.1, forcing=ns.kolmogorov_forcing(16, 4, 1.0))
    assert isinstance(solver, torch.nn.Module) and solver.device.type == "cpu"
    names = {name for name, _ in solver.named_buffers()}
    assert {"mask", "linear", "velocity_u", "forcing_hat", "implicit_0", "explicit_0"} <= names
    omega = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 16, 16)))
    state = solver.to_spectral(omega)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = solver(state)
    assert under_autocast.dtype == torch.complex128
    torch.testing.assert_close(under_autocast, solver.step(state), rtol=0, atol=0)
    moved = solver.to("meta")
    assert {buffer.device.type for buffer in moved.buffers()} == {"meta"} and moved.device.type == "meta"
    with pytest.raises(EarthsimError, match="runs in the precision it was built with"):
        solver.float()
