"""ConvS5 (Smith et al. 2023, "Convolutional State Space Models for Long-Range Spatiotemporal Modeling").

A ConvS5 layer is a linear time-invariant recurrence whose state is a stack of complex maps:

    x_k = Ā ⊙ x_{k-1} + B̄ ∗ u_k,        y_k = 2 Re(C̃ ∗ x_k)

with ``u_k`` ``[U, h, w]`` the layer input, ``x_k`` ``[P, h, w]`` complex, ``∗`` a 2-D convolution and
``Ā`` diagonal (one complex number per state channel, shared over pixels). Following S5:

- ``Λ`` comes from the HiPPO-LegS matrix: its normal part ``S = A + p pᵀ`` (``p_n = √(n + ½)``) has
  eigenvalues ``-½ + iω``; of the conjugate pairs one half is kept (``P = ssm_size / 2`` complex
  channels), which is why the output is twice the real part;
- ``B`` and ``C`` are convolution kernels drawn real (He-normal) and projected through the
  eigenvectors ``V`` of ``S``: ``B̃ = V⁻¹ B`` on the state axis of every (input channel, tap) column,
  ``C̃ = C V`` on every (output channel, tap) row;
- zero-order hold with a learnable time scale per state channel, ``log Δ ~ U[log 1e-3, log 1e-1]``:
  ``Ā = exp(ΛΔ)``, ``B̄ = (Ā - 1) / Λ ⊙ B̃``; optionally the real part of ``Λ`` is clipped to ≤ -1e-4.

Around the recurrence, as NVlabs/ConvSSM's Moving-MNIST model: a ResNet block in place of ``D``
(``act(y + Conv(act(GN(Conv(act(GN(y)))))))``), the layer ``LayerNorm(u + dropout(·))`` over
channels, a ResNet encoder that takes frames down by 4 (64 → 16) and a ResNet decoder back.

Because the system is time-invariant, training runs the recurrence over a whole sequence at once:
``x_k = Σ_{j ≤ k} Ā^{k-j} B̄u_j (+ Ā^{k+1} x_{-1})``, a causal convolution over time computed by FFT
(``scan: fft``), or by a log-depth doubling scan ``x_t += Ā^d x_{t-d}`` for ``d = 1, 2, 4, …``
(``scan: doubling``); both equal the sequential loop (``scan: loop``). Generation encodes the
context in parallel, then advances one frame per :meth:`ConvS5.step` with every layer's state
carried, so a frame costs the same at any horizon.

``convlstm-resnet`` is the paper's ConvLSTM baseline on the same footing: ConvSSM's ConvLSTM layers
(``LayerNorm(u + h)``) in place of the ConvS5 layers, between the same encoder and decoder (earthsim's
``convlstm`` is OpenSTL's, on patch-stacked frames).

Not carried over from the reference: its tanh output (its frames are scaled to [-1, 1]; earthsim
feeds normalised fields, so the decoder ends linear) and its all-zero action channel.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earthsim.errors import EarthsimError
from earthsim.models.base import Batch, FSDPUnit, RecurrentModel, RecurrentState, register_model
from earthsim.models.spec import DataSpec



@dataclasses.dataclass
class EncodedSequenceConfig:
    """What every model of recurrent layers between the ResNet encoder and decoder has."""

    t_in: int = dataclasses.field(default=1, metadata={"help": "context frames a forecast starts from"})
    t_out: int = dataclasses.field(default=1, metadata={"help": "frames per step (one)"})
    d_model: int = dataclasses.field(default=256, metadata={"help": "channels U of the layer inputs and outputs"})
    layers: int = dataclasses.field(default=8, metadata={"help": "recurrent layers"})
    encoder_depths: tuple[int, ...] = dataclasses.field(default=(64, 128, 256), metadata={
        "help": "channels of the encoder's ResNet blocks; frames are halved between blocks (64 → 16 with three)"})
    dropout: float = dataclasses.field(default=0.0, metadata={
        "help": "dropout on each layer's output, one mask per sequence shared over time"})
    residual: bool = dataclasses.field(default=False, metadata={"help": "predict the change from the last frame"})
    teacher_forcing: bool = dataclasses.field(
        default=True, metadata={"help": "train on true previous frames (else on the model's own rollout)"})

    def __post_init__(self):
        self.encoder_depths = tuple(self.encoder_depths)
        if self.t_out != 1:
            raise ValueError(f"t_out must be 1 (one frame per step), got {self.t_out}")
        for key in ("t_in", "d_model", "layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        if not self.encoder_depths or min(self.encoder_depths) < 1:
            raise ValueError(f"encoder_depths must be a non-empty list of positive widths, got "
                             f"{list(self.encoder_depths)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass
class ConvS5Config(EncodedSequenceConfig):
    """ConvS5: a stack of convolutional state-space layers between a ResNet encoder and decoder."""

    ssm_size: int = dataclasses.field(default=256, metadata={
        "help": "size of the HiPPO matrix; the state keeps ssm_size / 2 complex channels (conjugate symmetry)"})
    kernel_b: int = dataclasses.field(default=3, metadata={"help": "kernel size of B (odd)"})
    kernel_c: int = dataclasses.field(default=3, metadata={"help": "kernel size of C (odd)"})
    kernel_d: int = dataclasses.field(default=3, metadata={"help": "kernel size of the ResNet block in place of D"})
    dt_min: float = dataclasses.field(default=1e-3, metadata={"help": "smallest initial time scale Δ"})
    dt_max: float = dataclasses.field(default=1e-1, metadata={"help": "largest initial time scale Δ"})
    clip_eigs: bool = dataclasses.field(default=True, metadata={"help": "clip Re Λ to ≤ -1e-4 (stable recurrence)"})
    scan: str = dataclasses.field(default="fft", metadata={
        "help": "how a sequence is run in parallel: fft (causal convolution over time), doubling (log-depth scan), "
                "loop (sequential)", "choices": ["fft", "doubling", "loop"]})

    def __post_init__(self):
        super().__post_init__()
        if self.ssm_size < 2 or self.ssm_size % 2:
            raise ValueError(f"ssm_size must be even and ≥ 2 (conjugate pairs), got {self.ssm_size}")
        for key in ("kernel_b", "kernel_c", "kernel_d"):
            if getattr(self, key) < 1 or getattr(self, key) % 2 == 0:
                raise ValueError(f"{key} must be odd, got {getattr(self, key)}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if self.scan not in SCAN_FUNCTIONS:
            raise ValueError(f"scan must be one of {list(SCAN_FUNCTIONS)}, got {self.scan!r}")


# -- HiPPO-LegS and the initialisation of S5 -----------------------------------------------------------


def hippo_legs_normal(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``[n/2]`` and eigenvectors ``[n, n/2]`` (complex128) of the normal part of HiPPO-LegS, one of
    each conjugate pair (S5's ``make_DPLR_HiPPO`` with conjugate symmetry)."""
    idx = np.arange(n)
    scale = np.sqrt(2 * idx + 1.0)
    hippo = -np.tril(np.outer(scale, scale), -1) - np.diag(idx + 1.0)
    p = np.sqrt(idx + 0.5)
    normal = hippo + np.outer(p, p)
    real = np.mean(np.diag(normal)) * np.ones(n)  # every diagonal entry is -1/2
    imag, vectors = np.linalg.eigh(-1j * normal)  # normal + I/2 is skew-symmetric: -i(normal) is Hermitian
    half = n // 2
    return (real + 1j * imag)[:half], vectors[:, :half]


