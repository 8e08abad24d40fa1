"""PredFormer (Tang et al. 2024, "PredFormer: Video Prediction Transformers without Recurrence or Convolution").

A pure transformer from ``T`` context frames to the next ``T`` frames in one shot:

1. **Patch embedding**: frames ``[B, T, C, H, W]`` cut into ``p × p`` patches by a reshape, each patch
   ``(p1 p2 c)`` mapped to ``dim`` by one linear layer (no convolution).
2. **Position**: one fixed 1-D sinusoidal table over the ``T·N`` tokens (frame-major), added once;
   not learned (a learned one did worse in the paper's ablation).
3. **Gated Transformer blocks** (GTB): ``x + DropPath(Attention(LN(x)))``, then
   ``x + DropPath(SwiGLU(LN(x)))`` with ``SwiGLU(x) = W₂ (SiLU(W_g x) ⊙ W_x x)``; a stack of blocks
   closes with a LayerNorm. Attention runs through ``scaled_dot_product_attention`` over one axis:
   spatial blocks over the ``N`` patches of a frame, temporal blocks over the ``T`` frames at a
   patch, full blocks over all ``T·N`` tokens.
4. **Arrangement** (the paper's nine, chosen by config): ``full`` (one stack of ``depth`` full
   blocks), ``fac-s-t`` / ``fac-t-s`` (a stack of ``depth`` spatial blocks, then one of ``depth``
   temporal, or the reverse), and the interleaved units repeated ``depth`` times, each of their
   blocks its own stack (closing LayerNorm included) as in yyyujintang/PredFormer: ``binary-st``
   (S, T), ``binary-ts``, ``triplet-sts``, ``triplet-tst``, ``quadruplet-stts``, ``quadruplet-tsst``.
5. **Head**: LayerNorm and a linear map of each token back to a ``p × p`` patch of the output
   channels (``(c p1 p2)``, the reference's order).

The model predicts ``T_out ≤ T_in`` frames (the first ``T_out`` of its ``T_in``); longer horizons
are rolled out by feeding the predicted chunk back (:func:`earthsim.models.rollout.rollout`). A grid
that the patch does not divide (the UK's 33 × 49) is padded to whole patches by repeating its edge
rows and columns, and the prediction cropped back.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from earthsim.models.base import EarthsimModel, FSDPUnit, register_model
from earthsim.models.layers import DropPath
from earthsim.models.spec import DataSpec

SPATIAL, TEMPORAL, FULL = "spatial", "temporal", "full"
_UNITS = {"binary-st": "st", "binary-ts": "ts", "triplet-sts": "sts", "triplet-tst": "tst",
          "quadruplet-stts": "stts", "quadruplet-tsst": "tsst"}
ARRANGEMENTS = ("full", "fac-s-t", "fac-t-s", *_UNITS)


def stacks(arrangement: str, depth: int) -> list[tuple[str, int]]:
    """The arrangement as stacks ``(axis, blocks)`` in order, each closed by its own LayerNorm."""
    if arrangement == "full":
        return [(FULL, depth)]
    if arrangement == "fac-s-t":
        return [(SPATIAL, depth), (TEMPORAL, depth)]
    if arrangement == "fac-t-s":
        return [(TEMPORAL, depth), (SPATIAL, depth)]
    axes = {"s": SPATIAL, "t": TEMPORAL}
    return [(axes[letter], 1) for _ in range(depth) for letter in _UNITS[arrangement]]


@dataclasses.dataclass
class PredFormerConfig:
    """PredFormer: gated transformer blocks over patches of a frame sequence, arranged spatially and temporally."""

    t_in: int = dataclasses.field(default=10, metadata={"help": "context frames T"})
    t_out: int = dataclasses.field(default=10, metadata={"help": "frames predicted per call (≤ t_in)"})
    arrangement: str = dataclasses.field(default="quadruplet-tsst", metadata={
        "help": "how spatial and temporal blocks are arranged", "choices": list(ARRANGEMENTS)})
    depth: int = dataclasses.field(default=6, metadata={
        "help": "blocks per stack (full, fac) or repetitions of the unit (binary, triplet, quadruplet); the paper "
                "matches sizes with full 24, fac 12, binary 12, triplet 8, quadruplet 6"})
    patch_size: int = dataclasses.field(default=8, metadata={"help": "side of the square patches"})
    dim: int = dataclasses.field(default=256, metadata={"help": "token width"})
    heads: int = dataclasses.field(default=8, metadata={"help": "attention heads"})
    dim_head: int = dataclasses.field(default=32, metadata={"help": "width of each head"})
    mlp_dim: int = dataclasses.field(default=1024, metadata={"help": "SwiGLU hidden width"})
    dropout: float = dataclasses.field(default=0.0, metadata={"help": "dropout in the SwiGLU"})
    attn_dropout: float = dataclasses.field(default=0.0, metadata={"help": "dropout after the attention projection"})
    drop_path: float = dataclasses.field(default=0.0, metadata={"help": "stochastic depth rate of every block"})
    residual: bool = dataclasses.field(default=False, metadata={"help": "predict the change from the last frame"})

    def __post_init__(self):
        if self.arrangement not in ARRANGEMENTS:
            raise ValueError(f"arrangement must be one of {list(ARRANGEMENTS)}, got {self.arrangement!r}")
        for key in ("t_in", "t_out", "depth", "patch_size", "dim", "heads", "dim_head", "mlp_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        if self.t_out > self.t_in:
            raise ValueError(f"t_out ({self.t_out}) must be ≤ t_in ({self.t_in}): PredFormer predicts as many frames "
                             "as it reads; longer horizons are rolled out")
        for key in ("dropout", "attn_dropout", "drop_path"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """The 1-D sinusoidal table ``[positions, dim]``: sin at even, cos at odd channels, at 10000^(-2⌊i/2⌋/dim)."""
    position = torch.arange(positions, dtype=torch.float64).view(-1, 1)
    channel = torch.arange(dim)
    angle = position / 10000.0 ** (2 * (channel // 2) / dim).to(torch.float64)
    return torch.where(channel % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


class Attention(nn.Module):
    """Multi-head self-attention: bias-free qkv projection to ``heads × dim_head``, SDPA, projection back."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.drop(self.out(out.transpose(1, 2).reshape(batch, length, self.heads * self.dim_head)))


