"""What earthsim needs at ERA5 0.25°: bytes, bandwidth and memory of each stage, computed rather than typed.

``python -m earthsim.scaling`` prints the Markdown tables of ``docs/scaling.md`` (the test suite checks
that the page holds exactly what this prints). Every number comes from a small function below, with its
formula and assumptions in its docstring; parameter counts come from building the model itself on the
``meta`` device, and the FSDP2 shard sizes from the shapes of its parameters.

Units: bytes, shown with binary prefixes (1 KiB = 1024 B, 1 GiB = 2³⁰ B, 1 TiB = 2⁴⁰ B), bandwidth in
GiB/s. The reference data are ERA5 at 0.25° on WeatherBench 2's equiangular grid with the poles (721 ×
1440) in float32, with Pangu-Weather's 69 channels: z, q, t, u, v on the 13 WeatherBench 2 pressure
levels plus msl, u10, v10 and t2m.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Sequence
from unittest import mock

import numpy as np

from earthsim.data.stats import DAYS_IN_YEAR, climatology_task_bytes, climatology_tile  # the job's own sizing

# -- the data -----------------------------------------------------------------------------------------

ERA5_SHAPE = (721, 1440)  #: latitude × longitude points of ERA5 at 0.25°, poles included
ERA5_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)  #: WeatherBench 2's 13 levels
ERA5_UPPER_AIR = ("z", "q", "t", "u", "v")
ERA5_SURFACE = ("msl", "u10", "v10", "t2m")
ERA5_STATIC = ("lsm", "orography", "latitude")  #: ClimaX's constant fields
FLOAT32 = 4
BF16 = 2
#: Years of the tables: ClimaX's training split (1979-2015) and WeatherBench 2's whole ERA5 (1959-2022).
PERIODS = ((1979, 2015), (1959, 2022))


def era5_channels(upper_air: Sequence[str] = ERA5_UPPER_AIR, levels: Sequence[int] = ERA5_LEVELS,
                  surface: Sequence[str] = ERA5_SURFACE) -> list[str]:
    """Channel names as earthsim makes them (variable then level, ``z500``): upper-air × levels, then surface."""
    return [f"{v}{level}" for v in upper_air for level in levels] + list(surface)


def field_bytes(height: int, width: int, itemsize: int = FLOAT32) -> int:
    """One 2-D field: ``height × width × itemsize``."""
    return height * width * itemsize


def frame_bytes(channels: int, height: int, width: int, itemsize: int = FLOAT32) -> int:
    """One time step of every channel: ``channels × field_bytes``."""
    return channels * field_bytes(height, width, itemsize)


def frames_between(first_year: int, last_year: int, step_hours: int) -> int:
    """Time steps from 1 January ``first_year`` 00:00 to 31 December ``last_year`` (inclusive), leap days counted."""
    hours = 24 * sum(366 if _leap(y) else 365 for y in range(first_year, last_year + 1))
    if 24 % step_hours:
        raise ValueError(f"step_hours must divide a day, got {step_hours}")
    return hours // step_hours


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def store_bytes(frames: int, channels: int, height: int, width: int, itemsize: int = FLOAT32) -> int:
    """Uncompressed size of ``frames`` time steps: ``frames × frame_bytes`` (Zarr compression, not counted here,
    only lowers it; static fields and coordinates are negligible beside it)."""
    return frames * frame_bytes(channels, height, width, itemsize)


def sample_bytes(t_in: int, t_out: int, channels: int, height: int, width: int, itemsize: int = FLOAT32) -> int:
    """What the loader reads from the store for one training window: ``(t_in + t_out)`` frames of every channel
    (each window is read on its own; static fields are read once per worker and cached, so not counted)."""
    return (t_in + t_out) * frame_bytes(channels, height, width, itemsize)


def loader_bandwidth(samples_per_s: float, bytes_per_sample: int) -> float:
    """Bytes per second the store must deliver for ``samples_per_s`` windows per second (whole job, all ranks)."""
    return samples_per_s * bytes_per_sample


# -- the model: parameters, and how FSDP2 shards them ---------------------------------------------------


def climax_spec(inputs: Sequence[str], static: Sequence[str], shape: tuple[int, int], global_poles: bool = True):
    """A DataSpec for ClimaX on a global latitude/longitude grid of ``shape`` (poles included, or ClimaX's
    5.625° grid without them), every input predicted; statistics are placeholders (they size nothing)."""
    from earthsim.data.grid import Axis, Grid
    from earthsim.models import DataSpec, Statistics

    height, width = shape
    step = 360.0 / width
    latitude = Axis(-90.0, 90.0, height) if global_poles else Axis(-90.0 + step / 2, 90.0 - step / 2, height)
    grid = Grid(latitude=latitude, longitude=Axis(0.0, 360.0 - step, width), longitude_convention="[0, 360)")
    n, k = len(inputs), len(static)
    statistics = Statistics(mean=(0.0,) * n, std=(1.0,) * n, diff_std=(1.0,) * n, static_mean=(0.0,) * k,
                            static_std=(1.0,) * k)
    derived = tuple(name for name in static if name in ("latitude", "longitude"))
    return DataSpec(inputs=tuple(inputs), outputs=tuple(inputs), grid=grid, static=tuple(static), derived=derived,
                    time_step=6.0, statistics=statistics)


@contextlib.contextmanager
def _no_position_codes():
    """Build without computing ClimaX's sin-cos position codes: their values size nothing, and at 0.25° and patch
    2 (260 thousand patches × 1024) computing them takes several GiB. The parameter keeps its shape; its memory
    is an untouched allocation (``np.empty``), never written."""
    from earthsim.models import climax

    def empty(dim: int, rows: int, columns: int) -> np.ndarray:
        return np.empty((rows * columns, dim), dtype=np.float32)

    with mock.patch.object(climax, "sincos_2d", empty):
        yield


def build_climax_on_meta(spec, **params):
    """ClimaX (its default config, changed by ``params``) built by earthsim for ``spec`` under
    ``torch.device("meta")``: parameters without storage, except the two sin-cos embeddings, which ClimaX makes
    from numpy arrays (the position codes left uncomputed, see above)."""
    import torch

    from earthsim.models import build_model

    with torch.device("meta"), _no_position_codes():
        return build_model("climax", params, spec)


def parameter_count(model) -> int:
    """Elements of every parameter of ``model``."""
    return sum(p.numel() for p in model.parameters())


def parameter_shapes(model) -> list[tuple[int, ...]]:
    """The shape of every parameter of ``model``."""
    return [tuple(p.shape) for p in model.parameters()]


def even_shard(elements: int, world: int) -> int:
    """Elements per rank if every element were spread evenly: ``ceil(elements / world)``."""
    return -(-elements // world)


def fsdp2_shard(shapes: Iterable[tuple[int, ...]], world: int) -> int:
    """Elements rank 0 holds under FSDP2 as earthsim applies it (``fully_shard`` with
    :func:`earthsim.models.parallelism.shard_dim`'s placement).

    FSDP2 chunks each parameter along its sharded dim as ``torch.chunk`` does: rank 0 gets
    ``ceil(d / world)`` slices of the other dims' elements, and every rank allocates a shard of that
    padded size. A parameter whose first dim is shorter than the world (ClimaX's ``[1, L, D]`` position
    embedding) is split along its longest dim instead, so no rank keeps it whole.
    """
    from earthsim.models.parallelism import shard_dim

    total = 0
    for shape in shapes:
        dim = shard_dim(tuple(shape), world) if shape else 0
        total += -(-shape[dim] // world) * math.prod(shape[:dim] + shape[dim + 1:]) if shape else 1
    return total


@dataclass(frozen=True)
class TrainingState:
    """Bytes of the training state per parameter element: float32 master weights, float32 gradients (FSDP2
    keeps the sharded parameter and its gradient in the original dtype; ``reduce_dtype`` float32), and AdamW's
    two float32 moments (``exp_avg``, ``exp_avg_sq``)."""

    parameter: int = 4
    gradient: int = 4
    adamw: int = 8  # two float32 moments

    @property
    def per_element(self) -> int:
        return self.parameter + self.gradient + self.adamw

    def bytes(self, elements: int) -> int:
        return elements * self.per_element


def unit_shapes(model) -> tuple[list[tuple[int, ...]], list[list[tuple[int, ...]]]]:
    """Parameter shapes of the root unit (parameters in none of the family's FSDP units: earthsim shards the root
    last, with ``reshard_after_forward=False``) and of each FSDP unit."""
    units, seen = [], set()
    for unit in model.fsdp_units():
        modules = list(unit) if isinstance(unit, (list, tuple)) else [unit]
        params = {id(p): p for m in modules for p in m.parameters()}
        seen |= set(params)
        units.append([tuple(p.shape) for p in params.values()])
    root = [tuple(p.shape) for p in model.parameters() if id(p) not in seen]
    return root, units


def fsdp2_buffer(shapes: Iterable[tuple[int, ...]], world: int) -> int:
    """Elements of the buffer FSDP2 allocates to all-gather a unit's parameters (and, in ``reduce_dtype``, to
    reduce-scatter its gradients): ``world ×`` the padded shard of :func:`fsdp2_shard`."""
    return world * fsdp2_shard(shapes, world)


# -- activations ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    """Bytes per element of what a training step saves for backward.

    ``compute``: activations (2 under bfloat16 autocast); ``norm``: the input LayerNorm saves (4: autocast
    runs layer_norm in float32, so it saves a float32 copy); ``stream``: the residual stream between blocks,
    which activation checkpointing keeps (2 when FSDP2 gathers bfloat16 parameters: the position embedding
    and every block output are bfloat16); ``mask``: a dropout mask (1 on CUDA, whose dropout saves a bool
    mask; a mask in the activation dtype on CPU)."""

    compute: int = 2
    norm: int = 4
    stream: int = 2
    mask: int = 1


GPU_BF16 = Precision()  #: FSDP2 with param_dtype bfloat16 on CUDA (earthsim's "auto" on a bf16 GPU)
FP32 = Precision(compute=4, norm=4, stream=4, mask=4)  #: float32 on CPU


def tokens(height: int, width: int, patch: int) -> int:
    """Patches of a ``height × width`` grid padded to whole ``patch × patch`` patches (earthsim's ClimaX pads
    by repeating edge rows): ``ceil(height / patch) × ceil(width / patch)``."""
    return -(-height // patch) * -(-width // patch)


def block_bytes_per_token(dim: int, heads: int, mlp_ratio: float = 4.0, precision: Precision = GPU_BF16,
                          dropout: bool = True) -> int:
    """Bytes one pre-norm ViT block (``earthsim.models.climax.Block``) saves for backward, per token.

    With ``h = dim``, ``m = mlp_ratio × h``: the two LayerNorm inputs ``2h × norm`` and their mean and rstd
    (``2 × 2 × 4``); the qkv input ``h``, q, k and v ``3h``, the attention output (also the projection's
    input) ``h``, the first MLP input ``h``, the GELU input ``m`` and the second MLP input ``m``, each
    × ``compute``; the attention's log-sum-exp (``heads × 4``: scaled_dot_product_attention's fused kernels
    keep no L × L matrix); with dropout, masks over ``h + m + h`` elements × ``mask``. Drop-path's per-sample
    masks are left out (a few bytes per sample)."""
    hidden = int(dim * mlp_ratio)
    saved = 2 * dim * precision.norm + 2 * 2 * 4
    saved += (dim + 3 * dim + dim + dim + hidden + hidden) * precision.compute
    saved += heads * 4
    if dropout:
        saved += (dim + hidden + dim) * precision.mask
    return saved


def encoder_bytes_per_token(dim: int, heads: int, variables: int, patch: int, precision: Precision = GPU_BF16
                            ) -> int:
    """Bytes ClimaX's variable tokenisation and aggregation save per patch token: the unfolded patches
    ``V p²``, the variable tokens twice (``2 V D``: the aggregation's two products each keep a layout of
    them), the aggregation weights twice (``2 V heads``), each head's pooled token (``heads D``) and the
    aggregated token (``D``), all × ``compute``."""
    return (variables * patch * patch + 2 * variables * dim + 2 * variables * heads + heads * dim + dim) \
        * precision.compute


def head_bytes_per_token(dim: int, decoder_depth: int, precision: Precision = GPU_BF16) -> int:
    """The final LayerNorm (input × ``norm`` + mean and rstd) and the head's saved inputs: per decoder layer
    its linear's input and GELU's input, then the last linear's input (``(2 depth + 1) D × compute``)."""
    return dim * precision.norm + 2 * 4 + (2 * decoder_depth + 1) * dim * precision.compute


