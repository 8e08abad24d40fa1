"""ConvLSTM (Shi et al. 2015), the recurrent baseline of spatiotemporal predictive learning, as OpenSTL builds it.

Frames are cut into ``patch_size``² patches stacked as channels (``pixel_unshuffle``), run through a
stack of ConvLSTM cells, and the last cell's hidden state is mapped back to a frame by a 1 × 1
convolution and ``pixel_shuffle``. A cell's gates are convolutions of its input and hidden state:
``i, f, o = σ(W_x* x + W_h* h + b)``, ``g = tanh(W_x* x + W_h* h + b)``, ``c' = f ⊙ c + i ⊙ g``,
``h' = o ⊙ tanh(c')`` (no peephole terms, as in OpenSTL).

The model carries its state (the contract's :class:`RecurrentModel`): a forecast digests the
context once and then advances one frame per step, the same cost whatever the horizon. Training
is teacher-forced by default (the true previous frame is fed at every target step, OpenSTL's
limit of scheduled sampling); ``teacher_forcing: false`` trains on free-running rollouts instead.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from earthsim.errors import EarthsimError
from earthsim.models.base import Batch, FSDPUnit, RecurrentModel, RecurrentState, register_model
from earthsim.models.spec import DataSpec


@dataclasses.dataclass
class ConvLSTMConfig:
    """ConvLSTM: a stack of convolutional LSTM cells on patch-stacked frames."""

    t_in: int = dataclasses.field(default=1, metadata={"help": "context frames a forecast starts from"})
    t_out: int = dataclasses.field(default=1, metadata={"help": "frames per step (ConvLSTM predicts one)"})
    hidden: tuple[int, ...] = dataclasses.field(default=(64, 64), metadata={"help": "hidden channels per cell"})
    kernel_size: int = dataclasses.field(default=5, metadata={"help": "size of the gate convolutions (odd)"})
    patch_size: int = dataclasses.field(default=4, metadata={"help": "side of the patches stacked as channels"})
    residual: bool = dataclasses.field(default=False, metadata={"help": "predict the change from the last frame"})
    teacher_forcing: bool = dataclasses.field(
        default=True, metadata={"help": "train on true previous frames (else on the model's own rollout)"})

    def __post_init__(self):
        if self.t_out != 1:
            raise ValueError(f"t_out must be 1 (ConvLSTM predicts one frame per step), got {self.t_out}")
        if self.t_in < 1 or not self.hidden or min(self.hidden) < 1 or self.patch_size < 1:
            raise ValueError("t_in, hidden and patch_size must be positive")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")


class ConvLSTMCell(nn.Module):
    """One convolutional LSTM cell: the four gates from convolutions of the input and the hidden state."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int):
        super().__init__()
        self.hidden = hidden
        self.conv_x = nn.Conv2d(in_channels, 4 * hidden, kernel_size, padding=kernel_size // 2)
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = torch.split(self.conv_x(x) + self.conv_h(h), self.hidden, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


@register_model("convlstm", ConvLSTMConfig)
class ConvLSTM(RecurrentModel):
    """ConvLSTM on patch-stacked frames with a 1 × 1 convolution back to the predicted channels."""

    example_config = {"t_in": 2, "hidden": [8, 8], "kernel_size": 3, "patch_size": 2}

    def __init__(self, config: ConvLSTMConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.t_in, self.t_out, self.residual = config.t_in, config.t_out, config.residual
        p = config.patch_size
        channels = (len(spec.inputs) + len(spec.static)) * p * p
        self.cells = nn.ModuleList()
        for hidden in config.hidden:
            self.cells.append(ConvLSTMCell(channels, hidden, config.kernel_size))
            channels = hidden
        self.head = nn.Conv2d(channels, len(spec.outputs) * p * p, kernel_size=1, bias=False)

    def check_spec(self, spec: DataSpec) -> None:
        height, width = spec.shape
        if height % self.config.patch_size or width % self.config.patch_size:
            raise EarthsimError(f"convlstm: patch_size {self.config.patch_size} does not divide the {height}x{width} "
                                "grid")

    def fsdp_units(self) -> list[FSDPUnit]:
        return list(self.cells)

    # -- one step of the cell stack ---------------------------------------------------------------------

    def _zero_state(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p = self.config.patch_size
        batch, height, width = x.shape[0], x.shape[-2] // p, x.shape[-1] // p
        return [(x.new_zeros(batch, cell.hidden, height, width), x.new_zeros(batch, cell.hidden, height, width))
                for cell in self.cells]

    def _advance(self, hidden, frame: torch.Tensor, static: torch.Tensor | None):
        """Feed one frame ``[B, C_in, H, W]`` (network units); returns the new cell states and the network output
        for the next frame ``[B, 1, C_out, H, W]``."""
        p = self.config.patch_size
        net = frame if static is None else torch.cat([frame, static.to(frame.dtype)], dim=1)
        net = F.pixel_unshuffle(net, p)
        new = []
        for cell, (h, c) in zip(self.cells, hidden):
            h, c = cell(net, h, c)
            new.append((h, c))
            net = h
        # a new tensor, not a view: FSDP2 hooks the outputs of the methods it wraps
        return new, F.pixel_shuffle(self.head(net), p).unsqueeze(1).clone()

    def _run(self, x: torch.Tensor, static: torch.Tensor | None):
        """The cell states after the frames ``x`` ``[B, T, C_in, H, W]`` and the output after each (a list of
        ``[B, 1, C_out, H, W]``)."""
        hidden, outputs = self._zero_state(x), []
        for t in range(x.shape[1]):
            hidden, out = self._advance(hidden, x[:, t], static)
            outputs.append(out)
        return hidden, outputs

    # -- the contract -------------------------------------------------------------------------------------

    def network(self, x: torch.Tensor, static: torch.Tensor | None, lead_time: torch.Tensor | None) -> torch.Tensor:
        return self._run(x, static)[1][-1]

    def init_state(self, x: torch.Tensor, static: torch.Tensor | None = None,
                   lead_time: torch.Tensor | None = None) -> RecurrentState:
        static = self.check_inputs(x, static)
        x, static = self.to_network_units(x, static)
        hidden, outputs = self._run(x, static)
        return RecurrentState(hidden, static, self.next_network_frames(outputs[-1], x[:, -1:]))

    def step(self, state: RecurrentState, forcings: torch.Tensor | None = None) -> tuple[torch.Tensor, RecurrentState]:
        physical, frame = self.feedback_frame(state.prediction, forcings)
        hidden, out = self._advance(state.layers, frame[:, 0], state.static)
        return physical, RecurrentState(hidden, state.static, self.next_network_frames(out, frame))

    def training_loss(self, batch: Batch, unroll: int, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                      ) -> torch.Tensor:
        """Teacher forcing: the true frames in one pass (free-running rollouts with ``teacher_forcing: false``)."""
        if not self.config.teacher_forcing:
            return super().training_loss(batch, unroll, loss)
        return self.teacher_forced_loss(batch, unroll, loss,
                                        lambda frames, static: torch.cat(self._run(frames, static)[1], dim=1))
