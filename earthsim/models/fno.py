"""Fourier neural operators: FNO and TFNO on the periodic box, SFNO on the sphere, built from neuraloperator.

The wrapper stacks the ``T_in`` input frames × ``C`` variables as channels (``t``-major: channel
``t * C + c``), appends static fields and optional coordinate channels, runs neuraloperator's
``FNO``/``TFNO``/``SFNO`` and reshapes its ``T_out * C`` output channels to ``[B, T_out, C, H, W]``.

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
from earthsim.models.base import Block, DataShape, EarthsimModel, register_model

WORKING_VERSIONS = "torch 2.13 with torch-harmonics 0.8.0"


def check_spherical_backend() -> None:
    """Fail loudly when SFNO is unavailable: neuraloperator silently drops it if torch-harmonics fails to import."""
    try:
        import torch_harmonics  # noqa: F401
    except Exception as error:  # an ImportError, or a RuntimeError from a torch ABI mismatch
        raise ImportError(
            f"earthsim.models.fno needs torch-harmonics for the spherical FNO, and importing it failed "
            f"({type(error).__name__}: {error}). The pair known to work is {WORKING_VERSIONS} "
            f"(torch {torch.__version__} is installed); torch-harmonics 0.9.x pins torch 2.14 or fails to "
            f"import against torch 2.13. Install it with: pip install torch-harmonics==0.8.0") from error
    import neuralop.models

    if not hasattr(neuralop.models, "SFNO"):
        raise ImportError(
            "neuraloperator imported without SFNO (it skips SFNO when torch-harmonics fails inside it); "
            f"the pair known to work is {WORKING_VERSIONS}: pip install torch-harmonics==0.8.0")


check_spherical_backend()

from neuralop.layers.spectral_convolution import SpectralConv  # noqa: E402
from neuralop.layers.spherical_convolution import SphericalConv  # noqa: E402
from neuralop.models import FNO, SFNO, TFNO  # noqa: E402
from torch_harmonics.quadrature import _precompute_latitudes  # noqa: E402
from tltorch.factorized_tensors.factorized_tensors import CPTensor, DenseTensor, TTTensor, TuckerTensor  # noqa: E402

# tltorch factorizations and the tensors their constructors take ("factors" is a list).
_FACTORIZATIONS = (
    (DenseTensor, ("tensor",)),
    (TuckerTensor, ("core", "factors")),
    (CPTensor, ("weights", "factors")),
    (TTTensor, ("factors",)),
)


class RealSpectralWeight(nn.Module):
    """A tltorch factorized complex weight stored as real ``[..., 2]`` parameters.

    Indexing (what neuraloperator's layers do with their ``weight``) returns the tltorch factorized
    tensor rebuilt from complex views of the real parameters (no copy), so the layers' contraction
    code runs unchanged while every parameter FSDP sees is a float tensor.
    """

    def __init__(self, factorized: nn.Module):
        super().__init__()
        for cls, fields in _FACTORIZATIONS:
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


class _RealWeightConv:
    """Mixin for neuraloperator's spectral convolutions: the weight held as real parameters (FSDP2-shardable).

    The transform and the complex contraction always run in float32, outside autocast:
    ``view_as_complex`` and the FFTs do not take bfloat16, so FSDP keeps these layers' parameters in
    float32 (``full_precision``) under a bf16 mixed-precision policy.
    """

    full_precision = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight = RealSpectralWeight(self.weight)

    def forward(self, x: torch.Tensor, output_shape=None) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float(), output_shape)


class ShardableSpectralConv(_RealWeightConv, SpectralConv):
    """neuraloperator's ``SpectralConv`` (FFT convolution on the periodic box) with real weight storage."""


class ShardableSphericalConv(_RealWeightConv, SphericalConv):
    """neuraloperator's ``SphericalConv`` (SHT convolution, torch-harmonics) with real weight storage."""


_NORMS = (None, "group_norm", "instance_norm")
_SKIPS = ("linear", "identity", "soft-gating")


def _check_choice(config, name: str, choices) -> None:
    if getattr(config, name) not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {getattr(config, name)!r}")


@dataclasses.dataclass
class _OperatorConfig:
    """Settings shared by the Fourier family."""

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

    def __post_init__(self):
        for name in ("t_in", "t_out", "hidden_channels", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.n_modes) != 2 or min(self.n_modes) < 1:
            raise ValueError(f"n_modes must be two positive ints (H, W), got {self.n_modes}")
        _check_choice(self, "norm", _NORMS)
        _check_choice(self, "fno_skip", _SKIPS)


@dataclasses.dataclass
class FNOConfig(_OperatorConfig):
    """FNO on a periodic box (or any regular grid)."""

    positional_embedding: str = dataclasses.field(
        default="periodic", metadata={
            "help": "coordinate channels: periodic (sin/cos of both axes, 4 channels), grid "
                    "(neuraloperator's [0, 1) ramps, 2 channels) or none",
            "choices": ["periodic", "grid", "none"]})

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self, "positional_embedding", ("periodic", "grid", "none"))