@dataclass(frozen=True)
class Activations:
    """Activation bytes of one sample through ClimaX, with and without activation checkpointing."""

    tokens: int
    block: int  # one ViT block
    blocks: int  # every block, nothing checkpointed
    blocks_checkpointed: int  # each block keeps its input; one block's activations recomputed in backward
    encoder: int
    head: int

    @property
    def total(self) -> int:
        return self.encoder + self.blocks + self.head

    @property
    def total_checkpointed(self) -> int:
        return self.encoder + self.blocks_checkpointed + self.head


def climax_activations(model, precision: Precision = GPU_BF16) -> Activations:
    """Activation bytes per sample of a built ClimaX (read from its config, vocabulary and patch grid).

    Without checkpointing every block keeps what :func:`block_bytes_per_token` counts. earthsim's activation
    checkpointing wraps each FSDP unit (the tokeniser and each block): a block then keeps only its input
    (``L D × stream``), and backward recomputes one block at a time, so one block's activations are live
    at once. The aggregation and the head sit in the root unit and are not checkpointed."""
    from earthsim.models.climax import input_names

    config = model.config
    length = len(model.place.patch_ids)
    dropout = config.drop_rate > 0
    block = length * block_bytes_per_token(config.embed_dim, config.num_heads, config.mlp_ratio, precision, dropout)
    kept = length * config.embed_dim * precision.stream
    fed = len(input_names(model.spec, config.t_in))  # the variables tokenised: input frames' channels and static
    encoder = length * encoder_bytes_per_token(config.embed_dim, config.num_heads, fed, config.patch_size,
                                               precision)
    head = length * head_bytes_per_token(config.embed_dim, config.decoder_depth, precision)
    return Activations(tokens=length, block=block, blocks=config.depth * block,
                       blocks_checkpointed=config.depth * kept + block, encoder=encoder, head=head)


