"""The Spectral Refiner on test windows: a trained space-time FNO before and after its H⁻¹ residual fine-tuning,
against the pseudo-spectral solver that made the data, run at coarser and equal resolutions.

For each test window (``--windows``, every ``--every``-th window of the split by default) the
trained model (``RUN``'s ``model.pt``) is fine-tuned on that window alone with
:func:`earthsim.train.refine.refine` (as the paper does: the refined output layer belongs to its
input), and the script records, over the ``T_out`` predicted frames:

- relative L2 to the stored truth and the H⁻¹ norm of the vorticity equation's residual, before
  and after fine-tuning, and the fine-tuning seconds;
- the residual norm of the truth itself (the floor the finite differences in time leave);
- the solver from the last input frame (spectrally resampled to each ``--solver-resolutions``
  grid, CFL step of the dataset's configuration) over the same frames: relative L2 on the
  dataset's grid and wall seconds per window.

Everything runs in float64 on ``--threads`` CPU threads (default 1: these small FFTs run fastest on
one thread). The model must have been trained on a store made by earthsim's Navier–Stokes solver.

    python benchmarks/refiner.py runs/refiner --dataset fno-paper-32 --json refiner.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from report import add_json_argument, publish


def solver_forecast(entry, x_last: torch.Tensor, frames: int, resolution: int, interval: float
                    ) -> tuple[torch.Tensor, float]:
    """The entry's solver from ``x_last`` ``[B, n, n]`` at ``resolution``: ``frames`` frames ``interval`` apart (the
    model's frame spacing), resampled back to n², and the wall seconds it took."""
    from earthsim import config as config_lib
    from earthsim.sim.navier_stokes import NavierStokes2D, NavierStokesConfig, resample

    config = config_lib.build(NavierStokesConfig, entry.source.params, f"dataset {entry.name!r} source")
    n = x_last.shape[-1]
    start = time.perf_counter()
    solver = NavierStokes2D.from_config(config, resolution=resolution)
    frames_out = solver.rollout(resample(x_last, resolution), frames, interval)
    seconds = time.perf_counter() - start
    return resample(frames_out, n), seconds


def run(args) -> dict:
    from earthsim import catalog
    from earthsim.data.windows import WindowDataset
    from earthsim.models.export import load_exported
    from earthsim.train.refine import Physics, full_modes, hminus1_norm, refine, relative_l2, residual_norm, \
        vorticity_residual

    entry = catalog.get_entry(args.dataset)
    base, record = load_exported(args.run)
    data = WindowDataset(entry, args.split, t_in=base.t_in, t_out=base.t_out, stride=record.stride,
                         normalise=False, lead_strides=record.lead_strides)
    windows = args.windows or list(range(0, len(data), args.every))
    modes = tuple(args.modes) if args.modes else full_modes(base)
    rows = []
    for index in windows:
        model, _ = load_exported(args.run)
        model = model.double()
        physics = Physics.from_spec(model.spec)
        sample = data[index]
        x = sample["x"][None].double()
        truth = sample["y"][None][:, :, model.spec.output_index].double()
        with torch.no_grad():
            before = model(x)
            row = {"window": index, "l2_before": relative_l2(before, truth).item(),
                   "residual_before": residual_norm(model, x, before, physics).item(),
                   "residual_truth": residual_norm(model, x, truth, physics).item()}
        result = refine(model, x, modes=modes, steps=args.steps, lr_bias=args.lr_bias, lr_weight=args.lr_weight)
        with torch.no_grad():
            after = model(x)
            row.update(l2_after=relative_l2(after, truth).item(),
                       residual_after=residual_norm(model, x, after, physics).item(), refine_seconds=result.seconds)
        for resolution in args.solver_resolutions:
            predicted, seconds = solver_forecast(entry, x[:, -1, 0], base.t_out, resolution, model.spec.time_step)
            row[f"solver_{resolution}_l2"] = relative_l2(predicted[:, :, None], truth).item()
            row[f"solver_{resolution}_seconds"] = seconds
        rows.append(row)
        print(f"window {index}: L2 {row['l2_before']:.3e} -> {row['l2_after']:.3e}, residual "
              f"{row['residual_before']:.3e} -> {row['residual_after']:.3e} (truth {row['residual_truth']:.3e}), "
              f"{row['refine_seconds']:.2f} s", file=sys.stderr)
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "window"}
    return {"run": args.run, "dataset": args.dataset, "split": args.split, "windows": windows, "modes": list(modes),
            "modes_trained": list(base.config.output_modes), "steps": args.steps, "lr_bias": args.lr_bias,
            "lr_weight": args.lr_weight, "threads": torch.get_num_threads(),
            "solver_resolutions": args.solver_resolutions, "mean": mean, "rows": rows}


def markdown(report: dict) -> str:
    mean = report["mean"]
    lines = [f"{len(report['windows'])} test windows of {report['dataset']}, means; fine-tuning: output layer "
             f"{tuple(report['modes_trained'])} → {tuple(report['modes'])} modes, {report['steps']} Adam steps",
             "", "| | relative L2 | residual H⁻¹ norm | seconds per window |", "| --- | --- | --- | --- |",
             f"| space-time FNO | {mean['l2_before']:.2e} | {mean['residual_before']:.2e} | |",
             f"| after fine-tuning | {mean['l2_after']:.2e} | {mean['residual_after']:.2e} | "
             f"{mean['refine_seconds']:.2f} (fine-tuning) |",
             f"| truth | 0 | {mean['residual_truth']:.2e} | |"]
    for resolution in report["solver_resolutions"]:
        lines.append(f"| solver at {resolution}² | {mean[f'solver_{resolution}_l2']:.2e} | | "
                     f"{mean[f'solver_{resolution}_seconds']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder or model.pt of a trained spacetime-fno")
    parser.add_argument("--dataset", required=True, help="catalog dataset (made by earthsim's Navier–Stokes solver)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--windows", type=int, nargs="+", help="window indices (default: every --every-th)")
    parser.add_argument("--every", type=int, default=7, help="window spacing when --windows is not given")
    parser.add_argument("--modes", type=int, nargs=3, help="modes of the rebuilt output layer (default: all)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lr-bias", type=float, default=1e-4)
    parser.add_argument("--lr-weight", type=float, default=1e-4)
    parser.add_argument("--solver-resolutions", type=int, nargs="+", default=[8, 12, 16, 24, 32, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run(args)
    publish(markdown(report), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
