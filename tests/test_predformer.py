"""PredFormer against its paper and yyyujintang/PredFormer: parameter counts of the reference models (counted by
instantiating the reference code), the axes each stack attends over (perturb one token, see which outputs move),
the arrangements as the paper's table, the fixed sinusoidal table written as the reference builds it, attention
against an einsum formulation, grids that do not divide by the patch, and chunked feedback past ``T_out``."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import small_spec
from earthsim.models import build_model, rollout
from earthsim.models.predformer import (ARRANGEMENTS, FULL, SPATIAL, TEMPORAL, Attention, GatedStack,
                                        PredFormerConfig, sinusoidal_table, stacks)

#: Parameters of each reference PredFormer_Model (openstl/models/PredFormer_*.py at b73c7ae), counted with
#: sum(p.numel()) over the instantiated reference at the Moving-MNIST setting (64 × 64 × 1, T 10, patch 8, dim 256,
#: 8 × 32 heads, SwiGLU 1024) with the depth the paper pairs with each arrangement.
REFERENCE_MMNIST = {
    "full": (24, 25_285_952), "fac-s-t": (12, 25_286_464), "fac-t-s": (12, 25_286_464),
    "binary-st": (12, 25_297_728), "binary-ts": (12, 25_297_728), "triplet-sts": (8, 25_297_728),
    "triplet-tst": (8, 25_297_728), "quadruplet-stts": (6, 25_297_728), "quadruplet-tsst": (6, 25_297_728),
}
#: Fac-T-S at the weather setting (32 × 64 × 1, T 12, patch 4, SwiGLU 512) with depth 4: the paper's 5.3 M.
REFERENCE_WEATHER_FACTS = 5_273_360


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_parameter_counts_equal_the_reference_models_at_the_moving_mnist_setting(arrangement):
    depth, expected = REFERENCE_MMNIST[arrangement]
    model = build_model("predformer", {"arrangement": arrangement, "depth": depth}, small_spec(shape=(64, 64)))
    assert _count(model) == expected


def test_fac_t_s_at_the_weather_setting_has_the_papers_5_3_million_parameters():
    config = {"arrangement": "fac-t-s", "depth": 4, "patch_size": 4, "mlp_dim": 512, "t_in": 12, "t_out": 12,
              "dropout": 0.1, "attn_dropout": 0.1, "drop_path": 0.25}
    assert _count(build_model("predformer", config, small_spec(shape=(32, 64)))) == REFERENCE_WEATHER_FACTS


def test_arrangements_are_the_papers_sequences_of_spatial_and_temporal_blocks():
    S, T = SPATIAL, TEMPORAL
    assert stacks("full", 3) == [(FULL, 3)]
    assert stacks("fac-s-t", 3) == [(S, 3), (T, 3)]
    assert stacks("fac-t-s", 3) == [(T, 3), (S, 3)]
    assert stacks("binary-st", 2) == [(S, 1), (T, 1)] * 2
    assert stacks("binary-ts", 2) == [(T, 1), (S, 1)] * 2
    assert stacks("triplet-sts", 2) == [(S, 1), (T, 1), (S, 1)] * 2
    assert stacks("triplet-tst", 2) == [(T, 1), (S, 1), (T, 1)] * 2
    assert stacks("quadruplet-stts", 2) == [(S, 1), (T, 1), (T, 1), (S, 1)] * 2
    assert stacks("quadruplet-tsst", 2) == [(T, 1), (S, 1), (S, 1), (T, 1)] * 2
    with pytest.raises(ValueError, match="arrangement must be one of"):
        PredFormerConfig(arrangement="quintuplet")


@pytest.mark.parametrize("axis", [SPATIAL, TEMPORAL, FULL])
def test_each_stack_attends_over_exactly_its_axis(axis):
    """Perturb one token (frame 1, patch 2): a spatial stack moves that frame's tokens only, a temporal stack that
    patch's tokens only, a full stack every token."""
    torch.manual_seed(0)
    config = PredFormerConfig(t_in=4, t_out=4, depth=1, dim=16, heads=2, dim_head=8, mlp_dim=32)
    stack = GatedStack(config, axis, blocks=2).double().eval()
    x = torch.randn(2, 4, 5, 16, dtype=torch.float64)
    moved = x.clone()
    moved[:, 1, 2] += torch.randn(16, dtype=torch.float64)  # not a constant: LayerNorm removes a shift
    changed = (stack(moved) - stack(x)).abs().amax(dim=(0, 3)) > 1e-12  # [T, N]
    expected = torch.zeros(4, 5, dtype=torch.bool)
    if axis == SPATIAL:
        expected[1, :] = True
    elif axis == TEMPORAL:
        expected[:, 2] = True
    else:
        expected[:] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_every_arrangement_carries_one_pixel_to_every_frame_and_patch_and_keeps_batches_apart(arrangement):
    spec = small_spec(shape=(8, 8))
    torch.manual_seed(0)
    model = build_model("predformer", {"arrangement": arrangement, "depth": 1, "t_in": 3, "t_out": 3,
                                       "patch_size": 4, "dim": 16, "heads": 2, "dim_head": 8, "mlp_dim": 32},
                        spec).double().eval()
    x = torch.randn(2, 3, 1, 8, 8, dtype=torch.float64)
    moved = x.clone()
    moved[0, 0, 0, 0, 0] += 1.0  # frame 0, patch 0 of the first sample
    with torch.no_grad():
        change = (model(moved) - model(x)).abs()
    per_frame_patch = change[0, :, 0].unfold(1, 4, 4).unfold(2, 4, 4).amax(dim=(-1, -2))  # [T, 2, 2]
    assert bool((per_frame_patch > 1e-12).all()), "a frame or patch the perturbation cannot reach"
    assert float(change[1].max().detach()) == 0.0, "samples of a batch mixed"


