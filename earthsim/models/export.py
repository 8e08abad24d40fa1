"""The exported model: one file with a model's name, config, data spec, how it was trained, and its full weights.

Written in one place (:func:`export_model`, called by the trainer) and read in one place
(:func:`load_exported`, used by forecasts, benchmarks and tests). The file is a plain mapping of
tensors and plain data, so it loads with ``torch.load(weights_only=True)``: loading it never runs
code. ``format`` versions the record; a file of another format is refused, naming both.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from earthsim import __version__
from earthsim import config as config_lib
from earthsim.errors import EarthsimError, reason
from earthsim.models.base import EarthsimModel, build_model
from earthsim.models.spec import DataSpec

EXPORT_FORMAT = 2  # 1: earthsim 0.1.0's export (channel counts and statistics as loose keys)
EXPORT_NAME = "model.pt"  # the export's file name in a run directory


@dataclass(frozen=True)
class ExportRecord:
    """Everything in an export but the weights: enough to rebuild the model and to forecast with it."""

    model: str
    config: dict
    spec: dict  # DataSpec.to_dict()
    dataset: str  # the catalog dataset it was trained on
    stride: int  # store frames between the frames the model sees
    lead_strides: tuple[int, ...]  # leads it was trained at, in store frames
    step: int = 0  # optimiser steps done
    train_config: dict = field(default_factory=dict)
    earthsim_version: str = __version__
    format: int = EXPORT_FORMAT

    @property
    def data_spec(self) -> DataSpec:
        return DataSpec.from_dict(self.spec)


def export_path(path: str | os.PathLike) -> Path:
    """The export file: ``path`` itself, or ``model.pt`` inside a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / EXPORT_NAME
    if not path.is_file():
        raise EarthsimError(f"no exported model at {path}: give a model.pt written by `earthsim train` or its run "
                            "directory")
    return path


def export_model(model: EarthsimModel, path: str | os.PathLike, *, dataset: str, stride: int,
                 lead_strides: tuple[int, ...], step: int = 0, train_config: dict | None = None) -> Path:
    """Write ``model`` (sharded by FSDP2 or not) with its record to ``path``, through a temporary name.

    Under torch.distributed every rank must call this (gathering the shards is collective); rank 0
    writes the file.
    """
    record = ExportRecord(model=model.model_name, config=config_lib.to_dict(model.config),
                          spec=model.spec.to_dict(), dataset=dataset, stride=int(stride),
                          lead_strides=tuple(int(v) for v in lead_strides), step=int(step),
                          train_config=dict(train_config or {}))
    distributed = dist.is_initialized()
    if distributed:
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    if not distributed or dist.get_rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({**dataclasses.asdict(record), "state_dict": state}, tmp)
        os.replace(tmp, path)
    if distributed:
        dist.barrier()
    return path


def load_exported(path: str | os.PathLike) -> tuple[EarthsimModel, ExportRecord]:
    """The exported model (weights loaded, eval mode, on CPU) and its record."""
    path = export_path(path)
    try:
        with warnings.catch_warnings():  # torch warns of an unusual pickle protocol before refusing the file
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            saved = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many types for a file that is not a weights-only checkpoint
        raise EarthsimError(f"{path}: not a loadable earthsim model file ({reason(error)})") from None
    if not isinstance(saved, dict) or "state_dict" not in saved or "model" not in saved:
        raise EarthsimError(f"{path}: not an earthsim model export (no model name and weights); export one with "
                            "`earthsim train`")
    found = saved.get("format", 1)
    if found != EXPORT_FORMAT:
        raise EarthsimError(f"{path}: written in earthsim export format {found} (earthsim "
                            f"{saved.get('earthsim_version', '0.1.0')}); this earthsim ({__version__}) reads format "
                            f"{EXPORT_FORMAT}: train the model again, or forecast with the earthsim that exported it")
    fields = {f.name for f in dataclasses.fields(ExportRecord)}
    try:
        record = config_lib.build(ExportRecord, {k: v for k, v in saved.items() if k in fields}, f"{path}")
    except EarthsimError as error:
        raise EarthsimError(f"{path}: malformed export record: {error}") from None
    model = build_model(record.model, record.config, record.data_spec)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise EarthsimError(f"{path}: weights do not fit model {record.model!r} as its record describes it "
                            f"({reason(error)})") from None
    return model.eval(), record
