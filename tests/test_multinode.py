"""Training launched the way a multi-node job launches it: torchrun with a c10d rendezvous at HOST:PORT and a job
id (not ``--standalone``), here one node of two CPU ranks over gloo, as docs/scaling.md describes for N nodes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from test_model_contract import _free_port
from test_train import _env, _experiment, _losses, _write_experiment, fluid_entry  # noqa: F401 (fixture)

#: What torchrun tells each worker (docs/scaling.md lists them).
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                      "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _rendezvous(job: str) -> list[str]:
    """torchrun for one node of two ranks, meeting at a c10d rendezvous on this host."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{_free_port()}", "--rdzv-id", job]


@pytest.mark.distributed
def test_c10d_rendezvous_trains_on_two_gloo_ranks(fluid_entry, tmp_path):
    """Both ranks train (each writes its own checkpoint shard and trainer state), the loss stays finite and the
    model is exported."""
    experiment = _write_experiment(tmp_path, _experiment(fluid_entry, epochs=1, **{"data.batch_size": 2}))
    run = tmp_path / "run"
    result = subprocess.run(_rendezvous(f"earthsim-test-{os.getpid()}") + [
        "-m", "earthsim", "train", str(experiment), "--run-dir", str(run)],
        env=_env(tmp_path), timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert yaml.safe_load((run / "world.yaml").read_text()) == {"world_size": 2}
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    assert checkpoints, "no checkpoint written"
    last = checkpoints[-1]
    assert {p.name for p in last.glob("trainer-rank*.pt")} == {"trainer-rank0.pt", "trainer-rank1.pt"}
    assert len(list(last.glob("*.distcp"))) == 2  # one DCP shard file per rank
    losses = _losses(run)
    assert len(losses) >= 3 and all(math.isfinite(v) for v in losses.values())
    assert (run / "model.pt").is_file()


@pytest.mark.distributed
def test_c10d_rendezvous_sets_what_each_worker_reads(tmp_path):
    """RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR... as torchrun sets them on each worker of a c10d rendezvous."""
    script = tmp_path / "show.py"
    script.write_text("import json, os, sys\n"
                      f"names = {TORCHRUN_VARIABLES!r}\n"
                      "path = os.path.join(sys.argv[1], f\"rank{os.environ['RANK']}.json\")\n"
                      "open(path, 'w').write(json.dumps({k: os.environ.get(k) for k in names}))\n")
    job = f"earthsim-env-{os.getpid()}"
    result = subprocess.run(_rendezvous(job) + [str(script), str(tmp_path)], env=_env(tmp_path), timeout=120,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, env in enumerate(seen):
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "2" and env["GROUP_RANK"] == "0"
        assert env["TORCHELASTIC_RUN_ID"] == job and env["MASTER_ADDR"] and int(env["MASTER_PORT"]) > 0
    assert seen[0]["MASTER_ADDR"] == seen[1]["MASTER_ADDR"] and seen[0]["MASTER_PORT"] == seen[1]["MASTER_PORT"]
    assert torch.distributed.is_gloo_available()
