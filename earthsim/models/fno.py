"""Fourier neural operators on the periodic box: FNO and TFNO, built from neuraloperator (the spherical SFNO
is in :mod:`earthsim.models.sfno` and shares this module's machinery).

The wrapper stacks the ``T_in`` input frames × ``C_in`` channels as channels (``t``-major: channel
``t * C_in + c``), appends static fields and optional coordinate channels, runs neuraloperator's
operator and reshapes its ``T_out * C_out`` output channels to ``[B, T_out, C_out, H, W]``. The
operator is fixed-step: ``lead_time`` is not used; longer leads come from autoregressive rollout.

Why the spectral convolutions are replaced: neuraloperator holds spectral weights as complex
parameters next to real ones, and FSDP2 refuses a parameter group of mixed dtypes ("FSDP expects
uniform original parameter dtype but got {torch.float32, torch.complex64}"); SFNO's tltorch
``ComplexDense`` weights are already stored as real pairs but re-view any parameter assigned to them,
so FSDP's parameter swap fails ("view_as_real is only supported for complex tensors"). Here every
spectral weight is a real ``[..., 2]`` parameter (:class:`RealSpectralWeight`) viewed as complex
inside the layer, so every parameter is real and sharded, and outputs equal neuraloperator's.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import nn

from earthsim.errors import EarthsimError
from earthsim.models.base import EarthsimModel, FSDPUnit, register_model
from earthsim.models.spec import DataSpec


def _factorizations() -> tuple:
    """tltorch factorizations and the tensors their constructors take ("factors" is a list)."""
    from tltorch.factorized_tensors.factorized_tensors import CPTensor, DenseTensor, TTTensor, TuckerTensor

    return ((DenseTensor, ("tensor",)), (TuckerTensor, ("core", "factors")), (CPTensor, ("weights", "factors")),
            (TTTensor, ("factors",)))


class RealSpectralWeight(nn.Module):
    """A tltorch factorized complex weight stored as real ``[..., 2]`` parameters.

    Indexing (what neuraloperator's layers do with their ``weight``) returns the tltorch factorized
    tensor rebuilt from complex views of the real parameters (no copy), so the layers' contraction
    code runs unchanged while every parameter FSDP sees is a float tensor.
    """

    def __init__(self, factorized: nn.Module):
        super().__init__()
        for cls, fields in _factorizations():
            if isinstance(factorized, cls):
                break
        else:
            raise TypeError(f"unsupported spectral weight {type(factorized).__name__}")
        self.factorization = cls
        self.fields = fields
        self.n_factors = 0
        with torch.no_grad():
            for field in fields:
                if field == "factors":
                    # tltorch's Complex* classes return complex views on access; plain ones complex tensors.
                    factors = [factorized.factors[i] for i in range(len(factorized.factors))]
                    for i, factor in enumerate(factors):
                        self.register_parameter(f"factor_{i}", _real_parameter(factor))
                    self.n_factors = len(factors)
                else:
                    self.register_parameter(field, _real_parameter(getattr(factorized, field)))

    def complex(self) -> nn.Module:
        """The tltorch factorized tensor (complex64 views of the real parameters)."""
        tensors = {}
        for field in self.fields:
            if field == "factors":
                tensors["factors"] = [torch.view_as_complex(getattr(self, f"factor_{i}"))
                                      for i in range(self.n_factors)]
            else:
                tensors[field] = torch.view_as_complex(getattr(self, field))
        return self.factorization(**tensors)

    def __getitem__(self, index):
        return self.complex()[index]

    def to_tensor(self) -> torch.Tensor:
        """The full complex weight (reconstructed from the factors)."""
        return self.complex().to_tensor()

    def extra_repr(self) -> str:
        return f"factorization={self.factorization.__name__}, stored as real [..., 2]"


def _real_parameter(value: torch.Tensor) -> nn.Parameter:
    if not value.is_complex():
        raise TypeError(f"expected a complex spectral weight, got {value.dtype}")
    return nn.Parameter(torch.view_as_real(value.detach()).clone())


class RealWeightConv:
    """Mixin for neuraloperator's spectral convolutions: the weight held as real parameters (FSDP2-shardable).

    The transform and the complex contraction run in float32 (float64 for a float64 model), outside
    autocast: ``view_as_complex`` and the FFTs do not take bfloat16, so FSDP keeps these layers'
    parameters in float32 (``full_precision``) under a bf16 mixed-precision policy.
    """

    full_precision = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight = RealSpectralWeight(self.weight)

    def forward(self, x: torch.Tensor, output_shape=None) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x if x.dtype == torch.float64 else x.float(), output_shape)


@functools.cache
def shardable_spectral_conv() -> type:
    """neuraloperator's ``SpectralConv`` (FFT convolution on the periodic box) with real weight storage; made on
    first use, so that neuraloperator is imported only when a Fourier operator is built."""
    from neuralop.layers.spectral_convolution import SpectralConv

    return type("ShardableSpectralConv", (RealWeightConv, SpectralConv), {
        "__doc__": "neuraloperator's SpectralConv with its weight held as real parameters (FSDP2-shardable).",
        "__module__": __name__})


_NORMS = (None, "group_norm", "instance_norm")
_SKIPS = ("linear", "identity", "soft-gating")


def check_choice(config, name: str, choices) -> None:
    if getattr(config, name) not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {getattr(config, name)!r}")


@dataclasses.dataclass
class OperatorConfig:
    """Settings shared by the Fourier family (FNO, TFNO and the spherical SFNO)."""

    t_in: int = dataclasses.field(default=1, metadata={"help": "input frames stacked as channels"})
    t_out: int = dataclasses.field(default=1, metadata={"help": "output frames predicted at once"})
    n_modes: tuple[int, ...] = dataclasses.field(
        default=(16, 16), metadata={"help": "Fourier modes kept along (H, W); SFNO: (lmax, 2 * mmax)"})
    hidden_channels: int = dataclasses.field(default=32, metadata={"help": "width of the Fourier layers"})
    n_layers: int = dataclasses.field(default=4, metadata={"help": "number of Fourier layers"})
    lifting_channel_ratio: float = dataclasses.field(
        default=2.0, metadata={"help": "lifting MLP width / hidden_channels"})
    projection_channel_ratio: float = dataclasses.field(
        default=2.0, metadata={"help": "projection MLP width / hidden_channels"})
    channel_mlp_expansion: float = dataclasses.field(
        default=0.5, metadata={"help": "channel MLP width / hidden_channels in each layer"})
    norm: str | None = dataclasses.field(
        default=None, metadata={"help": "normalisation in each layer", "choices": list(_NORMS)})
    fno_skip: str = dataclasses.field(
        default="linear", metadata={"help": "skip connection around each spectral convolution",
                                    "choices": list(_SKIPS)})
    residual: bool = dataclasses.field(
        default=False, metadata={"help": "predict the change from the last input frame, in units of the "
                                         "one-step-difference std"})

    def __post_init__(self):
        for name in ("t_in", "t_out", "hidden_channels", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.n_modes) != 2 or min(self.n_modes) < 1:
            raise ValueError(f"n_modes must be two positive ints (H, W), got {self.n_modes}")
        check_choice(self, "norm", _NORMS)
        check_choice(self, "fno_skip", _SKIPS)


@dataclasses.dataclass
class FNOConfig(OperatorConfig):
    """FNO on a periodic box (or any regular grid)."""

    positional_embedding: str = dataclasses.field(
        default="periodic", metadata={
            "help": "coordinate channels: periodic (sin/cos of both axes, 4 channels), grid "
                    "(neuraloperator's [0, 1) ramps, 2 channels) or none",
            "choices": ["periodic", "grid", "none"]})

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "positional_embedding", ("periodic", "grid", "none"))


@dataclasses.dataclass
class TFNOConfig(FNOConfig):
    """Tensorised FNO: spectral weights in a low-rank tensor factorisation."""

    factorization: str = dataclasses.field(
        default="tucker", metadata={"help": "factorisation of the spectral weights",
                                    "choices": ["tucker", "cp", "tt"]})
    rank: float = dataclasses.field(default=0.1, metadata={"help": "rank as a fraction of the dense size"})

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "factorization", ("tucker", "cp", "tt"))
        if not 0 < self.rank <= 1:
            raise ValueError(f"rank must be in (0, 1], got {self.rank}")


def periodic_coordinates(height: int, width: int) -> torch.Tensor:
    """``[4, H, W]``: sin and cos of 2π·i/H along rows and of 2π·j/W along columns (periodic box)."""
    y = 2 * math.pi * torch.arange(height, dtype=torch.float64) / height
    x = 2 * math.pi * torch.arange(width, dtype=torch.float64) / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([yy.sin(), yy.cos(), xx.sin(), xx.cos()]).float()


class FourierOperator(EarthsimModel):
    """A neuraloperator FNO/TFNO wrapped to the earthsim contract (the base of the spherical SFNO too)."""

    example_config = {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 2}

    def __init__(self, config: OperatorConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.t_in, self.t_out, self.residual = config.t_in, config.t_out, config.residual
        coordinates = self.coordinate_channels()
        self.register_buffer("coordinates", None if coordinates is None else coordinates.unsqueeze(0),
                             persistent=False)
        in_channels = config.t_in * len(spec.inputs) + len(spec.static)
        if coordinates is not None:
            in_channels += coordinates.shape[0]
        self.operator = self.build_operator(
            n_modes=tuple(config.n_modes), in_channels=in_channels, out_channels=config.t_out * len(spec.outputs),
            hidden_channels=config.hidden_channels, n_layers=config.n_layers,
            lifting_channel_ratio=config.lifting_channel_ratio,
            projection_channel_ratio=config.projection_channel_ratio,
            channel_mlp_expansion=config.channel_mlp_expansion,
            positional_embedding="grid" if config.positional_embedding == "grid" else None,
            norm=config.norm, fno_skip=config.fno_skip)

    def check_spec(self, spec: DataSpec) -> None:
        height, width = spec.shape
        if self.config.n_modes[0] > height or self.config.n_modes[1] > width:
            raise EarthsimError(f"{type(self).__name__}: n_modes {tuple(self.config.n_modes)} too large for a "
                                f"{height}x{width} grid; need n_modes <= ({height}, {width})")

    def coordinate_channels(self) -> torch.Tensor | None:
        """The coordinate channels appended to the input ``[K, H, W]``, or None."""
        return periodic_coordinates(*self.spec.shape) if self.config.positional_embedding == "periodic" else None

    def build_operator(self, **common) -> nn.Module:
        from neuralop.models import FNO

        return FNO(conv_module=shardable_spectral_conv(), **common)

    def network(self, x: torch.Tensor, static: torch.Tensor | None, lead_time: torch.Tensor | None) -> torch.Tensor:
        batch = x.shape[0]
        parts = [x.reshape(batch, -1, *x.shape[-2:])]
        if static is not None:
            parts.append(static.to(x.dtype))
        if self.coordinates is not None:
            parts.append(self.coordinates.to(x.dtype).expand(batch, -1, -1, -1))
        y = self.operator(torch.cat(parts, dim=1))
        # A copy, not a view: under FSDP2 an in-place op by the caller on a view output would drop the root's
        # pre-backward hook.
        return y.reshape(batch, self.t_out, len(self.spec.outputs), *y.shape[-2:]).clone()

    def state_dict(self, *args, **kwargs):
        """Tensors only: drops the ``_metadata`` entry (init kwargs holding classes and functions) that
        neuraloperator's models add, which ``torch.load(weights_only=True)`` and DCP cannot hold."""
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def fsdp_units(self) -> list[FSDPUnit]:
        """Per Fourier layer: its spectral convolution, then the rest of the layer (skips, channel MLP, norms)."""
        layers = self.operator.fno_blocks
        units: list[FSDPUnit] = []
        for i in range(layers.n_layers):
            units.append(layers.convs[i])
            rest = [layers.fno_skips[i] if layers.fno_skips is not None else None,
                    layers.channel_mlp[i] if layers.use_channel_mlp else None,
                    layers.channel_mlp_skips[i] if getattr(layers, "channel_mlp_skips", None) is not None
                    else None]
            if layers.norm is not None:
                rest += [layers.norm[layers.n_norms * i + k] for k in range(layers.n_norms)]
            rest = [m for m in rest if m is not None and any(True for _ in m.parameters())]
            if rest:
                units.append(rest)
        return units


@register_model("fno", FNOConfig)
class FourierNeuralOperator(FourierOperator):
    """FNO (Li et al. 2021) on a regular grid, periodic coordinates by default."""


@register_model("tfno", TFNOConfig)
class TensorizedFourierNeuralOperator(FourierOperator):
    """TFNO (Kossaifi et al. 2023): FNO with spectral weights in a low-rank factorisation."""

    example_config = {**FourierOperator.example_config, "rank": 0.5}

    def build_operator(self, **common) -> nn.Module:
        from neuralop.models import TFNO

        return TFNO(conv_module=shardable_spectral_conv(), factorization=self.config.factorization,
                    rank=self.config.rank, **common)
