"""The Spectral Refiner: the space-time FNO and the H⁻¹ residual fine-tuning of its output layer.

References are independent of the code under test: closed-form integrals, exact solutions of the
vorticity equation, trajectories of earthsim's pseudo-spectral solver, and trigonometric interpolation.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import small_spec
from earthsim.errors import EarthsimError
from earthsim.models import build_model, export_model, load_exported
from earthsim.models.spacetime_fno import SpaceTimeSpectralConv
from earthsim.sim.navier_stokes import NavierStokes2D, fno_paper_forcing, fno_paper_vorticity, resample
from earthsim.train.refine import (Physics, hminus1_norm, refine, residual_norm, time_derivative,
                                   vorticity_residual)

TWO_PI = 2 * math.pi
FNO_PAPER = {"flow": "fno-paper", "viscosity": 4 * math.pi**2 * 1e-3, "drag": 0.0, "forcing_wavenumber": 1,
             "forcing_amplitude": 0.1, "domain_length": TWO_PI}
KOLMOGOROV = {"flow": "kolmogorov", "viscosity": 1e-3, "drag": 0.1, "forcing_wavenumber": 4,
              "forcing_amplitude": 1.0, "domain_length": TWO_PI}


@pytest.fixture(autouse=True)
def one_thread():
    """These small FFTs run fastest on one thread, and many times slower on two when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """y (rows) and x (columns) of an n² grid of [0, 2π)², float64."""
    points = torch.arange(n, dtype=torch.float64) * TWO_PI / n
    return torch.meshgrid(points, points, indexing="ij")


def _physics(physics: dict, n: int) -> Physics:
    return Physics.from_spec(small_spec(inputs=("vorticity",), shape=(n, n), physics=physics))


def test_hminus1_norm_by_parseval_equals_the_closed_form_integral():
    """‖r‖²_{H⁻¹} = ∫ r (a − Δ)⁻¹ r dx: for r = sin 2x cos 3y + 0.5 cos y + 0.3 each term is an eigenfunction of
    −Δ (eigenvalues 13, 1, 0), so the integral is π²/(a + 13) + 0.5²·2π²/(a + 1) + 0.3²·4π²/a; frames scaled
    by c_t give the root mean square of c_t times that norm."""
    a = 10 ** -1.5
    y, x = _grid(24)
    r = torch.sin(2 * x) * torch.cos(3 * y) + 0.5 * torch.cos(y) + 0.3
    exact = math.sqrt(math.pi**2 / (a + 13) + 0.25 * 2 * math.pi**2 / (a + 1) + 0.09 * 4 * math.pi**2 / a)
    scales = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    field = scales[None, :, None, None] * r
    got = hminus1_norm(field, a)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(exact * scales.square().mean().sqrt().item(), rel=1e-12)
    assert hminus1_norm(r[None, None], 1.0).item() < got.item() / 2  # the shift matters: a = 1 damps the mean


