"""Time to result (issue 12), after AlgoPerf's training-algorithms benchmark: how long, in training seconds and in
training samples, each model family takes to FIRST reach a stated validation target, side by side in one run.

Every registered family trains through the real trainer (:class:`earthsim.train.trainer.Trainer`, its loop, loader,
optimiser and schedule) from a shipped experiment with the overrides listed in the output, on one of three tasks:

- ``kolmogorov``: Kolmogorov flow, vorticity on 64² (``kolmogorov-64``); relative L2 of the vorticity 4 frames
  (0.4 time units) after the last input frame;
- ``staggered``: the same flow on the learned solvers' staggered 32² store (``kolmogorov-fv-32``: u, v and
  vorticity); TSM and learned interpolation need u and v, so they run here, with an FNO on the same store for
  comparison; relative L2 of the vorticity 20 store frames (0.28 time units) ahead;
- ``weather``: the ERA5 UK 2 m temperature month (``era5-uk-t2m``) for the weather families (ClimaX, PredFormer,
  FNO); latitude-weighted RMSE of t2m, in K, 6 h ahead.

The evaluation is the same for every family of a task: every K training samples (``validation.every_samples``)
the trainer calls the benchmark's validation, which scores the same validation windows (evenly spaced over the
split, each giving every family its own context frames ending at the same frame) at the same lead — a rollout
for iterative families, one direct call at the lead for a lead-conditioned one — with dropout off. The trainer
stops at the first evaluation at or below the target (``validation.target``) or when the budget of training
seconds is spent (``max_seconds``, checked after each optimiser step; the step that ends past it is evaluated
too). Times are training seconds: data loading and optimiser steps, evaluation excluded (its seconds are
reported beside). Each recipe's optimiser and warm-up are kept and its cosine decay stretched past any budget
(``epochs`` 10⁵), so every family trains at its peak learning rate until it stops. Samples are training windows
(a ConvS5 window is 16 frames, an FNO window 3): the seconds are the common currency.

    python benchmarks/time_to_result.py [--budget SECONDS] [--only FAMILY@TASK ...] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from earthsim import catalog
from earthsim.data.grid import latitude_weights
from earthsim.data.loader import collate_windows
from earthsim.data.stats import load_statistics
from earthsim.data.windows import WindowDataset
from earthsim.models import MODELS, Batch, direct, rollout
from earthsim.train.config import load_experiment
from earthsim.train.metrics import read_metrics
from earthsim.train.trainer import Trainer

from report import add_json_argument, publish


@dataclass(frozen=True)
class Task:
    """One dataset, one validation score and its target, and the evaluation schedule its families share."""

    name: str
    entry: str
    variable: str
    metric: str  # "rel_l2" or "rmse"
    lead: int  # store frames after the last input frame
    context: int  # store frames of context in each validation window (the longest any family reads)
    batch_size: int
    every_samples: int
    target: float
    windows: int = 32  # validation windows, evenly spaced over the split

    @property
    def metric_name(self) -> str:
        return f"{self.metric}_{self.variable}_lead{self.lead}"

    def describe(self) -> str:
        step = catalog.get_entry(self.entry).time_step
        what = "relative L2" if self.metric == "rel_l2" else "RMSE (K)"
        units = "h" if catalog.get_entry(self.entry).kind == "weather" else "time units"
        return f"{what} of {self.variable} at +{self.lead * step:.3g} {units}"


#: Each target is one the slowest family of its task reached within a few minutes in a calibration run on this
#: 2-core machine (300 s per family, no target; the curves are in README): the space-time FNO's best on
#: Kolmogorov was 0.764 (persistence 0.80), the FNO's on the staggered store 0.511 (it levels off there while
#: TSM and learned interpolation go on to 0.19-0.21), ClimaX's on ERA5 1.91 K after its 100 warm-up steps.
TASKS = {
    "kolmogorov": Task("kolmogorov", "kolmogorov-64", "vorticity", "rel_l2", lead=4, context=10, batch_size=8,
                       every_samples=256, target=0.77),
    "staggered": Task("staggered", "kolmogorov-fv-32", "vorticity", "rel_l2", lead=20, context=8, batch_size=4,
                      every_samples=32, target=0.52),
    "weather": Task("weather", "era5-uk-t2m", "t2m", "rmse", lead=6, context=12, batch_size=16, every_samples=256,
                    target=2.0),
}


@dataclass(frozen=True)
class Case:
    """One family on one task: a shipped experiment and the overrides that put it on the task's data."""

    family: str
    task: str
    experiment: str
    overrides: tuple[str, ...] = ()
    note: str = ""


