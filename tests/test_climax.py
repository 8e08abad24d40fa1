"""ClimaX against its paper and microsoft/ClimaX: parameter count at the paper default, each layer against an
independent formulation (a per-variable Conv2d loop, nn.MultiheadAttention, timm's block written out), invariance
to the order variables are fed in, fine-tuning on another variable set, grids that do not divide by the patch,
the regional variant, and multi-source training through the real trainer. When a checkout of microsoft/ClimaX is
named by ``EARTHSIM_CLIMAX_REFERENCE`` (and timm 0.6 imports), the reference model itself is compared."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
import yaml
from torch import nn

from conftest import small_spec, write_store_entry
from earthsim.data.grid import Axis, Grid, cos_latitude_weights, latitude_weights
from earthsim.data.stats import compute_statistics
from earthsim.errors import EarthsimError, ValidationError
from earthsim.models import build_model
from earthsim.data.derived import LOCAL_TIME, frame_fields
from earthsim.models.climax import (CLIMAX_LEVELS, CLIMAX_VOCABULARY, carry_weights, input_names, placement,
                                    valid_time_of_day)
from earthsim.train.config import from_mapping
from earthsim.train.trainer import Trainer

SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 4, "decoder_depth": 2, "patch_size": 2, "drop_path": 0.0,
         "drop_rate": 0.0}


def paper_spec(device=None):
    """The 5.625° grid (32 × 64, no poles) with microsoft/ClimaX's default variables: 45 inputs, 3 constants."""
    constants = CLIMAX_VOCABULARY[:3]
    grid = Grid(latitude=Axis(-87.1875, 87.1875, 32), longitude=Axis(0.0, 354.375, 64),
                longitude_convention="[0, 360)")
    spec = small_spec(inputs=CLIMAX_VOCABULARY[3:], static=constants, grid="latlon", shape=(32, 64))
    return spec.__class__(**{**spec.__dict__, "grid": grid})


def test_paper_default_has_the_reference_parameter_count():
    """108,088,512 is what microsoft/ClimaX's ClimaX(default_vars) has (embed 1024, depth 8, 16 heads, patch 2)."""
    assert len(CLIMAX_VOCABULARY) == 48 and CLIMAX_LEVELS == (50, 250, 500, 600, 700, 850, 925)
    with torch.device("meta"):
        model = build_model("climax", {}, paper_spec())
    assert sum(p.numel() for p in model.parameters()) == 108_088_512
    assert model.config.embed_dim == 1024 and model.config.depth == 8 and model.config.num_heads == 16
    assert model.pos_embed.shape == (1, 16 * 32, 1024)


def small_model(inputs=("a", "b", "c"), outputs=None, shape=(8, 16), seed=0, **config):
    torch.manual_seed(seed)
    spec = small_spec(inputs=inputs, outputs=outputs, grid="latlon", shape=shape)
    return build_model("climax", {**SMALL, **config}, spec).eval()


def test_grouped_tokeniser_equals_a_conv2d_per_variable():
    model = small_model(inputs=("a", "b", "c", "d"))
    ids = torch.tensor([2, 0, 3])  # a subset, out of order
    x = torch.randn(2, 3, 8, 16)
    tokens = model.token_embeds(x, ids)
    for i, v in enumerate(ids.tolist()):
        conv = nn.Conv2d(1, 32, 2, stride=2)
        conv.weight.data.copy_(model.token_embeds.proj_weights[v])
        conv.bias.data.copy_(model.token_embeds.proj_biases[v])
        expected = conv(x[:, i:i + 1]).flatten(2).transpose(1, 2)  # [B, L, D], patches row-major
        torch.testing.assert_close(tokens[:, i], expected, rtol=1e-5, atol=1e-6)
    grouped = F.conv2d(x, model.token_embeds.proj_weights[ids].flatten(0, 1),
                       model.token_embeds.proj_biases[ids].flatten(), stride=2, groups=3)
    torch.testing.assert_close(tokens, grouped.unflatten(1, (3, 32)).flatten(3).transpose(2, 3), rtol=1e-5, atol=1e-6)


