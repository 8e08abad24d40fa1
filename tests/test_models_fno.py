"""The Fourier family against neuraloperator itself, analytic spherical harmonics, and the model contract."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import neuralop.models
from conftest import small_spec
from earthsim.errors import EarthsimError, ValidationError
from earthsim.models import MODELS, build_model
from earthsim.models import sfno as sfno_module

torch.set_num_threads(1)

SMALL = {"n_modes": [8, 8], "hidden_channels": 8, "n_layers": 2}
GRIDS = {"fno": (16, 16), "tfno": (16, 16), "sfno": (8, 16)}


def spec_for(name: str, channels: int = 2, static: int = 0, **changes):
    """A spec of ``channels`` inputs (all predicted) and ``static`` fields on the grid ``name`` suits."""
    return small_spec(inputs=[f"c{i}" for i in range(channels)], static=[f"s{i}" for i in range(static)],
                      grid="latlon" if name == "sfno" else "box", shape=GRIDS[name], **changes)


def small(name: str, channels: int = 2, static: int = 0, **overrides):
    return build_model(name, {**SMALL, **overrides}, spec_for(name, channels, static))


def copy_from_neuralop(reference: torch.nn.Module, model) -> None:
    """Load neuraloperator's weights into the wrapped operator (complex weights become real pairs)."""
    source = reference.state_dict()
    source.pop("_metadata")  # neuraloperator's init kwargs, not tensors
    mapped = {}
    for key, value in source.items():
        key = "operator." + key.replace("weight.factors.", "weight.")
        mapped[key] = torch.view_as_real(value) if value.is_complex() else value
    assert sorted(mapped) == sorted(model.state_dict())
    model.load_state_dict(mapped)


def reference_operator(name: str, model, **extra):
    """The unmodified neuraloperator model with the same architecture as ``model.operator``."""
    op = model.operator
    common = dict(n_modes=tuple(op.n_modes), in_channels=op.in_channels, out_channels=op.out_channels,
                  hidden_channels=op.hidden_channels, n_layers=op.n_layers, **extra)
    cls = {"fno": neuralop.models.FNO, "tfno": neuralop.models.TFNO, "sfno": neuralop.models.SFNO}[name]
    return cls(**common)


@pytest.mark.parametrize("name", ["fno", "tfno", "sfno"])
def test_shapes_and_real_parameters(name):
    model = small(name, channels=4, static=2, t_in=3, t_out=2)
    height, width = GRIDS[name]
    x = torch.randn(5, 3, 4, height, width)
    y = model(x, static=torch.randn(2, height, width), lead_time=torch.full((5,), 6.0))
    assert y.shape == (5, 2, 4, height, width)
    assert (model.t_in, model.t_out, model.model_name) == (3, 2, name)
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.float32}
    spectral = [p for n, p in model.named_parameters() if ".convs." in n and ".weight." in n]
    assert spectral and all(p.shape[-1] == 2 for p in spectral)


@pytest.mark.parametrize("name,extra", [
    ("fno", {}),
    ("tfno", {"factorization": "tucker", "rank": 0.5}),
    ("tfno", {"factorization": "cp", "rank": 0.5}),
    ("tfno", {"factorization": "tt", "rank": 0.5}),
    ("sfno", {}),
])
def test_equals_neuraloperator_with_same_weights(name, extra):
    """Outputs and gradients equal the unmodified neuraloperator model carrying the same weights."""
    torch.manual_seed(0)
    model = small(name, static=1, positional_embedding="grid", t_in=2, **extra)
    reference = reference_operator(name, model, positional_embedding="grid", **extra)
    copy_from_neuralop(reference, model)
    height, width = GRIDS[name]
    x = torch.randn(3, 2, 2, height, width)
    static = torch.randn(1, height, width)
    y = model(x, static)
    y_ref = reference(torch.cat([x.flatten(1, 2), static.expand(3, -1, -1, -1)], dim=1))
    torch.testing.assert_close(y, y_ref.reshape(y.shape), rtol=1e-5, atol=1e-6)

    # Gradients: torch's complex gradient is dL/dRe + i dL/dIm, i.e. the real pair our parameter gets.
    (y ** 2).mean().backward()
    (y_ref ** 2).mean().backward()
    ours = dict(model.operator.named_parameters())
    for key, param in reference.named_parameters():
        grad = param.grad
        if grad.is_complex():
            grad = torch.view_as_real(grad)
        torch.testing.assert_close(ours[key.replace("weight.factors.", "weight.")].grad, grad,
                                   rtol=1e-4, atol=1e-6)