# -- statistics and climatology with dask -----------------------------------------------------------------

#: Bytes per chunk element a statistics task holds at its peak: the float32 chunk, its float64 copy and two
#: float64 temporaries (deviations or one-step differences, and their squares).
STATISTICS_BYTES_PER_ELEMENT = 4 + 8 + 8 + 8


def earthsim_time_chunk(levels: int, height: int, width: int) -> int:
    """Time steps per stored chunk of a variable with ``levels`` levels as ``earthsim ingest`` writes it
    (``earthsim.data.ingest.default_time_chunk``: about 1 MiB of whole time steps, at least one)."""
    import dask.array as da
    import xarray as xr

    from earthsim.data.conventions import LATITUDE_DIM, LEVEL_DIM, LONGITUDE_DIM, TIME_DIM
    from earthsim.data.ingest import default_time_chunk

    dims = (TIME_DIM, LEVEL_DIM, LATITUDE_DIM, LONGITUDE_DIM) if levels > 1 else (TIME_DIM, LATITUDE_DIM, LONGITUDE_DIM)
    shape = (2 ** 16, levels, height, width) if levels > 1 else (2 ** 16, height, width)
    lazy = xr.Dataset({"v": (dims, da.zeros(shape, dtype=np.float32, chunks=-1))})  # never computed
    return default_time_chunk(lazy, TIME_DIM)