def test_variable_aggregation_equals_multihead_attention():
    model = small_model()
    agg = model.var_agg
    torch.nn.init.normal_(model.var_query)  # a non-zero query, so that the test sees the query path
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    mha.in_proj_weight.data.copy_(agg.in_proj_weight)
    mha.in_proj_bias.data.copy_(agg.in_proj_bias)
    mha.out_proj.load_state_dict(agg.out_proj.state_dict())
    tokens = torch.randn(2, 5, 7, 32)  # [B, V, L, D]
    got = agg(model.var_query, tokens)
    per_patch = tokens.permute(0, 2, 1, 3).reshape(14, 5, 32)
    expected, _ = mha(model.var_query.expand(14, -1, -1), per_patch, per_patch)
    torch.testing.assert_close(got, expected.view(2, 7, 32), rtol=1e-5, atol=1e-6)


def test_vit_block_equals_timms_formula_written_out():
    block = small_model().blocks[0]
    x = torch.randn(2, 10, 32)

    def attention(h):
        qkv = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias).view(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
        q, k, v = qkv
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
        return F.linear((weights @ v).transpose(1, 2).reshape(2, 10, 32), block.attn.proj.weight, block.attn.proj.bias)

    def mlp(h):
        return block.mlp.fc2(F.gelu(block.mlp.fc1(h)))

    h = x + attention(F.layer_norm(x, (32,), block.norm1.weight, block.norm1.bias))
    expected = h + mlp(F.layer_norm(h, (32,), block.norm2.weight, block.norm2.bias))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_initial_query_is_zero_and_embeddings_are_sincos():
    model = small_model()
    assert not model.var_query.detach().any()
    pos = model.pos_embed[0].detach().double()  # patch (row r, column c) at r * 8 + c on the 4 x 8 patch grid
    omega = 1.0 / 10000 ** (np.arange(8) / 8.0)
    r, c = 3, 5
    np.testing.assert_allclose(pos[r * 8 + c, :8].numpy(), np.sin(c * omega), atol=1e-6)  # column code first
    np.testing.assert_allclose(pos[r * 8 + c, 16:24].numpy(), np.sin(r * omega), atol=1e-6)


def test_the_order_variables_are_fed_in_does_not_matter():
    model = small_model(inputs=("a", "b", "c", "d"))
    x = torch.randn(2, 4, 8, 16)
    names = ["a", "b", "c", "d"]
    order = [2, 0, 3, 1]
    lead = torch.tensor([6.0, 24.0])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x[:, order], [names[i] for i in order], lead),
                                   model.encode(x, names, lead), rtol=1e-5, atol=1e-5)


def test_lead_time_enters_as_hours_over_100():
    model = small_model()
    seen = []
    model.lead_time_embed.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    with torch.no_grad():
        model(torch.randn(2, 1, 3, 8, 16), None, torch.tensor([6.0, 162.0]))
    torch.testing.assert_close(seen[0], torch.tensor([[0.06], [1.62]]))


def test_fine_tuning_on_another_variable_set_carries_shared_weights_by_name():
    pretrained = small_model(inputs=("h", "u", "v"), seed=0)
    finetune = small_model(inputs=("h", "u", "v"), vocabulary=["h", "u", "v", "vorticity"], seed=1)
    done = carry_weights(finetune, pretrained.state_dict(), pretrained.vocabulary)
    assert done.new_variables == ("vorticity",)
    assert set(done.by_variable) == {"token_embeds.proj_weights", "token_embeds.proj_biases", "var_embed",
                                     "head.4.weight", "head.4.bias"}
    assert "pos_embed" in done.copied and "blocks.1.mlp.fc2.weight" in done.copied and not done.initialised
    assert "1 new: vorticity" in done.summary()
    new = finetune.vocabulary.index("vorticity")
    initial = small_model(inputs=("h", "u", "v"), vocabulary=["h", "u", "v", "vorticity"], seed=1)
    torch.testing.assert_close(finetune.token_embeds.proj_weights[new], initial.token_embeds.proj_weights[new])
    x = torch.randn(2, 1, 3, 8, 16)
    with torch.no_grad():  # fed only the shared variables, the fine-tuning model predicts exactly as the pretrained
        torch.testing.assert_close(finetune(x, None, torch.tensor([6.0, 6.0])),
                                   pretrained(x, None, torch.tensor([6.0, 6.0])), rtol=1e-5, atol=1e-5)