@dataclasses.dataclass
class TFNOConfig(FNOConfig):
    """Tensorised FNO: spectral weights in a low-rank tensor factorisation."""

    factorization: str = dataclasses.field(
        default="tucker", metadata={"help": "factorisation of the spectral weights",
                                    "choices": ["tucker", "cp", "tt"]})
    rank: float = dataclasses.field(default=0.1, metadata={"help": "rank as a fraction of the dense size"})

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self, "factorization", ("tucker", "cp", "tt"))
        if not 0 < self.rank <= 1:
            raise ValueError(f"rank must be in (0, 1], got {self.rank}")


@dataclasses.dataclass
class SFNOConfig(_OperatorConfig):
    """Spherical FNO: spectral convolutions in the spherical-harmonic basis (torch-harmonics)."""

    grid: str = dataclasses.field(
        default="equiangular", metadata={
            "help": "latitude quadrature of the data grid (equiangular includes both poles)",
            "choices": ["equiangular", "legendre-gauss", "lobatto"]})
    positional_embedding: str = dataclasses.field(
        default="spherical", metadata={
            "help": "coordinate channels: spherical (unit vector, 3 channels), grid (neuraloperator's "
                    "[0, 1) ramps, 2 channels) or none",
            "choices": ["spherical", "grid", "none"]})

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self, "grid", ("equiangular", "legendre-gauss", "lobatto"))
        _check_choice(self, "positional_embedding", ("spherical", "grid", "none"))


def periodic_coordinates(height: int, width: int) -> torch.Tensor:
    """``[4, H, W]``: sin and cos of 2π·i/H along rows and of 2π·j/W along columns (periodic box)."""
    y = 2 * math.pi * torch.arange(height, dtype=torch.float64) / height
    x = 2 * math.pi * torch.arange(width, dtype=torch.float64) / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([yy.sin(), yy.cos(), xx.sin(), xx.cos()]).float()


def spherical_coordinates(height: int, width: int, grid: str) -> torch.Tensor:
    """``[3, H, W]``: the unit vector (cos θ, sin θ cos φ, sin θ sin φ) at torch-harmonics' grid points.

    θ is the colatitude of the ``grid`` quadrature (row 0 nearest the north pole, as the SHT reads
    rows) and φ = 2π·j/W.
    """
    colatitude, _ = _precompute_latitudes(height, grid=grid)
    longitude = 2 * math.pi * torch.arange(width, dtype=torch.float64) / width
    theta, phi = torch.meshgrid(colatitude.to(torch.float64), longitude, indexing="ij")
    return torch.stack([theta.cos(), theta.sin() * phi.cos(), theta.sin() * phi.sin()]).float()