def statistics_task_bytes(chunk_elements: int) -> int:
    """Peak bytes of one statistics task on a chunk: ``elements × STATISTICS_BYTES_PER_ELEMENT``."""
    return chunk_elements * STATISTICS_BYTES_PER_ELEMENT


def climatology_output_bytes(hours: int, channels: int, height: int, width: int) -> int:
    """The climatology store: float32 ``hour × 366 days × channel × grid``."""
    return hours * DAYS_IN_YEAR * channels * height * width * FLOAT32


# -- forecasts and scores ----------------------------------------------------------------------------------

#: WeatherBench 2's deterministic evaluation: initial times every 12 h through 2020, leads every 6 h to 10 days.
EVALUATION_YEAR, INIT_HOURS, LEAD_HOURS, FORECAST_LEADS = 2020, 12, 6, 40
#: ClimaX's output variables (one level each) and the 69 channels of the tables.
CLIMAX_OUTPUTS = ("z500", "t850", "t2m", "u10", "v10")
#: Initial times per block of ``earthsim forecast`` (``--batch-size``, its default and the smallest).
FORECAST_BATCHES = (32, 1)


def forecast_store_bytes(inits: int, leads: int, channels: int, height: int, width: int) -> int:
    """The forecast store (WeatherBench 2 layout, float32): ``inits × leads × channels`` fields."""
    return inits * leads * channels * field_bytes(height, width)