def test_the_position_table_is_the_references_sinusoids_over_frames_times_patches():
    positions, dim = 12, 8
    expected = torch.tensor([[p / (10000 ** (2 * (i // 2) / dim)) for i in range(dim)] for p in range(positions)])
    expected[:, 0::2] = torch.sin(expected[:, 0::2])
    expected[:, 1::2] = torch.cos(expected[:, 1::2])
    torch.testing.assert_close(sinusoidal_table(positions, dim), expected, rtol=1e-6, atol=1e-6)
    model = build_model("predformer", {"t_in": 3, "t_out": 3, "depth": 1, "patch_size": 4, "dim": 8, "heads": 2,
                                       "dim_head": 4, "mlp_dim": 16}, small_spec(shape=(8, 8)))
    assert "position" not in model.state_dict() and all(p.data_ptr() != model.position.data_ptr()
                                                        for p in model.parameters())
    torch.testing.assert_close(model.position.view(12, 8), sinusoidal_table(12, 8))


def test_attention_through_sdpa_equals_softmax_attention_written_out():
    torch.manual_seed(0)
    attention = Attention(16, heads=2, dim_head=8, dropout=0.0).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    q, k, v = attention.qkv(x).chunk(3, dim=-1)
    split = lambda t: t.view(3, 7, 2, 8).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(torch.einsum("bhid,bhjd->bhij", split(q), split(k)) / math.sqrt(8), dim=-1)
    out = torch.einsum("bhij,bhjd->bhid", weights, split(v)).transpose(1, 2).reshape(3, 7, 16)
    torch.testing.assert_close(attention(x), attention.out(out))


def test_a_grid_the_patch_does_not_divide_is_padded_and_cropped_back():
    spec = small_spec(shape=(33, 49))
    model = build_model("predformer", {"t_in": 2, "t_out": 1, "depth": 1, "patch_size": 4, "dim": 16, "heads": 2,
                                       "dim_head": 8, "mlp_dim": 32}, spec).eval()
    assert (model.rows, model.columns) == (9, 13)
    out = model(torch.randn(2, 2, 1, 33, 49))
    assert out.shape == (2, 1, 1, 33, 49) and bool(torch.isfinite(out).all())


def test_longer_horizons_feed_back_whole_chunks():
    spec = small_spec(shape=(8, 8))
    torch.manual_seed(0)
    model = build_model("predformer", {"t_in": 3, "t_out": 2, "depth": 1, "patch_size": 4, "dim": 16, "heads": 2,
                                       "dim_head": 8, "mlp_dim": 32}, spec).double().eval()
    x = torch.randn(1, 3, 1, 8, 8, dtype=torch.float64)
    first = model(x)
    second = model(torch.cat([x, first], dim=1)[:, -3:])
    torch.testing.assert_close(rollout(model, x, 4), torch.cat([first, second], dim=1))
    with pytest.raises(ValueError, match="t_out"):
        PredFormerConfig(t_in=2, t_out=3)


def test_patches_are_cut_and_reassembled_as_the_reference_orders_them():
    """Two channels on a 6 × 10 grid at patch 4 (padded to 8 × 12 at the bottom and right by repeating the edge):
    each token is its patch as (p1 p2 c), and each head output (c p1 p2) lands on its patch, cropped back."""
    spec = small_spec(inputs=("a", "b"), shape=(6, 10))
    model = build_model("predformer", {"t_in": 2, "t_out": 1, "depth": 1, "patch_size": 4, "dim": 16, "heads": 2,
                                       "dim_head": 8, "mlp_dim": 32}, spec).double().eval()
    seen = {}
    model.embed.register_forward_hook(lambda m, args, out: seen.update(tokens=args[0]))
    model.head.register_forward_hook(lambda m, args, out: seen.update(head=out))
    x = torch.randn(1, 2, 2, 6, 10, dtype=torch.float64)
    out = model(x)
    padded = torch.nn.functional.pad(x[0], (0, 2, 0, 2), mode="replicate")  # [T, C, 8, 12]
    p = 4
    for t in range(2):
        for i in range(2):
            for j in range(3):
                patch = padded[t, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # [C, p1, p2]
                torch.testing.assert_close(seen["tokens"][0, t, i * 3 + j], patch.permute(1, 2, 0).reshape(-1))
    head = seen["head"][0, 0]  # [h w, (c p1 p2)], normalised units
    expected = torch.empty(2, 8, 12, dtype=torch.float64)
    for i in range(2):
        for j in range(3):
            expected[:, i * p:(i + 1) * p, j * p:(j + 1) * p] = head[i * 3 + j].view(2, p, p)
    torch.testing.assert_close(out[0, 0], expected[:, :6, :10])  # mean 0, std 1: network units are physical
