"""FSDP2 on CPU (gloo): what the Fourier family needs from it, and each ``parallelism`` option of an experiment.

Two ranks against one process, for every family, is in test_model_contract.py; here every option runs
in a world of one, against the same training step without it.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from earthsim.models import ParallelismConfig, parallelize
from test_model_contract import FAMILIES, UNROLL, _case


@pytest.fixture(scope="module")
def mesh():
    """A world of one over gloo (the trainer's in-process world; kept if a test already made one)."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return init_device_mesh("cpu", (1,))


def _step(name: str, mesh, parallelism: ParallelismConfig | None, **config):
    """Loss and gradients of one training step, sharded as ``parallelism`` says (None: no FSDP at all)."""
    model, batch = _case(name, **config)
    if parallelism is not None:
        parallelize(model, mesh, parallelism)
    with (parallelism or ParallelismConfig()).autocast(torch.device("cpu")):
        loss = model.training_loss(batch, UNROLL, lambda p, t: ((p - t) ** 2).mean())
    loss.backward()
    grads = {k: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).float()
             for k, p in model.named_parameters()}
    return loss.item(), grads, model


def _assert_same_step(a, b, rtol: float) -> None:
    assert a[0] == pytest.approx(b[0], rel=rtol)
    for key in a[1]:
        torch.testing.assert_close(a[1][key], b[1][key], rtol=rtol, atol=rtol * float(b[1][key].abs().max()) + 1e-12,
                                   msg=key)


@pytest.mark.parametrize("name,config", [(name, {}) for name in FAMILIES] + [("convlstm", {"teacher_forcing": False})])
def test_default_sharding_equals_the_unsharded_step(name, config, mesh):
    """Every family's training step; ConvLSTM also free-running (its registered training_loss rolling out through
    its registered init_state and step)."""
    _assert_same_step(_step(name, mesh, ParallelismConfig(), **config), _step(name, mesh, None, **config),
                      rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("option", [{"activation_checkpointing": True}, {"reshard_after_forward": False}])
def test_checkpointing_and_resharding_change_memory_not_results(name, option, mesh):
    _assert_same_step(_step(name, mesh, ParallelismConfig(**option)), _step(name, mesh, ParallelismConfig()), rtol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_activation_checkpointing_recomputes_each_unit_in_backward(name, mesh):
    """Each call of a checkpointed unit whose output the loss depends on runs again in backward (a recurrent
    model's state holds the frame after the last one asked for: that call gets no gradient, nor a recomputation)."""
    counts, contributing = {}, []
    for checkpointing in (False, True):
        model, batch = _case(name)
        unit = model.fsdp_units()[0]
        unit = unit[0] if isinstance(unit, (list, tuple)) else unit
        calls, forward = [], unit.forward

        def counted(*args, **kwargs):  # forward hooks do not fire in a recomputation, so count calls of forward
            calls.append(1)
            out = forward(*args, **kwargs)
            if not checkpointing:  # the call counts once, when a gradient first reaches any of its outputs
                reached = []

                def first_gradient(grad, reached=reached):
                    if not reached:
                        reached.append(1)
                        contributing.append(1)

                for tensor in out if isinstance(out, tuple) else (out,):
                    if tensor.requires_grad:
                        tensor.register_hook(first_gradient)
            return out

        unit.forward = counted
        parallelize(model, mesh, ParallelismConfig(activation_checkpointing=checkpointing))
        model.training_loss(batch, UNROLL, lambda p, t: ((p - t) ** 2).mean()).backward()
        counts[checkpointing] = len(calls)
    assert 0 < len(contributing) <= counts[False]
    assert counts[True] == counts[False] + len(contributing)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "convlstm" else pytest.mark.slow)
                                  for n in FAMILIES])
def test_compiled_units_give_the_same_step(name, mesh):
    """torch.compile (inductor on CPU) of every FSDP unit; families whose units graph-break (tltorch's spectral
    weights) still run, the breaks falling back to eager. Slow for all but one family: compiling takes tens of s."""
    _assert_same_step(_step(name, mesh, ParallelismConfig(compile=True)), _step(name, mesh, ParallelismConfig()),
                      rtol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("reduce_dtype", ["float32", "bfloat16"])
def test_bfloat16_parameters_train_close_to_float32(name, reduce_dtype, mesh):
    """FSDP2 mixed precision with bfloat16 parameters and autocast (and gradients reduced in either dtype); the
    spectral convolutions keep float32 parameters (FFTs and complex views take no bfloat16), so every family runs."""
    low = _step(name, mesh, ParallelismConfig(param_dtype="bfloat16", reduce_dtype=reduce_dtype))
    full = _step(name, mesh, ParallelismConfig())
    assert low[0] == pytest.approx(full[0], rel=3e-2)
    cosine = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in low[1].values()]),
                                                   torch.cat([g.flatten() for g in full[1].values()]), dim=0)
    assert cosine > 0.99
    if name in ("fno", "tfno", "sfno"):
        spectral = [m for m in low[2].modules() if getattr(m, "full_precision", False)]
        assert spectral and all(m._get_fsdp_state()._mp_policy.param_dtype == torch.float32 for m in spectral)


def test_fully_shard_refuses_unmodified_neuraloperator(mesh):
    """Why the Fourier family stores spectral weights as real pairs: FSDP2 refuses neuraloperator's own models."""
    import neuralop.models
    from torch.distributed.fsdp import fully_shard

    errors = {}
    for name in ("FNO", "SFNO"):
        model = getattr(neuralop.models, name)(n_modes=(4, 4), in_channels=1, out_channels=1, hidden_channels=4,
                                               n_layers=1)
        with pytest.raises(Exception) as caught:
            fully_shard(model, mesh=mesh)
            model(torch.randn(1, 1, 8, 8)).sum().backward()
        errors[name] = str(caught.value)
    assert "FSDP expects uniform original parameter dtype" in errors["FNO"]
    assert "view_as_real is only supported for complex tensors" in errors["SFNO"]


@pytest.mark.parametrize("name", FAMILIES)
def test_rollouts_under_fsdp_equal_the_unsharded_model(name, mesh):
    """Forecasts go through forward, or through init_state and step for a model that carries its state: FSDP2
    must gather parameters around each (registered forward methods), or this fails on sharded tensors."""
    from test_model_contract import example_data, example_model
    from earthsim.models import RecurrentModel, rollout

    plain, sharded = example_model(name).eval(), example_model(name).eval()
    parallelize(sharded, mesh)
    x, static, forcings = example_data(plain)
    with torch.no_grad():
        torch.testing.assert_close(rollout(sharded, x, 4, static, None, forcings),
                                   rollout(plain, x, 4, static, None, forcings), rtol=1e-5, atol=1e-5)
        if isinstance(plain, RecurrentModel):  # step alone, first call on a freshly sharded model
            fresh = parallelize(example_model(name).eval(), mesh)
            state = plain.init_state(x, static)
            torch.testing.assert_close(fresh.step(state, forcings[:, :1])[0], plain.step(state, forcings[:, :1])[0],
                                       rtol=1e-5, atol=1e-5)