def test_fully_shard_refuses_unmodified_neuraloperator():
    """The reason for the real-storage layers: neuraloperator's FNO mixes complex and real parameters."""
    reference = neuralop.models.FNO(n_modes=(4, 4), in_channels=1, out_channels=1, hidden_channels=4,
                                    n_layers=1)
    dtypes = {p.dtype for p in reference.parameters()}
    assert dtypes == {torch.float32, torch.complex64}
    model = small("fno")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_stacking_static_and_coordinate_channels():
    """The operator sees [frames t-major, static, sin/cos coordinates]; its output unstacks t-major."""
    model = small("fno", channels=2, static=1, t_in=3, t_out=2)
    height, width = GRIDS["fno"]
    x = torch.randn(2, 3, 2, height, width)
    static = torch.randn(1, height, width)
    seen = {}
    model.operator.register_forward_hook(lambda m, inputs, output: seen.update(i=inputs[0], o=output))
    y = model(x, static)
    inp = seen["i"]
    assert inp.shape[1] == 3 * 2 + 1 + 4
    for t in range(3):
        for c in range(2):
            torch.testing.assert_close(inp[:, t * 2 + c], x[:, t, c])
    torch.testing.assert_close(inp[:, 6], static.expand(2, -1, -1))
    i = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    j = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
    expected = [torch.sin(2 * math.pi * i / height), torch.cos(2 * math.pi * i / height),
                torch.sin(2 * math.pi * j / width), torch.cos(2 * math.pi * j / width)]
    for k, grid in enumerate(expected):
        torch.testing.assert_close(inp[0, 7 + k], grid.float())
    for t in range(2):
        for c in range(2):
            torch.testing.assert_close(y[:, t, c], seen["o"][:, t * 2 + c])
    # The static field reaches the output.
    assert not torch.allclose(model(x, static + 1.0), y)


def test_spherical_coordinates_are_unit_vectors_at_equiangular_points():
    coords = sfno_module.spherical_coordinates(9, 16, "equiangular")
    torch.testing.assert_close(coords.pow(2).sum(0), torch.ones(9, 16))
    colatitude = torch.acos(coords[0, :, 0].double())
    torch.testing.assert_close(colatitude, torch.linspace(0, math.pi, 9, dtype=torch.float64), atol=1e-6, rtol=0)


def _identity_spherical_conv(model):
    conv = model.operator.fno_blocks.convs[0]
    with torch.no_grad():
        weight = conv.weight.tensor
        weight.zero_()
        for k in range(weight.shape[0]):
            weight[k, k, :, 0] = 1.0
        conv.bias.zero_()
    return conv


def test_sfno_uses_equiangular_transform():
    """With identity weights the spherical convolution reproduces a band-limited field sampled on the
    equiangular grid (poles included): Y_1^0 + Re Y_2^1 ∝ cos θ + sin θ cos θ cos φ."""
    height, width = 16, 32
    spec = small_spec(inputs=["f"], grid="latlon", shape=(height, width))
    config = {"n_modes": [4, 8], "hidden_channels": 2, "n_layers": 1}
    theta = torch.linspace(0, math.pi, height, dtype=torch.float64)[:, None]
    phi = 2 * math.pi * torch.arange(width, dtype=torch.float64)[None, :] / width
    field = (torch.cos(theta) + torch.sin(theta) * torch.cos(theta) * torch.cos(phi)).float()
    field = field.expand(1, 2, height, width)

    model = build_model("sfno", config, spec)
    conv = _identity_spherical_conv(model)
    assert conv.sht_grids == ["equiangular", "equiangular"]
    torch.testing.assert_close(conv(field), field, atol=1e-5, rtol=0)

    # The same samples read as a Gauss grid are not reproduced: the test can tell the grids apart.
    gauss_conv = sfno_module.shardable_spherical_conv()(2, 2, n_modes=(4, 8), sht_grids="legendre-gauss",
                                                        factorization=None)  # dense, as SFNO builds it
    with torch.no_grad():  # the same (identity) weights; the transforms' own buffers differ
        for name, parameter in conv.named_parameters():
            gauss_conv.get_parameter(name).copy_(parameter)
    assert (gauss_conv(field) - field).abs().max() > 1e-2