def forecast_block_bytes(batch: int, leads: int, channels: int, height: int, width: int) -> int:
    """Host memory of one block of ``earthsim forecast``: ``batch`` initial times' frames at every lead, float32
    (``run_forecast`` rolls a block out whole, then writes it into its region; the device holds the same frames
    beside the model). The store's chunks along time are these blocks."""
    return batch * leads * channels * field_bytes(height, width)


def valid_times(inits: int, leads: int, init_hours: int = INIT_HOURS, lead_hours: int = LEAD_HOURS) -> int:
    """Distinct valid times of ``inits`` initial times ``init_hours`` apart at leads ``lead_hours × (1..leads)``."""
    return (inits - 1) * init_hours // lead_hours + leads


def scorer_block_bytes(batch: int, leads: int, levels: int, height: int, width: int, acc: bool = True,
                       init_hours: int = INIT_HOURS, lead_hours: int = LEAD_HOURS) -> int:
    """Bytes the scorer holds for one variable (``levels`` levels) at a time: its forecast block (whole store
    chunks along time, at least ``earthsim.score.evaluation.BLOCK_BYTES``: at 0.25° one chunk, the ``batch``
    initial times of a forecast block), the truth frames valid in it and, for ACC, their climatology, float32 (the
    float64 pieces it converts at a time are 2 MiB)."""
    forecast = batch * leads * levels * field_bytes(height, width)
    truth = valid_times(batch, leads, init_hours, lead_hours) * levels * field_bytes(height, width)
    return forecast + truth * (2 if acc else 1)


# -- the tables --------------------------------------------------------------------------------------------


def fmt_bytes(value: float) -> str:
    """Bytes with a binary prefix, three significant figures."""
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value >= 2 ** power:
            return f"{value / 2 ** power:.3g} {unit}"
    return f"{value:.0f} B"


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class ModelCase:
    """A ClimaX configuration the tables size: a label, its grid, vocabulary and config changes."""

    label: str
    shape: tuple[int, int]
    inputs: tuple[str, ...]
    static: tuple[str, ...]
    params: dict
    global_poles: bool = True

    def build(self):
        """The model on the meta device."""
        return build_climax_on_meta(climax_spec(self.inputs, self.static, self.shape, self.global_poles),
                                    **self.params)


def model_cases() -> list[ModelCase]:
    """ClimaX's default config on its paper grid (the 108 M reference) and on ERA5 0.25° at patch 2 and 4."""
    from earthsim.models.climax import CLIMAX_VOCABULARY

    era5 = tuple(era5_channels())
    return [ModelCase("5.625° (32 × 64), 48 variables, patch 2 (the paper's)", (32, 64), CLIMAX_VOCABULARY[3:],
                      CLIMAX_VOCABULARY[:3], {}, global_poles=False),
            ModelCase(f"0.25° (721 × 1440), {len(era5) + len(ERA5_STATIC)} variables, patch 2", ERA5_SHAPE, era5,
                      ERA5_STATIC, {}),
            ModelCase(f"0.25° (721 × 1440), {len(era5) + len(ERA5_STATIC)} variables, patch 4", ERA5_SHAPE, era5,
                      ERA5_STATIC, {"patch_size": 4})]


WORLDS = (8, 32, 64)
SAMPLES_PER_S = (1, 8, 32, 128)
WORKER_THREADS = 4


