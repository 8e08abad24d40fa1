"""Batch forecasts by autoregressive rollout of an exported model.

From every chosen initial time the model's ``t_in`` input frames are normalised with the
statistics the model was trained with (recorded in ``model.pt``), the model is applied, and its
prediction is fed back: a model emitting ``t_out`` frames at once is fed the last ``t_in`` frames
of the history so far (chunked feedback), until ``steps`` frames exist. Residual models predict
the change in units of the one-step-difference std, as in training: the next normalised state is
``x_last + out · diff_std / std``. Static fields are the forecast dataset's, normalised by the
static mean and std recorded in ``model.pt`` (keys ``static_channels``, ``static_mean``,
``static_std``); exports without them fall back to the dataset's statistics store, or else each
field's own mean and std, as :class:`earthsim.data.windows.WindowDataset` does. Predictions are
de-normalised and written to a forecast store (:mod:`earthsim.forecast.store`), block by block,
resumable.

Ensembles (``members`` > 1 or ``perturbation`` > 0) add Gaussian noise of std ``perturbation``
(normalised units) to every input frame of every member; the noise of member ``m`` of initial
frame ``f`` in sequence ``s`` is drawn from ``numpy.random.default_rng([seed, *s, f, m])``, so it
does not depend on batching, block sizes or on which blocks a resumed run still had to do.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthsim.catalog import DatasetEntry
from earthsim.errors import EarthsimError, ValidationError
from earthsim.forecast.inputs import Block, InitialConditions, resolve_entry
from earthsim.forecast.store import write_forecast
from earthsim.models import EarthsimModel, build_from_spec, rollout
from earthsim.train.checkpoint import EXPORT_NAME

REQUIRED_KEYS = ("model", "config", "data_shape", "state_dict", "dataset", "channels", "variables", "mean", "std",
                 "diff_std", "stride", "time_step", "lead_time", "residual")
STATIC_KEYS = ("static_channels", "static_mean", "static_std")  # optional: how training normalised static fields


def export_path(checkpoint: str | os.PathLike) -> Path:
    """The exported model file: ``checkpoint`` itself, or ``model.pt`` inside a run directory."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / EXPORT_NAME
    if not path.is_file():
        raise EarthsimError(f"no exported model at {path}: give a model.pt written by `earthsim train` or its run "
                            "directory")
    return path


def load_exported(checkpoint: str | os.PathLike) -> tuple[EarthsimModel, dict[str, Any]]:
    """The model (weights loaded, eval mode, on CPU) and its metadata (everything but the weights)."""
    path = export_path(checkpoint)
    try:
        exported = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise EarthsimError(f"{path}: not a loadable model file: {error}") from error
    missing = [k for k in REQUIRED_KEYS if not isinstance(exported, dict) or k not in exported]
    if missing:
        raise EarthsimError(f"{path}: not an earthsim export (missing keys {missing}); export it with `earthsim train`")
    model = build_from_spec(exported)
    model.load_state_dict(exported["state_dict"])
    model.eval()
    metadata = {k: v for k, v in exported.items() if k != "state_dict"}
    metadata["path"] = str(path.resolve())
    return model, metadata


def _check_compatible(metadata: dict, model: EarthsimModel, ic: InitialConditions) -> None:
    """The dataset must give the channels, grid and time step the model was trained on."""
    where = f"model {metadata['path']} (trained on dataset {metadata['dataset']!r})"
    if list(metadata["channels"]) != ic.channels:
        raise ValidationError(f"{where} takes channels {list(metadata['channels'])}; dataset {ic.entry.name!r} "
                              f"gives {ic.channels}")
    shape = (model.data_shape.height, model.data_shape.width)
    if tuple(ic.entry.grid.shape) != shape:
        raise ValidationError(f"{where} takes a {shape} grid; dataset {ic.entry.name!r} has {ic.entry.grid.shape}")
    if not math.isclose(float(metadata["lead_time"]), ic.lead_time, rel_tol=1e-9):
        raise ValidationError(f"{where} steps {metadata['lead_time']} {ic.entry.time.units} at a time; dataset "
                              f"{ic.entry.name!r} with stride {ic.stride} gives {ic.lead_time}")


def _has_static_statistics(metadata: dict) -> bool:
    return all(metadata.get(k) is not None for k in STATIC_KEYS)


def _static_fields(metadata: dict, ic: InitialConditions) -> torch.Tensor:
    """Static fields ``[C_s, H, W]`` of the forecast dataset, normalised as in training: by the export's static
    mean and std when it records them, else as the dataset's window layout normalises them."""
    if not _has_static_statistics(metadata):
        return ic.windows.static_fields()
    names = list(metadata["static_channels"])
    if names != list(ic.windows.static_channels):
        raise ValidationError(f"model {metadata['path']} (trained on dataset {metadata['dataset']!r}) takes static "
                              f"fields {names}; dataset {ic.entry.name!r} has {list(ic.windows.static_channels)}")
    mean, std = (torch.as_tensor(metadata[k], dtype=torch.float64).reshape(-1, 1, 1)
                 for k in ("static_mean", "static_std"))
    if mean.shape[0] != len(names) or std.shape[0] != len(names):
        raise ValidationError(f"model {metadata['path']}: static_mean and static_std need one value per static field "
                              f"{names}; got {mean.shape[0]} and {std.shape[0]}")
    fields = torch.from_numpy(ic.windows.raw_static_fields())
    return ((fields - mean) / std).float()


