"""Learned interpolation and TSM: HiPPO against its analytic fixed points, the untrained learned solver against the
finite-volume solver it starts as, TSM's longer bundles through export and the unrolled loss, refusals, and the
solver kept out of autocast (the rest of the model contract: tests/test_model_contract.py and tests/test_fsdp.py)."""

import numpy as np
import pytest
import torch

from conftest import STAGGERED_DT as DT
from conftest import STAGGERED_N as N
from conftest import STAGGERED_PHYSICS as PHYSICS
from conftest import limited_linear_interpolation, small_spec, staggered_spec
from conftest import staggered_frames as history
from earthsim.errors import EarthsimError
from earthsim.models import build_model, export_model, load_exported, rollout
from earthsim.models.tsm import HiPPO, hippo_matrices
from earthsim.sim.finite_volume import FiniteVolumeNavierStokes, curl


@pytest.mark.parametrize("measure, fixed_point", [("lagt", lambda n: 2.0 * (-1.0) ** np.arange(n)),
                                                  ("legs", lambda n: np.eye(n)[0])])
def test_hippo_of_a_constant_history_reaches_the_analytic_projection(measure, fixed_point):
    """A constant f: LagT's coefficients tend to −A⁻¹B f = 2(−1)ⁿ f, LegS's to its Legendre projection f·e₀."""
    size = 8
    a, b = hippo_matrices(measure, size)
    np.testing.assert_allclose(-np.linalg.solve(a, b), fixed_point(size), atol=1e-12)
    hippo = HiPPO(measure, size, 1.0).double()
    errors = [float((hippo.encode(torch.full((3, frames), 0.7, dtype=torch.float64))
                     - 0.7 * torch.from_numpy(fixed_point(size))).abs().max()) for frames in (100, 400)]
    assert errors[1] < 5e-3 and errors[1] < errors[0], errors  # LegS weighs all history: its start fades as 1/k


@pytest.mark.parametrize("measure", ["lagt", "legs"])
def test_hippo_encode_equals_the_frame_by_frame_recurrence(measure):
    torch.manual_seed(0)
    hippo = HiPPO(measure, 6, 0.5).double()
    frames = torch.randn(4, 9, dtype=torch.float64)
    state = torch.zeros(4, 6, dtype=torch.float64)
    for k in range(9):
        state = hippo.update(state, frames[:, k], k + 1)
    torch.testing.assert_close(hippo.encode(frames), state, atol=1e-6, rtol=1e-6)  # transitions held in float32


@pytest.mark.parametrize("name", ["learned-interpolation", "tsm"])
def test_with_zero_logits_the_learned_solver_is_the_limited_linear_finite_volume_solver(name):
    config = {"hidden_channels": 8, "hidden_layers": 2} | ({"t_in": 3, "hippo_size": 4} if name == "tsm" else {})
    model = build_model(name, config, staggered_spec()).double()
    with torch.no_grad():
        model.tower[-1].weight.zero_()
        model.tower[-1].bias.zero_()
    x = history(model.t_in, dtype=torch.float64)
    solver = FiniteVolumeNavierStokes(N, 1e-3, DT, drag=0.1, forcing_wavenumber=4, forcing_amplitude=1.0)
    state, frames = x[:, -1, :2], []
    for _ in range(5):
        state = solver.step(state, limited_linear_interpolation())
        frames.append(state)
    expected = torch.stack(frames, dim=1)
    out = rollout(model, x, 5)
    # the model's solver operators were built in float32 and widened by .double(): agreement to float32 round-off
    torch.testing.assert_close(out[:, :, :2], expected, atol=2e-6, rtol=0)
    torch.testing.assert_close(out[:, :, 2], curl(expected), atol=2e-5, rtol=0)
    assert float((out[:, -1, :2] - x[:, -1, :2]).detach().abs().max()) > 1e-2  # and the flow moved


def test_legs_counts_the_frames_of_a_context_longer_than_t_in():
    """LegS weighs frame k by 1/k: a model fed 6 context frames (t_in 3) must keep counting from 6."""
    model = build_model("tsm", {"hidden_channels": 4, "hidden_layers": 1, "t_in": 3, "hippo_size": 4,
                                "bundle_steps": 1, "measure": "legs"}, staggered_spec()).double().eval()
    x = history(6, dtype=torch.float64)
    with torch.no_grad():
        state = model.init_state(x)
        velocity, features, _, k, context = state.layers
        expected = model.hippo.encode(torch.cat([x[:, :, :2], velocity[:, None]], dim=1).permute(0, 2, 3, 4, 1))
    assert (k, context) == (1, 6)
    torch.testing.assert_close(features, expected, atol=1e-9, rtol=1e-7)


