"""Training losses against closed forms and brute-force numpy."""

import numpy as np
import pytest
import torch

from earthsim.errors import EarthsimError
from earthsim.data.grid import latitude_weights
from earthsim.train.losses import get_loss, sobolev_norm_squared


def test_latitude_weights_without_poles_are_cosine():
    lat = np.arange(-87.5, 90, 5.0)
    expected = np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean()
    np.testing.assert_allclose(latitude_weights(lat), expected, rtol=1e-12)


@pytest.mark.parametrize("descending", [False, True])
def test_latitude_weights_with_poles_give_half_width_caps(descending):
    delta = 3.0
    lat = np.arange(-90, 90 + delta / 2, delta)
    d = np.deg2rad(delta)
    raw = 2 * np.cos(np.deg2rad(lat)) * np.sin(d / 2)
    raw[0] = raw[-1] = 1 - np.cos(d / 2)  # polar caps from 90 - delta/2 to the pole
    assert raw.sum() == pytest.approx(2.0, rel=1e-12)  # the sphere's area / (2 pi)
    expected = raw / raw.mean()
    got = latitude_weights(lat[::-1] if descending else lat)
    np.testing.assert_allclose(got[::-1] if descending else got, expected, rtol=1e-12)
    assert got.mean() == pytest.approx(1.0)


def test_uneven_latitudes_are_refused():
    with pytest.raises(EarthsimError, match="equally spaced"):
        latitude_weights([0.0, 1.0, 3.0])


def _fields(seed=0, shape=(2, 3, 4, 6, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_mse_and_channel_weights_match_numpy():
    pred, target = _fields()
    w = torch.tensor([1.0, 2.0, 0.5, 0.5], dtype=torch.float64)
    sq = ((pred - target) ** 2).numpy()
    per_channel = sq.mean(axis=(0, 1, 3, 4))
    assert get_loss("mse")(pred, target).item() == pytest.approx(sq.mean(), rel=1e-12)
    expected = (per_channel * (w.numpy() / w.numpy().mean())).mean()
    assert get_loss("mse")(pred, target, channel_weights=w).item() == pytest.approx(expected, rel=1e-12)


def test_mse_l1_is_convssms_loss_up_to_its_column_sum():
    """ConvSSM: 0.5 * mean over (B, T, H) of the squared error summed over (W, C), plus the same of |error|."""
    pred, target = _fields(shape=(2, 3, 1, 6, 8))
    error = (pred - target).numpy()
    reference = 0.5 * (error ** 2).sum(axis=(2, 4)).mean() + 0.5 * np.abs(error).sum(axis=(2, 4)).mean()
    assert get_loss("mse_l1")(pred, target).item() * 8 == pytest.approx(reference, rel=1e-12)


def test_lat_mse_matches_numpy_and_needs_weights():
    pred, target = _fields()
    lat = np.linspace(-60, 60, 6)
    w = latitude_weights(lat)
    expected = (((pred - target) ** 2).numpy() * w[None, None, None, :, None]).mean()
    assert get_loss("lat_mse")(pred, target, lat_weights=w).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(EarthsimError, match="latitude"):
        get_loss("lat_mse")(pred, target)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_relative_lp_matches_numpy(p):
    pred, target = _fields()
    d, t = (pred - target).numpy(), target.numpy()
    B, T, C = d.shape[:3]
    expected = np.mean([
        np.linalg.norm(d[b, :, c].ravel(), ord=p) / np.linalg.norm(t[b, :, c].ravel(), ord=p)
        for b in range(B) for c in range(C)
    ])
    assert get_loss("relative_lp")(pred, target, p=p).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("s", [1.0, -1.0])
def test_sobolev_norm_of_a_sine_is_closed_form(s):
    n, k = 32, 3
    x = torch.arange(n, dtype=torch.float64) * 2 * np.pi / n
    u = torch.sin(k * x).view(1, n).expand(n, n)
    assert sobolev_norm_squared(u, s).item() == pytest.approx((1 + k * k) ** s / 2, rel=1e-12)


@pytest.mark.parametrize("name,s", [("h1", 1.0), ("h_minus1", -1.0)])
def test_relative_sobolev_losses_closed_form(name, s):
    n, k, m, eps = 32, 2, 5, 0.1
    x = torch.arange(n, dtype=torch.float64) * 2 * np.pi / n
    yy, xx = torch.meshgrid(x, x, indexing="ij")
    target = torch.sin(k * xx).expand(1, 1, 1, n, n)
    pred = target + eps * torch.sin(m * yy)
    expected = eps * ((1 + m * m) / (1 + k * k)) ** (s / 2)
    assert get_loss(name)(pred, target).item() == pytest.approx(expected, rel=1e-10)


def test_unknown_loss_lists_valid_ones():
    with pytest.raises(EarthsimError, match="h_minus1"):
        get_loss("l3")