_RECURRENT = ("model.params.t_in=1", "model.params.d_model=32", "model.params.encoder_depths=[16, 32, 32]",
              "model.params.residual=true")
CASES = [
    Case("fno", "kolmogorov", "kolmogorov-fno"),
    Case("tfno", "kolmogorov", "kolmogorov-fno", ("model.name=tfno",), "kolmogorov-fno's recipe, Tucker rank 0.1"),
    Case("spacetime-fno", "kolmogorov", "kolmogorov-spacetime-fno", (), "10 frames in, 10 out; scored on the 4th"),
    Case("predformer", "kolmogorov", "predformer-kolmogorov", (), "4 frames in, 4 out"),
    Case("convs5", "kolmogorov", "convs5-kolmogorov", (), "teacher-forced on 16-frame windows"),
    Case("convlstm-resnet", "kolmogorov", "convs5-kolmogorov",
         ("model.name=convlstm-resnet", "model.params={}", *_RECURRENT, "model.params.layers=2"),
         "convs5-kolmogorov's encoder and recipe, 2 ConvLSTM layers (the ConvS5 paper's baseline)"),
    Case("convlstm", "kolmogorov", "convs5-kolmogorov",
         ("model.name=convlstm", "model.params={t_in: 1, hidden: [32, 32], kernel_size: 5, patch_size: 4, "
          "residual: true}"), "convs5-kolmogorov's recipe, ConvLSTM cells on 4x4 patches"),
    Case("fno", "staggered", "fno-kolmogorov-fv-32", (), "vorticity only, 10 store frames a step"),
    Case("learned-interpolation", "staggered", "learned-interpolation-kolmogorov-32"),
    Case("tsm", "staggered", "tsm-kolmogorov-32"),
    Case("climax", "weather", "climax-era5-uk", ("data.t_in=12",),
         "12 h in (the preset reads 24; the task's windows hold 12), leads of 1-24 h drawn per sample; scored by a "
         "direct call"),
    Case("predformer", "weather", "predformer-era5-uk-small", (), "12 h in, 12 h out; scored on the 6th"),
    Case("fno", "weather", "era5-uk-fno"),
]
#: Registered families that no task here can take, and why.
NOT_APPLICABLE = {"sfno": "needs a global equiangular grid with poles; Kolmogorov is a periodic box, ERA5 UK regional"}

#: What every case gets: the task's dataset and batch size, one budget, no mid-run checkpoints, the target.
SCHEDULE = ("epochs=100000", "max_steps=null", "checkpoint.every_steps=1000000000", "device=cpu")


def own_overrides(case: Case, task: Task) -> list[str]:
    """The overrides that put ``case``'s experiment on its task's data (and its own, if any)."""
    data = [f"data.dataset={task.entry}", f"data.batch_size={task.batch_size}", f"data.variables=[{task.variable}]"]
    if case.family in ("learned-interpolation", "tsm"):
        data = data[:2]  # they read u, v and vorticity
    return [*data, *case.overrides]


def common_overrides(task: Task, budget: float) -> list[str]:
    """The overrides every case of ``task`` gets: the schedule, the budget, the evaluation and the target."""
    return [*SCHEDULE, f"max_seconds={budget:g}", f"validation.every_samples={task.every_samples}",
            f"validation.target_metric={task.metric_name}", f"validation.target={task.target:g}"]


