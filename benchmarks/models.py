"""Model benchmarks, each family against its peer side by side in one run: training-step time and peak memory, and
the choices inside earthsim that the speed comes from. ``--family`` picks sections (default all):

- ``climax``: the training step (forward, latitude-weighted MSE, backward, AdamW) on the 32 x 64 grid, earthsim
  against microsoft/ClimaX's own model at the paper default (48 variables, embed 1024, depth 8, batch 2) and a
  small configuration (embed 256, depth 4, 8 variables, batch 4); then the tokeniser (one batched matmul) against
  a per-variable ``Conv2d`` loop and ``F.conv2d(groups=V)``, and SDPA against einsum attention.
- ``predformer``: the training step (forward, MSE, backward, AdamW) of PredFormer Quadruplet-TSST at the Moving
  MNIST configuration (25.3 M, 10 -> 10 frames of 64 x 64) and Fac-T-S at the weather configuration (5.3 M,
  12 -> 12 of 32 x 64), batch 2, against yyyujintang/PredFormer's ``PredFormer_Model`` built from the same
  dictionary of settings.
- ``convs5``: ConvS5 against the ConvLSTM baseline on the same encoder and decoder at (about) equal parameter
  count: the teacher-forced training step over sequences of 20 to 300 frames, and the generation time per frame
  at horizons 100, 400 and 800 after a 100-frame context, beside PredFormer rolled out in 10-frame chunks; then
  the three ways of running the recurrence over a sequence (FFT, doubling scan, sequential loop), forward and
  backward, at lengths 100 to 1000.

Each training-step figure comes from a fresh process (so that peak resident memory is its own, interpreter and
PyTorch included, ~0.4 GB): the median step after warm-up, fp32, on ``--threads`` CPU threads. Beside it a floor:
the FLOPs ``torch.utils.flop_counter`` counts in the step's forward and backward (dense and batched matrix products
and convolutions; not attention through SDPA's CPU kernel nor FFTs, which it does not count) at the float32
matrix-multiply rate measured on this machine: the time that counted arithmetic alone takes at that rate. References are
checkouts given as ``--reference NAME=PATH`` (never committed): ``climax`` (imports timm 0.6.x), ``predformer``
(imports einops and timm; its model files are loaded by path, with empty stand-ins for the profiling imports
their forward never uses: ``openstl.utils``, ``fvcore.nn``).

    python benchmarks/models.py [--quick] [--family climax predformer convs5] [--reference NAME=PATH ...]
                                [--json PATH]
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
from torch.utils.flop_counter import FlopCounterMode

from report import add_json_argument, publish

CLIMAX_CONFIGS = {
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


def _climax_case(which: str, config: dict, reference: str | None):
    """A ClimaX training case: the model, and a step closure (forward, lat-weighted MSE, backward)."""
    variables = _variables(config["variables"])
    forward, model = _earthsim_model(config, variables) if which == "earthsim" else \
        _reference_model(config, variables, reference)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(config["batch"], len(variables), *SHAPE, generator=generator)
    y = torch.randn(config["batch"], len(variables), *SHAPE, generator=generator)
    lead = torch.full((config["batch"],), 0.06)
    lat = torch.linspace(-87.1875, 87.1875, SHAPE[0]).deg2rad().cos()
    weights = (lat / lat.mean()).view(1, 1, -1, 1)
    return model, lambda: ((forward(x, lead) - y) ** 2 * weights).mean()


def _time_steps(case: str, which: str, config: dict, steps: int, warmup: int, threads: int, reference: str | None,
                queue):
    """In a fresh process: build the case, run warm-up and timed training steps (AdamW), report the figures (or the
    error that stopped them)."""
    try:
        queue.put(_timed_steps(case, which, config, steps, warmup, threads, reference))
    except BaseException:  # noqa: B902 - the parent reports it; a child that died silently would hang the parent
        import traceback

        queue.put({"error": traceback.format_exc()})


def _timed_steps(case: str, which: str, config: dict, steps: int, warmup: int, threads: int,
                 reference: str | None) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, loss_of = CASES[case](which, config, reference)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.95), weight_decay=1e-5)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_of().backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with FlopCounterMode(display=False) as counter:
        loss_of().backward()
    flops, rate = counter.get_total_flops(), _matmul_flops_per_second()
    return {"seconds_per_step": statistics.median(times), "peak_rss_mb": peak_rss_mb,
            "parameters": sum(p.numel() for p in model.parameters()), "gflop_per_step": flops / 1e9,
            "matmul_gflop_per_s": rate / 1e9, "floor_seconds": flops / rate}


def _matmul_flops_per_second() -> float:
    """This machine's measured float32 matrix-multiply rate on the threads set: the fastest of many single products
    of several shapes (each timed alone, so that a moment of interference on a shared machine does not lower it)."""
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (2048, 1024, 1024), (2048, 256, 1024), (2048, 1024, 256)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b  # warm-up
        for _ in range(6):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def _in_process(*args) -> dict:
    """The figures of :func:`_time_steps` run in a fresh (spawned) process."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_time_steps, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise SystemExit(f"benchmark case {args[0]} ({args[1]}) failed in its process:\n{result['error']}")
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


