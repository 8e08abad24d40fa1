"""ConvS5 against its equations: the HiPPO-LegS eigendecomposition against a general eigensolver, zero-order hold
against the integral it stands for, the FFT and doubling scans against a float64 sequential loop (values and
gradients to 1e-10), a layer run in parallel against the same layer stepped frame by frame, generation through the
carried state against forward passes over the growing history, and the parameter count of ConvSSM's configuration."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import torch

from conftest import small_spec
from earthsim.errors import EarthsimError
from earthsim.models import build_model, rollout
from earthsim.models.convs5 import (ConvS5Config, ConvS5Layer, ConvS5SSM, hippo_legs_normal, scan_doubling, scan_fft,
                                    scan_loop)


def test_hippo_legs_normal_part_is_diagonalised_by_the_kept_half_of_its_eigenpairs():
    n = 16
    idx = np.arange(n)
    hippo = np.array([[-np.sqrt(2 * i + 1) * np.sqrt(2 * k + 1) if i > k else (-(i + 1) if i == k else 0.0)
                       for k in idx] for i in idx])
    normal = hippo + np.outer(np.sqrt(idx + 0.5), np.sqrt(idx + 0.5))
    lam, vectors = hippo_legs_normal(n)
    assert lam.shape == (n // 2,) and vectors.shape == (n, n // 2)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
    np.testing.assert_allclose(normal @ vectors, vectors * lam, atol=1e-9)
    np.testing.assert_allclose(vectors.conj().T @ vectors, np.eye(n // 2), atol=1e-12)
    every = np.linalg.eigvals(normal)  # a general solver: the kept half and its conjugates are all the eigenvalues
    np.testing.assert_allclose(every.real, -0.5, atol=1e-8)
    np.testing.assert_allclose(np.sort(every.imag), np.sort(np.concatenate([lam, lam.conj()]).imag), atol=1e-8)


def test_zero_order_hold_equals_the_integral_of_the_continuous_system_over_one_step():
    torch.manual_seed(0)
    ssm = ConvS5SSM(channels=2, ssm_size=4, kernel_b=1, kernel_c=1, dt_min=1e-3, dt_max=1e-1, clip_eigs=False).double()
    a_bar, b_weight = ssm.discretised()
    lam = torch.complex(ssm.lambda_re, ssm.lambda_im).detach().numpy()
    step = ssm.log_step.exp().detach().numpy()
    b = torch.complex(ssm.b[..., 0], ssm.b[..., 1]).detach().numpy()[:, :, 0, 0]  # [P, U]
    np.testing.assert_allclose(a_bar.detach().numpy(), np.exp(lam * step), rtol=1e-12)
    for p in range(len(lam)):  # B̄ = ∫_0^Δ exp(λ s) ds · B
        re = scipy.integrate.quad(lambda s: np.exp(lam[p] * s).real, 0.0, step[p], epsabs=1e-14)[0]
        im = scipy.integrate.quad(lambda s: np.exp(lam[p] * s).imag, 0.0, step[p], epsabs=1e-14)[0]
        expected = (re + 1j * im) * b[p]
        got = b_weight[p, :, 0, 0].detach().numpy() + 1j * b_weight[len(lam) + p, :, 0, 0].detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9)


def _scan_case(length: int, generator: torch.Generator):
    """A stable diagonal ``a`` [P], inputs ``bu`` [B, L, P, h, w] and an initial state, all complex128."""
    radius = 0.5 + 0.49 * torch.rand(3, generator=generator, dtype=torch.float64)
    a = torch.polar(radius, 2 * np.pi * torch.rand(3, generator=generator, dtype=torch.float64))
    bu = torch.complex(*torch.randn(2, 2, length, 3, 2, 2, generator=generator, dtype=torch.float64))
    x0 = torch.complex(*torch.randn(2, 2, 3, 2, 2, generator=generator, dtype=torch.float64))
    return a.requires_grad_(), bu.requires_grad_(), x0.requires_grad_()


@pytest.mark.parametrize("scan", [scan_fft, scan_doubling], ids=["fft", "doubling"])
@pytest.mark.parametrize("length", [1, 7, 64, 100])
def test_parallel_scans_equal_the_sequential_loop_in_values_and_gradients(scan, length):
    g = torch.Generator().manual_seed(length)
    weights = torch.complex(*torch.randn(2, 2, length, 3, 2, 2, generator=g, dtype=torch.float64))
    results = []
    for run in (scan, scan_loop):
        a, bu, x0 = _scan_case(length, torch.Generator().manual_seed(7))
        states = run(a, bu, x0)
        (states * weights).real.sum().backward()
        results.append((states.detach(), a.grad, bu.grad, x0.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_a_layer_run_over_a_sequence_equals_the_layer_stepped_frame_by_frame():
    torch.manual_seed(0)
    layer = ConvS5Layer(ConvS5Config(d_model=8, ssm_size=8, encoder_depths=(8,))).double().eval()
    u = torch.randn(2, 9, 8, 4, 4, dtype=torch.float64)
    whole, last = layer(u)
    x = torch.zeros(2, 4, 4, 4, dtype=torch.complex128)
    stepped = []
    for k in range(9):
        out, x = layer(u[:, k:k + 1], x)
        stepped.append(out)
    torch.testing.assert_close(torch.cat(stepped, dim=1), whole, rtol=0, atol=1e-10)
    torch.testing.assert_close(x, last, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scan", ["fft", "doubling", "loop"])
def test_generation_through_the_carried_state_equals_forward_passes_over_the_growing_history(scan):
    spec = small_spec(shape=(8, 8))
    torch.manual_seed(0)
    model = build_model("convs5", {"t_in": 3, "d_model": 8, "ssm_size": 8, "layers": 2, "encoder_depths": [8, 8],
                                   "scan": scan}, spec).double().eval()
    x = torch.randn(2, 3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        generated = rollout(model, x, 5)
        history = x
        for _ in range(5):
            history = torch.cat([history, model(history)], dim=1)  # forward reads any number of context frames
    torch.testing.assert_close(generated, history[:, 3:], rtol=0, atol=1e-10)


def test_the_moving_mnist_configuration_has_convssms_parameter_count_less_its_action_channel():
    """ConvSSM's Moving-MNIST ConvS5 (300-frame setting, no VQ) has 21,681,411 parameters by its code: encoder
    1,223,552, eight layers of 2,361,728, decoder 1,497,985 and an all-zero action channel path (an Embed(2, 1) and
    that channel's column of the 1 × 1 projection) of 2 + 256. earthsim has no action channel."""
    model = build_model("convs5", {}, small_spec(shape=(64, 64)))
    assert sum(p.numel() for p in model.parameters()) == 21_681_411 - 258
    layer = sum(p.numel() for p in model.layers[0].parameters())
    assert layer == 2_361_728
    assert sum(p.numel() for p in model.decoder.parameters()) == 1_497_985


def test_the_convlstm_baseline_has_convssms_layer_count_and_keeps_its_state_across_calls():
    model = build_model("convlstm-resnet", {}, small_spec(shape=(64, 64)))
    assert sum(p.numel() for p in model.layers[0].parameters()) == 4_719_104  # ConvSSM's 300-frame ConvLSTM layer
    assert sum(p.numel() for p in model.parameters()) == 40_540_419 - 258  # its model less the action channel
    spec = small_spec(shape=(8, 8))
    torch.manual_seed(0)
    small = build_model("convlstm-resnet", {"t_in": 2, "d_model": 8, "layers": 2, "encoder_depths": [8, 8]},
                        spec).double().eval()
    x = torch.randn(1, 2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        generated = rollout(small, x, 3)
        history = x
        for _ in range(3):
            history = torch.cat([history, small(history)], dim=1)
    torch.testing.assert_close(generated, history[:, 2:], rtol=0, atol=1e-10)


def test_the_grid_must_divide_by_the_encoders_downsampling():
    with pytest.raises(EarthsimError, match="must divide by 4"):
        build_model("convs5", {"encoder_depths": [8, 8, 8], "d_model": 8, "ssm_size": 8}, small_spec(shape=(33, 49)))


def test_layer_dropout_drops_the_same_channels_and_pixels_at_every_time():
    torch.manual_seed(0)
    for name, config in (("convs5", {"ssm_size": 8}), ("convlstm-resnet", {})):
        model = build_model(name, {"d_model": 8, "layers": 1, "encoder_depths": [8], "dropout": 0.5, **config},
                            small_spec(shape=(4, 4)))
        layer = model.layers[0].train()
        layer.norm = torch.nn.Identity()  # see the layer's output before its normalisation
        u = torch.randn(2, 6, 8, 4, 4)
        captured = {}
        layer.register_forward_hook(lambda module, args, out: captured.update(out=out[0]))
        layer(u)
        dropped = captured["out"] - u == 0  # [B, L, U, h, w]: u + dropout(branch), the branch almost surely nonzero
        assert bool(dropped.any()) and not bool(dropped.all()), name
        assert torch.equal(dropped, dropped[:, :1].expand_as(dropped)), name
