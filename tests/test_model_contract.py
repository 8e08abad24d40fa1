"""The model contract, checked over every registered model: a new family joins these tests by registering.

Each family is built from its ``example_config`` on a small data spec on the grid the family declares
(``example_grid``). On a box or latitude/longitude grid the spec has three input channels, the first and last
predicted and the middle one a forcing read from data, one static field and different statistics per channel
(so that a channel taken for another shows). A learned solver (the finite-volume solver inside) declares a
staggered grid: its spec is a staggered store's (u, v and vorticity in and out, the flow's physics), its data the
frames of a small Kolmogorov flow.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import small_spec, staggered_frames, staggered_spec
from earthsim.models import (MODELS, Batch, RecurrentModel, build_model, complete_frames, export_model, load_exported,
                             parallelize, rollout)

FAMILIES = sorted(MODELS)
BATCH = 4


MEAN, STD = (1.0, -3.0, 5.0), (2.0, 0.5, 3.0)  # per input channel: a, forcing f, b


def example_spec(name: str):
    grid = MODELS[name].factory.example_grid
    if grid == "staggered":
        return staggered_spec()
    return small_spec(inputs=("a", "f", "b"), outputs=("a", "b"), static=("s",), grid=grid,
                      shape=(8, 16) if grid == "latlon" else (16, 16), mean=MEAN, std=STD)


def _fields(shape, generator, dtype=torch.float32) -> torch.Tensor:
    """Random fields ``[..., C=3, H, W]`` with each channel's mean and std."""
    noise = torch.randn(*shape, generator=generator, dtype=dtype)
    return torch.tensor(MEAN, dtype=dtype).view(-1, 1, 1) + torch.tensor(STD, dtype=dtype).view(-1, 1, 1) * noise


def example_model(name: str, seed: int = 0, **config):
    torch.manual_seed(seed)
    return build_model(name, {**MODELS[name].factory.example_config, **config}, example_spec(name))


def example_frames(model, frames: int = 4, batch: int = 2, seed: int = 1, dtype=torch.float32):
    """Inputs ``x`` ``[B, T_in, C_in, H, W]``, the ``frames`` input frames after them and the static fields (None
    without any), in physical units: random fields, or a flow's frames on a staggered grid."""
    height, width = model.spec.shape
    if MODELS[model.model_name].factory.example_grid == "staggered":
        flow = staggered_frames(model.t_in + frames, batch, dtype, seed)
        return flow[:, :model.t_in], flow[:, model.t_in:], None
    g = torch.Generator().manual_seed(seed)
    x = _fields((batch, model.t_in, 3, height, width), g, dtype)
    static = torch.randn(1, height, width, generator=g, dtype=dtype)
    return x, _fields((batch, frames, 3, height, width), g, dtype), static


def example_data(model, frames: int = 4, batch: int = 2, seed: int = 1, dtype=torch.float32):
    """Inputs ``x``, the static fields and the forcing channels at ``frames`` predicted frames."""
    x, future, static = example_frames(model, frames, batch, seed, dtype)
    return x, static, future[:, :, model.spec.forcing_index]


def with_residual(name: str) -> dict:
    """``residual: True`` for a family whose config has it (a learned solver steps its solver instead)."""
    return {"residual": True} if "residual" in MODELS[name].config_cls.__dataclass_fields__ else {}


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_predicts_the_output_channels(name):
    model = example_model(name)
    x, static, _ = example_data(model)
    out = model(x, static, torch.full((2,), 0.1))
    assert out.shape == (2, model.t_out, len(model.spec.outputs), *model.spec.shape)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_export_then_load_rolls_out_exactly_as_the_model_in_memory(name, tmp_path):
    model = example_model(name).eval()
    path = export_model(model, tmp_path / "model.pt", dataset="example", stride=1, lead_strides=(1,), step=3)
    loaded, record = load_exported(path)
    assert (record.model, record.step, record.lead_strides) == (name, 3, (1,))
    assert loaded.spec == model.spec and loaded.config == model.config
    x, static, forcings = example_data(model)
    with torch.no_grad():
        assert torch.equal(rollout(loaded, x, 4, static, None, forcings), rollout(model, x, 4, static, None, forcings))


@pytest.mark.parametrize("name", FAMILIES)
def test_seeded_builds_and_forwards_are_deterministic(name):
    first, second = example_model(name, seed=7), example_model(name, seed=7)
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), key
    x, static, forcings = example_data(first)
    with torch.no_grad():
        once = rollout(first, x, 3, static, None, forcings)
        assert torch.equal(once, rollout(second, x, 3, static, None, forcings))
        assert torch.equal(once, rollout(first, x, 3, static, None, forcings))
    other = example_model(name, seed=8).state_dict()
    assert any(not torch.equal(other[key], value) for key, value in first.state_dict().items())


@pytest.mark.parametrize("name", FAMILIES)
def test_seeded_training_steps_are_deterministic(name):
    updated = []
    for _ in range(2):
        model, batch = _case(name)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
        model.training_loss(batch, UNROLL, lambda p, t: ((p - t) ** 2).mean()).backward()
        optimizer.step()
        updated.append(model.state_dict())
    for key in updated[0]:
        assert torch.equal(updated[0][key], updated[1][key]), key


