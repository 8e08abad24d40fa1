"""Learned solvers on the finite-volume Navier–Stokes solver: learned interpolation (Kochkov et al. 2021, PNAS) and
temporal stencil modelling, TSM (Sun et al. 2023, arXiv 2302.08105).

Both advance a staggered velocity with :class:`~earthsim.sim.finite_volume.FiniteVolumeNavierStokes`, whose
convective face values come from per-cell 4 × 4 stencils that a CNN predicts: 8 stencils per cell
(2 roles × 4 half-cell moves), each the linear-interpolation stencil plus a combination of the 15
stencils whose weights sum to zero, so every stencil reproduces constants (jax-cfd's
``FusedLearnedInterpolation`` with ``PolynomialConstraint`` of accuracy order 1: 120 logits per cell).

- **learned-interpolation**: the CNN reads the current velocity (scaled by ``input_scale``), every step.
- **tsm**: the CNN also reads HiPPO features of each cell's velocity history — the coefficients of
  the history's projection on Laguerre (LagT, the reference's measure) or scaled Legendre (LegS)
  polynomials, updated by one bilinear step per frame — and predicts the stencils of
  ``bundle_steps`` steps at once, reused until it runs again (the reference recomputes every 4). The
  reference's CNN reads its 256 coefficients alone (``current_velocity: false``): they hold the current
  frame, which a few coefficients blur.

The network works in physical units (``normalised = False``): it is a solver. Physics (viscosity,
drag, Kolmogorov forcing, domain length) and the frame interval come from the data spec, which must
describe a staggered store (``earthsim simulate navier-stokes --staggered``) with ``u``, ``v`` inputs;
a ``vorticity`` output is diagnosed as the discrete curl of the predicted velocity. Training unrolls
the solver (the trainer's rollout), so gradients flow through every step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from earthsim.errors import EarthsimError
from earthsim.models.base import FSDPUnit, RecurrentModel, RecurrentState, register_model
from earthsim.models.spec import DataSpec
from earthsim.sim.finite_volume import (MOVES, TAGS, FiniteVolumeNavierStokes, StencilInterpolation, curl,
                                        stencil_basis)

VELOCITY = ("u", "v")
DIAGNOSED = ("vorticity",)
STENCILS_PER_CELL = len(TAGS) * len(MOVES)
FREE = 15  # free coefficients of a 4 × 4 stencil whose weights sum to 1
MEASURES = ("lagt", "legs")


@dataclasses.dataclass
class LearnedInterpolationConfig:
    """A CNN predicting the solver's interpolation stencils from the current velocity (Kochkov et al. 2021)."""

    hidden_channels: int = dataclasses.field(default=64, metadata={
        "help": "channels of the hidden convolutions (the reference: 64; TSM's runs: 256)"})
    hidden_layers: int = dataclasses.field(default=6, metadata={"help": "hidden 3 × 3 convolutions, ReLU between"})
    kernel_size: int = dataclasses.field(default=3, metadata={"help": "kernel of every convolution (odd, periodic)"})
    input_scale: float = dataclasses.field(default=0.1, metadata={
        "help": "factor on the network's inputs (jax-cfd's fixed_scale rescaled_one; the TSM runs use 0.1)"})
    t_in: int = dataclasses.field(default=1, metadata={"help": "context frames (the solver needs only the last)"})

    def __post_init__(self):
        for name in ("hidden_channels", "hidden_layers", "t_in"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")


@dataclasses.dataclass
class TSMConfig(LearnedInterpolationConfig):
    """Learned interpolation from HiPPO features of each cell's velocity history (Sun et al. 2023)."""

    t_in: int = dataclasses.field(default=32, metadata={
        "help": "context frames encoded into the HiPPO features before the first step (the reference: 32)"})
    measure: str = dataclasses.field(default="lagt", metadata={
        "help": "HiPPO measure: lagt (translated Laguerre, the reference's) or legs (scaled Legendre)",
        "choices": list(MEASURES)})
    hippo_size: int = dataclasses.field(default=256, metadata={
        "help": "HiPPO coefficients per cell and velocity component (the reference: 256)"})
    hippo_dt: float = dataclasses.field(default=1.0, metadata={
        "help": "step of the LagT recurrence per frame (the reference: 1.0)"})
    bundle_steps: int = dataclasses.field(default=4, metadata={
        "help": "steps whose stencils one network call predicts (the reference: 4)"})
    current_velocity: bool = dataclasses.field(default=True, metadata={
        "help": "the CNN also reads the current velocity beside the HiPPO features (the reference reads its 256 "
                "coefficients alone, which hold the current frame; a few coefficients blur it)"})

    def __post_init__(self):
        super().__post_init__()
        if self.measure not in MEASURES:
            raise ValueError(f"measure must be one of {list(MEASURES)}, got {self.measure!r}")
        for name in ("hippo_size", "bundle_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.hippo_dt > 0:
            raise ValueError(f"hippo_dt must be > 0, got {self.hippo_dt}")


def hippo_matrices(measure: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO's continuous (A, B) (Gu et al. 2020): dc/dt = A c + B f for LagT (with the reference's tilt a = −½,
    b = 1: A = ½I − L, L the lower triangle of ones), or d c/dt = (A c + B f)/t for LegS."""
    if measure == "lagt":
        return 0.5 * np.eye(size) - np.tril(np.ones((size, size))), np.ones(size)
    q = np.arange(size, dtype=np.float64)
    r = np.sqrt(2 * q + 1)
    a = -np.where(q[:, None] > q[None, :], r[:, None] * r[None, :], np.diag(q + 1))
    return a, r.copy()


class HiPPO(nn.Module):
    """Bilinear (Tustin) HiPPO recurrence per frame: c_k = (I − δA/2)⁻¹((I + δA/2) c_{k−1} + δ B f_k), with δ =
    ``dt`` for LagT and δ = 1/k at the k-th frame for LegS (its measure stretches over the whole history)."""

    def __init__(self, measure: str, size: int, dt: float):
        super().__init__()
        self.measure, self.size, self.dt = measure, size, dt
        a, b = hippo_matrices(measure, size)
        self.register_buffer("a", torch.from_numpy(a).float(), persistent=False)
        self.register_buffer("b", torch.from_numpy(b).float(), persistent=False)
        self._lagt: tuple[torch.Tensor, torch.Tensor] | None = None

    def transition(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, w) of the k-th update (k ≥ 1): c_k = M c_{k−1} + w f_k, computed in float64 (LagT's once: it does not
        depend on k)."""
        if self.measure == "lagt":
            if self._lagt is None or (self._lagt[0].device, self._lagt[0].dtype) != (self.a.device, self.a.dtype):
                self._lagt = self._transition(self.dt)
            return self._lagt
        return self._transition(1.0 / k)

    def _transition(self, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.a.double(), self.b.double()
        eye = torch.eye(self.size, dtype=torch.float64, device=a.device)
        solve = torch.linalg.inv(eye - delta / 2 * a)
        return (solve @ (eye + delta / 2 * a)).to(self.a.dtype), (solve @ (delta * b)).to(self.a.dtype)

    def update(self, state: torch.Tensor, frame: torch.Tensor, k: int) -> torch.Tensor:
        """State ``[..., N]`` after frame ``[...]`` (the k-th frame since the history began)."""
        m, w = self.transition(k)
        return state @ m.to(state.dtype).T + frame[..., None] * w.to(state.dtype)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """The state ``[..., N]`` after frames ``[..., T]`` (oldest first), from zero: one contraction with the
        recurrence's response to each frame (the recurrence run on the T unit impulses)."""
        length = frames.shape[-1]
        kernel = torch.zeros(length, self.size, dtype=torch.float64, device=self.a.device)
        for k in range(1, length + 1):
            m, w = self.transition(k)
            kernel = kernel @ m.double().T
            kernel[k - 1] += w.double()
        return frames @ kernel.to(frames.dtype)


def _tower(in_channels: int, out_channels: int, config: LearnedInterpolationConfig) -> nn.Sequential:
    """jax-cfd's forward tower: ``hidden_layers`` periodic convolutions with ReLU, then a periodic output convolution."""
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(config.hidden_layers):
        layers += [nn.Conv2d(channels, config.hidden_channels, config.kernel_size, padding=config.kernel_size // 2,
                             padding_mode="circular"), nn.ReLU()]
        channels = config.hidden_channels
    layers.append(nn.Conv2d(channels, out_channels, config.kernel_size, padding=config.kernel_size // 2,
                            padding_mode="circular"))
    return nn.Sequential(*layers)


class LearnedSolver(RecurrentModel):
    """The finite-volume solver with a CNN choosing its convective interpolation; state: the velocity, the features,
    the cached stencil logits and the step count."""

    normalised = False
    example_grid = "staggered"
    bundle = 1
    steps_per_frame_allowed = True  # several solver steps per frame (the features do not count frames)

    def __init__(self, config: LearnedInterpolationConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.t_in, self.t_out = config.t_in, 1
        self.solver, self.steps_per_frame = FiniteVolumeNavierStokes.from_physics(
            spec.physics, spec.shape[0], spec.time_step, interpolation="linear", dtype=torch.float32)
        biases, bases = zip(*(stencil_basis(axis, torch.float32) for _, axis in MOVES))
        self.register_buffer("stencil_bias", torch.stack(biases * len(TAGS)), persistent=False)  # [8, 16]
        self.register_buffer("stencil_basis", torch.stack(bases * len(TAGS)), persistent=False)  # [8, 16, 15]
        self.velocity_index = [spec.inputs.index(name) for name in VELOCITY]
        self.tower = _tower(self.feature_channels(), STENCILS_PER_CELL * FREE * self.bundle, config)

    def check_spec(self, spec: DataSpec) -> None:
        name = type(self).__name__
        if not spec.physics.get("staggered"):
            raise EarthsimError(f"{name}: the data must be a staggered Navier–Stokes store (velocity face averages; "
                                "earthsim simulate navier-stokes --staggered); this one records no staggered grid")
        if spec.shape[0] != spec.shape[1]:
            raise EarthsimError(f"{name}: expected a square grid, got {spec.shape}")
        try:
            _, steps = FiniteVolumeNavierStokes.from_physics(spec.physics, spec.shape[0], spec.time_step)
        except EarthsimError as error:
            raise EarthsimError(f"{name}: {error}") from error
        if steps != 1 and not self.steps_per_frame_allowed:
            raise EarthsimError(f"{name}: the frames are {spec.time_step:g} apart, {steps} solver steps of the "
                                f"{spec.shape[0]}² CFL rule; its history features advance one frame per solver step "
                                "(as the reference's), so train on frames one CFL step apart (data.stride 1 on a store "
                                "saved every step)")
        if not set(VELOCITY) <= set(spec.inputs) or not set(spec.outputs) <= set(VELOCITY + DIAGNOSED) \
                or not set(VELOCITY) <= set(spec.outputs) or spec.static or spec.forcings:
            raise EarthsimError(f"{name}: expected inputs u, v (and vorticity) predicted as u, v (and vorticity), no "
                                f"static fields; got inputs {list(spec.inputs)}, outputs {list(spec.outputs)}, "
                                f"static {list(spec.static)}")

    # -- what TSM changes -------------------------------------------------------------------------------

    def feature_channels(self) -> int:
        return len(VELOCITY)

    def init_features(self, history: torch.Tensor) -> torch.Tensor:
        """Network features after the context velocities ``[B, T, 2, n, n]``: the last one."""
        return history[:, -1]

    def update_features(self, features: torch.Tensor, velocity: torch.Tensor, frame: int) -> torch.Tensor:
        """Features after ``velocity``, the ``frame``-th frame since the history began."""
        return velocity

    def tower_inputs(self, velocity: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The CNN's input ``[B, C, n, n]`` (before ``input_scale``) from the velocity and the features."""
        return velocity

    # -- the solver --------------------------------------------------------------------------------------

    def interpolation(self, logits: torch.Tensor) -> StencilInterpolation:
        """Stencils ``[B, 8, 16, n, n]`` from logits ``[B, 120, n, n]``: bias + null-space combination."""
        logits = logits.unflatten(1, (STENCILS_PER_CELL, FREE))
        weights = torch.einsum("msk,bmkyx->bmsyx", self.stencil_basis.to(logits.dtype), logits)
        return StencilInterpolation(weights + self.stencil_bias.to(logits.dtype)[None, :, :, None, None])

    def _advance(self, velocity: torch.Tensor, features: torch.Tensor, cache: torch.Tensor | None, k: int,
                 context: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """One frame: ``steps_per_frame`` solver steps, each with its stencils (the network runs every ``bundle``);
        ``k`` steps were taken after the ``context`` frames the history began with."""
        for _ in range(self.steps_per_frame):
            if k % self.bundle == 0 or cache is None:
                cache = self.tower(self.config.input_scale * self.tower_inputs(velocity, features))
            chunk = STENCILS_PER_CELL * FREE
            logits = cache[:, (k % self.bundle) * chunk:(k % self.bundle + 1) * chunk]
            velocity = self.solver.step(velocity, self.interpolation(logits))
            k += 1
            features = self.update_features(features, velocity, context + k)
        return velocity, features, cache, k

    def _frame(self, velocity: torch.Tensor) -> torch.Tensor:
        """The output channels ``[B, 1, C_out, n, n]`` of a velocity ``[B, 2, n, n]``."""
        channels = {"u": velocity[:, 0], "v": velocity[:, 1]}
        if "vorticity" in self.spec.outputs:
            channels["vorticity"] = curl(velocity, float(self.spec.physics["domain_length"]))
        return torch.stack([channels[name][:, None] for name in self.spec.outputs], dim=2)  # a new tensor, not a view

    def network(self, x: torch.Tensor, static: torch.Tensor | None, lead_time: torch.Tensor | None) -> torch.Tensor:
        return self.init_state(x).prediction

    def init_state(self, x: torch.Tensor, static: torch.Tensor | None = None,
                   lead_time: torch.Tensor | None = None) -> RecurrentState:
        self.check_inputs(x, static)
        history = x[:, :, self.velocity_index].float() if x.dtype != torch.float64 else x[:, :, self.velocity_index]
        context = history.shape[1]
        velocity, features, cache, k = self._advance(history[:, -1], self.init_features(history), None, 0, context)
        return RecurrentState([velocity, features, cache, k, context], None, self._frame(velocity))

    def step(self, state: RecurrentState, forcings: torch.Tensor | None = None) -> tuple[torch.Tensor, RecurrentState]:
        velocity, features, cache, k, context = state.layers
        velocity, features, cache, k = self._advance(velocity, features, cache, k, context)
        return state.prediction, RecurrentState([velocity, features, cache, k, context], None,
                                                self._frame(velocity))

    def fsdp_units(self) -> list[FSDPUnit]:
        return [layer for layer in self.tower if isinstance(layer, nn.Conv2d)]


@register_model("learned-interpolation", LearnedInterpolationConfig)
class LearnedInterpolation(LearnedSolver):
    """Kochkov et al. (2021): the stencils from the current velocity, every step."""

    example_config = {"hidden_channels": 8, "hidden_layers": 2}


@register_model("tsm", TSMConfig)
class TemporalStencilModel(LearnedSolver):
    """Sun et al. (2023): the stencils from the velocity and HiPPO features of each cell's history, every
    ``bundle_steps``."""

    # One-step bundles, so that its carried state rolls out as forward on the growing history (the contract test);
    # with longer bundles the stencils of a bundle's first frame are reused, which forward on a window cannot see.
    example_config = {"hidden_channels": 8, "hidden_layers": 2, "t_in": 4, "hippo_size": 8, "bundle_steps": 1}
    steps_per_frame_allowed = False  # HiPPO advances one frame per solver step

    def __init__(self, config: TSMConfig, spec: DataSpec):
        self.bundle = config.bundle_steps
        self.hippo_size = config.hippo_size
        super().__init__(config, spec)
        self.hippo = HiPPO(config.measure, config.hippo_size, config.hippo_dt)

    def feature_channels(self) -> int:
        return len(VELOCITY) * (self.hippo_size + self.config.current_velocity)

    def init_features(self, history: torch.Tensor) -> torch.Tensor:
        """HiPPO states ``[B, 2, n, n, N]`` of the context, per cell and component."""
        return self.hippo.encode(history.permute(0, 2, 3, 4, 1))

    def update_features(self, features: torch.Tensor, velocity: torch.Tensor, frame: int) -> torch.Tensor:
        return self.hippo.update(features, velocity, frame)

    def tower_inputs(self, velocity: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        hippo = features.permute(0, 1, 4, 2, 3).flatten(1, 2)  # [B, 2N, n, n]
        return torch.cat([velocity, hippo], dim=1) if self.config.current_velocity else hippo
