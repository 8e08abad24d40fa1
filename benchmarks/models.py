"""ClimaX training step, earthsim against microsoft/ClimaX's own model at the same configuration, in one run.

A training step is forward, latitude-weighted MSE on the output variables, backward and AdamW, on
the 32 x 64 grid (5.625°), fp32, on ``--threads`` CPU threads. Each model runs in a fresh process
(so that peak resident memory is its own): the step time is the median over the timed steps after
warm-up; the peak RSS includes the interpreter and PyTorch (~0.4 GB). Configurations:

- ``default``: the paper's (48-variable vocabulary, embed 1024, depth 8, 16 heads, patch 2, decoder
  depth 2, drop-path and dropout 0.1), batch 2;
- ``small``: embed 256, depth 4, 8 heads, 8 variables, batch 4.

With ``--reference PATH`` (a checkout of microsoft/ClimaX; it imports timm 0.6.x, which must be
importable, e.g. through PYTHONPATH) the reference model is built with its own defaults
(``parallel_patch_embed=False``, as its configs train) and timed the same way; the ratio
earthsim / reference is the figure of merit (target <= 0.8). Without it only earthsim is timed.

A second table times two choices inside earthsim (forward + backward): the tokeniser (one grouped
convolution, computed as a batched matmul over the patches) against a loop of per-variable
``Conv2d`` (what the reference does by default) and against ``F.conv2d(groups=V)`` (the
reference's ``parallel_patch_embed``), and ``scaled_dot_product_attention`` against attention
written with einsum and softmax (timm 0.6's).

    python benchmarks/models.py [--quick] [--reference PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from report import add_json_argument, publish

CONFIGS = {
    "default": dict(embed_dim=1024, depth=8, num_heads=16, variables=48, batch=2),
    "small": dict(embed_dim=256, depth=4, num_heads=8, variables=8, batch=4),
}
SHAPE = (32, 64)


def _variables(count: int) -> list[str]:
    from earthsim.models.climax import CLIMAX_VOCABULARY

    return list(CLIMAX_VOCABULARY[:count]) if count <= len(CLIMAX_VOCABULARY) else [f"v{i}" for i in range(count)]


def _earthsim_model(config: dict, variables: list[str]):
    from earthsim.data.grid import Axis, Grid
    from earthsim.models import DataSpec, Statistics, build_model

    n = len(variables)
    grid = Grid(latitude=Axis(-87.1875, 87.1875, SHAPE[0]), longitude=Axis(0.0, 354.375, SHAPE[1]),
                longitude_convention="[0, 360)")
    spec = DataSpec(inputs=tuple(variables), outputs=tuple(variables), grid=grid, time_step=6.0,
                    statistics=Statistics(mean=(0.0,) * n, std=(1.0,) * n, diff_std=(1.0,) * n))
    model = build_model("climax", {k: config[k] for k in ("embed_dim", "depth", "num_heads")}, spec)
    return lambda x, lead: model.network(x.unsqueeze(1), None, lead * 100)[:, 0], model


def _reference_model(config: dict, variables: list[str], path: str):
    sys.path.insert(0, f"{path}/src")
    np.float = float  # the reference's utilities use the alias NumPy removed
    from climax.arch import ClimaX

    model = ClimaX(variables, img_size=list(SHAPE), embed_dim=config["embed_dim"], depth=config["depth"],
                   num_heads=config["num_heads"])
    return lambda x, lead: model(x, None, lead, variables, variables, None, None)[1], model


def _time_steps(which: str, config: dict, steps: int, warmup: int, threads: int, reference: str | None, queue):
    """In a fresh process: build the model, run warm-up and timed training steps, report the figures."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    variables = _variables(config["variables"])
    build = _earthsim_model if which == "earthsim" else _reference_model
    forward, model = build(config, variables) if which == "earthsim" else build(config, variables, reference)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.95), weight_decay=1e-5)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(config["batch"], len(variables), *SHAPE, generator=generator)
    y = torch.randn(config["batch"], len(variables), *SHAPE, generator=generator)
    lead = torch.full((config["batch"],), 0.06)
    lat = torch.linspace(-87.1875, 87.1875, SHAPE[0]).deg2rad().cos()
    weights = (lat / lat.mean()).view(1, 1, -1, 1)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = ((forward(x, lead) - y) ** 2 * weights).mean()
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    queue.put({"seconds_per_step": statistics.median(times), "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "parameters": sum(p.numel() for p in model.parameters())})


def _in_process(*args) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_time_steps, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _forward_backward_seconds(fn, inputs, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        fn(*inputs).sum().backward()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _layer_choices(config: dict, repeats: int) -> list[dict]:
    """The tokeniser and the attention inside earthsim, against their plain alternatives."""
    from earthsim.models.climax import VariableTokeniser

    dim, heads, count, batch = config["embed_dim"], config["num_heads"], config["variables"], config["batch"]
    torch.manual_seed(0)
    tokeniser = VariableTokeniser(count, 2, dim)
    convs = nn.ModuleList(nn.Conv2d(1, dim, 2, stride=2) for _ in range(count))
    ids = torch.arange(count)
    x = torch.randn(batch, count, *SHAPE, requires_grad=True)

    def loop(fields):
        return torch.stack([convs[i](fields[:, i:i + 1]).flatten(2).transpose(1, 2) for i in range(count)], dim=1)

    def grouped_conv2d(fields):
        out = F.conv2d(fields, tokeniser.proj_weights.flatten(0, 1), tokeniser.proj_biases.flatten(), stride=2,
                       groups=count)
        return out.unflatten(1, (count, dim)).flatten(3).transpose(2, 3)

    length = (SHAPE[0] // 2) * (SHAPE[1] // 2)
    q, k, v = (torch.randn(batch, heads, length, dim // heads, requires_grad=True) for _ in range(3))

    def einsum_attention(q, k, v):
        weights = torch.softmax(torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1]), dim=-1)
        return torch.einsum("bhqk,bhkd->bhqd", weights, v)

    rows = []
    for layer, alternative, ours, theirs, inputs in (
            ("tokeniser", "Conv2d per variable", lambda f: tokeniser(f, ids), loop, (x,)),
            ("tokeniser", "F.conv2d(groups=V)", lambda f: tokeniser(f, ids), grouped_conv2d, (x,)),
            ("attention", "einsum + softmax", F.scaled_dot_product_attention, einsum_attention, (q, k, v))):
        mine, other = (_forward_backward_seconds(fn, inputs, repeats) for fn in (ours, theirs))
        rows.append({"layer": layer, "alternative": alternative, "earthsim_s": mine, "alternative_s": other,
                     "ratio": mine / other})
    return rows


def run(quick: bool, reference: str | None, threads: int) -> dict:
    names = ["small"] if quick else ["small", "default"]
    steps, warmup = (2, 1) if quick else (5, 2)
    rows = []
    for name in names:
        config = CONFIGS[name]
        ours = _in_process("earthsim", config, steps, warmup, threads, reference)
        row = {"config": name, **config, "earthsim": ours}
        if reference:
            theirs = _in_process("reference", config, steps, warmup, threads, reference)
            row["reference"] = theirs
            row["time_ratio"] = ours["seconds_per_step"] / theirs["seconds_per_step"]
            row["memory_ratio"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        rows.append(row)
    torch.set_num_threads(threads)
    layers = [{"config": name, **row} for name in names for row in _layer_choices(CONFIGS[name], 2 if quick else 5)]
    return {"threads": threads, "steps": steps, "warmup": warmup, "rows": rows, "layers": layers,
            "target_time_ratio": 0.8}


def markdown(result: dict) -> str:
    lines = [f"ClimaX training step (forward, lat-weighted MSE, backward, AdamW), 32 x 64, fp32, "
             f"{result['threads']} threads, median of {result['steps']} steps", "",
             "| config | batch | parameters | earthsim s/step | reference s/step | ratio | earthsim peak RSS (MB) | "
             "reference peak RSS (MB) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        ref = r.get("reference")
        lines.append(f"| {r['config']} | {r['batch']} | {r['earthsim']['parameters']:,} | "
                     f"{r['earthsim']['seconds_per_step']:.3f} | {ref['seconds_per_step']:.3f} | "
                     f"**{r['time_ratio']:.2f}** | {r['earthsim']['peak_rss_mb']:.0f} | {ref['peak_rss_mb']:.0f} |"
                     if ref else
                     f"| {r['config']} | {r['batch']} | {r['earthsim']['parameters']:,} | "
                     f"{r['earthsim']['seconds_per_step']:.3f} | (no --reference) | | "
                     f"{r['earthsim']['peak_rss_mb']:.0f} | |")
    lines += ["", f"target: earthsim / reference step time <= {result['target_time_ratio']}", "",
              "| config | layer | earthsim (s, fwd+bwd) | alternative (s) | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    for r in result["layers"]:
        lines.append(f"| {r['config']} | {r['layer']} (vs {r['alternative']}) | {r['earthsim_s']:.4f} | "
                     f"{r['alternative_s']:.4f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small configuration only, 2 timed steps (under a minute)")
    parser.add_argument("--reference", help="a checkout of microsoft/ClimaX to time side by side (never committed)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per model (default 2)")
    add_json_argument(parser)
    args = parser.parse_args()
    result = run(args.quick, args.reference, args.threads)
    publish(markdown(result), result, args.json)


if __name__ == "__main__":
    main()
