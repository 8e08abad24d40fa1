"""Experiment configs: dataset × model × training recipe, as typed dataclasses read from YAML.

An experiment is a YAML file in ``catalogs/experiments/`` (or any path) with the sections below;
``--set optimizer.lr=3e-4`` overrides one key. Unknown keys and wrong types fail before training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from earthsim import config
from earthsim.catalog import catalog_dirs, yaml_problem
from earthsim.errors import EarthsimError
from earthsim.models.parallelism import ParallelismConfig


@dataclass
class SourceConfig:
    """A further training source (``data.sources``): a dataset read with its own variables, predicted
    variables and derived fields; the windows (``t_in``, ``t_out``, stride, leads) are the run's."""

    dataset: str
    variables: list[str] | None = None
    output_variables: list[str] | None = None
    derived: list[str] | None = None


@dataclass
class DataConfig:
    """Which windows of which dataset a model trains on.

    ``variables`` are read (default: the entry's); ``output_variables`` are the variables predicted
    (default: all read; the others are forcings, read from data at every step). Input frames are
    ``stride`` store frames apart; each sample's lead is drawn from ``lead_strides`` (a set) or
    ``lead_stride_range`` (``[first, last]``, inclusive), in store frames, else it is ``stride``. With
    several leads every window start is one sample per lead, so an epoch holds that many times more
    samples; they need a lead-conditioned model. ``derived`` adds fields computed from coordinates
    (:mod:`earthsim.data.derived`: ``latitude``, ``longitude`` as static fields, ``local_time_sin``
    and ``local_time_cos`` as per-frame forcings) or a channel's climatology at each frame's valid
    time (``t2m_climatology``, a per-frame forcing). ``sources`` adds further training datasets, read
    with their own variables and statistics (a multi-source model, ClimaX's pretraining across
    climate models): each batch comes from one source; validation reads ``dataset``.
    """

    def source_list(self) -> list[SourceConfig]:
        """Every training source: ``dataset`` (with this section's variables) first, then ``sources``."""
        first = SourceConfig(self.dataset, self.variables, self.output_variables, self.derived)
        return [first, *(self.sources or [])]

    dataset: str
    t_in: int = 1
    t_out: int = 1
    stride: int = 1
    batch_size: int = 8
    num_workers: int = 0
    variables: list[str] | None = None
    output_variables: list[str] | None = None
    lead_strides: list[int] | None = None
    lead_stride_range: list[int] | None = None
    derived: list[str] | None = None
    sources: list[SourceConfig] | None = None

    def __post_init__(self):
        if self.lead_strides is not None and self.lead_stride_range is not None:
            raise EarthsimError("data: give lead_strides or lead_stride_range, not both")
        if self.lead_stride_range is not None and (len(self.lead_stride_range) != 2
                                                   or not 1 <= self.lead_stride_range[0] <= self.lead_stride_range[1]):
            raise EarthsimError(f"data.lead_stride_range: expected [first, last] with 1 <= first <= last, got "
                                f"{self.lead_stride_range}")

    def leads(self) -> tuple[int, ...] | None:
        """The lead strides samples are drawn from, or None for ``stride`` alone."""
        if self.lead_stride_range is not None:
            return tuple(range(self.lead_stride_range[0], self.lead_stride_range[1] + 1))
        return None if self.lead_strides is None else tuple(self.lead_strides)


@dataclass
class ModelSection:
    name: str
    params: dict = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 20
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    grad_accumulation: int = 1


@dataclass
class LossConfig:
    """The loss on the predicted channels: ``space`` normalised (fields scaled by the data's statistics, as
    weather models train) or physical (as learned solvers train); ``latitude_weighting`` for ``lat_mse``: cell
    ``area`` (WeatherBench 2's scoring weights) or ``cos`` (cos(lat) / mean, as ClimaX trains)."""

    name: str = "mse"
    p: float = 2.0
    variable_weights: dict = field(default_factory=dict)
    space: str = "normalised"
    latitude_weighting: str = "area"

    def __post_init__(self):
        if self.space not in ("normalised", "physical"):
            raise EarthsimError(f"loss.space: {self.space!r} is not one of ['normalised', 'physical']")
        if self.latitude_weighting not in ("area", "cos"):
            raise EarthsimError(f"loss.latitude_weighting: {self.latitude_weighting!r} is not one of ['area', 'cos']")


@dataclass
class RolloutConfig:
    """Multi-step training: unroll ``start_steps`` autoregressive steps, one more every ``increase_every`` epochs."""

    start_steps: int = 1
    max_steps: int = 1
    increase_every: int = 1


@dataclass
class CheckpointConfig:
    every_steps: int = 100
    keep: int = 2


@dataclass
class ValidationConfig:
    """Validation after every epoch, or every ``every_samples`` training samples (counted over all ranks; the run's
    last step is validated either way). With ``target_metric`` and ``target``, the run stops at the first validation
    whose ``target_metric`` (a key of its results, lower is better) is at or below ``target``."""

    rollout_steps: int = 4
    max_batches: int = 16
    every_samples: int | None = None
    target_metric: str | None = None
    target: float | None = None

    def __post_init__(self):
        if self.every_samples is not None and self.every_samples < 1:
            raise EarthsimError(f"validation.every_samples: expected an integer >= 1, got {self.every_samples}")
        if (self.target_metric is None) != (self.target is None):
            raise EarthsimError("validation: give target_metric and target together (stop when target_metric <= "
                                "target)")


@dataclass
class TrainConfig:
    data: DataConfig
    model: ModelSection
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    epochs: int = 5
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"
    log_every: int = 1
    init_from: str | None = None  # an exported model (model.pt or its run folder) whose weights start this run
    max_seconds: float | None = None  # stop after the step that ends past this much training time (validation excluded)

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "cuda"):
            raise EarthsimError(f"device: {self.device!r} is not one of ['auto', 'cpu', 'cuda']")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise EarthsimError(f"max_seconds: expected a positive number of seconds, got {self.max_seconds}")
        if self.rollout.max_steps < self.rollout.start_steps:
            raise EarthsimError("rollout.max_steps must be >= rollout.start_steps")


def experiment_names() -> list[str]:
    names = set()
    for directory in catalog_dirs():
        names.update(p.stem for p in (directory / "experiments").glob("*.yaml"))
    return sorted(names)


def experiment_path(name: str | os.PathLike) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise EarthsimError(f"no experiment file {path}")
        return path
    for directory in catalog_dirs():
        candidate = directory / "experiments" / f"{name}.yaml"
        if candidate.exists():
            return candidate
    raise EarthsimError(f"unknown experiment {str(name)!r}; known experiments: {experiment_names()}")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested mapping."""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy
    for item in overrides:
        if "=" not in item:
            raise EarthsimError(f"--set {item!r}: expected key=value, e.g. optimizer.lr=3e-4")
        key, value = item.split("=", 1)
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EarthsimError(f"--set {item!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise EarthsimError(f"--set {item!r}: the value of {key!r} is not valid YAML ({yaml_problem(error)})") \
                from None
    return raw


def load_experiment(name: str | os.PathLike, overrides: list[str] = ()) -> TrainConfig:
    path = experiment_path(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise EarthsimError(f"{path}: not valid YAML: {yaml_problem(error)}") from None
    return config.build(TrainConfig, apply_overrides(raw, list(overrides)), str(path))


def to_yaml(train_config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(train_config), sort_keys=False)


def from_mapping(raw: dict[str, Any], where: str = "config") -> TrainConfig:
    return config.build(TrainConfig, raw, where)
