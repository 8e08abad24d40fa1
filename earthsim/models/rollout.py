"""Autoregressive rollout under the model contract: the one loop shared by training and forecasting."""

from __future__ import annotations

import torch


def rollout(model: torch.nn.Module, x: torch.Tensor, frames: int, static: torch.Tensor | None = None,
            residual_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``frames`` frames ``[B, frames, C, H, W]`` chained from normalised inputs ``x`` ``[B, T_in, C, H, W]``.

    Each call's output (``[B, T_out, ...]``, several frames at once for multi-frame models) is
    appended to the history and the last ``T_in`` frames of the history are the next input.
    ``residual_scale`` (``diff_std / std``, shape ``[C]``) makes the output a change, in units of
    the one-step-difference std, added to the last input frame. Gradients flow unless the caller
    disables them.
    """
    t_in = x.shape[1]
    scale = None if residual_scale is None else residual_scale.to(x).view(1, 1, -1, 1, 1)
    outputs, produced = [], 0
    while produced < frames:
        out = model(x, static=static)
        if scale is not None:
            out = x[:, -1:] + out * scale
        outputs.append(out)
        produced += out.shape[1]
        x = torch.cat([x, out], dim=1)[:, -t_in:]
    return torch.cat(outputs, dim=1)[:, :frames]