def test_weights_of_another_architecture_are_refused_by_name():
    pretrained = small_model(inputs=("h", "u"))
    with pytest.raises(EarthsimError, match=r"'\w+' is \[.*32.*\], the model's \[.*64.*\]: the architectures "
                                            r"differ \(embed_dim"):
        carry_weights(small_model(inputs=("h", "u"), embed_dim=64), pretrained.state_dict(), pretrained.vocabulary)
    with pytest.raises(EarthsimError, match=r"pretrained tensors \['blocks.1.attn.proj.bias'.* have no place"):
        carry_weights(small_model(inputs=("h", "u"), depth=1), pretrained.state_dict(), pretrained.vocabulary)


def test_a_position_embedding_of_another_grid_is_refused():
    pretrained = small_model(shape=(8, 16))
    other = small_model(shape=(16, 32))
    with pytest.raises(EarthsimError, match="position embedding has 32 patches, this model's grid 128"):
        carry_weights(other, pretrained.state_dict(), pretrained.vocabulary)


def test_a_grid_that_does_not_divide_by_the_patch_is_padded_and_predicted_whole():
    """The UK's 33 x 49 at patch 2: padded by repeating the last row and column to 34 x 50, cropped back."""
    grid = Grid(latitude=Axis(49.0, 57.0, 33), longitude=Axis(-8.0, 4.0, 49), longitude_convention="[-180, 180)")
    place = placement(grid, None, 2, "test")
    assert place.padding == (0, 1, 0, 1) and (len(place.rows), len(place.columns)) == (17, 25)
    spec = small_spec(inputs=("t2m",), grid="latlon", shape=(33, 49))
    spec = spec.__class__(**{**spec.__dict__, "grid": grid})
    model = build_model("climax", SMALL, spec).eval()
    x = torch.randn(2, 1, 1, 33, 49)
    with torch.no_grad():
        out = model(x, None, torch.tensor([1.0, 24.0]))
        assert out.shape == (2, 1, 1, 33, 49) and bool(torch.isfinite(out).all())
        padded = F.pad(x[:, 0], (0, 1, 0, 1), mode="replicate")
        assert torch.equal(padded[..., -1, :-1], x[:, 0, :, -1])  # what the tokeniser sees at the added row


def test_regional_variant_tokenises_only_the_patches_inside_the_box():
    globe = Grid(latitude=Axis(-87.1875, 87.1875, 32), longitude=Axis(0.0, 354.375, 64),
                 longitude_convention="[0, 360)")
    box = Grid(latitude=Axis(-87.1875 + 5.625 * 20, -87.1875 + 5.625 * 27, 8),
               longitude=Axis(5.625 * 10, 5.625 * 21, 12), longitude_convention="[0, 360)")
    place = placement(box, globe, 2, "test")
    assert place.rows == range(10, 14) and place.columns == range(5, 11) and place.padding == (0, 0, 0, 0)
    assert place.patch_ids[:3] == [10 * 32 + 5, 10 * 32 + 6, 10 * 32 + 7] and len(place.patch_ids) == 24
    spec = small_spec(inputs=("t2m",), grid="latlon", shape=(8, 12))
    spec = spec.__class__(**{**spec.__dict__, "grid": box})
    torch.manual_seed(0)
    model = build_model("climax", {**SMALL, "position_grid": globe}, spec)
    assert model.pos_embed.shape[1] == 16 * 32  # the globe's patches; the box uses 24 of them
    torch.manual_seed(0)
    whole = build_model("climax", SMALL, small_spec(inputs=("t2m",), grid="latlon", shape=(32, 64)))
    torch.testing.assert_close(model.pos_embed[:, model.patch_ids], whole.pos_embed[:, place.patch_ids])
    shifted = Grid(latitude=Axis(0.1, 0.1 + 5.625 * 7, 8), longitude=Axis(5.625 * 10, 5.625 * 21, 12),
                   longitude_convention="[0, 360)")
    with pytest.raises(EarthsimError, match="is not a run of the position grid's points"):
        placement(shifted, globe, 2, "climax")