def _climax(quick: bool, references: dict, threads: int) -> dict:
    names = ["small"] if quick else ["small", "default"]
    steps, warmup = (2, 1) if quick else (5, 2)
    reference = references.get("climax")
    rows = []
    for name in names:
        config = CLIMAX_CONFIGS[name]
        row = {"config": name, **config, **_side_by_side("climax", config, steps, warmup, threads, reference)}
        rows.append(row)
    torch.set_num_threads(threads)
    layers = [{"config": name, **row} for name in names
              for row in _layer_choices(CLIMAX_CONFIGS[name], 2 if quick else 5)]
    return {"steps": steps, "warmup": warmup, "rows": rows, "layers": layers, "target_time_ratio": 0.8}


def _side_by_side(case: str, config: dict, steps: int, warmup: int, threads: int, reference: str | None) -> dict:
    """earthsim's figures, and the reference's with the ratios when a checkout is given."""
    ours = _in_process(case, "earthsim", config, steps, warmup, threads, reference)
    row = {"earthsim": ours}
    if reference:
        theirs = _in_process(case, "reference", config, steps, warmup, threads, reference)
        row.update(reference=theirs, time_ratio=ours["seconds_per_step"] / theirs["seconds_per_step"],
                   memory_ratio=ours["peak_rss_mb"] / theirs["peak_rss_mb"])
    return row


# -- PredFormer ---------------------------------------------------------------------------------------------------

PREDFORMER_CONFIGS = {
    "mmnist-quadruplet-tsst": dict(arrangement="quadruplet-tsst", reference="PredFormer_Quadruplet_TSST", depth=6,
                                   shape=(64, 64), frames=10, patch_size=8, mlp_dim=1024, dropout=0.0, drop_path=0.0,
                                   batch=2),
    "weather-fac-t-s": dict(arrangement="fac-t-s", reference="PredFormer_FacTS", depth=4, shape=(32, 64), frames=12,
                            patch_size=4, mlp_dim=512, dropout=0.1, drop_path=0.25, batch=2),
}


def _load_reference_predformer(path: str, name: str):
    """``PredFormer_Model`` of ``openstl/models/{name}.py`` in a yyyujintang/PredFormer checkout, loaded by path."""
    import importlib.util
    import types

    def load(module: str, file: str):
        spec = importlib.util.spec_from_file_location(module, file)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[module] = loaded
        spec.loader.exec_module(loaded)
        return loaded

    # stand-ins for imports the model's forward never uses (throughput and FLOP counting)
    sys.modules.setdefault("openstl", types.ModuleType("openstl")).__path__ = []
    sys.modules["openstl.utils"] = types.SimpleNamespace(measure_throughput=None)
    sys.modules["fvcore"] = types.ModuleType("fvcore")
    sys.modules["fvcore.nn"] = types.SimpleNamespace(FlopCountAnalysis=None, flop_count_table=None)
    load("openstl.modules", f"{path}/openstl/modules/PredFormer_modules.py")
    return load(f"predformer_reference_{name}", f"{path}/openstl/models/{name}.py").PredFormer_Model


