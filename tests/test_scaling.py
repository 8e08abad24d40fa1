"""earthsim.scaling against hand computations, against what torch itself saves and allocates, and against
docs/scaling.md (the page must hold exactly the tables ``python -m earthsim.scaling`` prints)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from earthsim import scaling
from earthsim.models import build_model
from earthsim.models.climax import CLIMAX_VOCABULARY, Block

ROOT = Path(__file__).resolve().parents[1]


def test_bytes_of_fields_frames_years_and_stores():
    assert scaling.field_bytes(721, 1440) == 721 * 1440 * 4 == 4_152_960
    channels = scaling.era5_channels()
    assert len(channels) == 5 * 13 + 4 == 69 and channels[0] == "z50" and channels[-1] == "t2m"
    assert scaling.frame_bytes(69, 721, 1440) == 69 * 4_152_960
    assert scaling.frames_between(2001, 2001, 6) == 365 * 4 and scaling.frames_between(2000, 2000, 1) == 366 * 24
    days = int((np.datetime64("2016-01-01") - np.datetime64("1979-01-01")).astype(int))  # numpy's calendar
    assert scaling.frames_between(1979, 2015, 6) == 4 * days
    assert scaling.store_bytes(10, 69, 721, 1440) == 10 * 69 * 721 * 1440 * 4
    assert scaling.sample_bytes(1, 1, 69, 721, 1440) == 2 * 69 * 4_152_960
    assert scaling.loader_bandwidth(8, 1000) == 8000
    with pytest.raises(ValueError):
        scaling.frames_between(2001, 2001, 5)


def test_training_state_and_shards():
    """AdamW keeps two float32 moments per parameter: 4 (weights) + 4 (gradients) + 2 × 4 bytes."""
    assert scaling.TrainingState().bytes(1000) == 1000 * 4 + 1000 * 4 + 2 * 1000 * 4
    for total, world in ((108_088_512, 8), (108_088_512, 64), (7, 8), (64, 64)):
        assert scaling.even_shard(total, world) == math.ceil(total / world)
    # FSDP2 splits each parameter along dim 0 (torch.chunk): [6, 5] gives 2 rows, [6] 2 values; [1, 8, 5], shorter
    # than the world along dim 0, is split along its longest dim the world divides (2 of its 8 rows of 5) instead
    # of staying whole; [1, 7, 5] has none (FSDP2 splits only dim 0 unevenly), so it stays whole
    assert scaling.fsdp2_shard([(1, 8, 5), (6, 5), (6,)], 4) == 2 * 5 + 2 * 5 + 2
    assert scaling.fsdp2_buffer([(1, 8, 5)], 4) == 4 * 2 * 5
    assert scaling.fsdp2_shard([(1, 7, 5)], 4) == 35
    assert scaling.fsdp2_shard([(64, 3)], 8) == scaling.even_shard(64 * 3, 8)  # divisible: nothing padded


def _paper_case():
    return scaling.ModelCase("paper", (32, 64), CLIMAX_VOCABULARY[3:], CLIMAX_VOCABULARY[:3], {}, global_poles=False)


def test_parameter_counts_come_from_the_model_built_on_meta():
    """108,088,512 is microsoft/ClimaX's count at its default config and variables; at 0.25° the count grows by
    the patches of the position embedding and by the 24 extra variables' embeddings, tokenisers and head rows."""
    paper = _paper_case().build()
    on_cpu = {n for n, p in paper.named_parameters() if p.device.type != "meta"}
    assert on_cpu == {"var_embed", "pos_embed"}  # made from numpy sin-cos codes; every other parameter has no storage
    assert scaling.parameter_count(paper) == 108_088_512
    era5 = scaling.model_cases()[1].build()
    d, p = 1024, 2
    tokens = math.ceil(721 / p) * (1440 // p)
    assert era5.pos_embed.shape == (1, tokens, d) and len(era5.place.patch_ids) == tokens
    per_variable = d * p * p + d + d + (d + 1) * p * p  # tokeniser weights and bias, variable embedding, head rows
    assert len(era5.vocabulary) - len(paper.vocabulary) == 72 - 48
    assert scaling.parameter_count(era5) - scaling.parameter_count(paper) == (tokens - 32 * 64 // 4) * d \
        + 24 * per_variable
    assert scaling.tokens(721, 1440, 4) == 181 * 360


def _saved_bytes(module, *inputs, autocast: bool = False) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``module(*inputs)``, parameters left out."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), context:
        module(*inputs)
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in parameters)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_block_activations_equal_what_autograd_saves(autocast, dropout):
    """The per-token formula against the bytes a ClimaX block saves, measured at two token counts (the
    difference leaves out weight copies and per-sample masks). On CPU dropout masks take the activation dtype;
    under autocast the residual stream stays float32 here and LayerNorm saves it as such."""
    torch.manual_seed(0)
    dim, heads, batch = 64, 4, 2
    block = Block(dim, heads, 4.0, dropout, 0.1).train()
    measured = [_saved_bytes(block, torch.randn(batch, n, dim, requires_grad=True), autocast=autocast)
                for n in (64, 128)]
    precision = scaling.Precision(compute=2, norm=4, stream=4, mask=2) if autocast else scaling.FP32
    expected = scaling.block_bytes_per_token(dim, heads, 4.0, precision, dropout > 0)
    assert (measured[1] - measured[0]) / (batch * 64) == expected


def test_whole_climax_activations_match_what_autograd_saves():
    """Tokenisation, aggregation, blocks and head together, float32 on CPU, two grid sizes and variable counts."""
    for variables in (3, 6):
        for shape in ((16, 32), (32, 64)):
            torch.manual_seed(0)
            names = tuple(f"c{i}" for i in range(variables))
            real = build_model("climax", {"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 2,
                                          "drop_path": 0.0, "drop_rate": 0.0},
                               scaling.climax_spec(names, ("latitude",), shape))
            x, static = torch.randn(2, 1, variables, *shape), torch.randn(1, *shape)
            measured = _saved_bytes(real.train(), x, static)
            estimate = 2 * scaling.climax_activations(real, scaling.FP32).total
            assert estimate == pytest.approx(measured, rel=2e-3), (variables, shape)


def test_checkpointing_keeps_block_inputs_and_one_block():
    model = _paper_case().build()
    act = scaling.climax_activations(model)
    assert act.tokens == 512
    assert act.blocks == 8 * act.block
    assert act.blocks_checkpointed == 8 * 512 * 1024 * 2 + act.block
    assert act.total_checkpointed < act.total


FAKE_WORLD = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp._fully_shard import _fsdp_collectives
    from earthsim import scaling
    from earthsim.models import ParallelismConfig, parallelize

    world = int(sys.argv[1])
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    buffers = []
    for cls in {c for c in vars(_fsdp_collectives).values() if isinstance(c, type) and "allocate" in vars(c)}:
        def allocate(self, size, *, dtype, device, _original=cls.allocate):
            buffers.append([type(self).__name__, int(torch.Size(size).numel())])
            return _original(self, size, dtype=dtype, device=device)
        cls.allocate = allocate
    torch.manual_seed(0)
    spec = scaling.climax_spec(("a", "b", "c"), ("latitude",), (8, 16))
    from earthsim.models import build_model
    model = build_model("climax", {"embed_dim": 32, "depth": 2, "num_heads": 4, "decoder_depth": 1,
                                   "drop_path": 0.0, "drop_rate": 0.0}, spec)
    shapes = scaling.parameter_shapes(model)
    root, units = scaling.unit_shapes(model)
    parallelize(model, init_device_mesh("cpu", (world,)), ParallelismConfig(param_dtype="float32"))
    held = sum(p._local_tensor.untyped_storage().nbytes() // 4 for p in model.parameters())
    model(torch.randn(2, 1, 3, 8, 16), torch.randn(1, 8, 16)).sum().backward()
    print(json.dumps({"held": held, "shard": scaling.fsdp2_shard(shapes, world), "buffers": buffers,
                      "expected": sorted(scaling.fsdp2_buffer(u, world) for u in [root] + units)}))
""")


@pytest.mark.distributed
@pytest.mark.parametrize("world", [8, 3])  # 3 divides none of the [1, L, D] embeddings' L and D: they stay whole
def test_fsdp2_shards_and_buffers_are_what_torch_allocates(world):
    """earthsim's parallelize on a fake world of ranks (rank 0, no communication): the padded shards held and
    the all-gather and reduce-scatter buffers FSDP2 allocates, unit by unit, against the formulas."""
    pytest.importorskip("torch.testing._internal.distributed.fake_pg")
    result = subprocess.run([sys.executable, "-c", FAKE_WORLD, str(world)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["held"] == out["shard"]
    expected = out["expected"]  # one buffer per unit: the root, the tokeniser and each block
    assert {n for kind, n in out["buffers"] if "AllGather" in kind} == set(expected)
    scattered = sorted(n for kind, n in out["buffers"] if "ReduceScatter" in kind)  # input, then output, per unit
    assert scattered == sorted(expected + [n // world for n in expected])


def test_climatology_and_statistics_memory():
    assert scaling.statistics_task_bytes(1000) == 1000 * (4 + 8 + 8 + 8)
    assert scaling.climatology_output_bytes(4, 69, 721, 1440) == 4 * 366 * 69 * 721 * 1440 * 4
    # a tile is whole rows while they fit in 64 MiB of float32, else part of one row
    assert scaling.climatology_tile(1000, 721, 1440) == (2 ** 26 // (1000 * 1440 * 4), 1440)
    assert scaling.climatology_tile(54_056, 721, 1440) == (1, 2 ** 26 // (54_056 * 4))
    points = 2 ** 26 // (54_056 * 4)
    assert scaling.climatology_task_bytes(54_056, 721, 1440) == 54_056 * points * (4 + 8 + 8 + 8) + 2 * 366 * points * 8
    # earthsim ingest writes whole time steps of about 1 MiB: one step, since one 0.25° field is already 4 MB
    assert scaling.earthsim_time_chunk(13, 721, 1440) == 1 and scaling.earthsim_time_chunk(1, 721, 1440) == 1
    assert scaling.earthsim_time_chunk(1, 32, 64) == 2 ** 20 // (32 * 64 * 4)


def test_each_climatology_task_holds_one_tile_whatever_the_chunks(monkeypatch):
    """What the climatology term counts, from earthsim's own climatology graph run by dask: a store chunked one time
    step per chunk is rechunked into tiles of every sample at part of a row (here 16 samples × 4 points), and the
    366-day float64 sums are made one tile at a time."""
    import dask
    import pandas as pd
    import xarray as xr
    from dask.callbacks import Callback

    from earthsim.data import stats

    monkeypatch.setattr(stats, "CLIMATOLOGY_TILE_BYTES", 16 * 4 * 4)
    assert stats.climatology_tile(16, 4, 8) == (1, 4)
    time = pd.date_range("2001-01-01", periods=16, freq="6h")
    data = xr.DataArray(np.random.default_rng(0).random((16, 4, 8), dtype=np.float32),
                        dims=("time", "latitude", "longitude"), coords={"time": time}).chunk({"time": 1})
    tiles, sums = [], []

    class Results(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            name = str(key[0] if isinstance(key, tuple) else key)
            if name.startswith("rechunk-merge"):
                tiles.append((result.shape, result.dtype))
            elif isinstance(result, np.ndarray) and result.dtype == np.float64 and 366 in result.shape:
                sums.append(result.size)

    with Results(), dask.config.set(scheduler="synchronous"):
        expected = stats._climatology(data, np.unique(data.time.dt.hour.values), stats.window_weights(61)).compute()
    # the tiles (and, in this tiny case, one intermediate of dask's rechunk plan within its chunk-size limit)
    assert tiles.count(((16, 1, 4), np.dtype(np.float32))) == 8
    assert all(np.prod(shape) * 4 <= dask.utils.parse_bytes(dask.config.get("array.chunk-size")) for shape, _ in tiles)
    assert sums and max(sums) == 366 * 4
    monkeypatch.setattr(stats, "CLIMATOLOGY_TILE_BYTES", 2 ** 26)  # one tile: the same climatology
    whole = stats._climatology(data, np.unique(data.time.dt.hour.values), stats.window_weights(61)).compute()
    xr.testing.assert_allclose(whole, expected, rtol=1e-6)


def test_fmt_bytes():
    assert scaling.fmt_bytes(4_152_960) == "3.96 MiB"
    assert scaling.fmt_bytes(2 ** 40 * 1.5) == "1.5 TiB"
    assert scaling.fmt_bytes(512) == "512 B"


def test_docs_hold_exactly_the_printed_tables():
    """docs/scaling.md quotes ``python -m earthsim.scaling`` between its two markers; regenerate and paste it when
    this fails."""
    printed = subprocess.run([sys.executable, "-m", "earthsim.scaling"], capture_output=True, text=True, check=True,
                             cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300).stdout
    page = (ROOT / "docs" / "scaling.md").read_text()
    begin, end = "<!-- begin: python -m earthsim.scaling -->\n", "<!-- end: python -m earthsim.scaling -->"
    assert page.count(begin) == 1 and page.count(end) == 1
    quoted = page.split(begin)[1].split(end)[0]
    assert quoted == printed


def test_a_store_named_by_url_gives_the_same_statistics_and_windows(tmp_path, monkeypatch):
    """A catalog entry whose store is an fsspec URL (``local://`` here: fsspec's local filesystem, read through
    zarr's FsspecStore as ``gs://`` and ``s3://`` are with gcsfs or s3fs installed; ``file://`` would be read as a
    path) yields the statistics and windows of the same store by path."""
    import yaml

    from earthsim import catalog
    from earthsim.data.stats import compute_statistics, load_statistics
    from earthsim.data.windows import WindowDataset
    from synthetic import write_waves_entry

    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path))
    local = write_waves_entry(tmp_path / "local")
    raw = yaml.safe_load(local.read_text())
    by_url = tmp_path / "url" / "waves.yaml"
    by_url.parent.mkdir()
    by_url.write_text(yaml.safe_dump({**raw, "store": f"local://{Path(raw['store']).resolve()}",
                                      "statistics": str(tmp_path / "url" / "waves.stats.zarr")}))
    entries = [catalog.get_entry(str(path)) for path in (local, by_url)]
    assert entries[1].store.startswith("local://") and entries[1].exists()
    for entry in entries:
        compute_statistics(entry, progress=False)
    statistics = [load_statistics(entry, progress=False) for entry in entries]
    assert statistics[0].equals(statistics[1])
    windows = [WindowDataset(entry, "train", t_in=2, t_out=1, statistics=statistics[0]) for entry in entries]
    assert len(windows[0]) == len(windows[1]) > 0
    for index in (0, len(windows[0]) - 1):
        a, b = windows[0][index], windows[1][index]
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])


def test_forecast_blocks_and_the_scorers_memory_are_what_the_code_holds(tmp_path, monkeypatch, stores):
    """A persistence forecast in blocks of 2 initial times: its store's chunks are the forecast blocks
    (forecast_block_bytes), and the scorer, one chunk per block, holds per variable the forecast block, the truth
    frames valid in it and their climatology (scorer_block_bytes), counted here from the arrays it reads."""
    from earthsim.forecast import persistence
    from earthsim.score import evaluation
    from test_score import _climatology, _weather_truth

    entry, truth = _weather_truth(tmp_path, n_times=40)
    height, width = truth.sizes["latitude"], truth.sizes["longitude"]
    leads, batch = 4, 2
    store = persistence(str(entry), "test", steps=leads, out=tmp_path / "p.zarr", batch_size=batch, progress=False)
    z = __import__("zarr").open_group(str(store), mode="r")["z"]
    assert z.chunks[0] == batch
    assert z.nbytes // z.nchunks == scaling.forecast_block_bytes(batch, leads, 1, height, width) * len(truth.level)

    held = {}
    read_block, truth_block, clim_frames = evaluation._read_block, evaluation._truth_block, evaluation.climatology_frames

    def note(name, array):
        held[name] = max(held.get(name, 0), array.nbytes)
        return array

    monkeypatch.setattr(evaluation, "BLOCK_BYTES", 1)  # a block per chunk, as at 0.25°, where one chunk is past it
    monkeypatch.setattr(evaluation, "_read_block", lambda *a: note("forecast", read_block(*a)))
    monkeypatch.setattr(evaluation, "_truth_block", lambda *a: (lambda r: (note("truth", r[0]), *r[1:]))(truth_block(*a)))
    monkeypatch.setattr(evaluation, "climatology_frames", lambda *a: note("climatology", clim_frames(*a)))
    evaluation.evaluate([f"p={store}"], str(entry), climatology=str(_climatology(tmp_path, truth)), progress=False,
                        metrics=["rmse", "acc"])
    levels = len(truth.level)
    assert set(held) == {"forecast", "truth", "climatology"}
    assert held["truth"] == held["climatology"] == scaling.valid_times(batch, leads, 6, 6) * levels * height * width * 4
    assert sum(held.values()) == scaling.scorer_block_bytes(batch, leads, levels, height, width, init_hours=6,
                                                            lead_hours=6)
