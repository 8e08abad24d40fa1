"""The ``earthsim forecast`` command: its arguments and what it runs (also ``python -m earthsim.forecast``)."""

from __future__ import annotations

import argparse

#: Each baseline's name and its writer in :mod:`earthsim.forecast` (named, so that building the parser imports no
#: writer and no torch).
BASELINES = {"persistence": "persistence", "climatology": "climatology_forecast", "solver": "solver_baseline"}


def baseline_writer(name: str):
    """The function that writes baseline ``name``'s forecast store; an unknown name is refused with the known ones."""
    import earthsim.forecast
    from earthsim.errors import EarthsimError

    if name not in BASELINES:
        raise EarthsimError(f"no baseline {name!r}; baselines: {sorted(BASELINES)}")
    return getattr(earthsim.forecast, BASELINES[name])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``earthsim forecast``."""
    parser.add_argument("checkpoint", nargs="*", metavar="RUN_OR_CHECKPOINT",
                        help="exported model.pt or the run directory holding it (omit with --baseline); several "
                             "(trainings of one experiment with other seeds) make a multi-model ensemble, one "
                             "member each (times --members), whose mean the scorer scores")
    parser.add_argument("--dataset", required=True, help="catalog dataset (name or YAML file) to forecast")
    parser.add_argument("--split", default="test", help="split whose initial times are forecast (default: test)")
    parser.add_argument("--steps", type=int, required=True, help="frames forecast from each initial time")
    parser.add_argument("--out", required=True, help="forecast store to write (Zarr v3)")
    parser.add_argument("--inits", nargs="+", metavar="TIME",
                        help="initial times (dates for weather, solver times for fluids; default: all valid ones)")
    parser.add_argument("--members", type=int, default=1,
                        help="ensemble members with perturbed initial conditions (of each checkpoint given)")
    parser.add_argument("--perturbation", type=float, default=0.0,
                        help="std of the Gaussian initial-condition noise, in normalised units")
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="initial times × members (of every checkpoint) forecast as one block (default 32; "
                             "baselines 64, solver 16)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--baseline", choices=list(BASELINES), help="write a baseline instead of a model forecast")
    parser.add_argument("--mode", choices=("iterative", "direct"),
                        help="models: feed predictions back (iterative), or call a lead-conditioned model once per "
                             "lead from the initial state (direct); default: direct for a lead-conditioned model "
                             "trained at several leads, else iterative")
    parser.add_argument("--lead-stride", type=int,
                        help="store frames between forecast frames (default: 1 for baselines; a model's training "
                             "lead, to be chosen for a model trained at several)")
    parser.add_argument("--context", type=int,
                        help="frames a recurrent model (convs5, convlstm, convlstm-resnet) reads before forecasting (default: its "
                             "t_in; the long-horizon protocol conditions on 100)")
    parser.add_argument("--solver-resolution", type=int,
                        help="--baseline solver on a staggered (finite-volume) store: run the finite-volume solver at "
                             "this resolution, started from the store's group of that name and coarse-grained to the "
                             "dataset's grid (default: the dataset's own; 2× and 4× give the cost–accuracy curve)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")


def run(args: argparse.Namespace) -> int:
    """Write the forecast store the arguments ask for and print where it is."""
    from earthsim.errors import EarthsimError
    from earthsim.forecast import run_forecast

    common = dict(steps=args.steps, out=args.out, inits=args.inits, overwrite=args.overwrite)
    if args.baseline is not None:
        if args.checkpoint:
            raise EarthsimError("give a model (RUN_OR_CHECKPOINT) or --baseline, not both")
        if args.solver_resolution is not None and args.baseline != "solver":
            raise EarthsimError("--solver-resolution applies to --baseline solver")
        if args.members != 1 or args.perturbation or args.mode is not None or args.context is not None:
            raise EarthsimError("--members, --perturbation, --mode and --context apply to model forecasts, not to "
                                "--baseline")
        batch = {} if args.batch_size is None else {"batch_size": args.batch_size}
        lead = {} if args.lead_stride is None else {"lead_stride": args.lead_stride}
        solver = {"device": args.device, "resolution": args.solver_resolution} if args.baseline == "solver" else {}
        path = baseline_writer(args.baseline)(args.dataset, args.split, **lead, **batch, **solver, **common)
    else:
        if not args.checkpoint:
            raise EarthsimError("give a model (RUN_OR_CHECKPOINT) or --baseline")
        path = run_forecast(args.checkpoint, args.dataset, args.split, members=args.members,
                            perturbation=args.perturbation, seed=args.seed, device=args.device, mode=args.mode,
                            lead_stride=args.lead_stride, context=args.context,
                            batch_size=32 if args.batch_size is None else args.batch_size, **common)
    print(f"wrote {path}")
    return 0
