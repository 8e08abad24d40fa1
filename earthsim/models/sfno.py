"""The spherical Fourier neural operator (Bonev et al. 2023): spectral convolutions in the spherical-harmonic
basis, through neuraloperator's SFNO and torch-harmonics, with the Fourier family's real-valued weights.

torch-harmonics is this family's own dependency: it is imported when an SFNO is built, so the other
families work without it, and a missing or broken one is named here with the pair known to work.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import nn

from earthsim.errors import EarthsimError
from earthsim.models.base import register_model
from earthsim.models.fno import OperatorConfig, FourierOperator, RealWeightConv, check_choice
from earthsim.models.spec import DataSpec

WORKING_VERSIONS = "torch 2.13 with torch-harmonics 0.8.0"


def check_spherical_backend() -> None:
    """Fail loudly when SFNO is unavailable: neuraloperator silently drops it if torch-harmonics fails to import."""
    try:
        import torch_harmonics  # noqa: F401
    except Exception as error:  # an ImportError, or a RuntimeError from a torch ABI mismatch
        raise ImportError(
            f"the spherical FNO needs torch-harmonics, and importing it failed ({type(error).__name__}: {error}). "
            f"The pair known to work is {WORKING_VERSIONS} (torch {torch.__version__} is installed); "
            "torch-harmonics 0.9.x pins torch 2.14 or fails to import against torch 2.13. Install it with: "
            "pip install torch-harmonics==0.8.0") from error
    import neuralop.models

    if not hasattr(neuralop.models, "SFNO"):
        raise ImportError(
            "neuraloperator imported without SFNO (it skips SFNO when torch-harmonics fails inside it); "
            f"the pair known to work is {WORKING_VERSIONS}: pip install torch-harmonics==0.8.0")


@functools.cache
def shardable_spherical_conv() -> type:
    """neuraloperator's ``SphericalConv`` (SHT convolution) with real weight storage; made on first use, since
    its module imports torch-harmonics."""
    from neuralop.layers.spherical_convolution import SphericalConv

    return type("ShardableSphericalConv", (RealWeightConv, SphericalConv), {
        "__doc__": "neuraloperator's SphericalConv with its weight held as real parameters (FSDP2-shardable).",
        "__module__": __name__})


@dataclasses.dataclass
class SFNOConfig(OperatorConfig):
    """Spherical FNO: spectral convolutions in the spherical-harmonic basis (torch-harmonics)."""

    positional_embedding: str = dataclasses.field(
        default="spherical", metadata={
            "help": "coordinate channels: spherical (unit vector, 3 channels), grid (neuraloperator's "
                    "[0, 1) ramps, 2 channels) or none",
            "choices": ["spherical", "grid", "none"]})

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "positional_embedding", ("spherical", "grid", "none"))


#: The spherical-harmonic quadrature of earthsim's grids: equally spaced latitudes from pole to pole.
SHT_GRID = "equiangular"


def spherical_coordinates(height: int, width: int, grid: str = SHT_GRID) -> torch.Tensor:
    """``[3, H, W]``: the unit vector (cos θ, sin θ cos φ, sin θ sin φ) at torch-harmonics' grid points.

    θ is the colatitude of the ``grid`` quadrature (row 0 nearest the north pole, as the SHT reads
    rows) and φ = 2π·j/W.
    """
    from torch_harmonics.quadrature import _precompute_latitudes

    colatitude, _ = _precompute_latitudes(height, grid=grid)
    longitude = 2 * math.pi * torch.arange(width, dtype=torch.float64) / width
    theta, phi = torch.meshgrid(colatitude.to(torch.float64), longitude, indexing="ij")
    return torch.stack([theta.cos(), theta.sin() * phi.cos(), theta.sin() * phi.sin()]).float()


@register_model("sfno", SFNOConfig)
class SphericalFourierNeuralOperator(FourierOperator):
    """SFNO on a global latitude/longitude grid from pole to pole, through the equiangular transform (earthsim's
    latitude grids are equally spaced, so Gauss or Lobatto quadratures would not match the data's points)."""

    example_config = {"n_modes": [4, 8], "hidden_channels": 8, "n_layers": 2}
    example_grid = "latlon"

    def __init__(self, config: SFNOConfig, spec: DataSpec):
        check_spherical_backend()
        super().__init__(config, spec)

    def check_spec(self, spec: DataSpec) -> None:
        if not spec.grid.global_with_poles:
            raise EarthsimError(f"model 'sfno' needs a global equiangular latitude grid including both poles; the "
                                f"data has grid {spec.grid}")
        height, width = spec.shape
        n_modes = self.config.n_modes
        if n_modes[0] > height or n_modes[1] // 2 > width // 2 + 1:
            raise EarthsimError(
                f"sfno: n_modes {tuple(n_modes)} too large for a {height}x{width} grid; need n_modes[0] (lmax) <= "
                f"{height} and n_modes[1] // 2 (mmax) <= {width // 2 + 1}")

    def coordinate_channels(self) -> torch.Tensor | None:
        if self.config.positional_embedding != "spherical":
            return None
        return spherical_coordinates(*self.spec.shape)

    def build_operator(self, **common) -> nn.Module:
        from neuralop.models import SFNO

        return SFNO(conv_module=functools.partial(shardable_spherical_conv(), sht_grids=SHT_GRID), **common)
