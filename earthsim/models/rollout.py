"""Rollouts under the model contract: the one loop shared by training, validation and forecasts.

Everything is in physical units (the model normalises itself). A rollout feeds back only what the
model predicts: the next input frames are its outputs placed in their input channels, completed
by the forcing channels read from data at the same valid times.
"""

from __future__ import annotations

import torch

from earthsim.errors import ValidationError
from earthsim.models.base import EarthsimModel, RecurrentModel
from earthsim.models.spec import DataSpec


def complete_frames(spec: DataSpec, outputs: torch.Tensor, forcings: torch.Tensor | None) -> torch.Tensor:
    """Input frames ``[B, T, C_in, H, W]`` from predicted ``outputs`` ``[B, T, C_out, H, W]`` and ``forcings``
    ``[B, T, C_forcing, H, W]`` (the input channels the model does not predict)."""
    if not spec.forcings:
        return outputs
    frames = outputs.new_empty((*outputs.shape[:2], len(spec.inputs), *outputs.shape[3:]))
    frames[:, :, spec.output_index] = outputs
    frames[:, :, spec.forcing_index] = forcings.to(outputs.dtype)
    return frames


def _check_forcings(spec: DataSpec, forcings: torch.Tensor | None, frames: int) -> None:
    if not spec.forcings:
        return
    if forcings is None or forcings.shape[1] < frames or forcings.shape[2] != len(spec.forcings):
        got = "none" if forcings is None else list(forcings.shape)
        raise ValidationError(f"a rollout of {frames} frames needs the forcing channels {list(spec.forcings)} at "
                              f"every predicted frame: [B, >= {frames}, {len(spec.forcings)}, H, W]; got {got}")


def rollout(model: EarthsimModel, x: torch.Tensor, frames: int, static: torch.Tensor | None = None,
            lead_time: torch.Tensor | None = None, forcings: torch.Tensor | None = None) -> torch.Tensor:
    """``frames`` frames ``[B, frames, C_out, H, W]`` chained from the inputs ``x`` ``[B, T_in, C_in, H, W]``.

    Each call yields ``T_out`` frames at once; ``lead_time`` ``[B]`` is the lead of one call (the
    spacing of the frames). A :class:`RecurrentModel` advances through ``init_state``/``step`` with its
    state carried; any other model is fed the last ``T_in`` frames of the history so far.
    ``forcings`` ``[B, >= frames, C_forcing, H, W]`` are the forcing channels at the valid times of
    the predicted frames. Gradients flow unless the caller disables them.
    """
    spec, t_in = model.spec, model.t_in
    _check_forcings(spec, forcings, frames)
    outputs, produced = [], 0
    state = model.init_state(x, static, lead_time) if isinstance(model, RecurrentModel) else None
    while produced < frames:
        if state is not None:
            window = None
            if spec.forcings:  # past the last frame asked for (the state after it is dropped), repeat the last
                window = forcings[:, produced:produced + model.t_out]
                window = torch.cat([window, window[:, -1:].expand(-1, model.t_out - window.shape[1], -1, -1, -1)], 1)
            out, state = model.step(state, window)
        else:
            out = model(x, static, lead_time)
        outputs.append(out)
        produced += out.shape[1]
        if state is None and produced < frames:
            window = forcings[:, produced - out.shape[1]:produced] if spec.forcings else None
            x = torch.cat([x, complete_frames(spec, out, window)], dim=1)[:, -t_in:]
    return torch.cat(outputs, dim=1)[:, :frames]


def direct(model: EarthsimModel, x: torch.Tensor, lead_times: torch.Tensor, static: torch.Tensor | None = None
           ) -> torch.Tensor:
    """Frames ``[B, L, C_out, H, W]`` at each of ``lead_times`` ``[L]``, each from ``x`` in one call of a
    lead-conditioned model (the first of its ``T_out`` frames), with no feedback."""
    if not model.lead_conditioned:
        raise ValidationError(f"{model.model_name} is not lead-conditioned: roll it out iteratively")
    frames = [model(x, static, lead.expand(x.shape[0]).to(x))[:, :1] for lead in lead_times]
    return torch.cat(frames, dim=1)