def data_table() -> str:
    """Bytes of a field, a frame, a year and whole stores of ERA5 0.25°."""
    height, width = ERA5_SHAPE
    channels = len(era5_channels())
    rows = [("grid points (721 × 1440)", f"{height * width:,}"),
            ("one float32 field", f"{field_bytes(height, width):,} B ({fmt_bytes(field_bytes(height, width))})"),
            (f"one frame, {channels} channels", fmt_bytes(frame_bytes(channels, height, width)))]
    for step in (6, 1):
        frames = frames_between(2001, 2001, step)
        rows.append((f"one year ({frames:,} frames), {step}-hourly", fmt_bytes(store_bytes(frames, channels, height,
                                                                                             width))))
    for first, last in PERIODS:
        for step in (6, 1):
            frames = frames_between(first, last, step)
            rows.append((f"store {first}-{last} ({frames:,} frames), {step}-hourly",
                         fmt_bytes(store_bytes(frames, channels, height, width))))
    return _table(("ERA5 0.25°, float32, uncompressed", "bytes"), rows)


def loader_table() -> str:
    """Store bandwidth a training job needs at several window rates."""
    height, width = ERA5_SHAPE
    channels = len(era5_channels())
    sample = sample_bytes(1, 1, channels, height, width)
    rows = [(f"{rate}", f"{loader_bandwidth(rate, sample) / 2 ** 30:.3g} GiB/s") for rate in SAMPLES_PER_S]
    return (f"One window of ClimaX's training (1 input frame and 1 target frame, {channels} channels) reads "
            f"{fmt_bytes(sample)}.\n\n"
            + _table(("windows per second (whole job)", "store bandwidth"), rows))


def model_tables(cases: Sequence[ModelCase] | None = None) -> str:
    """Parameters, training state and FSDP2 buffers per GPU, and activations per sample, of each model case."""
    cases = model_cases() if cases is None else cases
    state = TrainingState()
    built = [(case, case.build()) for case in cases]
    rows = []
    for case, model in built:
        total = parameter_count(model)
        rows.append((case.label, f"{total:,}", f"{model.pos_embed.numel():,}", fmt_bytes(state.bytes(total))))
    config = built[0][1].config
    first = _table((f"ClimaX default config (embed {config.embed_dim}, depth {config.depth}, {config.num_heads} heads, "
                    f"decoder depth {config.decoder_depth})", "parameters", "of which position "
                    "embedding", f"parameters + gradients + AdamW, unsharded ({state.per_element} B each)"), rows)
    rows = []
    for case, model in built:
        shapes = parameter_shapes(model)
        total = parameter_count(model)
        root, units = unit_shapes(model)
        block = max(units, key=lambda u: sum(math.prod(s) for s in u))
        for world in WORLDS:
            rows.append((case.label, world, fmt_bytes(state.bytes(even_shard(total, world))),
                         fmt_bytes(state.bytes(fsdp2_shard(shapes, world))),
                         fmt_bytes(fsdp2_buffer(root, world) * BF16), fmt_bytes(fsdp2_buffer(root, world) * FLOAT32),
                         fmt_bytes(fsdp2_buffer(block, world) * BF16)))
    second = _table(("model", "GPUs", "state per GPU if spread evenly", "state per GPU (rank 0), earthsim's FSDP2",
                     "root unit: all-gather buffer (bf16)", "root unit: reduce-scatter buffer (fp32)",
                     "largest unit: all-gather buffer (bf16)"), rows)
    rows = []
    for case, model in built:
        act = climax_activations(model)
        rows.append((case.label, f"{act.tokens:,}", fmt_bytes(act.block), fmt_bytes(act.blocks),
                     fmt_bytes(act.blocks_checkpointed), fmt_bytes(act.encoder), fmt_bytes(act.head),
                     fmt_bytes(act.total), fmt_bytes(act.total_checkpointed)))
    third = _table(("model", "tokens", "one block", "all blocks", "all blocks, checkpointed", "tokenisation + "
                    "aggregation", "final norm + head", "per sample", "per sample, checkpointed"), rows)
    return first + "\n\n" + second + "\n\n" + third


