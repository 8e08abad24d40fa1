"""A batch forecast run on a dask cluster: forecast one dataset split with many trained models (run folders or
exported model.pt files) and baselines, each forecast an independent task, then score them all in one scorecard
(earthsim.forecast, earthsim.score).

    python -m pipelines.forecast_score runs/kolmogorov-fno tsm=runs/tsm-4ep --dataset kolmogorov-64 --steps 10 \\
        --baseline persistence --out runs/batch
writes OUT/forecasts/NAME.zarr for each model and baseline and the scorecard in OUT/scores. A complete forecast
store of the same request (model, dataset, split, steps, mode, leads; inputs unchanged since) is kept, an
interrupted one resumes, so a killed run started again continues; one of another request is refused unless
--overwrite. Lead-conditioned models trained at several leads (ClimaX) forecast directly unless --mode says.
"""

from __future__ import annotations

import sys
from pathlib import Path

from earthsim.data.cluster import run_tasks
from earthsim.data.store import is_complete
from earthsim.errors import EarthsimError
from earthsim.forecast import run_forecast
from earthsim.forecast.command import BASELINES, baseline_writer
from earthsim.score import markdown_table, score
from earthsim.score.align import parse_forecast
from pipelines import job_parser, run_job


def _forecast_then_score(args) -> str:
    out = Path(args.out)
    models = [parse_forecast(a) for a in args.models]
    names = [name for name, _ in models] + list(args.baseline)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EarthsimError(f"forecast names {repeated} are given twice; name them NAME=PATH")
    scores = out / "scores"
    if scores.exists() and not args.overwrite:
        raise EarthsimError(f"{scores} already exists; remove it or pass --overwrite")
    stores = {name: out / "forecasts" / f"{name}.zarr" for name in names}
    common = dict(dataset=args.dataset, split=args.split, steps=args.steps, overwrite=args.overwrite)
    lead = {} if args.lead_stride is None else {"lead_stride": args.lead_stride}
    solver = {"device": args.device, "resolution": args.solver_resolution}
    tasks = ([dict(make=run_forecast, checkpoint=path, out=stores[name], mode=args.mode, device=args.device, **lead,
                   **common) for name, path in models]
             + [dict(make=baseline_writer(name), out=stores[name], **(solver if name == "solver" else {}), **lead,
                     **common) for name in args.baseline])
    kept = sum(path.exists() and is_complete(path) for path in stores.values())
    print(f"{kept} of {len(tasks)} forecasts already written (kept if of the same request)", file=sys.stderr)
    run_tasks(forecast, [(task,) for task in tasks], progress=args.progress, description="forecasts")
    card = score([f"{name}={path}" for name, path in stores.items()], args.dataset, scores, progress=args.progress)
    print(markdown_table(card))
    return str(scores)


def forecast(task: dict) -> str:
    """One forecast store, a task for a worker: ``task["make"]`` (a model's run_forecast, with its
    ``checkpoint``, or a baseline) called with the rest, keeping a complete store of the same request."""
    task = dict(task)
    make, checkpoint = task.pop("make"), task.pop("checkpoint", None)
    dataset, split = task.pop("dataset"), task.pop("split")
    first = (checkpoint, dataset, split) if checkpoint is not None else (dataset, split)
    return str(make(*first, progress=False, keep=True, **task))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("forecast_score", __doc__)
    parser.add_argument("models", nargs="*", help="run folders or model.pt files, optionally NAME=PATH")
    parser.add_argument("--dataset", required=True, help="catalog entry the models forecast and are scored on")
    parser.add_argument("--split", default="test", help="split whose initial times are forecast (default test)")
    parser.add_argument("--steps", type=int, required=True, help="forecast steps from each initial time")
    parser.add_argument("--baseline", action="append", default=[], choices=list(BASELINES),
                        help="also forecast this baseline (repeatable)")
    parser.add_argument("--mode", choices=("iterative", "direct"),
                        help="models: as earthsim forecast --mode (default: direct for a lead-conditioned model "
                             "trained at several leads, else iterative)")
    parser.add_argument("--lead-stride", type=int, help="store frames between forecast frames, for every forecast")
    parser.add_argument("--device", default="cpu",
                        help="torch device of each forecast task's models and solver baseline (cpu, cuda, ...)")
    parser.add_argument("--solver-resolution", type=int,
                        help="--baseline solver: as earthsim forecast --solver-resolution (default: the dataset's)")
    parser.add_argument("--out", required=True, help="folder for forecasts/ and scores/")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT/scores, and forecasts of another request, if they exist")
    args = parser.parse_args(argv)
    if not args.models and not args.baseline:
        parser.error("give at least one model or --baseline")
    if args.solver_resolution is not None and "solver" not in args.baseline:
        parser.error("--solver-resolution applies to --baseline solver")
    return run_job("forecast_score", args, _forecast_then_score)


if __name__ == "__main__":
    sys.exit(main())