def test_tsm_with_one_step_bundles_rolls_out_as_forward_on_the_growing_history():
    model = build_model("tsm", {"hidden_channels": 8, "hidden_layers": 2, "t_in": 3, "hippo_size": 4,
                                "bundle_steps": 1, "measure": "legs"}, staggered_spec()).double().eval()
    x = history(3, dtype=torch.float64)
    with torch.no_grad():
        out = rollout(model, x, 4)
        frames = x
        for k in range(4):
            torch.testing.assert_close(model(frames), out[:, k:k + 1], atol=1e-9, rtol=1e-7)
            frames = torch.cat([frames, out[:, k:k + 1]], dim=1)


@pytest.mark.parametrize("name", ["learned-interpolation", "tsm"])
def test_export_round_trip_and_the_unrolled_loss_reaches_every_parameter(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, {"hidden_channels": 8, "hidden_layers": 2} | (
        {"t_in": 4, "hippo_size": 4, "bundle_steps": 2} if name == "tsm" else {}), staggered_spec())
    x = history(model.t_in + 3)
    path = export_model(model.eval(), tmp_path / "model.pt", dataset="example", stride=1, lead_strides=(1,), step=1)
    loaded, _ = load_exported(path)
    with torch.no_grad():
        assert torch.equal(rollout(loaded, x[:, :model.t_in], 3), rollout(model, x[:, :model.t_in], 3))
    model.train()
    pred = rollout(model, x[:, :model.t_in], 3)
    loss = ((pred[:, :, :2] - x[:, model.t_in:, :2]) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())


def test_a_store_without_a_staggered_grid_or_velocity_is_refused_by_name():
    with pytest.raises(EarthsimError, match="staggered"):
        build_model("tsm", {}, small_spec(inputs=("vorticity",), shape=(N, N), physics={**PHYSICS, "staggered": False}))
    with pytest.raises(EarthsimError, match="inputs u, v"):
        build_model("learned-interpolation", {}, small_spec(inputs=("vorticity",), shape=(N, N), physics=PHYSICS))
    with pytest.raises(EarthsimError, match="flow"):
        build_model("learned-interpolation", {}, staggered_spec(flow="fno-paper"))
    physics = {k: v for k, v in PHYSICS.items() if k != "forcing_wavenumber"}
    with pytest.raises(EarthsimError, match="forcing_wavenumber"):
        build_model("learned-interpolation", {}, small_spec(inputs=("u", "v"), shape=(N, N), time_step=DT,
                                                            physics=physics))
    # frames two CFL steps apart: the learned interpolation takes two solver steps a frame, TSM's history cannot
    two_steps = small_spec(inputs=("u", "v", "vorticity"), shape=(N, N), time_step=2 * DT, physics=PHYSICS)
    assert build_model("learned-interpolation", {"hidden_channels": 4, "hidden_layers": 1}, two_steps).steps_per_frame == 2
    with pytest.raises(EarthsimError, match="one frame per solver step"):
        build_model("tsm", {"hippo_size": 4}, two_steps)


def test_the_solver_inside_runs_with_autocast_off(monkeypatch):
    """Autocast (a bf16 mixed-precision run) reaches the network, never the finite-volume step it feeds: on a GPU
    its products and FFTs would otherwise run in bfloat16 (on CPU autocast leaves them alone, so the state inside
    the step is what is checked)."""
    model = build_model("learned-interpolation", {"hidden_channels": 8, "hidden_layers": 2}, staggered_spec()).eval()
    seen, project = [], model.solver.project
    monkeypatch.setattr(model.solver, "project", lambda v: (seen.append(torch.is_autocast_enabled("cpu")), project(v))[1])
    x = history(2)
    with torch.no_grad():
        plain = rollout(model, x[:, :1], 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = rollout(model, x[:, :1], 2)
    assert seen and not any(seen)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0.05, atol=0.05 * float(plain.abs().max()))


@pytest.mark.parametrize("current_velocity", [True, False])
def test_tsm_reads_the_current_velocity_beside_its_hippo_features_unless_told_not_to(current_velocity):
    """The same HiPPO features with another current velocity change the stencils only when the CNN reads it too."""
    config = {"hidden_channels": 8, "hidden_layers": 2, "t_in": 3, "hippo_size": 4, "current_velocity": current_velocity}
    model = build_model("tsm", config, staggered_spec()).double()
    features = model.init_features(history(3, dtype=torch.float64)[:, :, :2])
    velocity = history(3, dtype=torch.float64)[:, -1, :2]
    assert model.tower[0].in_channels == 2 * (4 + current_velocity)
    logits = [model.tower(model.tower_inputs(v, features)) for v in (velocity, 2 * velocity)]
    assert torch.equal(logits[0], logits[1]) != current_velocity
