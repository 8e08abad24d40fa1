"""Training losses on predictions shaped like the sample contract's ``y``: [B, T, C, H, W].

Every loss takes per-channel weights (``channel_weights`` [C], e.g. per variable) and reduces to a
scalar. Conventions:

- ``mse``: mean squared error over all points.
- ``lat_mse``: latitude-area-weighted MSE with WeatherBench 2's cell-area weights, normalised to mean 1
  (:func:`earthsim.data.grid.latitude_weights`).
- ``relative_lp``: ||pred - y||_p / ||y||_p per sample and channel (neuraloperator's LpLoss), averaged.
- ``mse_l1``: ½ MSE + ½ mean absolute error (ConvSSM's video loss; the reference sums over image columns
  first, a constant factor).
- ``h1`` / ``h_minus1``: relative Sobolev norms on the periodic box through the Fourier transform,
  ||u||²_{H^s} = Σ_k (1 + |k|²)^s |û_k|² with s = 1 or s = -1.
"""

from __future__ import annotations

from typing import Callable

import torch

from earthsim.errors import EarthsimError


def _channel_weighted(per_channel: torch.Tensor, channel_weights: torch.Tensor | None) -> torch.Tensor:
    """Average a [..., C] tensor over channels with weights normalised to mean 1."""
    if channel_weights is None:
        return per_channel.mean()
    w = channel_weights.to(per_channel) / channel_weights.to(per_channel).mean()
    return (per_channel * w).mean()


def mse(pred, target, channel_weights=None, **_) -> torch.Tensor:
    per_channel = (pred - target).pow(2).mean(dim=(0, 1, 3, 4))
    return _channel_weighted(per_channel, channel_weights)


def mse_l1(pred, target, channel_weights=None, **_) -> torch.Tensor:
    error = pred - target
    per_channel = 0.5 * error.pow(2).mean(dim=(0, 1, 3, 4)) + 0.5 * error.abs().mean(dim=(0, 1, 3, 4))
    return _channel_weighted(per_channel, channel_weights)


def lat_mse(pred, target, channel_weights=None, lat_weights=None, **_) -> torch.Tensor:
    if lat_weights is None:
        raise EarthsimError("loss 'lat_mse' needs latitude weights (a dataset on a latitude grid)")
    w = torch.as_tensor(lat_weights).to(pred).view(1, 1, 1, -1, 1)
    per_channel = ((pred - target).pow(2) * w).mean(dim=(0, 1, 3, 4))
    return _channel_weighted(per_channel, channel_weights)


def relative_lp(pred, target, channel_weights=None, p: float = 2.0, **_) -> torch.Tensor:
    diff = torch.linalg.vector_norm((pred - target).flatten(3).transpose(1, 2).flatten(2), ord=p, dim=-1)
    norm = torch.linalg.vector_norm(target.flatten(3).transpose(1, 2).flatten(2), ord=p, dim=-1)
    per_channel = (diff / norm.clamp_min(torch.finfo(norm.dtype).tiny)).mean(dim=0)
    return _channel_weighted(per_channel, channel_weights)


def sobolev_norm_squared(u: torch.Tensor, s: float) -> torch.Tensor:
    """Σ_k (1 + |k|²)^s |û_k|² / (H W)² over the last two (periodic) dims, for integer wavenumbers k."""
    height, width = u.shape[-2:]
    u_hat = torch.fft.fft2(u if u.dtype == torch.float64 else u.float())
    real = u_hat.real.dtype
    ky = torch.fft.fftfreq(height, d=1.0 / height, device=u.device, dtype=real)
    kx = torch.fft.fftfreq(width, d=1.0 / width, device=u.device, dtype=real)
    k2 = ky.view(-1, 1) ** 2 + kx.view(1, -1) ** 2
    weight = (1.0 + k2) ** s
    return (weight * u_hat.abs() ** 2).sum(dim=(-2, -1)) / (height * width) ** 2


def _relative_sobolev(pred, target, channel_weights, s: float) -> torch.Tensor:
    diff = sobolev_norm_squared(pred - target, s).sqrt()  # [B, T, C]
    norm = sobolev_norm_squared(target, s).sqrt()
    per_channel = (diff / norm.clamp_min(torch.finfo(norm.dtype).tiny)).mean(dim=(0, 1))
    return _channel_weighted(per_channel, channel_weights).to(pred.dtype)


def h1(pred, target, channel_weights=None, **_) -> torch.Tensor:
    return _relative_sobolev(pred, target, channel_weights, s=1.0)


def h_minus1(pred, target, channel_weights=None, **_) -> torch.Tensor:
    return _relative_sobolev(pred, target, channel_weights, s=-1.0)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "mse": mse,
    "mse_l1": mse_l1,
    "lat_mse": lat_mse,
    "relative_lp": relative_lp,
    "h1": h1,
    "h_minus1": h_minus1,
}


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    if name not in LOSSES:
        raise EarthsimError(f"unknown loss {name!r}; valid losses: {sorted(LOSSES)}")
    return LOSSES[name]


class TrainingLoss:
    """An experiment's loss on a model's predicted channels ``[B, T, C_out, H, W]`` (physical units in).

    With ``mean`` and ``std`` (``[C_out]``) prediction and target are first normalised channel by
    channel, so that variables of different units weigh alike (the ``normalised`` loss space);
    without them the loss is taken in physical units.
    """

    def __init__(self, name: str, channel_weights: torch.Tensor, lat_weights=None, p: float = 2.0,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        self.fn = get_loss(name)
        self.channel_weights, self.lat_weights, self.p = channel_weights, lat_weights, p
        self.mean = None if mean is None else mean.view(1, 1, -1, 1, 1)
        self.std = None if std is None else std.view(1, 1, -1, 1, 1)

    def to(self, device) -> "TrainingLoss":
        for name in ("channel_weights", "mean", "std"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        if self.std is not None:
            pred, target = (pred - self.mean) / self.std, (target - self.mean) / self.std
        return self.fn(pred, target, channel_weights=self.channel_weights, lat_weights=self.lat_weights, p=self.p)