class Evaluation:
    """The task's validation windows in memory: ``context`` frames of context and ``lead`` frames after them."""

    def __init__(self, task: Task, variables, derived, windows: int):
        entry = catalog.get_entry(task.entry)
        ds = WindowDataset(entry, "validation", t_in=task.context, t_out=task.lead, stride=1, variables=variables,
                           normalise=False, statistics=load_statistics(entry, progress=False), derived=derived)
        self.task, self.time_step = task, ds.time_step
        self.indices = sorted(set(np.linspace(0, len(ds) - 1, min(windows, len(ds))).round().astype(int).tolist()))
        self.batch = collate_windows(ds.__getitems__(self.indices))
        self.channel = ds.channels.index(task.variable)
        lat = ds.grid.latitudes()
        self.weights = None if lat is None else torch.as_tensor(latitude_weights(lat), dtype=torch.float32)[:, None]

    def score(self, prediction: torch.Tensor, truth: torch.Tensor) -> float:
        """The task's score over windows: mean relative L2, or the RMSE of area-weighted mean squared errors."""
        error = (prediction - truth).double()
        if self.task.metric == "rel_l2":
            return (error.flatten(1).norm(dim=1) / truth.double().flatten(1).norm(dim=1)).mean().item()
        weights = torch.ones(truth.shape[-2:], dtype=torch.float64) if self.weights is None else self.weights.double()
        return math.sqrt(((error ** 2) * weights).mean().item())

    def persistence(self) -> float:
        """The score of repeating the last context frame."""
        x, y = self.batch["x"], self.batch["y"]
        return self.score(x[:, -1, self.channel], y[:, -1, self.channel])

    @torch.no_grad()
    def __call__(self, model, cfg, device, batch_size: int = 16) -> float:
        """The score of ``model`` (trained with ``cfg``): its own context frames ending at the last context frame,
        ``lead`` frames ahead (rolled out every ``stride`` frames, or one direct call at the lead)."""
        stride, t_in, lead = cfg.data.stride, model.t_in, self.task.lead
        first = self.task.context - 1 - (t_in - 1) * stride
        if first < 0 or lead % stride:
            raise ValueError(f"{cfg.model.name}: t_in={t_in}, stride {stride} do not fit {self.task.context} context "
                             f"frames and a lead of {lead}")
        spec = model.spec
        out = spec.outputs.index(self.task.variable)
        predictions = []
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(self.indices), batch_size):
                part = {k: (v if k == "static" else v[start:start + batch_size]) for k, v in self.batch.items()}
                batch = Batch.from_mapping(part, device)
                x = batch.x[:, first::stride]
                with cfg.parallelism.autocast(device):
                    if cfg.data.leads() is not None:  # lead-conditioned on a drawn lead: one call at the lead
                        lead_time = torch.tensor([lead * self.time_step], device=device)
                        pred = direct(model, x, lead_time, batch.static)[:, -1]
                    else:
                        frames = lead // stride
                        forcing = spec.forcing_index
                        forcings = batch.y[:, stride - 1::stride][:, :frames][:, :, forcing] if forcing else None
                        lead_time = torch.full((x.shape[0],), stride * self.time_step, device=device)
                        pred = rollout(model, x, frames, batch.static, lead_time, forcings)[:, -1]
                predictions.append(pred[:, out].float().cpu())
        finally:
            model.train(was_training)
        return self.score(torch.cat(predictions), self.batch["y"][:, -1, self.channel])


class TimeToResultTrainer(Trainer):
    """The trainer, validating with the task's :class:`Evaluation` (the same windows and score for every family)."""

    def __init__(self, cfg, run_dir, task: Task, windows: int):
        super().__init__(cfg, run_dir, progress=False)
        self.task = task
        self.evaluation = Evaluation(task, cfg.data.variables, cfg.data.derived, windows)

    def validate(self) -> dict[str, float]:
        return {self.task.metric_name: self.evaluation(self.model, self.cfg, self.world.device)}


