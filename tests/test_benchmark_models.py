"""benchmarks/models.py: the floor counts the FLOPs a known training step does, it lies below the measured step,
and the quick ClimaX section prints in its table what its JSON holds; a malformed --reference is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def models():
    yield from load_benchmark("models")


def _linear_case(which, config, reference):
    """y = W x without bias, inputs that need no gradient: 2·B·I·O FLOPs forward and as many for W's gradient."""
    torch.manual_seed(0)
    model = nn.Linear(config["inputs"], config["outputs"], bias=False)
    x = torch.randn(config["batch"], config["inputs"])
    return model, lambda: model(x).pow(2).mean()


def test_the_floor_is_the_counted_flops_of_the_step_at_the_measured_rate(models, monkeypatch):
    monkeypatch.setitem(models.CASES, "linear", _linear_case)
    config = {"batch": 8, "inputs": 64, "outputs": 32}
    figures = models._timed_steps("linear", "earthsim", config, steps=2, warmup=1, threads=1, reference=None)
    assert figures["gflop_per_step"] * 1e9 == 4 * 8 * 64 * 32
    assert figures["parameters"] == 64 * 32
    rate = figures["matmul_gflop_per_s"] * 1e9
    assert 1e8 < rate < 1e14  # a CPU's float32 matrix-multiply rate, not a unit slip
    assert figures["floor_seconds"] == pytest.approx(4 * 8 * 64 * 32 / rate)
    assert figures["seconds_per_step"] > figures["floor_seconds"]


@pytest.mark.slow  # about 15 s; kept out of the default suite to hold it under 15 minutes; run with -m slow
def test_quick_climax_section_table_and_json_agree(tmp_path):
    """Run as a script: each training step is timed in a spawned process, which imports the script by its path."""
    path = tmp_path / "models.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "models.py"), "--quick", "--family", "climax", "--threads",
                          "1", "--json", str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    figures = json.loads(path.read_text())["climax"]
    (row,) = figures["rows"]
    ours = row["earthsim"]
    assert row["config"] == "small" and "reference" not in row
    assert ours["parameters"] > 1e6 and ours["gflop_per_step"] > 1
    # counted arithmetic alone cannot take longer than the whole step it is part of
    assert 0 < ours["floor_seconds"] < ours["seconds_per_step"]
    table = run.stdout
    assert (f"| small | 4 | {ours['parameters']:,} | {ours['seconds_per_step']:.3f} | (no --reference) | | "
            f"{ours['gflop_per_step']:.1f} | {ours['floor_seconds']:.3f} |") in table
    assert {r["layer"] for r in figures["layers"]} and all(r["ratio"] > 0 for r in figures["layers"])


def test_a_malformed_reference_is_refused(models):
    with pytest.raises(SystemExit, match="expected climax=PATH or predformer=PATH"):
        models.main(["--quick", "--reference", "climax"])