def test_time_derivative_is_exact_on_quartics():
    """Fourth-order differences differentiate polynomials of degree 4 exactly, at every frame including the ends."""
    t = 0.3 * torch.arange(7, dtype=torch.float64)
    signal = (1 + 2 * t - t**2 + 0.5 * t**3 - 0.2 * t**4)[None, :]
    derivative = 2 - 2 * t + 1.5 * t**2 - 0.8 * t**3
    torch.testing.assert_close(time_derivative(signal, 0.3, first=2)[0], derivative[2:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("physics", [FNO_PAPER, KOLMOGOROV], ids=["fno-paper", "kolmogorov"])
def test_steady_laminar_flows_have_no_residual(physics):
    """ω = F/(ν|k|² + α) is an exact steady solution for a forcing on one wave vector (the advection of a field of
    one wave vector vanishes): zero residual, and one not multiplied through by the right factor is not."""
    n = 16
    forcing = _physics(physics, n).forcing
    k2 = 2.0 if physics["flow"] == "fno-paper" else 16.0
    steady = forcing / (physics["viscosity"] * k2 + physics["drag"])
    trajectory = steady.expand(1, 6, n, n)
    phys = _physics(physics, n)
    assert hminus1_norm(vorticity_residual(trajectory, 0.1, phys, first=3)).item() < 1e-12
    assert hminus1_norm(vorticity_residual(1.1 * trajectory, 0.1, phys, first=3)).item() > 1e-3


def test_a_decaying_fourier_mode_has_a_small_residual_and_a_perturbed_one_does_not():
    """ω = e^{−(ν|k|² + α)t} cos(x + 2y) solves the unforced equation; the residual of its frames is the
    O(Δt⁴) error of the differences, far below ∂ω/∂t; a 1 % perturbation of one frame is not."""
    n, dt = 16, 0.1
    physics = {**KOLMOGOROV, "flow": "decaying", "viscosity": 0.05, "drag": 0.1}
    y, x = _grid(n)
    rate = 0.05 * 5 + 0.1
    t = dt * torch.arange(8, dtype=torch.float64)
    trajectory = (torch.exp(-rate * t)[:, None, None] * torch.cos(x + 2 * y))[None]
    phys = _physics(physics, n)
    scale = hminus1_norm(time_derivative(trajectory, dt, first=3)).item()
    assert hminus1_norm(vorticity_residual(trajectory, dt, phys, first=3)).item() < 1e-6 * scale
    perturbed = trajectory.clone()
    perturbed[:, 5] *= 1.01
    assert hminus1_norm(vorticity_residual(perturbed, dt, phys, first=3)).item() > 1e-2 * scale


def test_the_solvers_nonlinear_trajectory_has_a_small_residual_and_a_perturbed_one_does_not():
    """Frames of the FNO paper's flow from the pseudo-spectral solver at 64², saved at 32² by spectral truncation
    (as stores are): the residual, advection included, is below 2 % of ∂ω/∂t; 1 % noise raises it ten-fold."""
    solver = NavierStokes2D(64, FNO_PAPER["viscosity"], 0.025, forcing=fno_paper_forcing(64))
    start = 3 * fno_paper_vorticity(range(1), 64, 0)
    trajectory = resample(torch.cat([start[:, None], solver.rollout(start, 7, 0.1)], dim=1), 32)
    phys = _physics(FNO_PAPER, 32)
    scale = hminus1_norm(time_derivative(trajectory, 0.1, first=3)).item()
    clean = hminus1_norm(vorticity_residual(trajectory, 0.1, phys, first=3)).item()
    noise = 0.01 * trajectory.std() * torch.randn(trajectory.shape, generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.float64)
    assert clean < 0.02 * scale
    assert hminus1_norm(vorticity_residual(trajectory + noise, 0.1, phys, first=3)).item() > 10 * clean


def _model(t_in=4, t_out=3, n=16, physics=FNO_PAPER, **config):
    torch.manual_seed(0)
    spec = small_spec(inputs=("vorticity",), shape=(n, n), time_step=0.1, physics=physics)
    params = {"t_in": t_in, "t_out": t_out, "n_modes": [3, 3, 2], "hidden_channels": 6, "n_layers": 2,
              "time_channels": 2, "channel_expansion": 2, **config}
    return build_model("spacetime-fno", params, spec).double()


@pytest.mark.parametrize("t_out", [1, 3, 7])
def test_the_output_length_is_set_by_resampling_in_time(t_out):
    model = _model(t_out=t_out)
    out = model(torch.randn(2, 4, 1, 16, 16, dtype=torch.float64))
    assert out.shape == (2, t_out, 1, 16, 16)


def test_time_resampling_evaluates_the_kept_time_modes_at_the_new_frames():
    """With a unit weight on every kept mode, a field with time modes 0 and 1 over 8 frames comes back as the same
    trigonometric polynomial sampled at 12 frames across the window."""
    conv = SpaceTimeSpectralConv(1, 1, (4, 4, 2)).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[..., 0] = 1.0
    y, x = _grid(8)

    def field(frames):
        t = torch.arange(frames, dtype=torch.float64) / frames
        return (0.5 + torch.cos(TWO_PI * t)[:, None, None] * torch.sin(x + 2 * y)).permute(1, 2, 0)[None, ..., None]

    torch.testing.assert_close(conv(field(8), 12), field(12), rtol=1e-12, atol=1e-12)


def test_spectral_weights_are_real_parameters_and_each_spectral_layer_is_an_fsdp_unit():
    model = _model()
    assert all(not p.is_complex() for p in model.parameters())
    spectral = [m for m in model.modules() if isinstance(m, SpaceTimeSpectralConv)]
    assert len(spectral) == 3 and all(m.weight.shape[-1] == 2 for m in spectral)
    assert model.fsdp_units() == [*model.layers, model.output_conv]


def test_expanding_the_output_modes_leaves_the_output_unchanged_and_survives_export(tmp_path):
    model = _model().eval()
    x = torch.randn(2, 4, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        model.output_conv.bias.normal_()  # a trained bias, carried into the low modes too
        before = model(x)
    old = model.output_conv.weight.detach().clone()
    model.expand_output_modes((8, 8, 3))
    assert model.config.output_modes == (8, 8, 3) and model.output_conv.weight.shape[:3] == (16, 16, 3)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    weight = model.output_conv.weight.detach()
    torch.testing.assert_close(weight[:3, :3, :2], old[:3, :3])  # k_y, k_x = 0 … 2
    torch.testing.assert_close(weight[-3:, -3:, :2], old[-3:, -3:])  # k_y, k_x = −3 … −1
    assert weight[3:-3].abs().sum() == 0 and weight[..., 2:, :, :, :].abs().sum() == 0
    with torch.no_grad():
        model.output_conv.bias[4, 5, 1] += 1.0  # a new mode (k_y = 4, k_x = 5, time mode 1) shows
        changed = model(x)
    assert (changed - before).abs().max() > 1e-3
    loaded, _ = load_exported(export_model(model.float(), tmp_path / "model.pt", dataset="d", stride=1,
                                           lead_strides=(1,)))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x.float()), model(x.float()))
    with pytest.raises(EarthsimError, match="must be three ints"):
        model.expand_output_modes((2, 8, 3))


def test_fine_tuning_lowers_the_residual_norm_and_touches_only_the_output_layer():
    """On two windows of the solver's FNO-paper flow, 30 steps lower the residual's H⁻¹ norm, starting from the
    model's own (the rebuilt layer changes nothing before the first step), and leave every other weight as it was."""
    solver = NavierStokes2D(32, FNO_PAPER["viscosity"], 0.025, forcing=fno_paper_forcing(32))
    start = 3 * fno_paper_vorticity(range(2), 32, 1)
    x = resample(solver.rollout(start, 4, 0.1), 16)[:, :, None]
    model = _model()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("output_conv")}
    physics = Physics.from_spec(model.spec)
    with torch.no_grad():
        before = residual_norm(model, x, model(x), physics).mean().item()
    result = refine(model, x, modes=(8, 8, 3), steps=30, lr_bias=1e-3, lr_weight=1e-3)
    assert result.residual_norms[0] == pytest.approx(before, rel=1e-12)
    assert result.residual_norms[-1] < 0.5 * before
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert all(p.requires_grad for p in model.parameters())


