"""ClimaX (Nguyen et al. 2023, "ClimaX: A foundation model for weather and climate"), as microsoft/ClimaX builds it.

A vision transformer whose tokens are built per variable, so that one network reads any subset of a
vocabulary of named variables (which is what lets ClimaX pretrain across climate-model sources that
store different variables, and fine-tune on yet another set):

1. **Variable tokenisation**: each vocabulary variable has its own ``p × p`` patch embedding; the
   variables present are embedded together by one grouped convolution (microsoft/ClimaX's
   ``ParallelVarPatchEmbed``), ``[B, V, H, W] -> [B, V, L, D]`` for ``L`` patches, computed as one
   batched matmul over the unfolded patches (stride = kernel makes the two the same numbers).
2. A learned **variable embedding** per vocabulary variable is added (initialised with 1-D sin-cos
   codes of the variable's index, as the reference does).
3. **Variable aggregation**: at each patch, one cross-attention layer with a learned query (zeros at
   the start) attends over that patch's ``V`` variable tokens, leaving ``L`` tokens.
4. A learned **position embedding** (initialised with 2-D sin-cos codes of the patch row and column)
   and a **lead-time embedding** (a linear map of the lead in hours / 100) are added.
5. **ViT blocks** (pre-norm attention through ``scaled_dot_product_attention``, pre-norm MLP of
   ratio 4, drop-path rising linearly to ``drop_path`` over the depth, dropout ``drop_rate``), then a
   final LayerNorm.
6. A **head** (``decoder_depth`` × (linear, GELU), then a linear map to ``V_vocab × p × p``) predicts
   every vocabulary variable at every patch; the outputs are selected by name.

Parameter names and shapes follow microsoft/ClimaX's ``ClimaX`` with ``parallel_patch_embed=True``
(``token_embeds.proj_weights``, ``var_embed``, ``var_query``, ``var_agg.in_proj_weight``,
``pos_embed``, ``lead_time_embed``, ``blocks.{i}.attn.qkv``, ``head.{j}``): the reference model's
state dict loads into this one unchanged when both list the same variables in the same order (the
per-variable rows follow the vocabulary's order; :func:`carry_weights` matches them by name instead).
The reference's released checkpoints (``net.``-prefixed keys, per-variable ``token_embeds.{i}.proj``)
need their keys renamed first.

**Inputs.** The variables fed are the spec's input channels (``z500``, ``t2m``, ...) and static
fields; with ``t_in > 1`` an earlier input frame's channel is a variable of its own, named
``<channel>@-<k>`` for the frame ``k`` before the last (``t2m@-1``), with its own embeddings.
``vocabulary`` lists every name the model has weights for (default: what the data feeds); a
model built on one vocabulary fine-tunes on another through :func:`carry_weights`, which loads
shared per-variable weights by name.

**Grids.** The position embedding covers ``position_grid`` (default: the data grid). When the data
grid is a region of it (same spacing, cells aligned), only the patches covering the region are
tokenised and the position embedding is sliced to them: ClimaX's regional variant, in which a
model for the globe is fine-tuned on a region. A grid whose size does not divide by the patch
size (the UK's 33 × 49 at patch 2) is padded to whole patches by repeating its edge rows and
columns (ClimaX's regional rule, keeping only patches wholly inside, would crop to 32 × 48 and
lose a row and a column); predictions are cropped back, so every grid point is predicted and
scored on the original grid.

**Residual forecasts** (an earthsim option; the paper predicts the fields themselves). With
``residual`` the network predicts a change, by default from the last input frame. On hourly data
with a day of inputs, ``residual_base: day_before`` takes the change from the input frame 24 h
before the valid time instead (the same hour yesterday, in phase with the daily cycle at any lead),
and ``blend`` from a mix of the two whose weight on the last frame is the sigmoid of a linear map
of the scaled lead (learned; it starts at an even mix).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earthsim.data.derived import LOCAL_TIME
from earthsim.data.grid import GRID_TOLERANCE_DEG, Grid
from earthsim.errors import EarthsimError, ValidationError
from earthsim.models.base import EarthsimModel, FSDPUnit, register_model
from earthsim.models.layers import DropPath
from earthsim.models.spec import DataSpec

#: microsoft/ClimaX's default vocabulary (its configs' ``default_vars``) in earthsim's channel names: the three
#: constants, the surface variables, then z, u, v, t, r, q on seven pressure levels.
CLIMAX_LEVELS = (50, 250, 500, 600, 700, 850, 925)
CLIMAX_VOCABULARY = ("lsm", "orography", "latitude", "t2m", "u10", "v10",
                     *(f"{v}{level}" for v in ("z", "u", "v", "t", "r", "q") for level in CLIMAX_LEVELS))


@dataclass
class ClimaXConfig:
    """ClimaX: per-variable tokens, variable aggregation, a ViT, a per-variable head (defaults: the paper's)."""

    vocabulary: list[str] | None = dataclasses.field(default=None, metadata={
        "help": "names the model has per-variable weights for (channels, '<channel>@-<k>' for earlier input "
                "frames, static fields); default: exactly what the data feeds"})
    patch_size: int = dataclasses.field(default=2, metadata={"help": "side p of the p x p patches"})
    embed_dim: int = dataclasses.field(default=1024, metadata={"help": "token width D"})
    depth: int = dataclasses.field(default=8, metadata={"help": "ViT blocks"})
    decoder_depth: int = dataclasses.field(default=2, metadata={"help": "linear + GELU layers of the head"})
    num_heads: int = dataclasses.field(default=16, metadata={"help": "attention heads"})
    mlp_ratio: float = dataclasses.field(default=4.0, metadata={"help": "MLP width / D"})
    drop_path: float = dataclasses.field(default=0.1, metadata={"help": "stochastic depth of the last block"})
    drop_rate: float = dataclasses.field(default=0.1, metadata={"help": "dropout"})
    t_in: int = dataclasses.field(default=1, metadata={"help": "input frames (earlier ones are variables of their own)"})
    position_grid: Grid | None = dataclasses.field(default=None, metadata={
        "help": "the latitude/longitude grid the position embedding covers, when the data is a region of it "
                "(ClimaX's regional variant); default: the data grid"})
    residual: bool = dataclasses.field(default=False, metadata={"help": "predict the change from the last frame"})
    lead_time_scale: float = dataclasses.field(default=100.0, metadata={
        "help": "the lead-time embedding reads lead / lead_time_scale (the paper: hours / 100, for leads of 6 h to "
                "a week; leads of a few hours need a smaller scale to be told apart)"})
    valid_time_of_day: bool = dataclasses.field(default=False, metadata={
        "help": "also feed the local time of day at the valid time: the last input frame's local_time_sin/cos "
                "turned on by 2π lead / 24 h, two variables of their own (the network then reads the hour it "
                "predicts instead of composing it from the starting hour and the lead)"})
    residual_base: str = dataclasses.field(default="last", metadata={
        "help": "the frame a residual prediction is a change from: 'last' (the last input frame), 'day_before' (the "
                "input frame 24 h before the valid time) or 'blend' (a mix of the two, weighted by a learned "
                "function of the lead)"})

    def __post_init__(self):
        for key in ("patch_size", "embed_dim", "depth", "num_heads", "t_in"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        if self.decoder_depth < 0 or self.mlp_ratio <= 0:
            raise ValueError("decoder_depth must be ≥ 0 and mlp_ratio > 0")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError(f"embed_dim {self.embed_dim} must divide by num_heads ({self.num_heads}) and by 4 "
                             "(the 2-D sin-cos position codes)")
        if self.lead_time_scale <= 0:
            raise ValueError(f"lead_time_scale must be > 0, got {self.lead_time_scale}")
        for key in ("drop_path", "drop_rate"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if self.residual_base not in ("last", "day_before", "blend"):
            raise ValueError(f"residual_base must be 'last', 'day_before' or 'blend', got {self.residual_base!r}")
        if self.residual_base != "last" and not self.residual:
            raise ValueError(f"residual_base {self.residual_base!r} needs residual: true")
        if self.vocabulary is not None and len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError(f"vocabulary repeats a name: {self.vocabulary}")


# -- sin-cos codes (MAE's, as microsoft/ClimaX uses them) ------------------------------------------------


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """``[M, dim]`` codes: sin then cos of ``positions × 10000^(-2i/dim)``."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(np.asarray(positions, dtype=np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, rows: int, columns: int) -> np.ndarray:
    """``[rows × columns, dim]`` codes, row-major: the first half codes the column, the second the row (the
    reference's meshgrid puts the width coordinate first)."""
    column, row = np.meshgrid(np.arange(columns, dtype=np.float64), np.arange(rows, dtype=np.float64))
    return np.concatenate([sincos_1d(dim // 2, column), sincos_1d(dim // 2, row)], axis=1)


# -- layers ---------------------------------------------------------------------------------------


class VariableTokeniser(nn.Module):
    """Per-variable ``p × p`` patch embeddings of the variables present, as one grouped convolution (one group per
    variable, stride ``p``). With the stride equal to the kernel the convolution is one matrix product per
    variable over the unfolded patches, computed as a single batched matmul: the same numbers as ``F.conv2d(...,
    groups=V)`` (tested), and faster on CPU than either that or a loop of per-variable ``Conv2d`` at the
    paper default (``benchmarks/models.py``: 0.82 and 0.68 of their times). The weights keep the reference's ``[V, D, 1, p, p]`` layout."""

    def __init__(self, variables: int, patch_size: int, dim: int):
        super().__init__()
        self.patch_size, self.dim = patch_size, dim
        self.proj_weights = nn.Parameter(torch.empty(variables, dim, 1, patch_size, patch_size))
        self.proj_biases = nn.Parameter(torch.empty(variables, dim))
        bound = 1.0 / patch_size  # PyTorch's Conv2d bias rule: 1 / sqrt(fan_in), fan_in = p * p
        for v in range(variables):
            nn.init.trunc_normal_(self.proj_weights.data[v].view(dim, -1), std=0.02)
            nn.init.uniform_(self.proj_biases.data[v], -bound, bound)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, V, H, W]`` (variable ``i`` is vocabulary entry ``ids[i]``) to tokens ``[B, V, L, D]``
        (patches row-major)."""
        batch, count, height, width = x.shape
        p, dim = self.patch_size, self.dim
        patches = x.view(batch, count, height // p, p, width // p, p).permute(1, 0, 2, 4, 3, 5)
        patches = patches.reshape(count, -1, p * p)  # [V, B L, p p]
        weight = self.proj_weights[ids].view(count, dim, p * p).transpose(1, 2).to(x.dtype)
        tokens = torch.baddbmm(self.proj_biases[ids].unsqueeze(1).to(x.dtype), patches, weight)  # [V, B L, D]
        return tokens.view(count, batch, -1, dim).transpose(0, 1).contiguous()  # not a view: FSDP2 hooks need that


class VariableAggregation(nn.Module):
    """One cross-attention layer (``nn.MultiheadAttention``'s parameters) from a learned query over the variable
    tokens of each patch.

    The query is the same at every patch, so it is folded into the key projection: the logit of head
    ``h`` for token ``t`` is ``q_h · (W_k,h t + b_k,h) = t · (W_k,hᵀ q_h) + q_h · b_k,h``, and since the
    softmax weights sum to one the value projection applies once to each head's weighted sum of tokens,
    ``Σ_v a_v (W_v t_v + b_v) = W_v (Σ_v a_v t_v) + b_v``. The numbers are multi-head attention's (tested
    against ``nn.MultiheadAttention``); the work is that of projecting one token per patch and head
    instead of every variable's token (``V × D / heads`` times less: 48 × at the paper default).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``query`` ``[1, 1, D]`` attending over ``tokens`` ``[B, V, L, D]`` at each patch: ``[B, L, D]``."""
        batch, count, length, dim = tokens.shape
        heads, width = self.heads, dim // self.heads
        w_q, w_k, w_v = self.in_proj_weight.split(dim)
        b_q, b_k, b_v = self.in_proj_bias.split(dim)
        q = F.linear(query.reshape(1, dim), w_q, b_q).view(heads, width)
        keys = torch.einsum("hw,hwd->dh", q, w_k.view(heads, width, dim)) / math.sqrt(width)  # [D, heads]
        offset = (q * b_k.view(heads, width)).sum(-1) / math.sqrt(width)  # [heads]
        weights = torch.softmax(torch.matmul(tokens, keys.to(tokens.dtype)) + offset.to(tokens.dtype), dim=1)
        pooled = torch.einsum("bvlh,bvld->blhd", weights, tokens)  # each head's weighted sum of the tokens
        out = torch.einsum("blhd,hwd->blhw", pooled, w_v.view(heads, width, dim).to(tokens.dtype))
        return self.out_proj((out + b_v.view(heads, width).to(tokens.dtype)).reshape(batch, length, dim))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm's ``Attention``), through SDPA."""

    def __init__(self, dim: int, heads: int, drop: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """A pre-norm ViT block (timm 0.6's ``Block`` with ``qkv_bias=True``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# -- where the data sits on the position grid ---------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """The data grid on the patch grid of the position embedding: which patches cover it, and the padding that
    makes it whole patches (rows before, rows after, columns before, columns after)."""

    patch_rows: int  # patches of the position grid along latitude (y)
    patch_columns: int
    rows: range  # patch rows covering the data
    columns: range
    padding: tuple[int, int, int, int]

    @property
    def patch_ids(self) -> list[int]:
        """Row-major indices (into the position embedding) of the patches covering the data."""
        return [r * self.patch_columns + c for r in self.rows for c in self.columns]


def _offset(data: np.ndarray, parent: np.ndarray, axis: str, where: str) -> int:
    """Where the data's coordinates start among the parent's (same spacing, aligned, inside)."""
    if data.size > 1 and parent.size > 1 and not math.isclose(data[1] - data[0], parent[1] - parent[0],
                                                                rel_tol=0.0, abs_tol=GRID_TOLERANCE_DEG):
        raise EarthsimError(f"{where}: the data's {axis} spacing {data[1] - data[0]:g} differs from the position "
                            f"grid's {parent[1] - parent[0]:g}")
    start = int(np.argmin(np.abs(parent - data[0])))
    if start + data.size > parent.size or np.max(np.abs(parent[start:start + data.size] - data)) > GRID_TOLERANCE_DEG:
        raise EarthsimError(f"{where}: the data's {axis} ({data[0]:g} to {data[-1]:g}) is not a run of the position "
                            f"grid's points ({parent[0]:g} to {parent[-1]:g})")
    return start


def placement(data: Grid, position_grid: Grid | None, patch: int, where: str) -> Placement:
    """The data grid on the patch grid of ``position_grid`` (or of itself, padded at the end to whole patches)."""
    height, width = data.shape
    if position_grid is None:
        top = left = 0
        parent_height, parent_width = height, width
    else:
        if data.kind != "latlon" or position_grid.kind != "latlon":
            raise EarthsimError(f"{where}: position_grid needs latitude/longitude grids (data: {data.kind})")
        top = _offset(data.latitudes(), position_grid.latitudes(), "latitude", where)
        left = _offset(data.longitudes(), position_grid.longitudes(), "longitude", where)
        parent_height, parent_width = position_grid.shape
    rows = range(top // patch, -(-(top + height) // patch))
    columns = range(left // patch, -(-(left + width) // patch))
    padding = (top - rows.start * patch, rows.stop * patch - top - height,
               left - columns.start * patch, columns.stop * patch - left - width)
    return Placement(-(-parent_height // patch), -(-parent_width // patch), rows, columns, padding)


def input_names(spec: DataSpec, t_in: int, valid_time_of_day: bool = False) -> list[str]:
    """The variable names of the fields fed, in order: each input frame's channels (earlier frames as
    ``<channel>@-<k>``), the local time of day at the valid time (``<channel>@valid``) when asked, then the
    static fields."""
    names = []
    for frame in range(t_in):
        back = t_in - 1 - frame
        names += [f"{c}@-{back}" if back else c for c in spec.inputs]
    return names + ([f"{c}@valid" for c in LOCAL_TIME] if valid_time_of_day else []) + list(spec.static)


def valid_time_of_day(frame: torch.Tensor, spec: DataSpec, lead_time: torch.Tensor) -> torch.Tensor:
    """The local time-of-day fields ``[B, 2, H, W]`` at the valid time: those of the input ``frame``
    ``[B, C_in, H, W]`` (sine and cosine of the local solar time) turned on by 2π ``lead_time`` / 24 h."""
    sin, cos = (frame[:, spec.inputs.index(name)] for name in LOCAL_TIME)
    angle = (2 * torch.pi / 24.0 * lead_time.to(frame.dtype)).view(-1, 1, 1)
    return torch.stack([sin * torch.cos(angle) + cos * torch.sin(angle),
                        cos * torch.cos(angle) - sin * torch.sin(angle)], dim=1)


def frames_back_to_the_day_before(lead_time: torch.Tensor, time_step: float, t_in: int) -> torch.Tensor | None:
    """For each lead (hours), how many input frames before the last lies the one 24 h before the valid time; None
    unless every one is a whole number of frames within the ``t_in`` frames ``time_step`` hours apart."""
    back = (24.0 - lead_time) / time_step
    whole = back.round()
    if not bool(((whole >= 0) & (whole <= t_in - 1) & ((back - whole).abs() < 1e-4)).all()):
        return None
    return whole.long()


@register_model("climax", ClimaXConfig)
class ClimaX(EarthsimModel):
    """ClimaX: per-variable tokens aggregated by cross-attention, a ViT, a per-variable head (module docstring)."""

    lead_conditioned = True
    multi_source = True
    no_weight_decay = ("var_embed", "pos_embed")  # microsoft/ClimaX's pretraining and fine-tuning optimisers
    example_config = {"embed_dim": 32, "depth": 2, "num_heads": 4, "decoder_depth": 1, "patch_size": 2,
                      "drop_path": 0.0, "drop_rate": 0.0}
    example_grid = "latlon"

    def __init__(self, config: ClimaXConfig, spec: DataSpec):
        self.vocabulary = list(config.vocabulary) if config.vocabulary is not None else \
            list(dict.fromkeys(input_names(spec, config.t_in, config.valid_time_of_day) + list(spec.outputs)))
        self.t_in, self.t_out, self.residual = config.t_in, 1, config.residual
        super().__init__(config, spec)
        p, dim = config.patch_size, config.embed_dim
        self.place = placement(spec.grid, config.position_grid, p, "climax")
        vocabulary = len(self.vocabulary)
        self.token_embeds = VariableTokeniser(vocabulary, p, dim)
        self.var_embed = nn.Parameter(torch.from_numpy(sincos_1d(dim, np.arange(vocabulary))).float().unsqueeze(0))
        self.var_query = nn.Parameter(torch.zeros(1, 1, dim))
        self.var_agg = VariableAggregation(dim, config.num_heads)
        positions = sincos_2d(dim, self.place.patch_rows, self.place.patch_columns)
        self.pos_embed = nn.Parameter(torch.from_numpy(positions).float().unsqueeze(0))
        self.lead_time_embed = nn.Linear(1, dim)
        if config.residual_base == "blend":
            self.base_gate = nn.Linear(1, 1)  # the last frame's weight: sigmoid of a linear map of the scaled lead
        self.pos_drop = nn.Dropout(config.drop_rate)
        rates = np.linspace(0, config.drop_path, config.depth).tolist()  # no tensor: builds on the meta device
        self.blocks = nn.ModuleList(Block(dim, config.num_heads, config.mlp_ratio, config.drop_rate, rate)
                                    for rate in rates)
        self.norm = nn.LayerNorm(dim)
        head: list[nn.Module] = []
        for _ in range(config.decoder_depth):
            head += [nn.Linear(dim, dim), nn.GELU()]
        self.head = nn.Sequential(*head, nn.Linear(dim, vocabulary * p * p))
        for module in self.modules():  # the reference's _init_weights (the aggregation's in-projection stays Xavier)
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.register_buffer("patch_ids", torch.tensor(self.place.patch_ids, dtype=torch.long), persistent=False)
        self._ids: dict = {}

    @classmethod
    def params_for_sources(cls, params: dict, specs: list[DataSpec]) -> dict:
        if params.get("vocabulary") is not None or len(specs) < 2:
            return params
        t_in, valid = params.get("t_in", 1), params.get("valid_time_of_day", False)
        names = [n for spec in specs for n in input_names(spec, t_in, valid) + list(spec.outputs)]
        return {**params, "vocabulary": list(dict.fromkeys(names))}

    def check_spec(self, spec: DataSpec) -> None:
        if self.config.valid_time_of_day and not set(LOCAL_TIME) <= set(spec.inputs):
            raise EarthsimError(f"climax: valid_time_of_day needs the inputs {list(LOCAL_TIME)} (data.derived); got "
                                f"{list(spec.inputs)}")
        leads = torch.tensor(spec.lead_times or (spec.time_step,))
        if self.config.residual_base != "last" and (spec.time_units != "hours" or frames_back_to_the_day_before(
                leads, spec.time_step, self.config.t_in) is None):
            raise EarthsimError(f"climax: residual_base {self.config.residual_base!r} needs a day of input frames "
                                f"in hours reaching 24 h before every valid time; got {self.config.t_in} frames "
                                f"{spec.time_step:g} {spec.time_units} apart and leads {leads.tolist()}")
        names = input_names(spec, self.config.t_in, self.config.valid_time_of_day)
        unknown = [n for n in names + list(spec.outputs) if n not in self.vocabulary]
        if unknown:
            raise EarthsimError(f"climax: {unknown} are not in the model's vocabulary {self.vocabulary}; add them to "
                                "model.params.vocabulary")
        if hasattr(self, "place"):  # a further source: the same grid as the first
            spec.grid.check_same(self.specs[0].grid, "climax: a further source's grid against the model's")

    def lead_or_time_step(self, lead_time: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """``lead_time`` ``[B]``, or one time step for every sample of ``x`` when it is None."""
        return lead_time if lead_time is not None else torch.full((x.shape[0],), self.spec.time_step, device=x.device)

    def residual_base_frame(self, x: torch.Tensor, lead_time: torch.Tensor | None) -> torch.Tensor:
        """The last input frame, the input frame 24 h before the valid time ('day_before') or their mix ('blend')
        at each sample's ``lead_time`` ``[B]`` (hours; None: one time step)."""
        if self.config.residual_base == "last":
            return x[:, -1:]
        spec, batch = self.spec, x.shape[0]
        lead_time = self.lead_or_time_step(lead_time, x)
        back = frames_back_to_the_day_before(lead_time.float(), spec.time_step, self.t_in)
        if back is None:
            raise ValidationError(f"climax: residual_base {self.config.residual_base!r} reads the input frame 24 h "
                                  f"before the valid time; leads {lead_time.tolist()} h with {self.t_in} input "
                                  f"frames {spec.time_step:g} h apart do not all have one")
        day_before = x[torch.arange(batch, device=x.device), self.t_in - 1 - back].unsqueeze(1)
        if self.config.residual_base == "day_before":
            return day_before
        lead = lead_time.to(x.dtype).view(-1, 1) / self.config.lead_time_scale
        weight = torch.sigmoid(self.base_gate(lead)).view(batch, 1, 1, 1, 1)
        return weight * x[:, -1:] + (1 - weight) * day_before

    def fsdp_units(self) -> list[FSDPUnit]:
        return [self.token_embeds, *self.blocks]

    def initialise_from(self, pretrained: EarthsimModel) -> str:
        """Carry ``pretrained``'s weights over by variable name (:func:`carry_weights`)."""
        return carry_weights(self, pretrained.state_dict(), pretrained.vocabulary).summary()

    def variable_ids(self, names: list[str], device: torch.device) -> torch.Tensor:
        """Vocabulary indices of ``names`` (cached per source and device)."""
        key = (tuple(names), device)
        if key not in self._ids:
            self._ids[key] = torch.tensor([self.vocabulary.index(n) for n in names], dtype=torch.long, device=device)
        return self._ids[key]

    def encode(self, fields: torch.Tensor, names: list[str], lead_time: torch.Tensor) -> torch.Tensor:
        """Fields ``[B, V, H, W]`` (normalised, padded to whole patches) of the variables ``names`` and the lead
        ``[B]`` to the encoded patch tokens ``[B, L, D]``."""
        ids = self.variable_ids(names, fields.device)
        tokens = self.token_embeds(fields, ids) + self.var_embed[:, ids].unsqueeze(2)
        x = self.var_agg(self.var_query, tokens)
        x = x + self.pos_embed[:, self.patch_ids]
        x = x + self.lead_time_embed(lead_time.to(x.dtype).view(-1, 1) / self.config.lead_time_scale).unsqueeze(1)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def network(self, x: torch.Tensor, static: torch.Tensor | None, lead_time: torch.Tensor | None) -> torch.Tensor:
        spec, p = self.spec, self.config.patch_size
        batch, height, width = x.shape[0], *spec.shape
        lead_time = self.lead_or_time_step(lead_time, x)
        fields = [x.flatten(1, 2)] + ([valid_time_of_day(x[:, -1], spec, lead_time)]
                                      if self.config.valid_time_of_day else [])
        fields += [static.to(x.dtype)] if static is not None else []
        top, bottom, left, right = self.place.padding
        fields = F.pad(torch.cat(fields, dim=1), (left, right, top, bottom), mode="replicate")
        tokens = self.encode(fields, input_names(spec, self.t_in, self.config.valid_time_of_day), lead_time)
        patches = self.head(tokens)  # [B, L, V_vocab p p]
        rows, columns = len(self.place.rows), len(self.place.columns)
        vocabulary = len(self.vocabulary)
        frames = patches.view(batch, rows, columns, p, p, vocabulary).permute(0, 5, 1, 3, 2, 4)
        frames = frames.reshape(batch, vocabulary, rows * p, columns * p)
        out = frames[:, self.variable_ids(list(spec.outputs), x.device), top:top + height, left:left + width]
        return out.unsqueeze(1)


# -- fine-tuning from a model trained on other variables -----------------------------------------------


@dataclass(frozen=True)
class CarriedWeights:
    """What :func:`carry_weights` did: tensors copied whole, tensors copied variable by variable (with the
    variables that were new, left as initialised), and tensors left as initialised."""

    copied: tuple[str, ...]
    by_variable: tuple[str, ...]
    new_variables: tuple[str, ...]
    initialised: tuple[str, ...]

    def summary(self) -> str:
        new = f" ({len(self.new_variables)} new: {', '.join(self.new_variables)})" if self.new_variables else ""
        kept = f"; {len(self.initialised)} initialised: {', '.join(self.initialised)}" if self.initialised else ""
        return (f"{len(self.copied)} tensors copied, {len(self.by_variable)} copied by variable name{new}{kept}")


def _rows_by_variable(name: str) -> int | None:
    """The dim along which a tensor of ClimaX is laid out by vocabulary variable (None: not per variable)."""
    return {"token_embeds.proj_weights": 0, "token_embeds.proj_biases": 0, "var_embed": 1}.get(name)


def carry_weights(model: ClimaX, state: dict[str, torch.Tensor], vocabulary: list[str]) -> CarriedWeights:
    """Load ``state`` (a ClimaX state dict over ``vocabulary``) into ``model`` (whose vocabulary may differ).

    Per-variable tensors (patch embeddings, variable embeddings, the rows of the head's last layer)
    are copied for the variables both vocabularies share, by name; the model's new variables keep
    their initial values. Other tensors are copied when their shapes agree; a position embedding of
    another grid is refused (its positions would mean other places).
    """
    own = model.state_dict()
    shared = [v for v in model.vocabulary if v in vocabulary]
    new = tuple(v for v in model.vocabulary if v not in vocabulary)
    to_ids = torch.tensor([model.vocabulary.index(v) for v in shared], dtype=torch.long)
    from_ids = torch.tensor([vocabulary.index(v) for v in shared], dtype=torch.long)
    last = f"head.{len(model.head) - 1}"
    p2 = model.config.patch_size ** 2
    copied, by_variable, initialised = [], [], []
    unused = sorted(set(state) - set(own))
    if unused:
        raise EarthsimError(f"pretrained tensors {unused[:4]}{' ...' if len(unused) > 4 else ''} have no place in this "
                            "model: the architectures differ (depth, decoder_depth)")
    with torch.no_grad():
        for name, target in own.items():
            if name not in state:
                initialised.append(name)
                continue
            source = state[name]
            dim = _rows_by_variable(name)
            if dim is not None:  # per variable: all but the variable dim must agree
                same = source.shape[:dim] + source.shape[dim + 1:] == target.shape[:dim] + target.shape[dim + 1:]
            else:  # the head's last layer: (pixel, variable) rows of the same width
                same = not name.startswith(last + ".") or (
                    source.shape[1:] == target.shape[1:] and source.shape[0] == p2 * len(vocabulary))
            if not same:
                raise EarthsimError(f"pretrained tensor {name!r} is {list(source.shape)}, the model's "
                                    f"{list(target.shape)}: the architectures differ (embed_dim, patch_size)")
            if name in (f"{last}.weight", f"{last}.bias"):  # rows ordered (pixel, variable): variable fastest
                source = source.unflatten(0, (p2, len(vocabulary)))
                view = target.view(p2, len(model.vocabulary), *target.shape[1:])
                view[:, to_ids] = source[:, from_ids].to(target.dtype)
                by_variable.append(name)
            elif dim is not None:
                target.index_copy_(dim, to_ids, source.index_select(dim, from_ids).to(target.dtype))
                by_variable.append(name)
            elif source.shape == target.shape:
                target.copy_(source)
                copied.append(name)
            elif name == "pos_embed":
                raise EarthsimError(f"the pretrained position embedding has {source.shape[1]} patches, this model's "
                                    f"grid {target.shape[1]}: give position_grid so that the data is a region of the "
                                    "pretraining grid")
            else:
                raise EarthsimError(f"pretrained tensor {name!r} is {list(source.shape)}, the model's "
                                    f"{list(target.shape)}: the architectures differ (embed_dim, depth, heads, patch)")
    model.load_state_dict(own)
    return CarriedWeights(tuple(copied), tuple(by_variable), new, tuple(initialised))