def _he_normal(shape: tuple[int, ...], fan_in: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """He-normal as JAX draws it: a normal truncated at ±2 std, rescaled so the variance is 2 / fan_in."""
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(torch.empty(shape, dtype=torch.float64), 0.0, std, -2 * std, 2 * std,
                                 generator=generator)


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the reference's 32 groups, or the most that divide ``channels``."""
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ConvS5SSM(nn.Module):
    """The recurrence of one layer: ``x_k = Ā ⊙ x_{k-1} + B̄ ∗ u_k``, ``y_k = 2 Re(C̃ ∗ x_k)``.

    ``B`` and ``C`` are stored as real and imaginary parts; ``Λ`` as its real and imaginary parts and
    ``log Δ`` per state channel. States are complex tensors ``[B, P, h, w]``. Its parameters stay float32 under
    a bf16 mixed-precision policy (``full_precision``): bf16 would move Im Λ (up to ~2·10⁴ at ssm_size 256) by
    up to ~10, a phase error of about a radian per step.
    """

    full_precision = True

    def __init__(self, channels: int, ssm_size: int, kernel_b: int, kernel_c: int, dt_min: float, dt_max: float,
                 clip_eigs: bool):
        super().__init__()
        lam, vectors = hippo_legs_normal(ssm_size)
        vectors = torch.from_numpy(vectors)  # [N, P]
        states = lam.shape[0]
        self.states, self.kernel_b, self.kernel_c, self.clip_eigs = states, kernel_b, kernel_c, clip_eigs
        self.lambda_re = nn.Parameter(torch.from_numpy(lam.real.copy()).float())
        self.lambda_im = nn.Parameter(torch.from_numpy(lam.imag.copy()).float())
        self.log_step = nn.Parameter(torch.empty(states).uniform_(math.log(dt_min), math.log(dt_max)))
        # B: real [N, U k²] projected by V⁻¹ = Vᴴ [P, N] on the state axis -> complex [P, U, k, k]
        b = vectors.conj().T @ _he_normal((ssm_size, channels * kernel_b ** 2), channels * kernel_b ** 2).to(
            torch.complex128)
        b = b.reshape(states, channels, kernel_b, kernel_b)
        self.b = nn.Parameter(torch.stack([b.real, b.imag], -1).float())
        # C: real [U k², N] projected by V [N, P] -> complex [U, k, k, P] -> conv weight [U, P, k, k]
        c = _he_normal((channels * kernel_c ** 2, ssm_size), ssm_size * kernel_c ** 2).to(torch.complex128) @ vectors
        c = c.reshape(channels, kernel_c, kernel_c, states).permute(0, 3, 1, 2)
        self.c = nn.Parameter(torch.stack([c.real, c.imag], -1).float())

    def discretised(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``Ā`` ``[P]`` complex and the real conv weight ``[2P, U, k, k]`` of ``B̄`` (real parts, then imaginary)."""
        wide = _complex_precision(self.lambda_re.dtype)  # complex arithmetic in float32 at least (bf16 has none)
        re = self.lambda_re.to(wide)
        lam = torch.complex(re.clamp(max=-1e-4) if self.clip_eigs else re, self.lambda_im.to(wide))
        a_bar = torch.exp(lam * self.log_step.to(wide).exp())
        factor = ((a_bar - 1.0) / lam).view(-1, 1, 1, 1)
        b = torch.complex(self.b[..., 0].to(wide), self.b[..., 1].to(wide)) * factor
        return a_bar, torch.cat([b.real, b.imag], dim=0)

    def input_term(self, u: torch.Tensor, b_weight: torch.Tensor) -> torch.Tensor:
        """``B̄ ∗ u`` for frames ``u`` ``[N, U, h, w]``: complex ``[N, P, h, w]``."""
        bu = F.conv2d(u, b_weight.to(u.dtype), padding=self.kernel_b // 2).to(_complex_precision(u.dtype))
        return torch.complex(bu[:, :self.states], bu[:, self.states:])

    def output(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``2 Re(C̃ ∗ x)`` for complex states ``[N, P, h, w]``: real ``[N, U, h, w]`` in ``dtype``."""
        weight = torch.cat([self.c[..., 0], -self.c[..., 1]], dim=1).to(dtype)
        return 2.0 * F.conv2d(torch.cat([x.real, x.imag], dim=1).to(dtype), weight, padding=self.kernel_c // 2)


def _complex_precision(dtype: torch.dtype) -> torch.dtype:
    """The real dtype complex states are kept in: float64 for float64 models, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def scan_loop(a: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
    """States ``[B, L, P, h, w]`` of ``x_k = a x_{k-1} + bu_k`` one step at a time (``a`` ``[P]``)."""
    a = a.view(-1, 1, 1)
    x = torch.zeros_like(bu[:, 0]) if x0 is None else x0
    states = []
    for k in range(bu.shape[1]):
        x = a * x + bu[:, k]
        states.append(x)
    return torch.stack(states, dim=1)


def scan_doubling(a: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
    """The same states by a log-depth scan: ``x_t += a^d x_{t-d}`` for ``d = 1, 2, 4, …`` (Hillis–Steele on the
    time-invariant recurrence), then the initial state's ``a^{t+1} x0``."""
    length = bu.shape[1]
    x, power, d = bu, a.view(1, 1, -1, 1, 1), 1
    while d < length:
        x = torch.cat([x[:, :d], x[:, d:] + power * x[:, :-d]], dim=1)
        power, d = power * power, 2 * d
    if x0 is not None:
        x = x + _powers(a, length).view(1, length, -1, 1, 1) * a.view(1, 1, -1, 1, 1) * x0.unsqueeze(1)
    return x


def _powers(a: torch.Tensor, length: int) -> torch.Tensor:
    """``a^k`` for ``k = 0 … length-1``: ``[length, P]`` (by exp(k log a), exact for |a| < 1 to rounding)."""
    k = torch.arange(length, device=a.device, dtype=a.real.dtype).view(-1, 1)
    return torch.exp(k * torch.log(a).view(1, -1))


def scan_fft(a: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
    """The same states as a causal convolution over time with the kernel ``a^k``, by FFT (zero-padded to 2L)."""
    length = bu.shape[1]
    kernel = _powers(a, length).view(1, length, -1, 1, 1)
    n = 2 * length
    x = torch.fft.ifft(torch.fft.fft(bu, n=n, dim=1) * torch.fft.fft(kernel, n=n, dim=1), dim=1)[:, :length]
    if x0 is not None:
        x = x + kernel * a.view(1, 1, -1, 1, 1) * x0.unsqueeze(1)
    return x


SCAN_FUNCTIONS: dict[str, Callable] = {"fft": scan_fft, "doubling": scan_doubling, "loop": scan_loop}


def time_shared_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout of a sequence ``[B, L, ...]`` with one mask per sample, shared over time (as ConvSSM broadcasts it)."""
    keep = x.new_empty(x.shape[0], 1, *x.shape[2:]).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class ResNetBlockD(nn.Module):
    """The ResNet block ConvSSM puts in place of ``D``: ``act(y + Conv(act(GN(Conv(act(GN(y)))))))``."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(channels), nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.norm2, self.conv2 = _group_norm(channels), nn.Conv2d(channels, channels, kernel, padding=kernel // 2)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.gelu(self.norm1(y), approximate="tanh"))
        h = self.conv2(F.gelu(self.norm2(h), approximate="tanh"))
        return F.gelu(y + h, approximate="tanh")


class ConvS5Layer(nn.Module):
    """``LayerNorm(u + dropout(D(SSM(u))))`` over channels (post-norm, as ConvSSM's Moving-MNIST model)."""

    def __init__(self, config: ConvS5Config):
        super().__init__()
        self.ssm = ConvS5SSM(config.d_model, config.ssm_size, config.kernel_b, config.kernel_c, config.dt_min,
                             config.dt_max, config.clip_eigs)
        self.d = ResNetBlockD(config.d_model, config.kernel_d)
        self.norm = nn.LayerNorm(config.d_model, eps=1e-6)
        self.dropout = config.dropout
        self.scan = SCAN_FUNCTIONS[config.scan]

    def _finish(self, u: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
        """Frames ``[B·L, U, h, w]`` out of the layer from its input ``u`` and SSM output ``y``."""
        out = self.d(y)
        if self.training and self.dropout:
            out = time_shared_dropout(out.unflatten(0, (batch, -1)), self.dropout).flatten(0, 1)
        return self.norm((u + out).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, u: torch.Tensor, x0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A sequence ``u`` ``[B, L, U, h, w]`` in parallel from state ``x0`` (zero if None): the outputs
        ``[B, L, U, h, w]`` and the last state ``[B, P, h, w]`` (complex). One frame (``L = 1``) is one step of the
        recurrence: generation calls this with the carried state."""
        batch, length = u.shape[:2]
        a_bar, b_weight = self.ssm.discretised()
        frames = u.flatten(0, 1)
        bu = self.ssm.input_term(frames, b_weight).unflatten(0, (batch, length))
        states = (scan_loop if length == 1 else self.scan)(a_bar, bu, x0)
        y = self.ssm.output(states.flatten(0, 1), u.dtype)
        return self._finish(frames, y, batch).unflatten(0, (batch, length)), states[:, -1]


class ResBlock(nn.Module):
    """The encoder/decoder block (TECO's, as ConvSSM uses): ``skip(x) + 0.1 · main(x)``, main = GN, ELU, Conv3×3,
    GN, ELU, Conv3×3 (then a bias); skip a bias-free 1 × 1 convolution where the channel count changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None
        self.norm1, self.conv1 = _group_norm(in_channels), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.conv1(F.elu(self.norm1(x)))
        main = self.conv2(F.elu(self.norm2(main))) + self.bias
        return (x if self.skip is None else self.skip(x)) + 0.1 * main


class ResNetEncoder(nn.Module):
    """Conv3×3 to ``depths[0]``, then a ResBlock per depth with a 2 × 2 average pool between them, then a 1 × 1
    convolution to ``d_model``: frames ``[N, C, H, W]`` to ``[N, d_model, H / 2^(n-1), W / 2^(n-1)]``."""

    def __init__(self, in_channels: int, depths: tuple[int, ...], d_model: int):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, depths[0], 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(depths[max(i - 1, 0)], d) for i, d in enumerate(depths))
        self.project = nn.Conv2d(depths[-1], d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(F.avg_pool2d(x, 2) if i else x)
        return self.project(x)


class ResNetDecoder(nn.Module):
    """The encoder mirrored: Conv3×3 from ``d_model`` to ``depths[0]``, ResBlocks through ``depths`` reversed with
    nearest ×2 upsampling between them, LayerNorm over channels and a linear map to the output channels."""

    def __init__(self, d_model: int, depths: tuple[int, ...], out_channels: int):
        super().__init__()
        self.stem = nn.Conv2d(d_model, depths[0], 3, padding=1)
        widths = list(reversed(depths))
        self.blocks = nn.ModuleList(ResBlock(depths[0] if i == 0 else widths[i - 1], w) for i, w in enumerate(widths))
        self.norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.head = nn.Linear(widths[-1], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(F.interpolate(x, scale_factor=2, mode="nearest") if i else x)
        return self.head(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class EncodedSequenceModel(RecurrentModel):
    """Recurrent layers on encoded frames (ConvSSM's framework): a ResNet encoder takes each frame to a latent map,
    a stack of layers ``(u [B, L, U, h, w], state) -> (outputs, last state)`` runs along time, and a ResNet decoder
    maps each output to the next frame. Subclasses build the layers."""

    def __init__(self, config, spec: DataSpec, layers: list[nn.Module]):
        super().__init__(config, spec)
        self.t_in, self.t_out, self.residual = config.t_in, config.t_out, config.residual
        in_channels = len(spec.inputs) + len(spec.static)
        self.encoder = ResNetEncoder(in_channels, config.encoder_depths, config.d_model)
        self.layers = nn.ModuleList(layers)
        self.decoder = ResNetDecoder(config.d_model, config.encoder_depths, len(spec.outputs))

    def check_spec(self, spec: DataSpec) -> None:
        factor = 2 ** (len(self.config.encoder_depths) - 1)
        height, width = spec.shape
        if height % factor or width % factor:
            raise EarthsimError(f"{type(self).__name__.lower()}: the encoder halves frames "
                                f"{len(self.config.encoder_depths) - 1} time(s), so the grid must divide by {factor}; "
                                f"got {height}x{width}")

    def fsdp_units(self) -> list[FSDPUnit]:
        return [self.encoder, *self.layers, self.decoder]

    def _encode(self, frames: torch.Tensor, static: torch.Tensor | None) -> torch.Tensor:
        """Frames ``[B, L, C_in, H, W]`` (network units) to latents ``[B, L, d_model, h, w]``."""
        batch, length = frames.shape[:2]
        net = frames.flatten(0, 1)
        if static is not None:
            net = torch.cat([net, static.to(net.dtype).repeat_interleave(length, dim=0)], dim=1)
        return self.encoder(net).unflatten(0, (batch, length))

    def _run(self, frames: torch.Tensor, static: torch.Tensor | None, states: list | None = None
             ) -> tuple[list, torch.Tensor]:
        """Every layer's last state and the network output after each frame ``[B, L, C_out, H, W]``, from the
        layers' ``states`` (zero if None)."""
        u, last = self._encode(frames, static), []
        for layer, state in zip(self.layers, states or [None] * len(self.layers)):
            u, state = layer(u, state)
            last.append(state)
        batch, length = u.shape[:2]
        return last, self.decoder(u.flatten(0, 1)).unflatten(0, (batch, length))

    def network(self, x: torch.Tensor, static: torch.Tensor | None, lead_time: torch.Tensor | None) -> torch.Tensor:
        return self._run(x, static)[1][:, -1:]

    def init_state(self, x: torch.Tensor, static: torch.Tensor | None = None,
                   lead_time: torch.Tensor | None = None) -> RecurrentState:
        static = self.check_inputs(x, static)
        x, static = self.to_network_units(x, static)
        states, outputs = self._run(x, static)
        return RecurrentState(states, static, self.next_network_frames(outputs[:, -1:], x[:, -1:]))

    def step(self, state: RecurrentState, forcings: torch.Tensor | None = None) -> tuple[torch.Tensor, RecurrentState]:
        physical, frame = self.feedback_frame(state.prediction, forcings)
        layers, out = self._run(frame, state.static, state.layers)
        return physical, RecurrentState(layers, state.static, self.next_network_frames(out, frame))

    def training_loss(self, batch: Batch, unroll: int, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                      ) -> torch.Tensor:
        """Teacher forcing in one pass along time (free-running rollouts with ``teacher_forcing: false``)."""
        if not self.config.teacher_forcing:
            return super().training_loss(batch, unroll, loss)
        return self.teacher_forced_loss(batch, unroll, loss, lambda frames, static: self._run(frames, static)[1])


@register_model("convs5", ConvS5Config)
class ConvS5(EncodedSequenceModel):
    """ConvS5 layers between a ResNet encoder and decoder; parallel over a sequence, O(1) per generated frame."""

    example_config = {"t_in": 2, "d_model": 8, "ssm_size": 8, "layers": 2, "encoder_depths": [4, 8]}

    def __init__(self, config: ConvS5Config, spec: DataSpec):
        super().__init__(config, spec, [ConvS5Layer(config) for _ in range(config.layers)])


@dataclasses.dataclass
class ConvLSTMResNetConfig(EncodedSequenceConfig):
    """ConvLSTM layers between ConvS5's ResNet encoder and decoder (the ConvS5 paper's ConvLSTM baseline)."""

    kernel_size: int = dataclasses.field(default=3, metadata={"help": "kernel of the gate convolution (odd)"})

    def __post_init__(self):
        super().__post_init__()
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")


class ConvLSTMLayer(nn.Module):
    """ConvSSM's ConvLSTM layer: gates ``i, f, o, g`` from one bias-free convolution of ``[u_k, h_{k-1}]``,
    ``c = σ(f) c + σ(i) tanh(g)``, ``h = σ(o) tanh(c)``; out ``LayerNorm(u + dropout(h))`` over channels. Sequential
    along time by nature."""

    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.channels, self.dropout = channels, dropout
        self.gates = nn.Conv2d(2 * channels, 4 * channels, kernel, padding=kernel // 2, bias=False)
        with torch.no_grad():
            self.gates.weight.copy_(_he_normal(tuple(self.gates.weight.shape), 2 * channels * kernel ** 2))
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if state is None:
            zeros = u.new_zeros(u.shape[0], self.channels, *u.shape[3:])
            state = (zeros, zeros)
        h, c = state
        outputs = []
        for k in range(u.shape[1]):
            i, f, o, g = torch.split(self.gates(torch.cat([u[:, k], h], dim=1)), self.channels, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        out = torch.stack(outputs, dim=1)
        if self.training and self.dropout:
            out = time_shared_dropout(out, self.dropout)
        return self.norm((u + out).permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3), (h, c)


@register_model("convlstm-resnet", ConvLSTMResNetConfig)
class ConvLSTMResNet(EncodedSequenceModel):
    """ConvLSTM layers between ConvS5's encoder and decoder: the recurrent baseline at equal footing with ConvS5."""

    example_config = {"t_in": 2, "d_model": 8, "layers": 2, "encoder_depths": [4, 8]}

    def __init__(self, config: ConvLSTMResNetConfig, spec: DataSpec):
        super().__init__(config, spec, [ConvLSTMLayer(config.d_model, config.kernel_size, config.dropout)
                                        for _ in range(config.layers)])