def pipeline_table() -> str:
    """Memory of the statistics job per dask task and worker for three chunk layouts, and of the climatology job
    (which rechunks into tiles itself) for two training periods."""
    height, width = ERA5_SHAPE
    levels = len(ERA5_LEVELS)
    upper = earthsim_time_chunk(levels, height, width)
    surface = earthsim_time_chunk(1, height, width)
    tile = (1460, 1, 90, 180)  # a year of 6-hourly steps, one level, 8 × 8 tiles of the grid
    layouts = [(f"upper-air variable as `earthsim ingest` writes it: {upper} step × {levels} levels × 721 × 1440",
                upper * levels * height * width),
               (f"surface variable as `earthsim ingest` writes it: {surface} step × 721 × 1440",
                surface * height * width),
               ("rechunked: 1,460 steps × 1 level × 90 × 180", math.prod(tile))]
    rows = [(label, fmt_bytes(elements * FLOAT32), fmt_bytes(statistics_task_bytes(elements)),
             fmt_bytes(WORKER_THREADS * statistics_task_bytes(elements))) for label, elements in layouts]
    table = _table(("store chunk", "chunk (float32)", "statistics, per task",
                    f"statistics, per worker ({WORKER_THREADS} threads)"), rows)
    periods = []
    for first, last, step in (PERIODS[0] + (6,), PERIODS[1] + (1,)):
        samples = frames_between(first, last, step)
        tile_rows, columns = climatology_tile(samples, height, width)
        task = climatology_task_bytes(samples, height, width)
        periods.append((f"{first}–{last}, {step}-hourly", f"{samples:,}", f"{tile_rows} × {columns}",
                        fmt_bytes(samples * tile_rows * columns * FLOAT32), fmt_bytes(task),
                        fmt_bytes(WORKER_THREADS * task)))
    clim = _table(("training period", "samples", "tile (latitudes × longitudes)", "tile (float32)",
                   "climatology, per task", f"climatology, per worker ({WORKER_THREADS} threads)"), periods)
    channels = len(era5_channels())
    outputs = ", ".join(f"{step}-hourly data ({24 // step} hours of day): "
                        f"{fmt_bytes(climatology_output_bytes(24 // step, channels, height, width))}"
                        for step in (6, 1))
    return (table + "\n\n" + clim
            + f"\n\nThe climatology store of {channels} channels (float32, 366 days): {outputs}.")


def forecast_table() -> str:
    """The forecast store, one forecast block and the scorer's memory per variable, for ClimaX's 5 outputs and the
    69 channels, at the default and the smallest forecast batch."""
    height, width = ERA5_SHAPE
    inits = frames_between(EVALUATION_YEAR, EVALUATION_YEAR, INIT_HOURS)
    rows = []
    for label, channels, levels in ((f"ClimaX's {len(CLIMAX_OUTPUTS)} outputs ({', '.join(CLIMAX_OUTPUTS)})",
                                     len(CLIMAX_OUTPUTS), 1),
                                    (f"all {len(era5_channels())} channels", len(era5_channels()), len(ERA5_LEVELS))):
        for batch in FORECAST_BATCHES:
            rows.append((label, batch, fmt_bytes(forecast_store_bytes(inits, FORECAST_LEADS, channels, height, width)),
                         fmt_bytes(forecast_block_bytes(batch, FORECAST_LEADS, channels, height, width)),
                         levels, fmt_bytes(scorer_block_bytes(batch, FORECAST_LEADS, levels, height, width))))
    table = _table(("forecast", "`--batch-size`", f"forecast store ({inits} initial times × {FORECAST_LEADS} leads)",
                    "one forecast block (host memory)", "levels of the largest variable",
                    "scorer, per variable (forecast block + truth + climatology)"), rows)
    return (table + f"\n\nInitial times every {INIT_HOURS} h through {EVALUATION_YEAR}, leads every {LEAD_HOURS} h to "
            f"{FORECAST_LEADS * LEAD_HOURS // 24} days (WeatherBench 2's deterministic protocol), float32.")


def tables() -> str:
    """Every table of docs/scaling.md, as Markdown."""
    sections = [("Data volumes", data_table()), ("Loader bandwidth", loader_table()),
                ("Model: parameters, FSDP2 shards and activations", model_tables()),
                ("Statistics and climatology on dask", pipeline_table()),
                ("Forecasts and scores", forecast_table())]
    return "\n\n".join(f"### {title}\n\n{body}" for title, body in sections) + "\n"


def main() -> None:
    """Print the tables (``python -m earthsim.scaling``)."""
    print(tables(), end="")


if __name__ == "__main__":
    main()