def run_forecast(checkpoint: str | os.PathLike, dataset: str | DatasetEntry, split: str = "test", *, steps: int,
                 out: str | os.PathLike, inits: list | None = None, members: int = 1,
                 perturbation: float = 0.0, seed: int = 0, batch_size: int = 32, progress: bool = True,
                 device: str = "cpu", overwrite: bool = False) -> Path:
    """Roll the exported model ``checkpoint`` out ``steps`` frames from every initial time of ``split``
    (or those in ``inits``) and write the forecast store ``out``; returns its path.

    ``batch_size`` initial times × members go through the model at once (one block of the store);
    a run interrupted part-way resumes from ``out``'s ``.partial`` store when started again with
    the same arguments. ``members`` > 1 stores a perturbed ensemble along ``realization``.
    """
    model, metadata = load_exported(checkpoint)
    entry = resolve_entry(dataset)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise ValidationError(f"members must be an integer ≥ 1, got {members!r}")
    if not (isinstance(perturbation, (int, float)) and math.isfinite(perturbation) and perturbation >= 0):
        raise ValidationError(f"perturbation must be a finite number ≥ 0, got {perturbation!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValidationError(f"seed must be an integer ≥ 0, got {seed!r}")
    absent = [v for v in metadata["variables"] if v not in entry.variables]
    if absent:
        raise ValidationError(
            f"model {metadata['path']} (trained on dataset {metadata['dataset']!r}) takes variables "
            f"{list(metadata['variables'])} (channels {list(metadata['channels'])}); dataset {entry.name!r} has "
            f"variables {entry.variable_names}, without {absent}")
    exported_static = _has_static_statistics(metadata)
    ic = InitialConditions(entry, split, steps, t_in=model.t_in, stride=int(metadata["stride"]),
                           variables=list(metadata["variables"]), inits=inits,
                           normalise=bool(entry.static) and not exported_static)
    _check_compatible(metadata, model, ic)

    device = torch.device(device)
    model = model.to(device)
    mean = metadata["mean"].to(device).view(1, 1, -1, 1, 1)
    std = metadata["std"].to(device).view(1, 1, -1, 1, 1)
    scale = (metadata["diff_std"] / metadata["std"]).to(device) if metadata["residual"] else None
    static = _static_fields(metadata, ic).to(device) if model.data_shape.static_channels else None

    def compute(block: Block) -> np.ndarray:
        raw = torch.from_numpy(ic.read(block)).to(device)
        x = (raw - mean) / std
        count = x.shape[0]
        x = x.repeat_interleave(members, dim=0)
        if perturbation > 0:
            x = x + torch.from_numpy(_noise(ic, block, members, seed, tuple(x.shape[1:]), perturbation)).to(device)
        with torch.no_grad():
            pred = rollout(model, x, ic.steps, static=static, residual_scale=scale)
        pred = (pred * std + mean).float().cpu().numpy()
        return pred.reshape(count, members, *pred.shape[1:]).swapaxes(1, 2)

    request = {
        "checkpoint": metadata["path"], "model": metadata["model"], "checkpoint_step": metadata.get("step"),
        "trained_on": metadata["dataset"], "dataset": entry.name, "store": entry.store, "split": split,
        "steps": ic.steps, "inits": None if inits is None else [str(v) for v in inits], "members": members,
        "perturbation": float(perturbation), "seed": int(seed), "t_in": model.t_in, "t_out": model.t_out,
        "stride": ic.stride, "lead_time": ic.lead_time, "residual": bool(metadata["residual"]),
        "model_config": metadata["config"], "train_config": metadata.get("train_config"),
    }
    attrs = {"forecast": metadata["model"], "dataset": entry.name, "split": split,
             "checkpoint": metadata["path"], "checkpoint_step": metadata.get("step", -1)}
    return write_forecast(
        ic, out, compute, producer="earthsim.forecast.run_forecast", request=request, attrs=attrs,
        inputs=[metadata["path"], entry.store], members=members if members > 1 else None,
        block_size=max(1, batch_size // members), progress=progress, overwrite=overwrite,
        description=f"forecast {metadata['model']} {entry.name}")


def _noise(ic: InitialConditions, block: Block, members: int, seed: int, shape: tuple[int, ...],
           perturbation: float) -> np.ndarray:
    """Initial-condition noise ``[samples × members, *shape]``, one generator per (sequence, init, member)."""
    return np.stack([
        np.random.default_rng([seed, *sequence, frame, member]).standard_normal(shape, dtype=np.float32)
        * np.float32(perturbation)
        for sequence, frame in ic.samples(block) for member in range(members)])
