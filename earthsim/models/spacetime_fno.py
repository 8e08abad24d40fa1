"""The space-time Fourier neural operator of the Spectral Refiner (Cao et al. 2025; scaomath/torch-cfd's ``SFNO``,
named here ``spacetime-fno`` so as not to be taken for the spherical SFNO of :mod:`earthsim.models.sfno`).

A window of ``T_in`` frames goes in as one space-time field ``[B, C, H, W, T]``: Fourier transforms
run over y, x and t together. The lift appends time-encoding channels e^{βt}·sin/cos(π k t) (t in
(0, 1] across the window; β from the a-priori energy estimate of Navier–Stokes, small) and the
static fields to the input channels, normalises the whole space-time sample with one layer norm
(``GroupNorm`` with one group: no dataset statistics, so the network works in physical units and
takes any input length) and maps them to ``hidden_channels`` pointwise. Then ``n_layers`` Fourier
layers σ(MLP(K v) + W v), a pointwise projection to the output channels, and the **output
spectral convolution**, which maps the ``T_in`` frames to ``T_out`` by the size of its inverse
transform in time (resampling: the time modes it keeps are evaluated at ``T_out`` points across the
same window). Its output is added to the last input frame.

Spectral weights are real ``[..., 2]`` parameters viewed as complex inside the layer (FSDP2 shards
only real tensors of one dtype), and the transforms run outside autocast in float32 (float64 for a
float64 model). :meth:`SpaceTimeFNO.expand_output_modes` rebuilds the output convolution with more
modes for the Spectral Refiner's fine-tuning (:mod:`earthsim.train.refine`).

Where it differs from torch-cfd's ``SFNO`` (simplifications, not yet measured against it): the window
is resampled in time as if periodic, where the reference's output convolution zero-pads time by
``T`` and puts the last input frame in front of the latent before its transform (so its output
frames carry less wrap-around error at the window ends); the lift is pointwise, where the
reference's also has a spectral convolution, an MLP and a skip from the last frame; the time
encoding is concatenated with t = k/T_in, where the reference adds x, y, t coordinate channels by
broadcast with t = k/100; and the output bias is not scaled by the time step.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from earthsim.errors import EarthsimError
from earthsim.models.base import EarthsimModel, FSDPUnit, register_model
from earthsim.models.spec import DataSpec


def _kept(size: int, modes: int, device) -> torch.Tensor:
    """Indices of the wavenumbers 0 … modes − 1 then −modes … −1 along a full FFT axis of ``size`` points."""
    return torch.cat([torch.arange(modes, device=device), torch.arange(size - modes, size, device=device)])


class SpaceTimeSpectralConv(nn.Module):
    """FFT over (y, x, t), a complex linear map of the kept modes (plus an optional spectral bias), inverse FFT to
    ``frames`` time points. Fields are channels-last ``[B, H, W, T, C]`` (pointwise layers are then plain matmuls).

    Kept modes: k_y in 0 … m_y − 1 and −m_y … −1, the same along x, and the first m_t frequencies
    of the real transform over t (as many as both the input and the output lengths resolve).
    Transforms are normalised "forward", so a coefficient is a mode's amplitude and resampling to
    another number of frames keeps amplitudes. The weight is a real ``[2 m_y, 2 m_x, m_t, C_in,
    C_out, 2]`` parameter (the wavenumbers in the order above), the bias ``[2 m_y, 2 m_x, m_t, C_out, 2]``.
    """

    full_precision = True  # view_as_complex and the FFTs take no bfloat16: FSDP keeps this unit in float32

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, int, int], bias: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, tuple(int(m) for m in modes)
        my, mx, mt = self.modes
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(2 * my, 2 * mx, mt, in_channels, out_channels, 2))
        self.bias = nn.Parameter(torch.zeros(2 * my, 2 * mx, mt, out_channels, 2)) if bias else None

    def forward(self, v: torch.Tensor, frames: int) -> torch.Tensor:
        """``v`` ``[B, H, W, T, C_in]`` to ``[B, H, W, frames, C_out]``."""
        batch, height, width = v.shape[:3]
        with torch.autocast(v.device.type, enabled=False):
            v = v if v.dtype == torch.float64 else v.float()
            spectrum = torch.fft.rfftn(v, dim=(1, 2, 3), norm="forward")
            my, mx, mt = self.modes
            mt = min(mt, spectrum.shape[3], frames // 2 + 1)
            rows, columns = _kept(height, my, v.device), _kept(width, mx, v.device)
            kept = spectrum[:, :, :, :mt].index_select(1, rows).index_select(2, columns)
            weight = torch.view_as_complex(self.weight.to(v.dtype))[:, :, :mt]
            out = (kept.unsqueeze(-2) @ weight).squeeze(-2)  # [B, 2 m_y, 2 m_x, m_t, C_out]
            if self.bias is not None:
                out = out + torch.view_as_complex(self.bias.to(v.dtype))[:, :, :mt]
            full = out.new_zeros((batch, height, width, frames // 2 + 1, self.out_channels))
            full[:, rows[:, None], columns[None, :], :mt] = out
            return torch.fft.irfftn(full, s=(height, width, frames), dim=(1, 2, 3), norm="forward")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, modes={self.modes}, bias={self.bias is not None}, "
                "stored as real [..., 2]")


class FourierLayer(nn.Module):
    """σ(MLP(K v) + W v): a space-time spectral convolution K, a pointwise MLP after it and a pointwise skip W."""

    def __init__(self, width: int, modes: tuple[int, int, int], expansion: int):
        super().__init__()
        self.spectral = SpaceTimeSpectralConv(width, width, modes)
        self.skip = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, expansion * width), nn.GELU(), nn.Linear(expansion * width, width))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.mlp(self.spectral(v, v.shape[3]).to(v.dtype)) + self.skip(v))


@dataclasses.dataclass
class SpaceTimeFNOConfig:
    """Space-time FNO (the Spectral Refiner's operator): FFTs over y, x and t, ``T_out`` set by resampling in time."""

    t_in: int = dataclasses.field(default=10, metadata={"help": "input frames (one space-time field)"})
    t_out: int = dataclasses.field(default=10, metadata={"help": "output frames, by resampling in time"})
    n_modes: tuple[int, int, int] = dataclasses.field(
        default=(12, 12, 5), metadata={"help": "Fourier modes kept along (y, x, t) in the hidden layers"})
    output_modes: tuple[int, ...] = dataclasses.field(
        default=(), metadata={"help": "modes (y, x, t) of the output spectral convolution; empty: n_modes "
                                      "(the Spectral Refiner's fine-tuning raises them)"})
    hidden_channels: int = dataclasses.field(default=20, metadata={"help": "width of the Fourier layers"})
    n_layers: int = dataclasses.field(default=3, metadata={"help": "Fourier layers between lift and projection"})
    channel_expansion: int = dataclasses.field(
        default=4, metadata={"help": "pointwise MLP width / hidden_channels in each layer and the projection"})
    time_channels: int = dataclasses.field(
        default=6, metadata={"help": "time-encoding channels e^{βt}·sin/cos(π k t) appended to the input"})
    beta: float = dataclasses.field(
        default=0.01, metadata={"help": "β of the time encoding's e^{βt} (the a-priori energy growth rate)"})
    residual: bool = dataclasses.field(
        default=True, metadata={"help": "add the output to the last input frame (the Spectral Refiner does)"})

    def __post_init__(self):
        for name in ("t_in", "t_out", "hidden_channels", "n_layers", "channel_expansion"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.time_channels < 0:
            raise ValueError(f"time_channels must be >= 0, got {self.time_channels}")
        self.n_modes = tuple(self.n_modes)
        self.output_modes = tuple(self.output_modes) or self.n_modes
        for name in ("n_modes", "output_modes"):
            modes = getattr(self, name)
            if len(modes) != 3 or min(modes) < 1:
                raise ValueError(f"{name} must be three positive ints (y, x, t), got {modes}")


def time_encoding(frames: int, channels: int, beta: float) -> torch.Tensor:
    """``[channels, frames]``: e^{βt}·sin(π(k+1)t) for even k, e^{βt}·cos(π(k+1)t) for odd k, t = 1/T … 1."""
    t = torch.arange(1, frames + 1, dtype=torch.float64) / frames
    rows = [torch.exp(beta * t) * (torch.sin if k % 2 == 0 else torch.cos)(math.pi * (k + 1) * t)
            for k in range(channels)]
    return torch.stack(rows) if rows else torch.zeros(0, frames, dtype=torch.float64)


@register_model("spacetime-fno", SpaceTimeFNOConfig)
class SpaceTimeFNO(EarthsimModel):
    """The Spectral Refiner's space-time FNO (see the module docstring): physical units in and out."""

    normalised = False  # one layer norm over each space-time sample; the residual fine-tuning reads physical fields
    example_config = {"t_in": 3, "t_out": 2, "n_modes": [4, 4, 2], "hidden_channels": 6, "n_layers": 2,
                      "time_channels": 2, "channel_expansion": 2}

    def __init__(self, config: SpaceTimeFNOConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.t_in, self.t_out, self.residual = config.t_in, config.t_out, config.residual
        self.register_buffer("time_channels", time_encoding(config.t_in, config.time_channels, config.beta).float(),
                             persistent=False)
        lifted = len(spec.inputs) + len(spec.static) + config.time_channels
        width = config.hidden_channels
        self.norm = nn.GroupNorm(1, lifted, eps=1e-7)
        self.lift = nn.Linear(lifted, width)
        self.layers = nn.ModuleList(FourierLayer(width, config.n_modes, config.channel_expansion)
                                    for _ in range(config.n_layers))
        self.projection = nn.Sequential(nn.Linear(width, config.channel_expansion * width), nn.GELU(),
                                        nn.Linear(config.channel_expansion * width, len(spec.outputs)))
        self.output_conv = SpaceTimeSpectralConv(len(spec.outputs), len(spec.outputs), config.output_modes, bias=True)

    def check_spec(self, spec: DataSpec) -> None:
        for name in ("n_modes", "output_modes"):
            _check_modes(name, getattr(self.config, name), spec)

    def network(self, x: torch.Tensor, static: torch.Tensor | None, lead_time: torch.Tensor | None) -> torch.Tensor:
        batch, frames = x.shape[:2]
        parts = [x.permute(0, 2, 3, 4, 1)]  # [B, C, H, W, T]
        if static is not None:
            parts.append(static.to(x.dtype)[..., None].expand(-1, -1, -1, -1, frames))
        if self.config.time_channels:
            parts.append(self.time_channels.to(x.dtype)[None, :, None, None, :].expand(
                batch, -1, *x.shape[-2:], -1))
        # The layer norm in the fields' precision, whatever the parameters' (bfloat16 under mixed precision).
        v = torch.cat(parts, dim=1)
        v = nn.functional.group_norm(v, 1, self.norm.weight.to(v.dtype), self.norm.bias.to(v.dtype), self.norm.eps)
        v = self.lift(v.permute(0, 2, 3, 4, 1))  # channels-last [B, H, W, T, C]
        for layer in self.layers:
            v = layer(v)
        out = self.output_conv(self.projection(v), self.t_out).to(x.dtype)
        return out.permute(0, 3, 4, 1, 2).contiguous()  # [B, T_out, C_out, H, W]

    def fsdp_units(self) -> list[FSDPUnit]:
        """One unit per spectral layer: each Fourier layer, and the output spectral convolution."""
        return [*self.layers, self.output_conv]

    def expand_output_modes(self, modes: tuple[int, int, int]) -> None:
        """Rebuild the output spectral convolution with ``modes`` (each ≥ the present ones), the trained weights and
        bias in its low modes and zeros above them: the model's output is unchanged, and the new modes start at
        zero for fine-tuning."""
        old = self.output_conv
        modes = tuple(int(m) for m in modes)
        if len(modes) != 3 or any(new < have for new, have in zip(modes, old.modes)):
            raise EarthsimError(f"spacetime-fno: output modes {modes} must be three ints, each >= the present "
                                f"{old.modes}")
        _check_modes("output modes", modes, self.spec)
        self.config = dataclasses.replace(self.config, output_modes=modes)
        new = SpaceTimeSpectralConv(old.in_channels, old.out_channels, modes, bias=True).to(old.weight)
        my, mx, mt = old.modes
        # the old wavenumbers 0 … m − 1 and −m … −1 sit at the start and at the end of the new axes
        rows = torch.cat([torch.arange(my), torch.arange(2 * modes[0] - my, 2 * modes[0])])
        columns = torch.cat([torch.arange(mx), torch.arange(2 * modes[1] - mx, 2 * modes[1])])
        with torch.no_grad():
            new.weight.zero_()
            new.bias.zero_()
            new.weight[rows[:, None], columns[None, :], :mt] = old.weight
            new.bias[rows[:, None], columns[None, :], :mt] = old.bias
        self.output_conv = new


def _check_modes(name: str, modes: tuple[int, ...], spec: DataSpec) -> None:
    height, width = spec.shape
    if modes[0] > height // 2 or modes[1] > width // 2:
        raise EarthsimError(f"spacetime-fno: {name} {tuple(modes)} too large for a {height}x{width} grid; "
                            f"need (y, x) modes <= ({height // 2}, {width // 2})")