def test_history_frames_are_variables_of_their_own():
    spec = small_spec(inputs=("t2m",), static=("latitude",), grid="latlon", shape=(8, 16))
    assert input_names(spec, 3) == ["t2m@-2", "t2m@-1", "t2m", "latitude"]
    model = build_model("climax", {**SMALL, "t_in": 3}, spec)
    assert model.vocabulary == ["t2m@-2", "t2m@-1", "t2m", "latitude"]


def test_a_residual_from_the_day_before_or_a_blend_changes_the_frame_24_hours_before_the_valid_time():
    """With the network's change held at zero, 'day_before' forecasts the input frame 24 h before each sample's
    valid time (frames 2 h apart) and 'blend' mixes it with the last frame by the sigmoid of its gate at the scaled
    lead."""
    spec = small_spec(inputs=("t2m", *LOCAL_TIME), outputs=("t2m",), grid="latlon", shape=(8, 16), time_step=2.0,
                      mean=280.0, std=3.0)
    x = 280.0 + 3.0 * torch.randn(3, 12, 3, 8, 16, dtype=torch.float64)
    lead = torch.tensor([4.0, 24.0, 10.0], dtype=torch.float64)
    day_before = torch.stack([x[0, 1, 0], x[1, 11, 0], x[2, 4, 0]]).view(3, 1, 1, 8, 16)  # 20, 0 and 14 h back
    torch.manual_seed(0)
    for base in ("day_before", "blend"):
        model = build_model("climax", {**SMALL, "t_in": 12, "residual": True, "residual_base": base,
                                       "lead_time_scale": 6.0}, spec).double().eval()
        with torch.no_grad():
            nn.init.zeros_(model.head[-1].weight)
            nn.init.zeros_(model.head[-1].bias)
            expected = day_before
            if base == "blend":
                model.base_gate.weight.fill_(-1.5)
                model.base_gate.bias.fill_(2.0)
                weight = torch.sigmoid(2.0 - 1.5 * lead / 6.0).view(3, 1, 1, 1, 1)
                expected = weight * x[:, -1:, :1] + (1 - weight) * day_before
            torch.testing.assert_close(model(x, None, lead), expected)
            for bad in (25.0, 3.0):  # past a day; between two input frames
                with pytest.raises(ValidationError, match="reads the input frame 24 h before the valid time"):
                    model(x, None, torch.tensor([bad, 2.0, 2.0], dtype=torch.float64))
    blend = build_model("climax", {**SMALL, "t_in": 12, "residual": True, "residual_base": "blend"}, spec)
    blend(x.float(), None, lead.float()).sum().backward()
    assert blend.base_gate.weight.grad.abs().item() > 0  # the mix is learned
    with pytest.raises(EarthsimError, match="needs a day of input frames"):
        build_model("climax", {**SMALL, "t_in": 6, "residual": True, "residual_base": "day_before"}, spec)
    with pytest.raises(EarthsimError, match="needs a day of input frames"):  # trained at a lead past a day
        build_model("climax", {**SMALL, "t_in": 12, "residual": True, "residual_base": "day_before"},
                    small_spec(inputs=("t2m",), grid="latlon", shape=(8, 16), time_step=2.0, lead_times=(2.0, 26.0)))
    with pytest.raises(EarthsimError, match="needs residual: true"):
        build_model("climax", {**SMALL, "t_in": 12, "residual_base": "blend"}, spec)