def run_case(case: Case, task: Task, budget: float, run_dir: Path) -> dict:
    overrides = own_overrides(case, task) + common_overrides(task, budget)
    cfg = load_experiment(case.experiment, overrides)
    started = time.perf_counter()
    trainer = TimeToResultTrainer(cfg, run_dir, task, task.windows)
    parameters = sum(p.numel() for p in trainer.model.parameters())
    setup = time.perf_counter() - started
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's line per evaluation: progress, not the table
        summary = trainer.fit()
    curve = [{"samples": int(r["samples"]), "train_seconds": r["train_seconds"], "value": r[task.metric_name]}
             for r in read_metrics(run_dir, "validation")]
    target = summary["target"]
    return {
        "family": case.family, "task": task.name, "dataset": task.entry, "experiment": case.experiment,
        "overrides": overrides, "own_overrides": own_overrides(case, task), "note": case.note,
        "model": cfg.model.name, "model_params": cfg.model.params,
        "parameters": parameters, "metric": task.metric_name, "target": task.target, "reached": target["reached"],
        "train_seconds_to_target": target.get("train_seconds"), "samples_to_target": target.get("samples"),
        "steps_to_target": target.get("step"), "best": target["best"], "stopped": summary["stopped"],
        "budget_seconds": budget, "train_seconds": summary["train_seconds"], "samples": summary["samples"],
        "steps": summary["steps"], "evaluations": len(curve), "evaluation_seconds": summary["validation_seconds"],
        "setup_seconds": setup, "persistence": trainer.evaluation.persistence(),
        "evaluation_windows": len(trainer.evaluation.indices), "curve": curve,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def markdown(rows: list[dict], tasks: dict[str, Task], figures: dict) -> str:
    lines = ["| family | dataset | target | reached | training s to target | samples to target | best value | "
             "parameters | evaluations (s) |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        task = tasks.get(r["task"])
        if r.get("not_applicable"):
            lines.append(f"| {r['family']} | — | — | not applicable: {r['not_applicable']} |" + " — |" * 5)
            continue
        target = f"{'rel. L2' if task.metric == 'rel_l2' else 'RMSE'} ≤ {r['target']:g}"
        if r["reached"]:
            reached, seconds, samples = "yes", f"{r['train_seconds_to_target']:.1f}", f"{r['samples_to_target']:,}"
        else:
            reached = f"no: not reached in {r['budget_seconds']:g} s ({r['samples']:,} samples)"
            seconds = samples = "—"
        dataset = r["dataset"] + (" (staggered)" if task.name == "staggered" else "")
        lines.append(f"| {r['family']} | {dataset} | {target} | {reached} | {seconds} | {samples} | "
                     f"{_fmt(r['best'], 4)} | {r['parameters']:,} | {r['evaluations']} "
                     f"({r['evaluation_seconds']:.1f}) |")
    ran = figures["tasks"]
    notes = [f"- **{name}** (`{t['entry']}`): {t['description']}; target ≤ {t['target']:g} (persistence "
             f"{t['persistence']:.4g}); evaluated every {t['every_samples']} training samples on the same "
             f"{t['windows']} validation windows; batch {t['batch_size']} for every family." for name, t in ran.items()]
    if "staggered" in ran:
        notes.append("- TSM and learned interpolation step the staggered store's u, v (vorticity diagnosed as their "
                     "curl), so they run on that store, with an FNO trained on its vorticity for comparison on their "
                     "data.")
    configs = [f"- {r['family']} on {r['dataset']}: `{r['experiment']}`"
               + (" with " + " ".join(f"`{o}`" for o in r["own_overrides"]) if r["own_overrides"] else "")
               + (f" ({r['note']})" if r["note"] else "") for r in rows if not r.get("not_applicable")]
    common = {name: " ".join(f"`{o}`" for o in t["common_overrides"]) for name, t in ran.items()}
    return "\n".join([
        *lines, "", "Tasks:", *notes, "",
        f"Budget {figures['budget_seconds']:g} training seconds per family, checked after each optimiser step (the "
        "step that ends past it is evaluated too). Training seconds exclude evaluation (its seconds are in the last "
        f"column). One CPU process with {figures['threads']} thread(s), one family after another; on a shared "
        "machine the seconds are noisy.", "", "Configs (shipped experiment, then overrides):", *configs,
        *(f"- every {name} case also: {c}" for name, c in common.items())])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=None, help="training seconds per family (default 600; "
                        "--quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a tiny budget and 4 validation windows: under a minute")
    parser.add_argument("--only", nargs="*", default=None,
                        help="cases to run, as FAMILY or FAMILY@TASK (e.g. fno@weather)")
    parser.add_argument("--dataset", action="append", default=[], metavar="TASK=ENTRY",
                        help="run TASK on another catalog entry (e.g. kolmogorov=my-flow)")
    parser.add_argument("--target", action="append", default=[], metavar="TASK=VALUE", help="another target")
    parser.add_argument("--every", action="append", default=[], metavar="TASK=SAMPLES",
                        help="another evaluation interval, in training samples")
    parser.add_argument("--windows", type=int, default=None, help="validation windows per task (default 32)")
    parser.add_argument("--run-dir", default=None, help="keep the runs here (default: a temporary folder)")
    add_json_argument(parser)
    args = parser.parse_args(argv)

    budget = args.budget if args.budget is not None else (1.0 if args.quick else 600.0)
    windows = args.windows or (4 if args.quick else 32)
    tasks = {name: replace(t, windows=windows) for name, t in TASKS.items()}
    for option, key, kind in ((args.dataset, "entry", str), (args.target, "target", float),
                              (args.every, "every_samples", int)):
        for item in option:
            name, _, value = item.partition("=")
            if name not in tasks:
                parser.error(f"unknown task {name!r} in {item!r}; tasks: {sorted(tasks)}")
            tasks[name] = replace(tasks[name], **{key: kind(value)})
    if args.quick:  # evaluate after every step
        tasks = {name: replace(t, every_samples=t.batch_size) for name, t in tasks.items()}
    cases = [c for c in CASES if args.only is None or c.family in args.only or f"{c.family}@{c.task}" in args.only]
    missing = sorted(set(MODELS) - {c.family for c in CASES} - set(NOT_APPLICABLE))
    if missing:
        raise SystemExit(f"registered families without a case: {missing}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    rows, persistence, windows_used = [], {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.run_dir or scratch)
        for case in cases:
            task = tasks[case.task]
            print(f"{case.family} on {task.entry}: training (budget {budget:g} s) ...", file=sys.stderr, flush=True)
            row = run_case(case, task, budget, root / f"{case.family}@{case.task}")
            state = (f"reached {task.target:g} after {row['train_seconds_to_target']:.1f} s, "
                     f"{row['samples_to_target']} samples") if row["reached"] else f"best {row['best']:.4g}"
            print(f"  {state} ({row['steps']} steps, {row['evaluations']} evaluations)", file=sys.stderr, flush=True)
            rows.append(row)
            persistence.setdefault(task.name, row["persistence"])  # the same windows for every family of a task
            windows_used.setdefault(task.name, row["evaluation_windows"])
    if args.only is None:
        rows += [{"family": f, "task": None, "not_applicable": why} for f, why in NOT_APPLICABLE.items()]
    figures = {"budget_seconds": budget, "quick": args.quick, "threads": torch.get_num_threads(),
               "tasks": {n: {"entry": t.entry, "metric": t.metric_name, "description": t.describe(),
                             "target": t.target, "every_samples": t.every_samples, "windows": windows_used[n],
                             "batch_size": t.batch_size, "persistence": persistence[n],
                             "common_overrides": common_overrides(t, budget)}
                         for n, t in tasks.items() if n in persistence},
               "time": "training seconds (data loading and optimiser steps), evaluation excluded and reported apart",
               "rows": rows}
    publish(markdown(rows, tasks, figures), figures, args.json)
    return figures


if __name__ == "__main__":
    main()
