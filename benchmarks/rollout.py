"""Forecast rollout throughput of an FNO on 64² fields, side by side with the model's own forward pass.

Builds a synthetic 64² fluid store (travelling waves, float32; default 8 trajectories × 42 frames)
with its statistics, exports the FNO of ``catalogs/experiments/kolmogorov-fno.yaml`` (random
weights: speed does not depend on them, one frame in, one out, residual), and measures at each
batch size, in frames per second:

- forward (peer/physical limit): ``model(x)`` on a batch already in memory, nothing else, called
  ``--steps`` times — the most any rollout of this model can deliver on this machine;
- rollout in memory: :func:`earthsim.models.rollout` over ``--steps`` steps (feedback; the model
  normalises, applies its residual update and de-normalises) on a batch already in memory;
- forecast store: :func:`earthsim.forecast.run_forecast` end to end — reading initial conditions
  from the store, rolling out, and writing every block into the Zarr forecast store with its
  resume flag — for every initial time of the test split.

Each figure is the fastest of ``--repeat`` timed runs (the machine may be shared), forward and
in-memory rollout after a warm-up; a forecast-store run is timed from the call to the finished
store, each run writing a new store.

    python benchmarks/rollout.py                 # batch sizes 1 8 32
    python benchmarks/rollout.py --quick --json rollout.json
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from report import add_json_argument, publish

N = 64


def build_dataset(root: Path, trajectories: int, frames: int) -> Path:
    """A 64² fluid store of travelling waves, its catalog entry (all but one trajectory test) and statistics."""
    import xarray as xr

    from earthsim.data.stats import compute_statistics
    from earthsim.data.store import write_zarr

    x = np.arange(N) * 2 * np.pi / N
    rng = np.random.default_rng(0)
    data = np.empty((trajectories, frames, N, N), np.float32)
    for i in range(trajectories):
        phase, amp = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.5, 1.5, 2)
        t = np.arange(frames)[:, None, None]
        data[i] = (amp[0] * np.sin(x[None, None, :] - 0.3 * t + phase[0])
                   + amp[1] * np.cos(2 * x[None, :, None] + 0.2 * t + phase[1]))
    ds = xr.Dataset({"vorticity": (("trajectory", "time", "y", "x"), data, {"units": "1"})},
                    coords={"trajectory": np.arange(trajectories), "time": np.arange(frames) * 0.1, "y": x, "x": x})
    write_zarr(ds, root / "bench.zarr", progress=False)
    entry = {
        "name": "rollout-bench", "kind": "fluid", "description": "synthetic store for benchmarks/rollout.py",
        "store": "bench.zarr", "variables": {"vorticity": {"units": "1"}},
        "grid": {"x": N, "y": N, "length": 2 * math.pi}, "time": {"step": 0.1, "units": "solver time units"},
        "splits": {"train": {"trajectory": [0, 1]}, "test": {"trajectory": [1, trajectories]}},
        "statistics": "bench.stats.zarr", "licence": "synthetic", "provenance": "benchmarks/rollout.py",
    }
    path = root / "rollout-bench.yaml"
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    compute_statistics(str(path), progress=False)
    return path


def export_fno(entry: Path, path: Path) -> dict:
    """The kolmogorov-fno experiment's FNO with seeded random weights, exported as the trainer exports it."""
    from earthsim.data.windows import WindowDataset
    from earthsim.models import DataSpec, build_model, export_model
    from earthsim.train.config import experiment_path

    experiment = yaml.safe_load(experiment_path("kolmogorov-fno").read_text())
    params = {**experiment["model"]["params"], "t_in": 1, "t_out": 1}
    windows = WindowDataset(str(entry), "train", t_in=1, t_out=1)
    torch.manual_seed(0)
    model = build_model(experiment["model"]["name"], params, DataSpec.from_windows(windows))
    export_model(model, path, dataset=windows.entry.name, stride=1, lead_strides=(1,))
    return {"name": experiment["model"]["name"], "params": params,
            "parameters": sum(p.numel() for p in model.parameters())}


