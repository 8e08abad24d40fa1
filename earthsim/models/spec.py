"""What a model is told about its data: the :class:`DataSpec` every model factory receives.

A spec names the channels a model reads per frame (``inputs``: variable and level, ``z500``), the
channels it predicts (``outputs``, a subset of the inputs; the others are forcings, read from data
at every step and never predicted) and its static fields; it carries the grid, the time between
the frames the model sees, the leads it was trained at, the physics a solver-made store records,
and the normalisation statistics. It is plain data: saved with the weights (as a mapping) and
rebuilt by :func:`earthsim.config.build`, so an exported model knows what it was made for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from earthsim import config as config_lib
from earthsim.data.grid import Grid
from earthsim.errors import EarthsimError

if TYPE_CHECKING:
    from earthsim.data.windows import WindowDataset


@dataclass(frozen=True)
class Statistics:
    """Normalisation statistics in physical units: per input channel, and per static field."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    diff_std: tuple[float, ...]  # std of one-step differences: the scale of a residual model's output
    static_mean: tuple[float, ...] = ()
    static_std: tuple[float, ...] = ()


@dataclass(frozen=True)
class DataSpec:
    """The data a model is built for (see the module docstring)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    grid: Grid
    channel_variables: tuple[str, ...] = ()  # the store variable of each input (z for z500); default: the names
    static: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()  # inputs and static fields computed (earthsim.data.derived)
    time_step: float = 1.0  # between consecutive frames the model sees: hours (weather) or solver units (fluids)
    time_units: str = "hours"
    lead_times: tuple[float, ...] = ()  # leads trained at (same units); empty: time_step alone
    physics: dict = field(default_factory=dict)
    statistics: Statistics | None = None
    climatology_source: dict = field(default_factory=dict)  # what <channel>_climatology inputs were made from

    def __post_init__(self):
        if not self.channel_variables:
            object.__setattr__(self, "channel_variables", tuple(self.inputs))
        if len(self.channel_variables) != len(self.inputs):
            raise EarthsimError(f"data spec: channel_variables name the variable of each input channel; got "
                                f"{list(self.channel_variables)} for inputs {list(self.inputs)}")
        for name in ("inputs", "outputs", "static"):
            names = getattr(self, name)
            if len(set(names)) != len(names):
                raise EarthsimError(f"data spec: {name} repeat a channel: {list(names)}")
        if not self.inputs or not self.outputs:
            raise EarthsimError(f"data spec: inputs and outputs must name channels, got {list(self.inputs)} and "
                                f"{list(self.outputs)}")
        strays = [n for n in self.derived if n not in self.inputs and n not in self.static]
        if strays or any(n in self.outputs for n in self.derived):
            raise EarthsimError(f"data spec: derived fields {list(self.derived)} must be inputs or static fields, and "
                                "are never predicted")
        unknown = [c for c in self.outputs if c not in self.inputs]
        if unknown:
            raise EarthsimError(f"data spec: outputs {unknown} are not inputs {list(self.inputs)}; a model predicts "
                                "channels it also reads, so that its predictions can be fed back")
        if not self.time_step > 0 or any(not lead > 0 for lead in self.lead_times):
            raise EarthsimError(f"data spec: time_step and lead_times must be > 0, got {self.time_step}, "
                                f"{list(self.lead_times)}")
        stats = self.statistics
        if stats is not None:
            sizes = {"mean": len(self.inputs), "std": len(self.inputs), "diff_std": len(self.inputs),
                     "static_mean": len(self.static), "static_std": len(self.static)}
            wrong = {k: len(getattr(stats, k)) for k, n in sizes.items() if len(getattr(stats, k)) != n}
            if wrong:
                raise EarthsimError(f"data spec: statistics {wrong} do not match {len(self.inputs)} inputs and "
                                    f"{len(self.static)} static fields")
            values = np.asarray(stats.mean + stats.std + stats.diff_std + stats.static_mean + stats.static_std)
            if not np.all(np.isfinite(values)) or min(stats.std + stats.diff_std + stats.static_std, default=1) <= 0:
                raise EarthsimError("data spec: statistics must be finite, with every std > 0")

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    @property
    def forcings(self) -> tuple[str, ...]:
        """Input channels the model does not predict: read from data at every step of a rollout."""
        return tuple(c for c in self.inputs if c not in self.outputs)

    @property
    def output_index(self) -> list[int]:
        """Position of each output channel among the inputs."""
        return [self.inputs.index(c) for c in self.outputs]

    @property
    def forcing_index(self) -> list[int]:
        """Position of each forcing channel among the inputs."""
        return [self.inputs.index(c) for c in self.forcings]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/YAML/``torch.load(weights_only=True)``-safe) that :meth:`from_dict` rebuilds."""
        return config_lib.to_dict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "DataSpec":
        return config_lib.build(cls, raw, "data spec")

    @classmethod
    def from_windows(cls, windows: "WindowDataset", output_variables: list[str] | None = None) -> "DataSpec":
        """The spec of models trained on ``windows``: its channels (the channels of ``output_variables`` predicted,
        default every stored variable's), grid, time step, leads, store physics and statistics (needed: load them)."""
        channels = tuple(windows.channels)
        if output_variables is None:  # every stored variable (derived fields are never predicted)
            predicted = tuple(c for c in channels if c not in windows.derived)
        else:
            unknown = [v for v in output_variables if v not in windows.variables]
            if unknown:
                raise EarthsimError(f"data.output_variables: {unknown} are not among the variables read "
                                    f"{windows.variables}")
            predicted = tuple(c for c, v in zip(channels, windows.channel_variables) if v in output_variables)
        if windows.mean is None:
            raise EarthsimError(f"dataset {windows.entry.name!r}: a data spec needs the normalisation statistics")
        static_mean, static_std = windows.static_statistics()
        statistics = Statistics(
            mean=tuple(windows.mean.double().tolist()), std=tuple(windows.std.double().tolist()),
            diff_std=tuple(windows.diff_std.double().tolist()),
            static_mean=tuple(float(v) for v in static_mean), static_std=tuple(float(v) for v in static_std))
        return cls(inputs=channels, outputs=predicted, grid=windows.grid,
                   channel_variables=tuple(windows.channel_variables),
                   static=tuple(windows.static_channels), derived=tuple(windows.derived),
                   time_step=float(windows.stride * windows.time_step), time_units=windows.entry.time.units,
                   lead_times=tuple(float(v) for v in windows.lead_times), physics=windows.physics,
                   statistics=statistics, climatology_source=windows.climatology_source)
