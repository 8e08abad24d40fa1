"""The model contract every family follows, and the registry that builds models by name.

A model is built from its typed config and a :class:`~earthsim.models.spec.DataSpec`. It maps
``x`` ``[B, T_in, C_in, H, W]`` (physical units; ``C_in`` = ``spec.inputs``), optional ``static``
``[C_s, H, W]`` or ``[B, C_s, H, W]`` and ``lead_time`` ``[B]`` (hours or solver units) to the next
``T_out`` frames of its outputs ``[B, T_out, C_out, H, W]`` (physical units; ``spec.outputs``).

What a family declares, and the base class then does for it (so that trainer, rollout and forecast
need no special cases):

- ``normalised`` (class attribute, default True): the family's :meth:`EarthsimModel.network` sees
  fields normalised with the spec's statistics and its output is de-normalised; False for a
  network that works in physical units (a learned solver inside a numerical time stepper).
- ``residual`` (from its config): the network predicts the change from the last input frame, in
  units of the one-step-difference std when normalised.
- ``lead_conditioned`` (class attribute): the output depends on ``lead_time``, so the model can be
  rolled out directly at a lead as well as iteratively.
- :meth:`EarthsimModel.fsdp_units`: the modules FSDP2 shards one by one before the root.
- :meth:`EarthsimModel.training_loss`: the training step's loss; a family may replace it (a
  parallel scan with teacher forcing over a whole sequence, say) without touching the trainer.
- :class:`RecurrentModel`: ``init_state``/``step`` with a carried state, through which every rollout
  runs, so each new frame costs the same whatever the horizon.
- ``multi_source`` (class attribute): the family reads any subset of a vocabulary of named
  variables, so one network can train on several sources (datasets with their own variables and
  statistics, ClimaX's pretraining across climate models): :meth:`EarthsimModel.add_source` adds
  one, and :meth:`EarthsimModel.reading_source` selects the one calls read (the trainer, per batch).
- ``no_weight_decay`` (class attribute): parameter names the optimiser does not decay (embeddings).

Families register with :func:`register_model`; :func:`build_model` builds by name. Third-party
packages a family needs are imported when it is built, so a missing one fails that family alone,
by name.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Sequence, TypeVar

import torch
from torch import nn

from earthsim import config as config_lib
from earthsim.errors import EarthsimError, ValidationError
from earthsim.models.spec import DataSpec

#: One FSDP unit: a module, or several modules that together are sharded as one group.
FSDPUnit = nn.Module | Sequence[nn.Module]


@dataclasses.dataclass
class Batch:
    """A training or validation batch (the sample contract), on the model's device, in physical units.

    ``y`` holds every input channel at the target times: the model's outputs are its targets, the
    other channels the forcings fed to it during an unrolled rollout.
    """

    x: torch.Tensor  # [B, T_in, C_in, H, W]
    y: torch.Tensor  # [B, T_out, C_in, H, W]
    lead_time: torch.Tensor  # [B]
    static: torch.Tensor | None = None  # [C_s, H, W]
    source: int = 0  # which of the model's sources (datasets) every sample of the batch comes from

    @classmethod
    def from_mapping(cls, batch: Mapping[str, torch.Tensor], device: torch.device | str) -> "Batch":
        static = batch.get("static")
        source = batch.get("source")
        if source is not None:
            if bool((source != source[0]).any()):
                raise ValidationError(f"a batch mixes samples of sources {sorted(set(source.tolist()))}; each batch "
                                      "must come from one source")
            source = int(source[0])
        return cls(batch["x"].to(device), batch["y"].to(device), batch["lead_time"].to(device),
                   None if static is None else static.to(device), source or 0)


class Normaliser(nn.Module):
    """The normalisation statistics of one source as buffers (not saved with the weights: they come from the
    spec), shaped to broadcast against ``[B, T, C, H, W]`` and ``[B, C_s, H, W]``."""

    def __init__(self, spec: DataSpec, normalised: bool, family: str):
        super().__init__()
        stats = spec.statistics
        if stats is None:
            if normalised:
                raise EarthsimError(f"{family} works on normalised fields, so its data spec needs statistics")
            mean, std, diff_std = ([0.0] * len(spec.inputs), [1.0] * len(spec.inputs), [1.0] * len(spec.inputs))
            static_mean, static_std = [0.0] * len(spec.static), [1.0] * len(spec.static)
        else:
            mean, std, diff_std, static_mean, static_std = (stats.mean, stats.std, stats.diff_std, stats.static_mean,
                                                            stats.static_std)
        outputs = spec.output_index
        view = (1, 1, -1, 1, 1)
        for name, values in (("input_mean", mean), ("input_std", std),
                             ("output_mean", [mean[i] for i in outputs]), ("output_std", [std[i] for i in outputs]),
                             ("output_diff_std", [diff_std[i] for i in outputs])):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(view), persistent=False)
        self.register_buffer("static_mean", torch.tensor(static_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("static_std", torch.tensor(static_std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)


class EarthsimModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every model: the forward contract in physical units, input checks, FSDP units, and the
    declared normalisation and residual update (see the module docstring).

    Subclasses set ``t_in``, ``t_out`` and (if their config has one) ``residual`` in ``__init__`` and
    implement :meth:`network` and :meth:`fsdp_units`; :meth:`check_spec` refuses data the family
    cannot take. The registry sets ``model_name``.
    """

    model_name: str
    config: Any
    specs: list[DataSpec]
    t_in: int
    t_out: int
    residual: bool = False
    normalised: ClassVar[bool] = True
    lead_conditioned: ClassVar[bool] = False
    multi_source: ClassVar[bool] = False
    no_weight_decay: ClassVar[tuple[str, ...]] = ()
    #: A tiny configuration (and the grid kind it suits: "box" or "latlon" pole to pole) for tests and docs.
    example_config: ClassVar[dict] = {}
    example_grid: ClassVar[str] = "box"

    def __init__(self, config: Any, spec: DataSpec):
        super().__init__()
        self.config = config
        self.check_spec(spec)
        self.specs = [spec]
        self.normalisers = nn.ModuleList([Normaliser(spec, self.normalised, type(self).__name__)])
        self.source = 0

    @property
    def spec(self) -> DataSpec:
        """The data spec of the source calls read (the first, unless :attr:`source` says otherwise)."""
        return self.specs[self.source]

    def add_source(self, spec: DataSpec) -> int:
        """Add a source the model can read (a multi-source family only); returns its index for :attr:`source`."""
        name = getattr(self, "model_name", type(self).__name__)
        if not self.multi_source:
            raise EarthsimError(f"model {name!r} reads one set of variables; training on several sources needs a "
                                "family that reads any subset of its vocabulary (climax)")
        if spec.time_units != self.specs[0].time_units:
            raise EarthsimError(f"model {name!r}: a source in {spec.time_units} cannot join sources in "
                                f"{self.specs[0].time_units} (lead times would mean different things)")
        self.check_spec(spec)
        self.specs.append(spec)
        self.normalisers.append(Normaliser(spec, self.normalised, type(self).__name__).to(
            self.normalisers[0].input_mean.device))
        return len(self.specs) - 1

    @contextlib.contextmanager
    def reading_source(self, source: int):
        """Within the block, calls read source ``source`` (its variables and statistics)."""
        if not 0 <= source < len(self.specs):
            raise ValidationError(f"source {source} out of range: the model has {len(self.specs)} source(s)")
        before, self.source = self.source, source
        try:
            yield self
        finally:
            self.source = before

    def __getattr__(self, name: str):
        if name in _NORMALISER_BUFFERS:  # the statistics of the source calls read
            return getattr(self.normalisers[self.source], name)
        return super().__getattr__(name)

    # -- what a family provides --------------------------------------------------------------------

    def check_spec(self, spec: DataSpec) -> None:
        """Raise :class:`~earthsim.errors.EarthsimError` naming what is wrong if the family cannot take this data."""

    @abc.abstractmethod
    def network(self, x: torch.Tensor, static: torch.Tensor | None, lead_time: torch.Tensor | None) -> torch.Tensor:
        """The family's computation: ``x`` ``[B, T_in, C_in, H, W]`` and ``static`` ``[B, C_s, H, W]`` (normalised when
        ``normalised``) to ``[B, T_out, C_out, H, W]`` in the same units (a change from the last input if ``residual``)."""

    @abc.abstractmethod
    def fsdp_units(self) -> list[FSDPUnit]:
        """The units FSDP shards one by one before the root (each a module or a group of modules)."""

    @classmethod
    def params_for_sources(cls, params: dict, specs: list[DataSpec]) -> dict:
        """``params`` completed with what depends on every training source (ClimaX: the vocabulary, the union of
        the sources' variables), so that the model built on the first source takes the others."""
        return params

    def initialise_from(self, pretrained: "EarthsimModel") -> str:
        """Start from the weights of ``pretrained`` (this family, trained on other data); returns what was carried
        over. By default every tensor is copied, so both must be built alike; a family whose weights belong to
        named variables (ClimaX) carries them by name instead."""
        own, theirs = self.state_dict(), pretrained.state_dict()
        different = [k for k in own if k not in theirs or theirs[k].shape != own[k].shape]
        if different or set(theirs) - set(own):
            raise EarthsimError(f"init_from: the pretrained model is built differently (tensors {different[:4]} "
                                f"differ); {type(self).__name__} carries weights only between models built alike")
        self.load_state_dict(theirs)
        return f"{len(own)} tensors copied"

    # -- the contract --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, static: torch.Tensor | None = None,
                lead_time: torch.Tensor | None = None) -> torch.Tensor:
        """The next ``T_out`` frames ``[B, T_out, C_out, H, W]`` of the outputs, physical units in and out."""
        static = self.check_inputs(x, static)
        x, static = self.to_network_units(x, static)
        return self.to_physical_outputs(self.network(x, static, lead_time), self.residual_base_frame(x, lead_time))

    def residual_base_frame(self, x: torch.Tensor, lead_time: torch.Tensor | None) -> torch.Tensor:
        """The input frame ``[B, 1, C_in, H, W]`` (network units) a residual prediction is a change from: the last."""
        return x[:, -1:]

    def to_network_units(self, x: torch.Tensor, static: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Physical inputs ``[B, T, C_in, H, W]`` and static fields in the units the network works in (float32 or
        float64, whatever the caller's dtype: normalisation never runs in reduced precision)."""
        x = _full_precision(x)
        if self.normalised:
            x = (x - self.input_mean) / self.input_std
            if static is not None:
                static = (_full_precision(static) - self.static_mean) / self.static_std
        return x, static

    def to_physical_outputs(self, out: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The network's output ``[B, T, C_out, H, W]`` as predicted fields in physical units: added to the last
        input frame ``last`` ``[B, 1, C_in, H, W]`` (network units) when ``residual``, then de-normalised."""
        out = self.next_network_frames(out, last)
        return out * self.output_std + self.output_mean if self.normalised else out

    def next_network_frames(self, out: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The predicted output channels in network units: ``out`` itself, or ``last`` plus the scaled change."""
        out = _full_precision(out)
        if not self.residual:
            return out
        scale = self.output_diff_std / self.output_std if self.normalised else 1.0
        return last[:, :, self.spec.output_index] + out * scale

    def training_loss(self, batch: Batch, unroll: int, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                      ) -> torch.Tensor:
        """The loss of one batch: ``unroll`` autoregressive steps of ``T_out`` frames, summed over the steps."""
        from earthsim.models.rollout import rollout

        spec = self.spec
        frames = unroll * self.t_out
        forcings = batch.y[:, :, spec.forcing_index] if spec.forcings else None
        pred = rollout(self, batch.x, frames, batch.static, batch.lead_time, forcings)
        target = batch.y[:, :frames, spec.output_index]
        return sum(loss(pred[:, j * self.t_out:(j + 1) * self.t_out], target[:, j * self.t_out:(j + 1) * self.t_out])
                   for j in range(unroll))

    def check_inputs(self, x: torch.Tensor, static: torch.Tensor | None) -> torch.Tensor | None:
        """Check ``x`` and ``static`` against the spec; return ``static`` as ``[B, C_s, H, W]`` or None."""
        spec = self.spec
        expected = (len(spec.inputs), *spec.shape)
        if x.dim() != 5 or tuple(x.shape[2:]) != expected or x.shape[1] < 1:
            raise ValidationError(
                f"{self.model_name}: x must be [B, T_in={self.t_in}, C={expected[0]} ({', '.join(spec.inputs)}), "
                f"H={expected[1]}, W={expected[2]}], got {list(x.shape)}")
        if x.shape[1] != self.t_in and not isinstance(self, RecurrentModel):
            raise ValidationError(f"{self.model_name}: x must hold T_in={self.t_in} frames, got {x.shape[1]}")
        if not spec.static:
            if static is not None:
                raise ValidationError(f"{self.model_name}: got static fields {list(static.shape)} but the model was "
                                      "built without static fields")
            return None
        if static is None:
            raise ValidationError(f"{self.model_name}: built with static fields {list(spec.static)} but none given")
        grid = (len(spec.static), *spec.shape)
        if static.dim() == 3 and tuple(static.shape) == grid:
            return static.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        if static.dim() == 4 and tuple(static.shape[1:]) == grid and static.shape[0] in (1, x.shape[0]):
            return static.expand(x.shape[0], -1, -1, -1)
        raise ValidationError(f"{self.model_name}: static must be [C_s={grid[0]}, H={grid[1]}, W={grid[2]}] or "
                              f"[B, C_s, H, W], got {list(static.shape)}")


_NORMALISER_BUFFERS = frozenset(("input_mean", "input_std", "output_mean", "output_std", "output_diff_std",
                                 "static_mean", "static_std"))


def _full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 unless it is float64 already (reduced-precision results are widened)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


@dataclasses.dataclass
class RecurrentState:
    """What a recurrent model carries between steps: each layer's state, the static fields and the next frame
    already predicted ``[B, 1, C_out, H, W]`` (network units)."""

    layers: list
    static: torch.Tensor | None
    prediction: torch.Tensor


class RecurrentModel(EarthsimModel):
    """A model that advances with a carried state, so that each new frame costs the same whatever the horizon.

    ``forward`` takes any number ``T >= 1`` of context frames and predicts the ``T_out`` frames after
    them from the whole context. ``init_state`` digests the context (in parallel where the family
    can) into a state holding the next ``T_out`` predicted frames; ``step`` returns those frames
    ``[B, T_out, C_out, H, W]`` (physical units) and advances the state past them, completing their
    input channels with ``forcings`` ``[B, T_out, C_forcing, H, W]`` (the forcing channels at those
    valid times, read from data). Rolling out through ``init_state``/``step`` equals calling
    ``forward`` on the growing history, frame for frame, except where the state caches work across
    frames by design (TSM with ``bundle_steps > 1`` reuses the stencils of a bundle's first frame,
    which ``forward`` on a window cannot see). Under FSDP2 both methods are registered with
    ``register_fsdp_forward_method``, so their parameters are gathered.
    """

    def feedback_frame(self, prediction: torch.Tensor, forcings: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """A predicted frame ``prediction`` ``[B, 1, C_out, H, W]`` (network units) in physical units, and the next
        input frame ``[B, 1, C_in, H, W]`` (network units) it makes: the prediction in the output channels,
        ``forcings`` (physical, read from data) in the others."""
        spec = self.spec
        physical = prediction * self.output_std + self.output_mean if self.normalised else prediction
        frame = prediction.new_empty((prediction.shape[0], 1, len(spec.inputs), *prediction.shape[3:]))
        frame[:, :, spec.output_index] = prediction
        if spec.forcings:
            forcings = forcings.to(frame.dtype)
            if self.normalised:
                index = spec.forcing_index
                forcings = (forcings - self.input_mean[:, :, index]) / self.input_std[:, :, index]
            frame[:, :, spec.forcing_index] = forcings
        return physical, frame

    def teacher_forced_loss(self, batch: Batch, unroll: int, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                            outputs_after: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]) -> torch.Tensor:
        """The loss with the true frames fed at every step: ``x`` then ``y[:unroll - 1]`` go through
        ``outputs_after(frames, static)`` (network units in; the network output after each frame,
        ``[B, L, C_out, H, W]``) in one pass, and each step's prediction of the next frame is scored against it."""
        static = self.check_inputs(batch.x, batch.static)
        frames = torch.cat([batch.x, batch.y[:, :unroll - 1]], dim=1)
        network_frames, static = self.to_network_units(frames, static)
        outputs = outputs_after(network_frames, static)[:, self.t_in - 1:]  # predictions of y[0 .. unroll - 1]
        last = network_frames[:, self.t_in - 1:]  # the input frame each prediction follows
        pred = torch.cat([self.to_physical_outputs(outputs[:, j:j + 1], last[:, j:j + 1]) for j in range(unroll)],
                         dim=1)
        target = batch.y[:, :unroll, self.spec.output_index]
        return sum(loss(pred[:, j:j + 1], target[:, j:j + 1]) for j in range(unroll))

    @abc.abstractmethod
    def init_state(self, x: torch.Tensor, static: torch.Tensor | None = None,
                   lead_time: torch.Tensor | None = None) -> Any:
        """The state after the context ``x`` ``[B, T, C_in, H, W]`` (physical units)."""

    @abc.abstractmethod
    def step(self, state: Any, forcings: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """The next ``T_out`` output frames and the state after them (see the class docstring)."""


class _Entry(NamedTuple):
    config_cls: type
    factory: Callable[[Any, DataSpec], EarthsimModel]


#: Registered models: name -> (config dataclass, class or factory taking ``(config, spec)``).
MODELS: dict[str, _Entry] = {}

M = TypeVar("M")


def register_model(name: str, config_cls: type) -> Callable[[M], M]:
    """Class decorator: make a model buildable by ``name`` from a ``config_cls`` dataclass."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"register_model({name!r}): config_cls must be a dataclass, got {config_cls!r}")

    def decorate(factory: M) -> M:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = _Entry(config_cls, factory)
        return factory

    return decorate


def build_model(name: str, config: Mapping[str, Any] | Any | None, spec: DataSpec | Mapping[str, Any]) -> EarthsimModel:
    """Build the model registered as ``name`` from its config (mapping or dataclass) and data spec.

    Unknown model names, unknown or mistyped config keys, data the family cannot take and a
    missing third-party package raise :class:`~earthsim.errors.EarthsimError` naming what is valid.
    """
    if name not in MODELS:
        raise EarthsimError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    entry = MODELS[name]
    if dataclasses.is_dataclass(config) and type(config) is not entry.config_cls:
        raise EarthsimError(f"model {name!r} takes a {entry.config_cls.__name__} config, got {type(config).__name__}")
    typed = config_lib.build(entry.config_cls, {} if config is None else config, f"model {name!r} config")
    spec = spec if isinstance(spec, DataSpec) else DataSpec.from_dict(spec)
    try:
        model = entry.factory(typed, spec)
    except ImportError as error:  # a package the family needs, imported when it is built
        raise EarthsimError(f"model {name!r} cannot be built: {error}") from error
    model.model_name = name
    return model