def test_the_valid_time_of_day_equals_the_derived_fields_computed_at_the_valid_time():
    """The last frame's local time turned on by the lead equals earthsim.data.derived's fields at init + lead."""
    grid = Grid(latitude=Axis(49.0, 61.0, 7), longitude=Axis(-11.0, 2.0, 9), longitude_convention="[-180, 180)")
    spec = small_spec(inputs=("t2m", *LOCAL_TIME), static=("latitude",), grid="latlon", shape=(7, 9))
    spec = spec.__class__(**{**spec.__dict__, "grid": grid})
    init = np.array(["2019-03-26T05:00", "2019-03-27T17:00", "2019-03-28T23:00"], dtype="datetime64[ns]")
    leads = torch.tensor([1.0, 7.0, 24.0])
    frame = torch.zeros(3, 3, 7, 9, dtype=torch.float64)
    frame[:, 1:] = torch.from_numpy(frame_fields(list(LOCAL_TIME), grid, init)).double()
    expected = frame_fields(list(LOCAL_TIME), grid, init + leads.numpy().astype("timedelta64[h]"))
    np.testing.assert_allclose(valid_time_of_day(frame, spec, leads).numpy(), expected, atol=1e-6)

    torch.manual_seed(0)
    model = build_model("climax", {**SMALL, "t_in": 2, "valid_time_of_day": True}, spec).double()
    assert input_names(spec, 2, True)[-3:] == ["local_time_sin@valid", "local_time_cos@valid", "latitude"]
    x, static = torch.randn(3, 2, 3, 7, 9, dtype=torch.float64), torch.randn(1, 7, 9, dtype=torch.float64)
    x[:, -1, 1:] = frame[:, 1:]
    with torch.no_grad():  # the same start at leads 24 h apart differs only through the lead embedding
        model.lead_time_embed.weight.zero_()
        same = [model(x, static, leads.double() + shift) for shift in (0.0, 24.0)]
        other = model(x, static, leads.double() + 12.0)
    apart_24, apart_12 = (same[1] - same[0]).abs().max(), (other - same[0]).abs().max()
    assert apart_24 < 1e-6 * apart_12, (apart_24, apart_12)
    with pytest.raises(EarthsimError, match="valid_time_of_day needs the inputs"):
        build_model("climax", {**SMALL, "valid_time_of_day": True}, small_spec(inputs=("t2m",), grid="latlon",
                                                                                 shape=(8, 16)))


def test_cos_latitude_weights_are_climax_s_and_close_to_cell_area_without_poles():
    lat = np.linspace(-87.1875, 87.1875, 32)
    weights = cos_latitude_weights(lat)
    np.testing.assert_allclose(weights, np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean())
    np.testing.assert_allclose(weights, latitude_weights(lat), rtol=3e-3)


# -- multi-source training through the trainer ---------------------------------------------------------------


def _sphere_source(folder, name, variables, seed):
    """A tiny fluid store on an 8 x 16 latitude/longitude grid (poles included): smooth travelling patterns."""
    lat, lon = np.linspace(-90, 90, 8), np.arange(16) * 22.5
    rng = np.random.default_rng(seed)
    fields = {}
    for k, v in enumerate(variables):
        data = np.empty((4, 10, 8, 16), np.float32)
        for i in range(4):
            phase = rng.uniform(0, 2 * np.pi)
            for t in range(10):
                data[i, t] = (np.cos(np.deg2rad(lat))[:, None] * np.sin(np.deg2rad(lon)[None, :] - 0.3 * t + phase)
                              * (k + 1) + k)
        fields[v] = (("trajectory", "time", "latitude", "longitude"), data, {"units": "1"})
    ds = xr.Dataset(fields, coords={"trajectory": np.arange(4), "time": np.arange(10) * 6.0, "latitude": lat,
                                    "longitude": lon})
    path = write_store_entry(folder, name, ds, "fluid", grid={
        "latitude": {"start": -90.0, "stop": 90.0, "size": 8}, "longitude": {"start": 0.0, "stop": 337.5, "size": 16},
        "longitude_convention": "[0, 360)"}, time={"step": 6.0, "units": "hours"},
        splits={"train": {"trajectory": [0, 3]}, "validation": {"trajectory": [3, 4]}})
    compute_statistics(str(path), progress=False)
    return str(path)