class SwiGLU(nn.Module):
    """``W₂ (SiLU(W_g x) ⊙ W_x x)`` with dropout after the gate and after ``W₂``."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.gate, self.value, self.out = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(self.drop(F.silu(self.gate(x)) * self.value(x))))


class GatedBlock(nn.Module):
    """One Gated Transformer block: pre-norm attention and pre-norm SwiGLU, each on a drop-path residual."""

    def __init__(self, config: PredFormerConfig):
        super().__init__()
        dim = config.dim
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, config.heads, config.dim_head, config.attn_dropout)
        self.norm2, self.mlp = nn.LayerNorm(dim), SwiGLU(dim, config.mlp_dim, config.dropout)
        self.drop_path = DropPath(config.drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class GatedStack(nn.Module):
    """Blocks attending over one axis of tokens ``[B, T, N, D]`` (spatial: N, temporal: T, full: T·N), then a
    LayerNorm."""

    def __init__(self, config: PredFormerConfig, axis: str, blocks: int):
        super().__init__()
        self.axis = axis
        self.blocks = nn.ModuleList(GatedBlock(config) for _ in range(blocks))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, patches, dim = x.shape
        if self.axis == SPATIAL:
            seq = x.reshape(batch * frames, patches, dim)
        elif self.axis == TEMPORAL:
            seq = x.transpose(1, 2).reshape(batch * patches, frames, dim)
        else:
            seq = x.reshape(batch, frames * patches, dim)
        for block in self.blocks:
            seq = block(seq)
        if self.axis == TEMPORAL:  # normalised after the reshape, so the stack returns a new tensor, not a view
            return self.norm(seq.view(batch, patches, frames, dim).transpose(1, 2))
        return self.norm(seq.view(batch, frames, patches, dim))


@register_model("predformer", PredFormerConfig)
class PredFormer(EarthsimModel):
    """PredFormer: patch tokens of ``T`` frames through gated transformer stacks to the next ``T_out`` frames."""

    example_config = {"t_in": 2, "t_out": 2, "arrangement": "quadruplet-tsst", "depth": 1, "patch_size": 4, "dim": 16,
                      "heads": 2, "dim_head": 8, "mlp_dim": 32}

    def __init__(self, config: PredFormerConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.t_in, self.t_out, self.residual = config.t_in, config.t_out, config.residual
        p = config.patch_size
        height, width = spec.shape
        self.rows, self.columns = -(-height // p), -(-width // p)
        self.in_channels, self.out_channels = len(spec.inputs) + len(spec.static), len(spec.outputs)
        self.embed = nn.Linear(self.in_channels * p * p, config.dim)
        table = sinusoidal_table(config.t_in * self.rows * self.columns, config.dim)
        self.register_buffer("position", table.view(1, config.t_in, self.rows * self.columns, config.dim),
                             persistent=False)
        self.stacks = nn.ModuleList(GatedStack(config, axis, blocks) for axis, blocks in
                                    stacks(config.arrangement, config.depth))
        self.head_norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, self.out_channels * p * p)
        self.stacks.apply(self._init_weights)  # the embedding and head keep PyTorch's default, as in the reference

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """The reference's initialisation of its transformer blocks: truncated normal (std 0.02) linear weights,
        zero biases."""
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def fsdp_units(self) -> list[FSDPUnit]:
        return list(self.stacks)

    def network(self, x: torch.Tensor, static: torch.Tensor | None, lead_time: torch.Tensor | None) -> torch.Tensor:
        p = self.config.patch_size
        batch, frames, _, height, width = x.shape
        if static is not None:
            x = torch.cat([x, static.to(x.dtype).unsqueeze(1).expand(-1, frames, -1, -1, -1)], dim=2)
        pad_bottom, pad_right = self.rows * p - height, self.columns * p - width
        if pad_bottom or pad_right:
            x = F.pad(x.flatten(0, 1), (0, pad_right, 0, pad_bottom), mode="replicate").unflatten(0, (batch, frames))
        # [B, T, C, (h p1), (w p2)] -> [B, T, h w, (p1 p2 c)]
        tokens = x.view(batch, frames, self.in_channels, self.rows, p, self.columns, p)
        tokens = tokens.permute(0, 1, 3, 5, 4, 6, 2).reshape(batch, frames, self.rows * self.columns, -1)
        tokens = self.embed(tokens) + self.position.to(tokens.dtype)
        for stack in self.stacks:
            tokens = stack(tokens)
        out = self.head(self.head_norm(tokens[:, :self.t_out]))
        # [B, T, h w, (c p1 p2)] -> [B, T, c, (h p1), (w p2)], cropped to the grid
        out = out.view(batch, self.t_out, self.rows, self.columns, self.out_channels, p, p)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, self.t_out, self.out_channels, self.rows * p,
                                                       self.columns * p)
        return out[..., :height, :width]