def test_registry_errors():
    assert {"fno", "tfno", "sfno", "convlstm"} <= set(MODELS)
    box = small_spec(shape=(8, 8))
    with pytest.raises(EarthsimError, match=r"unknown model 'nope'.*'fno'.*'sfno'.*'tfno'"):
        build_model("nope", {}, box)
    with pytest.raises(EarthsimError, match=r"unknown key\(s\) \['n_mode'\]"):
        build_model("fno", {"n_mode": [4, 4]}, box)
    with pytest.raises(EarthsimError, match=r"hidden_channels: expected int"):
        build_model("fno", {"hidden_channels": "wide"}, box)
    with pytest.raises(EarthsimError, match=r"positional_embedding must be one of"):
        build_model("fno", {"positional_embedding": "spherical"}, box)
    with pytest.raises(EarthsimError, match=r"n_modes \(16, 16\) too large for a 8x8 grid"):
        build_model("fno", {}, box)
    with pytest.raises(EarthsimError, match=r"data spec: outputs \['b'\] are not inputs \['a'\]"):
        small_spec(inputs=["a"], outputs=["b"])


def test_sfno_checks_its_own_grid():
    """The family, not the trainer, refuses data it cannot take: SFNO needs a pole-to-pole latitude grid."""
    with pytest.raises(EarthsimError, match="'sfno' needs a global equiangular latitude grid including both poles"):
        build_model("sfno", SMALL, small_spec(shape=(8, 16)))


def test_input_checks_name_the_expected_shape():
    model = small("fno", static=1, t_in=2)
    with pytest.raises(ValidationError, match=r"x must hold T_in=2 frames, got 1"):
        model(torch.randn(1, 1, 2, 16, 16), torch.randn(1, 16, 16))
    with pytest.raises(ValidationError, match=r"x must be \[B, T_in=2, C=2 \(c0, c1\), H=16, W=16\]"):
        model(torch.randn(1, 2, 3, 16, 16), torch.randn(1, 16, 16))
    with pytest.raises(ValidationError, match=r"built with static fields \['s0'\] but none given"):
        model(torch.randn(1, 2, 2, 16, 16))
    batched = model(torch.randn(2, 2, 2, 16, 16), torch.randn(2, 1, 16, 16))
    assert batched.shape == (2, 1, 2, 16, 16)


def test_model_normalises_with_its_spec_and_returns_physical_fields():
    """The network sees (x - mean) / std and its output is de-normalised: data offset and scaled, with
    statistics to match, give the same prediction offset and scaled."""
    torch.manual_seed(0)
    unit = build_model("fno", SMALL, spec_for("fno"))
    scaled = build_model("fno", SMALL, spec_for("fno", mean=280.0, std=5.0))
    scaled.load_state_dict(unit.state_dict())
    x = torch.randn(2, 1, 2, 16, 16)
    torch.testing.assert_close(scaled(280.0 + 5.0 * x), 280.0 + 5.0 * unit(x), rtol=1e-5, atol=1e-4)


def test_fsdp_units_cover_every_layer_parameter_once():
    model = small("sfno", norm="group_norm")
    seen = []
    for unit in model.fsdp_units():
        modules = unit if isinstance(unit, list) else [unit]
        seen += [id(p) for m in modules for p in m.parameters()]
    layer_params = [id(p) for p in model.operator.fno_blocks.parameters()]
    assert sorted(seen) == sorted(layer_params)
    assert len(model.fsdp_units()) == 2 * SMALL["n_layers"]


def test_missing_torch_harmonics_fails_sfno_alone_naming_the_working_pair():
    """Without torch-harmonics the other families import and build; SFNO fails when built, naming the pair."""
    code = ("import sys; sys.modules['torch_harmonics'] = None\n"
            "sys.path.insert(0, 'tests')\n"
            "from conftest import small_spec\n"
            "from earthsim.models import build_model\n"
            "from earthsim.errors import EarthsimError\n"
            "build_model('convlstm', {'patch_size': 2}, small_spec())\n"
            "print('convlstm alone imported neuralop:', 'neuralop' in sys.modules)\n"
            "build_model('fno', {'n_modes': [4, 4]}, small_spec())\n"
            "try:\n"
            "    build_model('sfno', {'n_modes': [4, 8]}, small_spec(grid='latlon', shape=(8, 16)))\n"
            "except EarthsimError as error:\n"
            "    print('refused:', error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "convlstm alone imported neuralop: False" in result.stdout
    assert "refused: model 'sfno' cannot be built" in result.stdout
    assert "torch 2.13 with torch-harmonics 0.8.0" in result.stdout


def test_missing_sfno_in_neuraloperator_is_an_import_error(monkeypatch):
    monkeypatch.delattr(neuralop.models, "SFNO")
    with pytest.raises(ImportError, match="torch 2.13 with torch-harmonics 0.8.0"):
        sfno_module.check_spherical_backend()