def test_fine_tuning_refuses_data_without_navier_stokes_physics():
    with pytest.raises(EarthsimError, match="'flow' physics attribute"):
        refine(_model(physics={}), torch.randn(1, 4, 1, 16, 16, dtype=torch.float64), modes=(8, 8, 3))


def _tiny_fno_paper_entry(catalogs) -> str:
    """A catalog entry for a tiny store of the FNO paper's flow (32² solve saved at 16², 2 trajectories × 12 frames),
    made on first use."""
    import yaml

    entry = {"name": "fno-paper-tiny", "kind": "fluid", "description": "tiny FNO-paper flow for tests",
             "store": "${EARTHSIM_STORES}/fno-paper-tiny.zarr", "group": "16",
             "source": {"solver": "navier-stokes", "params": {
                 "flow": "fno-paper", "viscosity": 1e-3, "resolution": 32, "save_resolutions": [16],
                 "trajectories": 2, "frames": 12, "save_interval": 0.1, "spinup_time": 0.5, "max_velocity": 2.5,
                 "forcing_wavenumber": 1, "seed": 3, "chunk_frames": 12}},
             "variables": {"vorticity": {"units": "1"}}, "grid": {"x": 16, "y": 16, "length": TWO_PI},
             "time": {"step": 0.1, "units": "solver time units"},
             "splits": {"train": {"trajectory": [0, 1]}, "test": {"trajectory": [1, 2]}},
             "statistics": "${EARTHSIM_STORES}/fno-paper-tiny.stats.zarr", "licence": "test", "provenance": "tests"}
    folder = catalogs / "datasets"
    folder.mkdir(parents=True)
    (folder / "fno-paper-tiny.yaml").write_text(yaml.safe_dump(entry))
    return "fno-paper-tiny"