class FourierOperator(EarthsimModel):
    """A neuraloperator FNO/TFNO/SFNO wrapped to the earthsim contract.

    ``lead_time`` is accepted and not used: the operator maps ``T_in`` frames to the next ``T_out``
    at the fixed step of its training data; longer leads come from autoregressive rollout.
    """

    def __init__(self, config: _OperatorConfig, data_shape: DataShape, kind: str):
        super().__init__(config, data_shape)
        self.model_name = kind
        self.t_in = config.t_in
        self.t_out = config.t_out
        channels, height, width = data_shape.channels, data_shape.height, data_shape.width
        self._check_modes(kind, config.n_modes, height, width)

        embedding = config.positional_embedding
        coordinates = None
        if embedding == "periodic":
            coordinates = periodic_coordinates(height, width)
        elif embedding == "spherical":
            coordinates = spherical_coordinates(height, width, config.grid)
        self.register_buffer("coordinates", None if coordinates is None else coordinates.unsqueeze(0),
                             persistent=False)
        in_channels = config.t_in * channels + data_shape.static_channels
        if coordinates is not None:
            in_channels += coordinates.shape[0]

        common = dict(
            n_modes=tuple(config.n_modes), in_channels=in_channels, out_channels=config.t_out * channels,
            hidden_channels=config.hidden_channels, n_layers=config.n_layers,
            lifting_channel_ratio=config.lifting_channel_ratio,
            projection_channel_ratio=config.projection_channel_ratio,
            channel_mlp_expansion=config.channel_mlp_expansion,
            positional_embedding="grid" if embedding == "grid" else None,
            norm=config.norm, fno_skip=config.fno_skip)
        if kind == "sfno":
            self.operator = SFNO(conv_module=functools.partial(ShardableSphericalConv, sht_grids=config.grid),
                                 **common)
        elif kind == "tfno":
            self.operator = TFNO(conv_module=ShardableSpectralConv, factorization=config.factorization,
                                 rank=config.rank, **common)
        else:
            self.operator = FNO(conv_module=ShardableSpectralConv, **common)

    @staticmethod
    def _check_modes(kind: str, n_modes, height: int, width: int) -> None:
        if kind == "sfno":
            if n_modes[0] > height or n_modes[1] // 2 > width // 2 + 1:
                raise EarthsimError(
                    f"{kind}: n_modes {tuple(n_modes)} too large for a {height}x{width} grid; need "
                    f"n_modes[0] (lmax) <= {height} and n_modes[1] // 2 (mmax) <= {width // 2 + 1}")
        elif n_modes[0] > height or n_modes[1] > width:
            raise EarthsimError(
                f"{kind}: n_modes {tuple(n_modes)} too large for a {height}x{width} grid; need "
                f"n_modes <= ({height}, {width})")

    def forward(self, x: torch.Tensor, static: torch.Tensor | None = None,
                lead_time: torch.Tensor | None = None) -> torch.Tensor:
        static = self.check_inputs(x, static)
        batch = x.shape[0]
        parts = [x.reshape(batch, -1, *x.shape[-2:])]
        if static is not None:
            parts.append(static.to(x.dtype))
        if self.coordinates is not None:
            parts.append(self.coordinates.to(x.dtype).expand(batch, -1, -1, -1))
        y = self.operator(torch.cat(parts, dim=1))
        # A copy, not a view: under FSDP2 an in-place op by the caller on a view output (pred += x_last)
        # would drop the root's pre-backward hook.
        return y.reshape(batch, self.t_out, self.data_shape.channels, *y.shape[-2:]).clone()

    def state_dict(self, *args, **kwargs):
        """Tensors only: drops the ``_metadata`` entry (init kwargs holding classes and functions) that
        neuraloperator's models add, which ``torch.load(weights_only=True)`` and DCP cannot hold."""
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def blocks(self) -> list[Block]:
        """Per Fourier layer: its spectral convolution, then the rest of the layer (skips, channel MLP, norms)."""
        layers = self.operator.fno_blocks
        units: list[Block] = []
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
def _build_fno(config: FNOConfig, data_shape: DataShape) -> FourierOperator:
    return FourierOperator(config, data_shape, "fno")


@register_model("tfno", TFNOConfig)
def _build_tfno(config: TFNOConfig, data_shape: DataShape) -> FourierOperator:
    return FourierOperator(config, data_shape, "tfno")


@register_model("sfno", SFNOConfig)
def _build_sfno(config: SFNOConfig, data_shape: DataShape) -> FourierOperator:
    return FourierOperator(config, data_shape, "sfno")