def _multi_source_config(a, b, model="climax"):
    return from_mapping({
        "data": {"dataset": a, "batch_size": 4, "lead_stride_range": [1, 2], "sources": [{"dataset": b}]},
        "model": {"name": model, "params": SMALL if model == "climax" else {"n_modes": [4, 4], "hidden_channels": 8}},
        "optimizer": {"lr": 0.001, "weight_decay": 0.1, "warmup_steps": 1}, "loss": {"name": "lat_mse",
                                                                                   "latitude_weighting": "cos"},
        "epochs": 1, "max_steps": 6, "device": "cpu", "validation": {"rollout_steps": 1, "max_batches": 1}})


def test_multi_source_training_reads_each_batch_from_one_source(tmp_path):
    a = _sphere_source(tmp_path, "deep", ["h", "u", "v"], seed=0)
    b = _sphere_source(tmp_path, "fast", ["h", "vorticity", "divergence"], seed=1)
    trainer = Trainer(_multi_source_config(a, b), tmp_path / "run", progress=False)
    model = trainer.model
    assert model.vocabulary == ["h", "u", "v", "vorticity", "divergence"]
    fed = []
    encode = model.encode
    model.encode = lambda fields, names, lead: (fed.append((tuple(names), fields.shape[1])), encode(fields, names,
                                                                                                    lead))[1]
    groups = trainer.optimizer.param_groups
    no_decay = sorted(tuple(p.shape) for g in groups if g["weight_decay"] == 0.0 for p in g["params"])
    assert no_decay == [(1, 5, 32), (1, 32, 32)]  # var_embed (5 variables) and pos_embed (4 x 8 patches) only
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    trainer.fit()
    sets = {names for names, _ in fed}
    assert sets == {("h", "u", "v"), ("h", "vorticity", "divergence")}  # never a mixed batch
    assert all(count == 3 for _, count in fed)