@pytest.mark.parametrize("name", FAMILIES)
def test_rollout_feeds_back_predictions_and_reads_forcings_at_their_valid_times(name):
    """Against a loop written here: each call's input is the history of true inputs and predicted frames
    completed by the forcing at the same valid time (the last ``T_in`` frames, or all of them for a model
    that carries its state: the carried-state path equals the windowed path)."""
    model = example_model(name, **with_residual(name)).double().eval()
    x, static, forcings = example_data(model, dtype=torch.float64)
    recurrent = isinstance(model, RecurrentModel)
    with torch.no_grad():
        got = rollout(model, x, 4, static, None, forcings)
        history, expected = x, []
        while len(expected) < 4:
            out = model(history if recurrent else history[:, -model.t_in:], static)
            expected += list(out.unbind(1))
            done = len(expected)
            history = torch.cat([history, complete_frames(model.spec, out, forcings[:, done - out.shape[1]:done])], 1)
        expected = torch.stack(expected[:4], dim=1)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

        if not model.spec.forcings:
            return
        # The forcing at a frame's valid time is read for the frames after it, never for the frame itself.
        changed = forcings.clone()
        changed[:, 0] += 1.0
        moved = rollout(model, x, 4, static, None, changed)
        first = model.t_out  # frames predicted before the first forcing is read
        assert torch.equal(moved[:, :first], got[:, :first])
        assert not torch.allclose(moved[:, first:], got[:, first:])
        late = forcings.clone()
        late[:, 3] += 1.0  # the valid time of the last frame asked for: read by nobody
        assert torch.equal(rollout(model, x, 4, static, None, late), got)


@pytest.mark.parametrize("name", FAMILIES)
def test_training_loss_reaches_every_parameter(name):
    model = example_model(name)
    x, y, static = example_frames(model, 2 * model.t_out, batch=BATCH, seed=4)
    loss = model.training_loss(Batch(x, y, torch.full((BATCH,), 0.1), static), 2, lambda p, t: ((p - t) ** 2).mean())
    loss.backward()
    assert loss.ndim == 0 and bool(torch.isfinite(loss))
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all()), key
        assert parameter.grad.abs().sum() > 0, key


# -------------------------------------------------------------------------- two gloo ranks = one process

STEPS, UNROLL, LR = 3, 2, 1e-2


def _case(name: str, **config):
    """A model with fixed initial weights and a fixed global batch (targets with the forcing channel)."""
    model = example_model(name, **config)
    x, y, static = example_frames(model, UNROLL * model.t_out, batch=BATCH, seed=2)
    return model, Batch(x, y, torch.full((BATCH,), 0.1), static)


def _train(model, batch: Batch, world: int) -> list[float]:
    """AdamW steps on this rank's share of the batch; the reported loss is the mean over ranks."""
    rank = dist.get_rank() if world > 1 else 0
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    part = Batch(batch.x[share], batch.y[share], batch.lead_time[share], batch.static)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = model.training_loss(part, UNROLL, lambda p, t: ((p - t) ** 2).mean())
        loss.backward()
        optimizer.step()
        reported = loss.detach().clone()
        if world > 1:
            dist.all_reduce(reported)
            reported /= world
        losses.append(reported.item())
    return losses


def _rank(rank: int, world: int, port: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        results = {}
        for name in FAMILIES:
            model, batch = _case(name)
            parallelize(model, mesh)
            results[name] = {"losses": _train(model, batch, world),
                             "sharded": all(isinstance(p, DTensor) for p in model.parameters())}
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
def test_two_gloo_ranks_under_fsdp2_equal_one_process(tmp_path):
    expected = {name: _train(*_case(name), world=1) for name in FAMILIES}  # no FSDP, whole batch
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name in FAMILIES:
            assert results[name]["sharded"], f"{name}: a parameter was left unsharded"
            torch.testing.assert_close(torch.tensor(results[name]["losses"], dtype=torch.float64),
                                       torch.tensor(expected[name], dtype=torch.float64), rtol=1e-5, atol=0,
                                       msg=f"{name}: sharded losses differ")
    for name in FAMILIES:
        assert expected[name][-1] < expected[name][0], f"{name}: the steps trained nothing"


def test_a_model_declaring_physical_units_sees_and_returns_physical_fields():
    """``normalised = False`` (a learned solver inside a numerical time stepper): no statistics are applied;
    with ``normalised = True`` the network sees (x - mean) / std and its output is de-normalised."""
    from earthsim.models import EarthsimModel

    seen = []

    class Last(EarthsimModel):
        t_in = t_out = 1

        def network(self, x, static, lead_time):
            seen.append(x)
            return x[:, -1:, self.spec.output_index]

        def fsdp_units(self):
            return []

    class PhysicalLast(Last):
        normalised = False

    spec = example_spec("fno")
    x = _fields((2, 1, 3, 16, 16), torch.Generator().manual_seed(0))
    static = torch.randn(1, 16, 16)
    torch.testing.assert_close(PhysicalLast({}, spec)(x, static), x[:, :, spec.output_index])
    torch.testing.assert_close(seen[-1], x)
    torch.testing.assert_close(Last({}, spec)(x, static), x[:, :, spec.output_index], rtol=1e-6, atol=1e-5)
    mean, std = torch.tensor(MEAN).view(-1, 1, 1), torch.tensor(STD).view(-1, 1, 1)
    torch.testing.assert_close(seen[-1], (x - mean) / std)  # each channel by its own statistics
