"""A batch forecast run on a dask cluster: forecast one dataset split with many trained models (run folders or
exported model.pt files) and baselines, each forecast an independent task, then score them all in one scorecard
(earthsim.forecast.batch.forecast_and_score).

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

from earthsim.forecast.command import BASELINES
from pipelines import job_parser, run_job


def _forecast_then_score(args) -> str:
    from earthsim.forecast.batch import forecast_and_score
    from earthsim.score import markdown_table

    card = forecast_and_score(args.models, args.baseline, args.dataset, args.steps, args.out, split=args.split,
                              mode=args.mode, lead_stride=args.lead_stride, device=args.device,
                              solver_resolution=args.solver_resolution, inits=args.inits,
                              batch_size=args.batch_size, overwrite=args.overwrite,
                              progress=args.progress)
    print(markdown_table(card))
    return str(Path(args.out) / "scores")


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
    parser.add_argument("--inits", nargs="+", metavar="TIME",
                        help="initial times of every forecast (dates for weather, solver times for fluids; default: "
                             "all valid ones of each)")
    parser.add_argument("--batch-size", type=int,
                        help="initial times per model call, for every forecast (default: earthsim forecast's)")
    parser.add_argument("--out", required=True, help="folder for forecasts/ and scores/")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT/scores, and forecasts of another request, if they exist")
    args = parser.parse_args(argv)
    if not args.models and not args.baseline:
        parser.error("give at least one model or --baseline")
    return run_job("forecast_score", args, _forecast_then_score)


if __name__ == "__main__":
    sys.exit(main())