def _predformer_case(which: str, config: dict, reference: str | None):
    from earthsim.data.grid import Grid
    from earthsim.models import DataSpec, Statistics, build_model

    height, width = config["shape"]
    frames = config["frames"]
    if which == "earthsim":
        spec = DataSpec(inputs=("v",), outputs=("v",), grid=Grid(x=width, y=height, length=float(width)),
                        statistics=Statistics(mean=(0.0,), std=(1.0,), diff_std=(1.0,)))
        model = build_model("predformer", {"arrangement": config["arrangement"], "depth": config["depth"],
                                           "t_in": frames, "t_out": frames, "patch_size": config["patch_size"],
                                           "mlp_dim": config["mlp_dim"], "dropout": config["dropout"],
                                           "attn_dropout": config["dropout"], "drop_path": config["drop_path"]}, spec)
        forward = lambda x: model.network(x, None, None)  # noqa: E731
    else:
        cls = _load_reference_predformer(reference, config["reference"])
        model = cls(dict(height=height, width=width, num_channels=1, pre_seq=frames, after_seq=frames,
                         patch_size=config["patch_size"], dim=256, heads=8, dim_head=32, dropout=config["dropout"],
                         attn_dropout=config["dropout"], drop_path=config["drop_path"],
                         scale_dim=config["mlp_dim"] // 256, depth=1, Ndepth=config["depth"]))
        forward = model
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(config["batch"], frames, 1, height, width, generator=generator)
    y = torch.randn(config["batch"], frames, 1, height, width, generator=generator)
    return model, lambda: ((forward(x) - y) ** 2).mean()


def _predformer(quick: bool, references: dict, threads: int) -> dict:
    names = ["weather-fac-t-s"] if quick else list(PREDFORMER_CONFIGS)
    steps, warmup = (2, 1) if quick else (5, 2)
    rows = [{"config": name, "batch": PREDFORMER_CONFIGS[name]["batch"],
             **_side_by_side("predformer", PREDFORMER_CONFIGS[name], steps, warmup, threads,
                             references.get("predformer"))} for name in names]
    return {"steps": steps, "warmup": warmup, "rows": rows, "target_time_ratio": 0.8}


# -- ConvS5 against ConvLSTM ----------------------------------------------------------------------------------------

#: About equal parameter counts: a ConvLSTM layer holds twice a ConvS5 layer's weights at the same width, so the
#: ConvLSTM stack has half the layers. Sized for a CPU (the paper's are 256 wide, 8 layers).
SEQUENCE_MODELS = {
    "convs5": ("convs5", dict(d_model=64, ssm_size=64, layers=4, encoder_depths=[32, 64, 64])),
    "convlstm": ("convlstm-resnet", dict(d_model=64, layers=2, encoder_depths=[32, 64, 64])),
}


def _sequence_model(which: str):
    from earthsim.data.grid import Grid
    from earthsim.models import DataSpec, Statistics, build_model

    spec = DataSpec(inputs=("v",), outputs=("v",), grid=Grid(x=64, y=64, length=64.0),
                    statistics=Statistics(mean=(0.0,), std=(1.0,), diff_std=(1.0,)))
    name, config = SEQUENCE_MODELS[which]
    return build_model(name, config, spec)


def _sequence_case(which: str, config: dict, reference: str | None):
    """Teacher-forced training over ``config['frames']`` frames of 64 x 64 (the family's own training step)."""
    from earthsim.models import Batch

    model = _sequence_model(which)
    generator = torch.Generator().manual_seed(1)
    frames = config["frames"]
    sequence = torch.randn(config["batch"], frames + 1, 1, 64, 64, generator=generator)
    batch = Batch(sequence[:, :1], sequence[:, 1:], torch.ones(config["batch"]))
    return model, lambda: model.training_loss(batch, frames, lambda p, t: ((p - t) ** 2).mean())


def _generation_seconds_per_frame(model, horizons: list[int], context: int) -> list[float]:
    """Seconds per generated frame at each horizon after ``context`` frames, the context's digest left out: the
    time of a rollout of ``h`` frames less that of one frame, over ``h - 1`` (the rollout the forecast uses)."""
    from earthsim.models import rollout

    x = torch.randn(1, context, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    model.eval()

    def seconds(frames: int) -> float:
        start = time.perf_counter()
        rollout(model, x, frames)
        return time.perf_counter() - start

    with torch.no_grad():
        seconds(2)  # warm-up
        first = min(seconds(1) for _ in range(3))
        return [(seconds(horizon) - first) / (horizon - 1) for horizon in horizons]


def _scan_seconds(lengths: list[int], repeats: int) -> list[dict]:
    """Forward + backward of the recurrence alone (32 complex channels on 16 x 16, batch 2) by each scan."""
    from earthsim.models.convs5 import SCAN_FUNCTIONS

    rows = []
    for length in lengths:
        generator = torch.Generator().manual_seed(length)
        a = torch.polar(0.5 + 0.49 * torch.rand(32, generator=generator), torch.rand(32, generator=generator) * 6.28)
        bu = torch.complex(*torch.randn(2, 2, length, 32, 16, 16, generator=generator))
        row = {"length": length}
        for name, scan in SCAN_FUNCTIONS.items():
            leaf_a, leaf_bu = a.clone().requires_grad_(), bu.clone().requires_grad_()
            row[f"{name}_s"] = _forward_backward_seconds(lambda p, q: scan(p, q, None).real, (leaf_a, leaf_bu),
                                                         repeats)
        rows.append(row)
    return rows


def _convs5(quick: bool, references: dict, threads: int) -> dict:
    lengths = [10] if quick else [20, 100, 300]
    steps, warmup = (1, 1) if quick else (3, 1)
    training = []
    for frames in lengths:
        config = {"frames": frames, "batch": 2}
        figures = {which: _in_process("sequence", which, config, steps, warmup, threads, None)
                   for which in SEQUENCE_MODELS}
        training.append({"frames": frames, **figures, "time_ratio": figures["convs5"]["seconds_per_step"]
                         / figures["convlstm"]["seconds_per_step"]})
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    horizons = [20, 40] if quick else [100, 400, 800]
    context = 10 if quick else 100
    generation = {which: _generation_seconds_per_frame(_sequence_model(which), horizons, context)
                  for which in SEQUENCE_MODELS}
    predformer = _predformer_case("earthsim", dict(PREDFORMER_CONFIGS["mmnist-quadruplet-tsst"], batch=1), None)[0]
    generation["predformer"] = _generation_seconds_per_frame(predformer, horizons, 10)
    scans = _scan_seconds([50, 100] if quick else [100, 300, 1000], 1 if quick else 3)
    return {"steps": steps, "warmup": warmup, "training": training, "horizons": horizons, "context": context,
            "generation": generation, "scans": scans, "target_time_ratio": 1 / 3, "target_flatness": 1.2}


CASES = {"climax": _climax_case, "predformer": _predformer_case, "sequence": _sequence_case}
FAMILIES = {"climax": _climax, "predformer": _predformer, "convs5": _convs5}


# -- report --------------------------------------------------------------------------------------------------------

def _step_table(title: str, rows: list[dict], target: float) -> list[str]:
    lines = [title, "", "| config | batch | parameters | earthsim s/step | reference s/step | ratio | GFLOP/step | "
             "floor s/step | floor / reference | earthsim peak RSS (MB) | reference peak RSS (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ours, ref = r["earthsim"], r.get("reference")
        head = f"| {r['config']} | {r['batch']} | {ours['parameters']:,} | {ours['seconds_per_step']:.3f} | "
        floor = f"{ours['gflop_per_step']:.1f} | {ours['floor_seconds']:.3f} | "
        lines.append(head + (f"{ref['seconds_per_step']:.3f} | **{r['time_ratio']:.2f}** | {floor}"
                             f"{ours['floor_seconds'] / ref['seconds_per_step']:.2f} | {ours['peak_rss_mb']:.0f} | "
                             f"{ref['peak_rss_mb']:.0f} |" if ref else
                             f"(no --reference) | | {floor} | {ours['peak_rss_mb']:.0f} | |"))
    rates = [r["earthsim"]["matmul_gflop_per_s"] for r in rows]
    return lines + ["", f"target: earthsim / reference step time <= {target}; floor: the step's counted FLOPs (matrix "
                    f"products and convolutions; not SDPA attention on CPU, not FFTs) at the float32 matrix-multiply rate "
                    f"measured in its process ({min(rates):.0f}-{max(rates):.0f} GFLOP/s)", ""]


def markdown(result: dict) -> str:
    threads = result["threads"]
    lines = []
    if "climax" in result:
        climax = result["climax"]
        lines += _step_table(f"ClimaX training step (forward, lat-weighted MSE, backward, AdamW), 32 x 64, fp32, "
                             f"{threads} threads, median of {climax['steps']} steps", climax["rows"],
                             climax["target_time_ratio"])
        lines += ["| config | layer | earthsim (s, fwd+bwd) | alternative (s) | ratio |",
                  "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {r['config']} | {r['layer']} (vs {r['alternative']}) | {r['earthsim_s']:.4f} | "
                  f"{r['alternative_s']:.4f} | {r['ratio']:.2f} |" for r in climax["layers"]] + [""]
    if "predformer" in result:
        predformer = result["predformer"]
        lines += _step_table(f"PredFormer training step (forward, MSE, backward, AdamW), fp32, {threads} threads, "
                             f"median of {predformer['steps']} steps", predformer["rows"],
                             predformer["target_time_ratio"])
    if "convs5" in result:
        convs5 = result["convs5"]
        lines += [f"ConvS5 against ConvLSTM on the same encoder and decoder (64 x 64 frames, batch 2, fp32, {threads} "
                  f"threads): teacher-forced training step over a sequence", "",
                  "| frames | ConvS5 s/step | ConvLSTM s/step | ratio | ConvS5 GFLOP | ConvLSTM GFLOP | "
                  "ConvS5 floor s | ConvS5 floor / ConvLSTM | ConvS5 params | ConvLSTM params | "
                  "ConvS5 peak RSS (MB) | ConvLSTM peak RSS (MB) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in convs5["training"]:
            s5, lstm = r["convs5"], r["convlstm"]
            lines.append(f"| {r['frames']} | {s5['seconds_per_step']:.3f} | {lstm['seconds_per_step']:.3f} | "
                         f"**{r['time_ratio']:.2f}** | {s5['gflop_per_step']:.1f} | {lstm['gflop_per_step']:.1f} | "
                         f"{s5['floor_seconds']:.3f} | {s5['floor_seconds'] / lstm['seconds_per_step']:.2f} | "
                         f"{s5['parameters']:,} | {lstm['parameters']:,} | "
                         f"{s5['peak_rss_mb']:.0f} | {lstm['peak_rss_mb']:.0f} |")
        lines += ["", f"target: ConvS5 / ConvLSTM <= {convs5['target_time_ratio']:.2f} from 100 frames; floor as above "
                  "(ConvS5's FFT over time not counted)", "",
                  f"Generation, seconds per frame after a {convs5['context']}-frame context, its digest left out "
                  "(PredFormer: 10-frame context, 10-frame chunks fed back)", "",
                  "| model | " + " | ".join(f"horizon {h}" for h in convs5["horizons"]) + " | last / first |",
                  "| --- | " + " | ".join("---:" for _ in convs5["horizons"]) + " | ---: |"]
        for model, seconds in convs5["generation"].items():
            lines.append(f"| {model} | " + " | ".join(f"{v:.4f}" for v in seconds) +
                         f" | **{seconds[-1] / seconds[0]:.2f}** |")
        lines += ["", f"target: ConvS5 at the longest horizon <= {convs5['target_flatness']} x the shortest", "",
                  "The recurrence alone, forward + backward (32 complex channels, 16 x 16, batch 2), seconds", "",
                  "| length | FFT | doubling scan | loop |", "| ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['length']} | {r['fft_s']:.4f} | {r['doubling_s']:.4f} | {r['loop_s']:.4f} |"
                  for r in convs5["scans"]]
    return "\n".join(lines)


def _references(items: list[str]) -> dict:
    references = {}
    for item in items:
        name, _, path = item.partition("=")
        if name not in ("climax", "predformer") or not path:
            raise SystemExit(f"--reference {item!r}: expected climax=PATH or predformer=PATH")
        references[name] = path
    return references


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the smallest configurations, fewest steps")
    parser.add_argument("--family", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                        help="sections to run (default all)")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=PATH",
                        help="a reference checkout to time side by side: climax=PATH, predformer=PATH (never "
                             "committed)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per model (default 2)")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    references = _references(args.reference)
    result = {"threads": args.threads}
    for family in args.family:
        result[family] = FAMILIES[family](args.quick, references, args.threads)
    publish(markdown(result), result, args.json)


if __name__ == "__main__":
    main()
