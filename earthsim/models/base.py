"""The model contract every family follows, and the registry that builds models by name.

A batch holds ``x`` ``[B, T_in, C, H, W]``, optionally ``static`` ``[C_s, H, W]`` (or
``[B, C_s, H, W]``) and ``lead_time`` ``[B]``. Every model maps ``(x, static, lead_time)`` to a
prediction ``[B, T_out, C, H, W]``, declares ``t_in``/``t_out``, names the blocks FSDP shards one by
one (:meth:`EarthsimModel.blocks`), and carries its typed config (``model.config``) and registry
name (``model.model_name``) so that a checkpoint can rebuild it (:func:`model_spec`). The rollout
engine, the trainer and the scorer rely on this contract alone.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence, TypeVar, runtime_checkable

import torch
from torch import nn

from earthsim import config as config_lib
from earthsim.errors import EarthsimError, ValidationError

#: One FSDP unit: a module, or several modules that together make one block (sharded as one group).
Block = nn.Module | Sequence[nn.Module]


@dataclasses.dataclass(frozen=True)
class DataShape:
    """What a model needs to know about its data: variables per frame, grid, static fields."""

    channels: int
    height: int
    width: int
    static_channels: int = 0

    def __post_init__(self):
        for name in ("channels", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EarthsimError(f"data shape: {name} must be a positive int, got {value!r}")
        if not isinstance(self.static_channels, int) or self.static_channels < 0:
            raise EarthsimError(f"data shape: static_channels must be an int >= 0, got {self.static_channels!r}")


class EarthsimModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every model: the forward contract, input checks, FSDP blocks, and the spec to rebuild it.

    Subclasses set ``t_in`` and ``t_out`` (input and output steps) in ``__init__`` and implement
    :meth:`forward` and :meth:`blocks`; the registry sets ``config``, ``model_name`` and ``data_shape``.
    """

    model_name: str
    config: Any
    data_shape: DataShape
    t_in: int
    t_out: int

    def __init__(self, config: Any, data_shape: DataShape):
        super().__init__()
        self.config = config
        self.data_shape = data_shape

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, static: torch.Tensor | None = None,
                lead_time: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``x`` ``[B, T_in, C, H, W]`` (and optional ``static``, ``lead_time`` ``[B]``) to ``[B, T_out, C, H, W]``."""

    @abc.abstractmethod
    def blocks(self) -> list[Block]:
        """The units FSDP shards one by one before the root (each a module or a group of modules)."""

    def check_inputs(self, x: torch.Tensor, static: torch.Tensor | None) -> torch.Tensor | None:
        """Check ``x`` and ``static`` against the declared shape; return ``static`` as ``[B, C_s, H, W]`` or None."""
        shape = self.data_shape
        expected = (self.t_in, shape.channels, shape.height, shape.width)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValidationError(
                f"{self.model_name}: x must be [B, T_in={expected[0]}, C={expected[1]}, H={expected[2]}, "
                f"W={expected[3]}], got {list(x.shape)}")
        if shape.static_channels == 0:
            if static is not None:
                raise ValidationError(
                    f"{self.model_name}: got static fields {list(static.shape)} but the model was built with "
                    "static_channels=0")
            return None
        if static is None:
            raise ValidationError(
                f"{self.model_name}: built with static_channels={shape.static_channels} but no static fields given")
        grid = (shape.static_channels, shape.height, shape.width)
        if static.dim() == 3 and tuple(static.shape) == grid:
            return static.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        if static.dim() == 4 and tuple(static.shape[1:]) == grid and static.shape[0] in (1, x.shape[0]):
            return static.expand(x.shape[0], -1, -1, -1)
        raise ValidationError(
            f"{self.model_name}: static must be [C_s={grid[0]}, H={grid[1]}, W={grid[2]}] or [B, C_s, H, W], "
            f"got {list(static.shape)}")


State = TypeVar("State")


@runtime_checkable
class RecurrentModel(Protocol[State]):
    """A model that can also advance one frame at a time with a carried state (O(1) cost per frame).

    ``init_state(x)`` digests the ``T_in`` context frames ``[B, T_in, C, H, W]`` into a state;
    ``step(x_t, state)`` takes one frame ``[B, C, H, W]`` and returns the next frame's prediction
    ``[B, C, H, W]`` and the new state. Feeding each prediction back as the next ``x_t`` is a rollout.
    """

    def init_state(self, x: torch.Tensor) -> State: ...

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]: ...


class _Entry(NamedTuple):
    config_cls: type
    factory: Callable[[Any, DataShape], EarthsimModel]


#: Registered models: name -> (config dataclass, class or factory taking ``(config, data_shape)``).
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


def build_model(name: str, config: Mapping[str, Any] | Any | None = None, **data_shape: int) -> EarthsimModel:
    """Build the model registered as ``name`` from its config (mapping or dataclass) and the data shape.

    ``data_shape`` gives ``channels``, ``height``, ``width`` and optionally ``static_channels``.
    Unknown model names, unknown or mistyped config keys and a bad data shape raise
    :class:`~earthsim.errors.EarthsimError` naming what is valid.
    """
    if name not in MODELS:
        raise EarthsimError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    entry = MODELS[name]
    if dataclasses.is_dataclass(config) and type(config) is not entry.config_cls:
        raise EarthsimError(
            f"model {name!r} takes a {entry.config_cls.__name__} config, got {type(config).__name__}")
    typed = config_lib.build(entry.config_cls, {} if config is None else config, f"model {name!r} config")
    valid = {f.name for f in dataclasses.fields(DataShape)}
    unknown = sorted(set(data_shape) - valid)
    if unknown:
        raise EarthsimError(f"model {name!r}: unknown data shape key(s) {unknown}; valid: {sorted(valid)}")
    missing = sorted({"channels", "height", "width"} - set(data_shape))
    if missing:
        raise EarthsimError(f"model {name!r}: data shape needs {missing}")
    model = entry.factory(typed, DataShape(**data_shape))
    model.model_name = name
    return model


def model_spec(model: EarthsimModel) -> dict[str, Any]:
    """What rebuilds ``model`` with :func:`build_model`: its name, config and data shape, as plain data."""
    return {
        "model": model.model_name,
        "config": config_lib.to_dict(model.config),
        "data_shape": dataclasses.asdict(model.data_shape),
    }


def build_from_spec(spec: Mapping[str, Any]) -> EarthsimModel:
    """Rebuild a model (untrained weights) from :func:`model_spec` output, e.g. read from a checkpoint."""
    return build_model(spec["model"], spec["config"], **spec["data_shape"])
