"""A batch forecast run on a dask cluster: forecast one dataset split with many trained models (run folders or
exported model.pt files) and baselines, each forecast an independent task, then score them all in one scorecard
(earthsim.forecast, earthsim.score).

    python -m pipelines.forecast_score runs/kolmogorov-fno tsm=runs/tsm-4ep --dataset kolmogorov-64 --steps 10 \\
        --baseline persistence --out runs/batch
writes OUT/forecasts/NAME.zarr for each model and baseline and the scorecard in OUT/scores. A complete forecast
store of the same request (model, dataset, split, steps; inputs unchanged since) is kept, an interrupted one
resumes, so a killed run started again continues; one of another request is refused unless --overwrite.
"""

from __future__ import annotations

import sys
from pathlib import Path

from earthsim.data.cluster import run_tasks
from earthsim.data.store import is_complete
from earthsim.errors import EarthsimError
from earthsim.forecast import persistence, run_forecast
from earthsim.forecast.store import kept_forecast_differences
from earthsim.score import markdown_table, score
from pipelines import job_parser, run_job

BASELINES = {"persistence": persistence}


def _named(argument: str) -> tuple[str, str]:
    name, sep, path = argument.partition("=")
    return (name, path) if sep else (Path(argument).stem if Path(argument).suffix == ".pt" else Path(argument).name,
                                     argument)


def _forecast_then_score(args) -> str:
    out = Path(args.out)
    models = [_named(a) for a in args.models]
    names = [name for name, _ in models] + list(args.baseline)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EarthsimError(f"forecast names {repeated} are given twice; name them NAME=PATH")
    scores = out / "scores"
    if scores.exists() and not args.overwrite:
        raise EarthsimError(f"{scores} already exists; remove it or pass --overwrite")
    stores = {name: out / "forecasts" / f"{name}.zarr" for name in names}
    tasks = [(run_forecast, path, args.dataset, args.split, args.steps, stores[name])
             for name, path in models] + [(BASELINES[name], None, args.dataset, args.split, args.steps, stores[name])
                                          for name in args.baseline]
    kept = sum(path.exists() and is_complete(path) for path in stores.values())
    print(f"{kept} of {len(tasks)} forecasts already written (kept if of the same request)", file=sys.stderr)
    run_tasks(forecast, [(*task, args.overwrite) for task in tasks], progress=args.progress, description="forecasts")
    card = score([f"{name}={path}" for name, path in stores.items()], args.dataset, scores, progress=args.progress)
    print(markdown_table(card))
    return str(scores)


def forecast(make, checkpoint: str | None, dataset: str, split: str, steps: int, out: Path, overwrite: bool) -> str:
    """One forecast store: a model's (``checkpoint``) or a baseline's (``make`` alone); a task for a worker. A
    complete store of the same request, made from inputs that have not changed since, is kept; one of another
    request is refused unless ``overwrite``."""
    if out.exists() and is_complete(out):
        differences = kept_forecast_differences(out, dataset, split, steps, checkpoint)
        if not differences:
            return str(out)
        if not overwrite:
            raise EarthsimError(f"{out} holds a forecast of another request or of changed inputs "
                                f"({'; '.join(differences)}); pass --overwrite to make it again")
    if checkpoint is None:
        return str(make(dataset, split, steps=steps, out=out, progress=False, overwrite=overwrite))
    return str(make(checkpoint, dataset, split, steps=steps, out=out, progress=False, overwrite=overwrite))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("forecast_score", __doc__)
    parser.add_argument("models", nargs="*", help="run folders or model.pt files, optionally NAME=PATH")
    parser.add_argument("--dataset", required=True, help="catalog entry the models forecast and are scored on")
    parser.add_argument("--split", default="test", help="split whose initial times are forecast (default test)")
    parser.add_argument("--steps", type=int, required=True, help="forecast steps from each initial time")
    parser.add_argument("--baseline", action="append", default=[], choices=sorted(BASELINES),
                        help="also forecast this baseline (repeatable)")
    parser.add_argument("--out", required=True, help="folder for forecasts/ and scores/")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT/scores, and forecasts of another request, if they exist")
    args = parser.parse_args(argv)
    if not args.models and not args.baseline:
        parser.error("give at least one model or --baseline")
    return run_job("forecast_score", args, _forecast_then_score)


if __name__ == "__main__":
    sys.exit(main())