def test_sources_stream_with_workers_on_every_rank_each_batch_from_one_source(tmp_path):
    """ClimaX's own loader fails with more than one worker and reads every file on every rank; earthsim's deals
    disjoint one-source batches to each rank, the same with 0 or 2 workers."""
    from earthsim.data.loader import make_loader
    from earthsim.data.sources import SourceWindows
    from earthsim.data.windows import WindowDataset

    sources = SourceWindows([WindowDataset(_sphere_source(tmp_path, name, variables, seed), "train",
                                           lead_strides=(1, 2))
                             for name, variables, seed in (("deep", ["h", "u", "v"], 0),
                                                           ("fast", ["h", "vorticity", "divergence"], 1))])
    seen = {}
    for rank in (0, 1):
        for workers in (0, 2):
            batches = [(int(b["source"][0]), int(b["source"].unique().numel()), round(b["x"].abs().sum().item(), 3))
                       for b in make_loader(sources, 4, workers, seed=3, rank=rank, world_size=2)]
            assert all(kinds == 1 for _, kinds, _ in batches)  # never a mixed batch
            seen[rank, workers] = batches
        assert seen[rank, 0] == seen[rank, 2]
    assert {s for s, _, _ in seen[0, 0] + seen[1, 0]} == {0, 1}
    assert not {x for *_, x in seen[0, 0]} & {x for *_, x in seen[1, 0]}  # disjoint shards
    assert len(seen[0, 0]) + len(seen[1, 0]) == (len(sources.sources[0]) // 4 + len(sources.sources[1]) // 4) // 2 * 2


def test_a_single_source_family_refuses_several_sources(tmp_path):
    a = _sphere_source(tmp_path, "deep", ["h", "u", "v"], seed=0)
    b = _sphere_source(tmp_path, "fast", ["h", "vorticity", "divergence"], seed=1)
    cfg = _multi_source_config(a, b, model="fno")
    cfg.data.lead_stride_range = None
    with pytest.raises(EarthsimError, match="reads one set of variables; training on several sources"):
        Trainer(cfg, tmp_path / "run", progress=False)


# -- microsoft/ClimaX itself, when a checkout is given ------------------------------------------------------------

REFERENCE = os.environ.get("EARTHSIM_CLIMAX_REFERENCE")


@pytest.mark.skipif(not REFERENCE, reason="set EARTHSIM_CLIMAX_REFERENCE to a microsoft/ClimaX checkout (with timm "
                                          "0.6.x importable) to compare against the reference model")
def test_reference_weights_load_and_give_the_same_forecast(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REFERENCE, "src"))
    np.float = float  # the reference's utilities use the alias NumPy removed
    from climax.arch import ClimaX as Reference

    variables = ["t2m", "u10", "v10", "z500", "t850"]
    torch.manual_seed(0)
    reference = Reference(variables, img_size=[8, 16], patch_size=2, embed_dim=32, depth=2, decoder_depth=2,
                          num_heads=4, drop_path=0.0, drop_rate=0.0, parallel_patch_embed=True).eval()
    model = small_model(inputs=tuple(variables))
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 5, 8, 16)
    lead = torch.tensor([0.06, 0.24])  # the reference takes hours / 100
    with torch.no_grad():
        _, expected = reference(x, None, lead, variables, variables, [], None)
        got = model.network(x.unsqueeze(1), None, lead * 100)
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-4, atol=1e-5)
    sys.modules.pop("climax.arch", None)


def test_a_fluid_on_the_sphere_gets_a_time_mean_climatology_and_acc(tmp_path):
    """The climatology of a fluid is the training split's mean at each point (over trajectories and times); ACC of
    a forecast equal to the truth is 1 against it, and the anomalies are those of numpy's mean."""
    from earthsim.data.stats import compute_climatology, load_climatology

    path = _sphere_source(tmp_path, "deep", ["h", "u"], seed=0)
    raw = yaml.safe_load(open(path))
    raw["climatology"] = str(tmp_path / "deep.climatology.zarr")
    raw["splits"]["test"] = {"trajectory": [3, 4]}
    del raw["splits"]["validation"]
    open(path, "w").write(yaml.safe_dump(raw, sort_keys=False))
    compute_climatology(path, progress=False)
    clim = load_climatology(path, progress=False).load()
    store = xr.open_zarr(tmp_path / "deep.zarr", consolidated=False).load()
    assert set(clim["h"].dims) == {"latitude", "longitude"}
    np.testing.assert_allclose(clim["h"].values, store["h"].isel(trajectory=slice(0, 3)).mean(["trajectory", "time"]),
                               rtol=1e-6, atol=1e-6)
    from earthsim.score.evaluation import evaluate

    truth = store.isel(trajectory=slice(3, 4))
    forecast = xr.concat([truth.shift(time=-k) for k in (1, 2)], dim="prediction_timedelta").transpose(
        "trajectory", "time", "prediction_timedelta", "latitude", "longitude")
    forecast = forecast.assign_coords(prediction_timedelta=[6.0, 12.0]).isel(time=slice(0, 8))
    forecast["prediction_timedelta"].attrs["units"] = "hours"
    for name in ("h", "u"):
        forecast[name].attrs["units"] = "1"
    forecast.to_zarr(tmp_path / "perfect.zarr", zarr_format=3, consolidated=False)
    acc = evaluate([str(tmp_path / "perfect.zarr")], path, progress=False, metrics=["acc"]).scorecard["acc"]
    np.testing.assert_allclose(acc.values, 1.0, rtol=1e-6)