def test_refine_command_writes_a_refined_run_and_refuses_bad_windows(stores, tmp_path, capsys):
    """End to end on a store of the FNO paper's flow: its attributes state the physics the residual reads; the
    command refines a model trained on it, writes model.pt and refine.json, and refuses bad input with one line."""
    import json

    from earthsim import catalog
    from earthsim.cli import main
    from earthsim.data.stats import compute_statistics
    from earthsim.data.windows import WindowDataset
    from earthsim.models import DataSpec

    name = _tiny_fno_paper_entry(tmp_path / "catalogs")
    entry = catalog.get_entry(name)
    attrs = catalog.open_dataset(entry).attrs
    assert attrs["flow"] == "fno-paper" and attrs["viscosity"] == pytest.approx(4 * math.pi**2 * 1e-3, rel=1e-12)
    assert (attrs["drag"], attrs["forcing_wavenumber"], attrs["forcing_amplitude"]) == (0.0, 1, 0.1)
    assert "unit box, viscosity 0.001" in attrs["physical_setting"]
    compute_statistics(entry, progress=False)
    windows = WindowDataset(entry, "train", t_in=4, t_out=3)
    torch.manual_seed(0)
    model = build_model("spacetime-fno", {"t_in": 4, "t_out": 3, "n_modes": [3, 3, 2], "hidden_channels": 6,
                                          "n_layers": 1, "time_channels": 2, "channel_expansion": 2},
                        DataSpec.from_windows(windows))
    run = export_model(model, tmp_path / "run" / "model.pt", dataset=name, stride=1, lead_strides=(1,))

    out = tmp_path / "refined"
    assert main(["refine", str(run.parent), "--dataset", name, "--windows", "0", "2", "--steps", "10",
                 "--lr-bias", "1e-3", "--out", str(out)]) == 0
    record = json.loads((out / "refine.json").read_text())
    assert record["modes"] == [8, 8, 2] and record["windows"] == [0, 2]
    assert record["after"]["residual_hminus1"][0] < record["before"]["residual_hminus1"][0]
    refined, export = load_exported(out)
    assert refined.config.output_modes == (8, 8, 2) and export.train_config["refine"]["steps"] == 10
    capsys.readouterr()

    assert main(["refine", str(run.parent), "--dataset", name, "--windows", "99", "--out", str(tmp_path / "r2")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--windows" in error and "[0, 6)" in error
    assert not (tmp_path / "r2").exists()
    assert main(["refine", str(run.parent), "--dataset", name, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_kolmogorov_store_without_its_forcing_is_refused_by_name():
    physics = {"flow": "kolmogorov", "viscosity": 1e-3, "drag": 0.1, "domain_length": 2 * math.pi,
               "forcing_amplitude": 1.0}
    with pytest.raises(EarthsimError, match="forcing_wavenumber"):
        Physics.from_spec(small_spec(inputs=("vorticity",), shape=(8, 8), physics=physics))
