"""Shallow water on the sphere: conservation, published test cases and the stores it writes.

Truth comes from outside the code under test: Clenshaw–Curtis weights built here from the
textbook formula (Trefethen 2008), Williamson et al. (1992) test case 2 (an exact steady
solution), and the Galewsky et al. (2004) formulas integrated with scipy.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from scipy import integrate

from earthsim import config as _config
from earthsim.errors import EarthsimError, ValidationError
from earthsim.sim import shallow_water as sw

torch.set_num_threads(1)

TINY = dict(nlat=16, nlon=32, refine=1, frames=6, spinup_hours=2.0, trajectories=3, chunk_frames=4)


def clenshaw_curtis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x_k = cos(k π / N) and weights of Clenshaw–Curtis quadrature on [-1, 1] (Trefethen's clencurt)."""
    big_n = n - 1
    theta = np.pi * np.arange(n) / big_n
    weights = np.zeros(n)
    inner = np.ones(n - 2)
    if big_n % 2 == 0:
        weights[0] = weights[-1] = 1.0 / (big_n**2 - 1)
        for k in range(1, big_n // 2):
            inner -= 2.0 * np.cos(2 * k * theta[1:-1]) / (4 * k**2 - 1)
        inner -= np.cos(big_n * theta[1:-1]) / (big_n**2 - 1)
    else:
        weights[0] = weights[-1] = 1.0 / big_n**2
        for k in range(1, (big_n - 1) // 2 + 1):
            inner -= 2.0 * np.cos(2 * k * theta[1:-1]) / (4 * k**2 - 1)
    weights[1:-1] = 2.0 * inner / big_n
    return np.cos(theta), weights


def global_mean(field: np.ndarray) -> np.ndarray:
    """Area mean over the sphere of fields on the saved grid (..., nlat, nlon), in float64."""
    _, weights = clenshaw_curtis(field.shape[-2])
    return np.einsum("...ji,j->...", field.astype(np.float64), weights) / (2.0 * field.shape[-1])


def solver_mean(solver, field: np.ndarray) -> np.ndarray:
    """The same mean by torch-harmonics' ``integrate_grid`` (its grid runs north to south)."""
    grid = torch.from_numpy(np.ascontiguousarray(field[..., ::-1, :], dtype=np.float64))
    return (solver.integrate_grid(grid, dimensionless=True) / (4.0 * math.pi)).numpy()


def test_clenshaw_curtis_reference_is_exact_and_matches_the_saved_grid():
    nodes, weights = clenshaw_curtis(33)
    for degree in range(33):
        exact = (1.0 - (-1.0) ** (degree + 1)) / (degree + 1)
        assert abs(weights @ nodes**degree - exact) < 1e-13
    lat = np.rad2deg(np.arcsin(nodes))[::-1]
    assert np.allclose(lat, np.linspace(-90.0, 90.0, 33), atol=1e-12)
    config = sw.ShallowWaterConfig(nlat=33, nlon=64, refine=1)
    solver = sw.make_solver(config)
    assert np.allclose(np.rad2deg(solver.lats.numpy())[::-1], lat, atol=1e-12)


def test_mass_is_conserved_to_round_off():
    config = sw.ShallowWaterConfig(nlat=32, nlon=64, refine=2, frames=13, spinup_hours=0.0, trajectories=1)
    frames = sw.run_trajectory(config, 0)
    assert np.ptp(frames["h"], axis=0).max() > 100.0  # the flow really moves
    saved_grid_solver = sw.make_solver(dataclasses.replace(config, refine=1))
    for mass in (global_mean(frames["h"]), solver_mean(saved_grid_solver, frames["h"])):
        assert abs(mass[0] - sw.HAVG) < 1e-9 * sw.HAVG
        assert np.abs(mass / mass[0] - 1.0).max() <= 1e-12
    # Stored as float32, each value carries a relative rounding error of at most 2**-24; h > 0, so
    # the area mean of each frame does too, and the change between two frames at most twice that.
    stored = frames["h"].astype(np.float32)
    mass32 = global_mean(stored)
    assert np.abs(mass32 / mass32[0] - 1.0).max() <= 2.0 * 2.0**-24 + 1e-12


@pytest.mark.parametrize("alpha", [0.0, math.pi / 4])
@pytest.mark.parametrize("hyperdiffusion", [False, True])
def test_williamson_case_2_stays_steady(alpha, hyperdiffusion):
    """Steady geostrophic flow (Williamson et al. 1992, case 2), rotation axis tilted by alpha."""
    config = sw.ShallowWaterConfig(nlat=32, nlon=64, refine=1)
    step = sw.time_step(config)
    solver = sw.make_solver(config, step.dt)
    radius, omega, gravity = sw.RADIUS, sw.OMEGA, sw.GRAVITY
    u0, gh0 = 2.0 * math.pi * radius / (12 * 86400.0), 2.94e4
    lat, lon = solver.lats.reshape(-1, 1), solver.lons.reshape(1, -1)
    u = u0 * (torch.cos(lat) * math.cos(alpha) + torch.cos(lon) * torch.sin(lat) * math.sin(alpha))
    v = -u0 * torch.sin(lon) * math.sin(alpha) * torch.ones_like(lat)
    mu = -torch.cos(lon) * torch.cos(lat) * math.sin(alpha) + torch.sin(lat) * math.cos(alpha)
    amplitude = radius * omega * u0 + 0.5 * u0**2
    h_exact = (gh0 - amplitude * mu**2) / gravity
    solver.coriolis = 2.0 * omega * mu
    if not hyperdiffusion:
        solver.hyperdiff = torch.ones_like(solver.hyperdiff)
    state = torch.zeros(3, solver.lmax, solver.mmax, dtype=torch.complex128)
    state[0] = solver.grid2spec(gravity * h_exact)
    state[1:] = solver.vrtdivspec(torch.stack((u, v)))
    steps = round(5 * 86400.0 / step.dt)
    final = sw.AdamsBashforth3(solver, state).advance(steps)
    h = solver.spec2grid(final[0]) / gravity
    wind = solver.getuv(final[1:])
    if hyperdiffusion:
        # The only departure: the degree-1 vorticity decays by the hyperdiffusion factor each step.
        decay = 1.0 - float(solver.hyperdiff[1, 0]) ** steps
        wind_tol, h_tol = 2.0 * decay * u0, decay * amplitude / gravity
        assert decay > 1e-7
    else:
        wind_tol, h_tol = 1e-7 * u0, 1e-7 * amplitude / gravity
    assert float((wind[0] - u).abs().max()) <= wind_tol
    assert float((wind[1] - v).abs().max()) <= wind_tol
    assert float((h - h_exact).abs().max()) <= h_tol


def _galewsky_balanced_depth(latitudes: np.ndarray) -> np.ndarray:
    """h(φ) from the paper's balance equation (eq. 3), h0 set so that the global mean is 10 km."""
    radius, omega, gravity = sw.RADIUS, sw.OMEGA, sw.GRAVITY
    phi0, phi1 = math.pi / 7, math.pi / 2 - math.pi / 7
    en = math.exp(-4.0 / (phi1 - phi0) ** 2)

    def u(phi):
        return 80.0 / en * math.exp(1.0 / ((phi - phi0) * (phi - phi1))) if phi0 < phi < phi1 else 0.0

    def drop(phi):  # h0 - h(φ)
        if phi <= phi0:
            return 0.0
        integrand = lambda p: radius * u(p) * (2 * omega * math.sin(p) + math.tan(p) * u(p) / radius) / gravity
        return integrate.quad(integrand, phi0, min(phi, phi1), epsabs=1e-10, limit=200)[0]

    mean_drop = integrate.quad(lambda p: drop(p) * math.cos(p), -math.pi / 2, math.pi / 2,
                               points=[phi0, phi1], epsabs=1e-9, limit=200)[0] / 2.0
    h0 = 1.0e4 + mean_drop
    return np.array([h0 - drop(p) for p in latitudes])


def test_galewsky_initial_condition_matches_the_paper():
    config = sw.ShallowWaterConfig(initial_condition="galewsky", nlat=64, nlon=128, refine=3, frames=1,
                                   spinup_hours=0.0, trajectories=1)
    frames = {k: v[0] for k, v in sw.run_trajectory(config, 0).items()}
    lat = np.deg2rad(np.linspace(-90.0, 90.0, config.nlat))
    lon = np.deg2rad(np.arange(config.nlon) * 360.0 / config.nlon)
    # Jet (eq. 2): u = 80 m/s / e_n exp(1 / ((φ - φ0)(φ - φ1))) on (π/7, 5π/14), 80 m/s at 45°N.
    phi0, phi1 = math.pi / 7, math.pi / 2 - math.pi / 7
    inside = (lat > phi0) & (lat < phi1)
    jet = np.zeros_like(lat)
    jet[inside] = 80.0 * np.exp(4.0 / (phi1 - phi0) ** 2 + 1.0 / ((lat[inside] - phi0) * (lat[inside] - phi1)))
    assert 80.0 * np.exp(4.0 / (phi1 - phi0) ** 2 + 1.0 / ((math.pi / 4 - phi0) * (math.pi / 4 - phi1))) == 80.0
    zonal = frames["u"].mean(axis=1)
    assert np.abs(frames["u"] - zonal[:, None]).max() < 1e-9  # zonally symmetric
    assert np.abs(frames["v"]).max() < 1e-9 and np.abs(frames["divergence"]).max() < 1e-15
    assert np.abs(zonal - jet).max() < 0.05  # spectral truncation at degree 63 rounds the jet's edges
    assert abs(np.rad2deg(lat[zonal.argmax()]) - 45.0) < 180.0 / 63
    # Depth (eqs. 3-4): balanced, global mean 10 km, plus 120 m cos φ exp(-(λ/α)²) exp(-((π/4 - φ)/β)²).
    lam = lon - math.pi  # the paper's λ = 0 is the solver's 180°E
    bump = (120.0 * np.cos(lat)[:, None] * np.exp(-((lam[None, :] * 3.0) ** 2))
            * np.exp(-(((math.pi / 4 - lat[:, None]) * 15.0) ** 2)))
    bump_mean = (120.0 * integrate.quad(lambda p: math.cos(p) ** 2 * math.exp(-((math.pi / 4 - p) * 15) ** 2),
                                        -math.pi / 2, math.pi / 2, points=[math.pi / 4])[0]
                 * integrate.quad(lambda x: math.exp(-((3 * x) ** 2)), -math.pi, math.pi)[0] / (4 * math.pi))
    assert abs(bump_mean - 0.3333) < 1e-3
    assert abs(global_mean(frames["h"]) - (1.0e4 + bump_mean)) < 1e-6
    balanced = _galewsky_balanced_depth(lat)
    assert np.ptp(balanced) > 1000.0
    assert np.abs(frames["h"] - (balanced[:, None] + bump)).max() < 0.5


def _open(path):
    return xr.open_zarr(path, consolidated=False)


def test_store_layout(tmp_path):
    config = sw.ShallowWaterConfig(**TINY, seed=3)
    path = sw.simulate_shallow_water(config, tmp_path / "swe.zarr", progress=False)
    ds = _open(path)
    assert dict(ds.sizes) == {"trajectory": 3, "time": 6, "latitude": 16, "longitude": 32}
    assert set(ds.data_vars) == set(sw.VARIABLES)
    lat, lon = ds.latitude.values, ds.longitude.values
    assert lat[0] == -90.0 and lat[-1] == 90.0 and np.all(np.diff(lat) > 0)
    assert lon[0] == 0.0 and lon.max() < 360.0 and np.allclose(np.diff(lon), 360.0 / 32)
    assert np.allclose(ds.time.values, np.arange(6.0)) and ds.time.attrs["units"] == "hours"
    units = {"h": "m", "u": "m s**-1", "v": "m s**-1", "vorticity": "s**-1", "divergence": "s**-1"}
    for name, var in ds.data_vars.items():
        assert var.dims == ("trajectory", "time", "latitude", "longitude")
        assert var.dtype == np.float32 and var.attrs["units"] == units[name] and var.attrs["long_name"]
        assert np.isfinite(var.values).all()
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3
    assert group["h"].chunks == (1, 4, 16, 32)
    prov = ds.attrs["provenance"]
    assert prov["producer"].endswith("simulate_shallow_water") and prov["config"]["seed"] == 3
    assert _config.build(sw.ShallowWaterConfig, prov["config"]) == config
    for key in ("radius", "omega", "gravity", "havg", "hamp", "solver_dt", "initial_condition", "grid"):
        assert key in ds.attrs
    assert ds.attrs["solver_dt"] * ds.attrs["steps_per_frame"] == pytest.approx(3600.0)
    assert abs(global_mean(ds.h.isel(trajectory=0, time=0).values) - sw.HAVG) < 1e-3
    # Orientation: vorticity and divergence agree with centred differences of the saved winds on
    # the saved (latitude increasing) grid, so neither latitude nor the sign of v is flipped.
    u, v = (ds[k].isel(trajectory=0).values.astype(np.float64) for k in ("u", "v"))
    phi, dphi, dlam = np.deg2rad(lat)[1:-1, None], np.deg2rad(lat[1] - lat[0]), 2 * math.pi / 32
    coslat = np.cos(np.deg2rad(lat))[:, None]
    ddlam = lambda f: (np.roll(f, -1, -1) - np.roll(f, 1, -1))[..., 1:-1, :] / (2 * dlam)
    ddphi = lambda f: (f[..., 2:, :] - f[..., :-2, :]) / (2 * dphi)
    scale = sw.RADIUS * np.cos(phi)
    curl = (ddlam(v) - ddphi(u * coslat)) / scale
    div = (ddlam(u) + ddphi(v * coslat)) / scale
    for name, estimate in (("vorticity", curl), ("divergence", div)):
        saved = ds[name].isel(trajectory=0).values[..., 1:-1, :]
        assert np.corrcoef(saved.ravel(), estimate.ravel())[0, 1] > 0.9


def test_seeded_runs_are_reproducible_and_trajectories_independent(tmp_path):
    first = sw.simulate_shallow_water(sw.ShallowWaterConfig(**TINY), tmp_path / "a.zarr", progress=False)
    again = sw.simulate_shallow_water(sw.ShallowWaterConfig(**TINY), tmp_path / "b.zarr", progress=False)
    fewer = sw.simulate_shallow_water(sw.ShallowWaterConfig(**{**TINY, "trajectories": 2}),
                                      tmp_path / "c.zarr", progress=False)
    other = sw.simulate_shallow_water(sw.ShallowWaterConfig(**TINY, seed=1), tmp_path / "d.zarr", progress=False)
    a, b, c, d = (_open(p).load() for p in (first, again, fewer, other))
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    xr.testing.assert_identical(a.isel(trajectory=slice(0, 2)).drop_attrs(), c.drop_attrs())
    assert not np.allclose(a.h.values, d.h.values)
    assert not np.allclose(a.h.isel(trajectory=0).values, a.h.isel(trajectory=1).values)


def test_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "swe.zarr"
    real_to_zarr = xr.Dataset.to_zarr

    def write_then_fail(self, *args, **kwargs):
        real_to_zarr(self, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        sw.simulate_shallow_water(sw.ShallowWaterConfig(**TINY), out, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    sw.simulate_shallow_water(sw.ShallowWaterConfig(**TINY), out, progress=False)
    with pytest.raises(EarthsimError, match="already exists"):
        sw.simulate_shallow_water(sw.ShallowWaterConfig(**TINY), out, progress=False)
    sw.simulate_shallow_water(sw.ShallowWaterConfig(**TINY, seed=5), out, progress=False, overwrite=True)
    assert _open(out).attrs["provenance"]["config"]["seed"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["swe.zarr"]


def test_integration_beats_the_solvers_restarting_time_stepping():
    """Against a converged run (dt / 8, within 2 m here), carrying the AB3 history across frames is
    more accurate than ShallowWaterSolver.timestep, called once per frame or once for the whole run."""
    config = sw.ShallowWaterConfig(nlat=16, nlon=32, refine=2)
    step = sw.time_step(config)
    solver, fine = sw.make_solver(config, step.dt), sw.make_solver(config, step.dt / 8)
    start = sw.initial_state(config, solver, 0)
    frames, per_frame = 6, step.steps_per_frame
    reference = sw.AdamsBashforth3(fine, start.clone()).advance(frames * per_frame * 8)
    integrator = sw.AdamsBashforth3(solver, start.clone())
    restarted = start.clone()
    for _ in range(frames):
        ours = integrator.advance(per_frame)
        restarted = solver.timestep(restarted, per_frame)
    one_call = solver.timestep(start.clone(), frames * per_frame)

    def error(state):
        return float((solver.spec2grid(state[0] - reference[0])).abs().max()) / sw.GRAVITY

    change = float(solver.spec2grid(reference[0] - start[0]).abs().max()) / sw.GRAVITY
    assert error(ours) < 0.05 * change
    assert error(ours) < 0.5 * error(restarted) and error(ours) < error(one_call)


def test_bad_configs_name_the_key():
    with pytest.raises(ValidationError, match="trajectories"):
        sw.ShallowWaterConfig(initial_condition="galewsky", trajectories=2)
    with pytest.raises(ValidationError, match="initial_condition"):
        sw.ShallowWaterConfig(initial_condition="rossby")
    with pytest.raises(ValidationError, match="dt"):
        sw.time_step(sw.ShallowWaterConfig(dt=700.0))
    with pytest.raises(ValidationError, match="spinup_hours"):
        sw.time_step(sw.ShallowWaterConfig(dt=600.0, spinup_hours=0.05))
    with pytest.raises(EarthsimError, match="unknown key"):
        _config.build(sw.ShallowWaterConfig, {"nlats": 32})
    with pytest.raises(ValidationError, match="nlat"):
        sw.ShallowWaterConfig(nlat=3)
    with pytest.raises(ValidationError, match="device"):
        sw.make_solver(sw.ShallowWaterConfig(device="abacus"))
    galewsky = sw.ShallowWaterConfig(initial_condition="galewsky")
    assert (galewsky.trajectories, galewsky.spinup_hours) == (1, 0.0)


def test_command_line_writes_a_store(tmp_path):
    from earthsim.cli import main

    out = tmp_path / "cli.zarr"
    args = ["simulate", "shallow-water", "--out", str(out), "--nlat", "8", "--nlon", "16", "--refine", "1",
            "--frames", "3", "--spinup-hours", "0", "--trajectories", "2", "--seed", "7"]
    assert main(args) == 0
    ds = _open(out)
    assert dict(ds.sizes) == {"trajectory": 2, "time": 3, "latitude": 8, "longitude": 16}
    assert ds.attrs["provenance"]["config"]["seed"] == 7
    assert main(args) == 2  # exists, no --overwrite


def test_time_step_follows_the_cfl_rule():
    config = sw.ShallowWaterConfig()
    step = sw.time_step(config)
    lmax = config.lmax
    limit = config.courant * sw.RADIUS / ((math.sqrt(sw.GRAVITY * sw.HAVG) + 100.0) * math.sqrt(lmax * (lmax - 1)))
    assert step.dt <= limit and step.steps_per_frame * step.dt == pytest.approx(3600.0)
    assert (step.steps_per_frame - 1) * limit < 3600.0  # the largest such step
    assert step.spinup_steps == 24 * step.steps_per_frame


def test_catalog_entry_matches_what_the_solver_writes():
    from earthsim import catalog

    entry = catalog.get_entry("shallow-water")
    assert entry.kind == "fluid" and entry.source.solver == "shallow-water"
    config = _config.build(sw.ShallowWaterConfig, entry.source.params)
    assert entry.grid.latitude.values() == pytest.approx(np.linspace(-90.0, 90.0, config.nlat))
    assert entry.grid.longitude.values() == pytest.approx(np.arange(config.nlon) * 360.0 / config.nlon)
    assert entry.grid.longitude_convention == "[0, 360)"
    assert entry.time_step == config.save_interval_hours and entry.time.units == "hours"
    assert {k: v.units for k, v in entry.variables.items()} == {k: v["units"] for k, v in sw.VARIABLES.items()}
    covered = []
    for split in entry.splits.values():
        covered.extend(range(*split.trajectory))
    assert sorted(covered) == list(range(config.trajectories))
    assert entry.store.endswith("shallow-water.zarr") and entry.statistics.endswith("shallow-water.stats.zarr")


def _geostrophic_error(frames: dict, nlat: int, nlon: int) -> float:
    """Relative RMS difference at 30-60° between the wind and the geostrophic wind of the depth, by centred finite
    differences on the saved grid (independent of the spectral transforms that made the state)."""
    lat = np.deg2rad(np.linspace(-90.0, 90.0, nlat))
    dlat, dlon = lat[1] - lat[0], 2 * math.pi / nlon
    f = 2 * sw.OMEGA * np.sin(lat)[:, None]
    h = frames["h"]
    dh_dy = np.gradient(h, dlat, axis=0) / sw.RADIUS
    dh_dx = (np.roll(h, -1, axis=1) - np.roll(h, 1, axis=1)) / (2 * dlon) / (sw.RADIUS * np.cos(lat)[:, None])
    band = (np.abs(np.rad2deg(lat)) > 30) & (np.abs(np.rad2deg(lat)) < 60)
    wind = np.stack([frames["u"][band], frames["v"][band]])
    geostrophic = np.stack([-sw.GRAVITY * dh_dy / f, sw.GRAVITY * dh_dx / f])[:, band]
    return float(np.sqrt(np.mean((wind - geostrophic) ** 2) / np.mean(wind**2)))


def test_balanced_initial_condition_is_geostrophic_and_non_divergent():
    """At mid-latitudes, where linear balance is geostrophy, the balanced state's wind is the geostrophic wind of
    its depth (to the beta term and the finite differences); white noise in depth and wind is not."""
    common = dict(nlat=64, nlon=128, refine=2, frames=1, spinup_hours=0.0, trajectories=1, wind_rms=20.0, seed=3)
    balanced = {k: v[0] for k, v in sw.run_trajectory(
        sw.ShallowWaterConfig(initial_condition="balanced", peak_degree=6.0, **common), 0).items()}
    assert np.abs(balanced["divergence"]).max() < 1e-12
    assert abs(np.sqrt(global_mean(balanced["u"] ** 2 + balanced["v"] ** 2)) - 20.0) < 1.0
    assert abs(global_mean(balanced["h"]) - 1.0e4) < 1e-6
    assert _geostrophic_error(balanced, 64, 128) < 0.2
    noise = {k: v[0] for k, v in sw.run_trajectory(sw.ShallowWaterConfig(initial_condition="random", **common),
                                                    0).items()}
    assert _geostrophic_error(noise, 64, 128) > 0.8