def fastest_seconds(fn, repeat: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def run(args) -> dict:
    from earthsim.forecast import run_forecast
    from earthsim.models import load_exported, rollout

    trajectories = args.trajectories or (3 if args.quick else 8)
    frames = args.frames or (26 if args.quick else 42)  # 16 or 32 initial times per trajectory: whole blocks
    root = Path(tempfile.mkdtemp(prefix="earthsim-rollout-bench-"))
    try:
        entry = build_dataset(root, trajectories, frames)
        model_info = export_fno(entry, root / "model.pt")
        model = load_exported(root / "model.pt")[0].to(args.device)
        forecasts = (trajectories - 1) * (frames - args.steps)
        results = []
        for batch in args.batch_sizes:
            x = torch.randn(batch, 1, 1, N, N, device=args.device)

            def forward():  # as many calls as a rollout makes, so both are timed over the same work
                with torch.inference_mode():
                    for _ in range(args.steps):
                        model(x)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()

            def chained():
                with torch.inference_mode():
                    rollout(model, x, args.steps)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()

            def store():
                out = root / f"forecast-{batch}.zarr"
                run_forecast(root / "model.pt", str(entry), "test", steps=args.steps, out=out, batch_size=batch,
                             progress=False, device=args.device)
                shutil.rmtree(out)

            forward_s = fastest_seconds(forward, args.repeat)
            rollout_s = fastest_seconds(chained, args.repeat)
            store_s = fastest_seconds(store, args.store_repeat, warm_up=False)
            row = {"batch_size": batch,
                   "forward_frames_per_s": batch * args.steps / forward_s,
                   "rollout_frames_per_s": batch * args.steps / rollout_s,
                   "store_frames_per_s": forecasts * args.steps / store_s,
                   "store_seconds": store_s}
            row["rollout/forward"] = row["rollout_frames_per_s"] / row["forward_frames_per_s"]
            row["store/forward"] = row["store_frames_per_s"] / row["forward_frames_per_s"]
            results.append(row)
            print(f"  batch {batch:4d}: forward {row['forward_frames_per_s']:9.1f} frames/s, rollout "
                  f"{row['rollout_frames_per_s']:9.1f}, forecast store {row['store_frames_per_s']:9.1f}", flush=True)
        return {
            "model": model_info,
            "grid": [N, N],
            "store": {"trajectories": trajectories - 1, "frames": frames, "initial_times": forecasts,
                      "steps": args.steps, "frames_forecast": forecasts * args.steps},
            "device": args.device,
            "timing": f"fastest of {args.repeat} runs after a warm-up (forward, rollout) and of {args.store_repeat} "
                      "runs (forecast store, call to finished store)",
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version(), "torch": torch.__version__},
            "results": results,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def markdown(report: dict) -> str:
    store = report["store"]
    lines = [
        f"FNO ({report['model']['parameters']:,} parameters, {report['model']['params']}) on {report['grid'][0]}² "
        f"fields, {report['device']}, {report['machine']['torch_threads']} torch threads of "
        f"{report['machine']['cpus']} CPUs. Forecast store: {store['initial_times']} initial times × "
        f"{store['steps']} steps = {store['frames_forecast']} frames. {report['timing']}.",
        "",
        "| batch | forward frames/s (limit) | rollout frames/s | forecast store frames/s | rollout/forward "
        "| store/forward |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(f"| {r['batch_size']} | {r['forward_frames_per_s']:.1f} | {r['rollout_frames_per_s']:.1f} | "
                     f"{r['store_frames_per_s']:.1f} | {r['rollout/forward']:.2f} | {r['store/forward']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small store (2 test trajectories × 26 frames)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default 1 8 32 (1 8 with --quick)")
    parser.add_argument("--steps", type=int, default=10, help="frames forecast per initial time (default 10)")
    parser.add_argument("--trajectories", type=int, help="trajectories in the store, one of them for training "
                                                         "(default 8; 3 with --quick)")
    parser.add_argument("--frames", type=int, help="frames per trajectory (default 42; 26 with --quick): 32 (16) "
                                                   "initial times, so that every batch size makes whole blocks")
    parser.add_argument("--repeat", type=int, help="timed forward passes and rollouts per batch size "
                                                   "(default 5; 3 with --quick)")
    parser.add_argument("--store-repeat", type=int, help="timed forecast-store runs per batch size (default 2; 1 "
                                                         "with --quick)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    args.store_repeat = args.store_repeat or (1 if args.quick else 2)
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.batch_sizes = args.batch_sizes or ([1, 8] if args.quick else [1, 8, 32])
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frames is not None and args.frames <= args.steps:
        parser.error(f"--frames must exceed --steps ({args.steps})")
    report = run(args)
    publish(markdown(report), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
