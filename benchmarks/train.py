"""FNO training with FSDP2 at 1 and 2 CPU ranks (gloo), side by side in one run.

Per world size: global samples/s (the same global batch, split across ranks), peak resident memory
per rank, and the bytes of parameters plus AdamW state each rank holds; the ratio of the 2-rank to
the 1-rank bytes is what sharding buys (ideal 0.5, target <= 0.55).

    python benchmarks/train.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh

from earthsim.data.grid import Grid
from earthsim.models import DataSpec, Statistics, build_model, parallelize

from report import add_json_argument, publish


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def _worker(rank: int, world: int, port: int, size: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, os.cpu_count() // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    n, channels = size["grid"], size["channels"]
    names = tuple(f"c{i}" for i in range(channels))
    spec = DataSpec(inputs=names, outputs=names, grid=Grid(x=n, y=n, length=2 * math.pi),
                    statistics=Statistics(mean=(0.0,) * channels, std=(1.0,) * channels, diff_std=(1.0,) * channels))
    model = build_model("fno", {"n_modes": [size["modes"]] * 2, "hidden_channels": size["hidden"],
                                "n_layers": size["layers"]}, spec)
    model = parallelize(model, mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    local_batch = size["batch"] // world
    generator = torch.Generator().manual_seed(rank)
    x = torch.randn(local_batch, 1, channels, n, n, generator=generator)
    y = torch.randn(local_batch, 1, channels, n, n, generator=generator)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(size["warmup"]):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(size["steps"]):
        step()
    dist.barrier()
    elapsed = time.perf_counter() - start
    params = _local_bytes(model.parameters())
    state = _local_bytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    record = {"rank": rank, "world": world, "seconds": elapsed, "param_bytes": params, "optimizer_bytes": state,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(out, f"{world}-{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(quick: bool) -> dict:
    size = (dict(grid=32, channels=2, modes=8, hidden=32, layers=4, batch=8, warmup=3, steps=10) if quick else
            dict(grid=64, channels=2, modes=16, hidden=64, layers=4, batch=16, warmup=2, steps=10))
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for world in (1, 2):
            mp.spawn(_worker, args=(world, _free_port(), size, out), nprocs=world, join=True)
            ranks = [json.loads(Path(out, f"{world}-{r}.json").read_text()) for r in range(world)]
            seconds = max(r["seconds"] for r in ranks)
            rows.append({
                "ranks": world,
                "samples_per_s": size["batch"] * size["steps"] / seconds,
                "peak_rss_mb_per_rank": max(r["peak_rss_mb"] for r in ranks),
                "state_mb_per_rank": max(r["param_bytes"] + r["optimizer_bytes"] for r in ranks) / 2**20,
            })
    ratio = rows[1]["state_mb_per_rank"] / rows[0]["state_mb_per_rank"]
    return {"size": size, "rows": rows, "state_ratio_2_over_1": ratio, "target_state_ratio": 0.55}


def markdown(result: dict) -> str:
    s = result["size"]
    lines = [f"FNO {s['grid']}x{s['grid']}, {s['channels']} channels, hidden {s['hidden']}, {s['layers']} layers, "
             f"modes {s['modes']}, global batch {s['batch']}, {s['steps']} timed steps, gloo on CPU", "",
             "| ranks | samples/s | peak RSS per rank (MB) | params + AdamW state per rank (MB) |",
             "| ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['ranks']} | {r['samples_per_s']:.1f} | {r['peak_rss_mb_per_rank']:.0f} | "
                     f"{r['state_mb_per_rank']:.3f} |")
    lines += ["", f"per-rank state at 2 ranks / 1 rank: **{result['state_ratio_2_over_1']:.3f}** "
                  f"(target <= {result['target_state_ratio']})"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model, few steps (under a minute)")
    add_json_argument(parser)
    args = parser.parse_args()
    result = run(args.quick)
    publish(markdown(result), result, args.json)


if __name__ == "__main__":
    main()
