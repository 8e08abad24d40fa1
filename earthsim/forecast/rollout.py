"""Batch forecasts with an exported model, as resumable forecast stores.

From every chosen initial time the model's ``t_in`` input frames (a recurrent model's ``context``, if given)
are read in physical units (the
model normalises itself with the statistics it was trained with), and the forecast is rolled out
by :func:`earthsim.models.rollout` (``mode="iterative"``: the model's outputs fed back, each call
one lead further; a recurrent model carries its state, so each frame costs the same whatever the
horizon) or, for a lead-conditioned model, by :func:`earthsim.models.direct` (``mode="direct"``:
each lead in one call from the initial state). Forcing channels (inputs the model does not
predict) are read from the dataset at the valid times of the predicted frames; static fields are
the dataset's own. Predictions are written to a forecast store (:mod:`earthsim.forecast.store`),
block by block, resumable.

Ensembles (``members`` > 1 or ``perturbation`` > 0) add Gaussian noise of std ``perturbation``
times each channel's std (the model's statistics) to every input frame of every member; the
noise of member ``m`` of initial frame ``f`` in sequence ``s`` is drawn from
``numpy.random.default_rng([seed, *s, f, m])``, so it does not depend on batching, block sizes
or on which blocks a resumed run still had to do. Several checkpoints (trainings of one
experiment with other seeds, say) make a multi-model ensemble: the members of checkpoint ``k``
are members ``k × members …`` of the store, so the scorer's deterministic scores are those of
the ensemble mean (a deep ensemble: averaging the trainings averages out each one's own errors).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from earthsim.catalog import DatasetEntry
from earthsim.errors import EarthsimError, ValidationError
from earthsim.forecast.inputs import Block, InitialConditions, resolve_entry
from earthsim.forecast.store import write_forecast
from earthsim.models import DataSpec, ExportRecord, RecurrentModel, direct, load_exported, rollout
from earthsim.models.export import export_path

MODES = ("iterative", "direct")


def _check_compatible(record: ExportRecord, spec: DataSpec, ic: InitialConditions, where: str) -> None:
    """The dataset must give the channels, static fields, climatology, grid and time step the model was trained on."""
    if list(spec.inputs) != ic.channels:
        raise ValidationError(f"{where} reads channels {list(spec.inputs)}; dataset {ic.entry.name!r} gives "
                              f"{ic.channels}")
    if list(spec.static) != list(ic.windows.static_channels):
        raise ValidationError(f"{where} takes static fields {list(spec.static)}; dataset {ic.entry.name!r} has "
                              f"{list(ic.windows.static_channels)}")
    try:
        spec.grid.check_same(ic.entry.grid, f"dataset {ic.entry.name!r} against the grid {where} was trained on")
    except EarthsimError as error:
        raise ValidationError(str(error)) from None
    if spec.climatology_source != ic.windows.climatology_source:
        raise ValidationError(f"{where} reads a climatology made from {spec.climatology_source or 'nothing recorded'}; "
                              f"the climatology of dataset {ic.entry.name!r} ({ic.entry.climatology}) is made from "
                              f"{ic.windows.climatology_source}: its inputs would differ from those it was trained on")
    if not math.isclose(spec.time_step, record.stride * ic.entry.time_step, rel_tol=1e-9):
        raise ValidationError(f"{where} steps {spec.time_step} {spec.time_units} between input frames; dataset "
                              f"{ic.entry.name!r} with stride {record.stride} gives {record.stride * ic.entry.time_step}")


def run_forecast(checkpoint: str | os.PathLike | list, dataset: str | DatasetEntry, split: str = "test", *, steps: int,
                 out: str | os.PathLike, inits: list | None = None, members: int = 1,
                 perturbation: float = 0.0, seed: int = 0, batch_size: int = 32, progress: bool = True,
                 device: str = "cpu", overwrite: bool = False, keep: bool = False, mode: str | None = None,
                 lead_stride: int | None = None, context: int | None = None) -> Path:
    """Forecast ``steps`` frames from every initial time of ``split`` (or those in ``inits``) with the exported
    model ``checkpoint`` (or a list of them: a multi-model ensemble, each with ``members`` members) and write
    the forecast store ``out``; returns its path.

    ``mode``: ``"iterative"`` feeds predictions back, ``"direct"`` calls a lead-conditioned model once
    per lead from the initial state (default: direct for a lead-conditioned model trained at several
    leads, iterative otherwise). Frames are ``lead_stride`` store frames apart (default: the model's
    only training lead, or its stride). ``batch_size`` initial times × members (of every checkpoint)
    make one block of the store, each checkpoint's model taking its share in one call; a run
    interrupted part-way resumes from ``out``'s ``.partial`` store when started again with the same
    arguments. ``members`` > 1 stores a perturbed ensemble along ``realization``.
    ``context``: frames a recurrent model digests before the first forecast frame (default its
    ``t_in``; the long-horizon video protocol conditions on 100).
    """
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    if not checkpoints:
        raise ValidationError("give at least one checkpoint to forecast with")
    ensemble = [load_exported(path) for path in checkpoints]
    model, record = ensemble[0]
    where = f"model {checkpoints[0]} (trained on dataset {record.dataset!r})"
    entry = resolve_entry(dataset)
    if mode is None:
        mode = "direct" if model.lead_conditioned and len(record.lead_strides) > 1 else "iterative"
    if mode not in MODES:
        raise ValidationError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "direct" and not model.lead_conditioned:
        raise ValidationError(f"{where}: {model.model_name} is not lead-conditioned, so it forecasts iteratively "
                              "only (mode='iterative')")
    if not isinstance(members, int) or members < 1:
        raise ValidationError(f"members must be an integer ≥ 1, got {members!r}")
    if not (isinstance(perturbation, (int, float)) and math.isfinite(perturbation) and perturbation >= 0):
        raise ValidationError(f"perturbation must be a finite number ≥ 0, got {perturbation!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValidationError(f"seed must be an integer ≥ 0, got {seed!r}")
    t_in = model.t_in if context is None else context
    if context is not None and (not isinstance(context, int) or context < 1):
        raise ValidationError(f"context must be an integer ≥ 1, got {context!r}")
    if t_in != model.t_in and not isinstance(model, RecurrentModel):
        raise ValidationError(f"{where}: {model.model_name} reads exactly t_in={model.t_in} frames; a context of "
                              f"{context} frames needs a recurrent model (one with a carried state)")
    spec = model.spec
    lead = _lead_stride(record, lead_stride, mode, steps, where)
    variables = list(dict.fromkeys(v for v in spec.channel_variables if v not in spec.derived))
    absent = [v for v in variables if v not in entry.variables]
    if absent:
        raise ValidationError(f"{where} reads variables {variables}; dataset {entry.name!r} has variables "
                              f"{entry.variable_names}, without {absent}")
    if mode == "iterative" and t_in > 1 and lead != record.stride:
        raise ValidationError(f"{where} reads {t_in} frames {record.stride} store frame(s) apart, so it rolls "
                              f"out iteratively only {record.stride} frame(s) at a time, not {lead} (a prediction fed "
                              "back must sit one stride after the other inputs); use mode='direct'")
    paths = [str(export_path(path).resolve()) for path in checkpoints]
    repeated = sorted({path for path in paths if paths.count(path) > 1})
    if repeated:
        raise ValidationError(f"checkpoints {repeated} are given more than once; each member of an ensemble is "
                              "another training")
    for path, (other, other_record) in zip(checkpoints[1:], ensemble[1:]):
        _check_same_forecaster(model, record, other, other_record, f"model {path}", where)
    ic = InitialConditions(entry, split, steps, t_in=t_in, stride=record.stride, lead_stride=lead,
                           variables=variables, inits=inits, derived=spec.derived)
    _check_compatible(record, spec, ic, where)
    written = _predicted_variables(ic, spec, where)

    device = torch.device(device)
    models = [member.to(device) for member, _ in ensemble]
    static = torch.from_numpy(ic.windows.raw_static_fields()).float().to(device) if spec.static else None
    lead_time = ic.lead_time
    noise_scale = np.asarray(spec.statistics.std, np.float32)[:, None, None] if spec.statistics else 1.0
    forcings = spec.forcing_index

    def compute(block: Block) -> np.ndarray:
        initial = torch.from_numpy(ic.read(block)).to(device)
        count = initial.shape[0]
        future = None
        if mode == "iterative" and forcings:  # the forcing channels at the valid times of the predicted frames
            future = torch.from_numpy(ic.read_targets(block)[:, :, forcings]).to(device)
            future = future.repeat_interleave(members, dim=0)
        predictions = []
        for k, member in enumerate(models):
            x = initial.repeat_interleave(members, dim=0)
            if perturbation > 0:  # the members' specs are the same, statistics included
                noise = _noise(ic, block, members, seed, tuple(x.shape[1:]), perturbation, first=k * members)
                x = x + torch.from_numpy(noise * noise_scale).to(device)
            with torch.no_grad():
                if mode == "direct":
                    leads = torch.arange(1, ic.steps + 1, dtype=torch.float32, device=device) * lead_time
                    pred = direct(member, x, leads, static)
                else:
                    pred = rollout(member, x, ic.steps, static,
                                   torch.full((x.shape[0],), lead_time, device=device), future)
            pred = pred.float().cpu().numpy()
            predictions.append(pred.reshape(count, members, *pred.shape[1:]))
        return np.concatenate(predictions, axis=1).swapaxes(1, 2)

    several = len(paths) > 1  # a single model's request keeps its plain values
    request = {
        "checkpoint": paths if several else paths[0], "model": record.model,
        "checkpoint_step": [r.step for _, r in ensemble] if several else record.step,
        "trained_on": record.dataset, "dataset": entry.name, "store": entry.store, "split": split,
        "steps": ic.steps, "inits": None if inits is None else [str(v) for v in inits], "members": members,
        "perturbation": float(perturbation), "seed": int(seed), "t_in": model.t_in, "context": t_in,
        "t_out": model.t_out,
        "stride": ic.stride, "lead_stride": lead, "lead_time": ic.lead_time, "mode": mode,
        "model_config": record.config,
        "train_config": [r.train_config for _, r in ensemble] if several else record.train_config,
    }
    attrs = {"forecast": record.model, "dataset": entry.name, "split": split, "checkpoint": request["checkpoint"],
             "checkpoint_step": request["checkpoint_step"], "mode": mode}
    total = members * len(models)
    return write_forecast(
        ic, out, compute, producer="earthsim.forecast.run_forecast", request=request, attrs=attrs,
        inputs=[*paths, entry.store], members=total if total > 1 else None,
        block_size=max(1, batch_size // total), progress=progress, overwrite=overwrite, keep=keep,
        description=f"forecast {record.model}{f' ×{len(paths)}' if several else ''} {entry.name}", variables=written)


def _check_same_forecaster(model, record: ExportRecord, other, other_record: ExportRecord, name: str,
                           where: str) -> None:
    """A multi-model ensemble's members read the same frames and write the same variables: the same model,
    configuration, training dataset, data spec, input frames and leads (they may differ in seed and training)."""
    for what, first, then in (("model", record.model, other_record.model),
                              ("model configuration", record.config, other_record.config),
                              ("training dataset", record.dataset, other_record.dataset),
                              ("data spec", model.spec.to_dict(), other.spec.to_dict()),
                              ("stride", record.stride, other_record.stride),
                              ("training leads", list(record.lead_strides), list(other_record.lead_strides))):
        if first != then:
            if isinstance(first, dict) and isinstance(then, dict):
                keys = sorted(k for k in set(first) | set(then) if first.get(k) != then.get(k))
                first, then = ({k: d.get(k) for k in keys} for d in (first, then))
            raise ValidationError(f"{name} differs from {where} in its {what} ({then} against {first}); the "
                                  "members of an ensemble are trainings of one experiment (other seeds)")


def _predicted_variables(ic: InitialConditions, spec: DataSpec, where: str) -> list[str]:
    """The variables the model predicts, whole (a forecast store holds whole variables), in channel order."""
    predicted = [name for name in ic.variables if name in {spec.channel_variables[i] for i in spec.output_index}]
    channels = [c for c, v in zip(ic.channels, ic.windows.channel_variables) if v in predicted]
    if channels != list(spec.outputs):
        raise ValidationError(f"{where} predicts channels {list(spec.outputs)}; a forecast store holds whole "
                              f"variables in the dataset's order, here {channels}")
    return predicted


def _lead_stride(record: ExportRecord, lead_stride: int | None, mode: str, steps: int, where: str) -> int:
    """Store frames between forecast frames: as asked, else the model's only training lead (iterative) or its
    stride (direct); a direct forecast's leads stay inside the range it was trained on."""
    trained = tuple(record.lead_strides)
    if lead_stride is None:
        if mode == "direct":
            lead_stride = record.stride
        elif len(trained) == 1:
            return trained[0]
        else:
            raise ValidationError(f"{where} was trained at leads of {list(trained)} store frames: choose one with "
                                  "lead_stride")
    if not isinstance(lead_stride, int) or isinstance(lead_stride, bool) or lead_stride < 1:
        raise ValidationError(f"lead_stride must be an integer ≥ 1, got {lead_stride!r}")
    if mode == "iterative" and lead_stride not in trained:
        raise ValidationError(f"{where} was trained at leads of {list(trained)} store frames, not {lead_stride}")
    if mode == "direct" and (lead_stride < min(trained) or steps * lead_stride > max(trained)):
        raise ValidationError(f"{where} was trained at leads of {min(trained)} to {max(trained)} store frames; a "
                              f"direct forecast of {steps} steps {lead_stride} frames apart reaches "
                              f"{steps * lead_stride}")
    return lead_stride


def _noise(ic: InitialConditions, block: Block, members: int, seed: int, shape: tuple[int, ...],
           perturbation: float, first: int = 0) -> np.ndarray:
    """Initial-condition noise ``[samples × members, *shape]`` of members ``first …``, one generator per
    (sequence, init, member)."""
    return np.stack([
        np.random.default_rng([seed, *sequence, frame, member]).standard_normal(shape, dtype=np.float32)
        * np.float32(perturbation)
        for sequence, frame in ic.samples(block) for member in range(first, first + members)])
