"""The ``earthsim`` command: one entry point over the library, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap

from earthsim import __version__


def _parser(subparsers, name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help_text, description=help_text,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_simulate(subparsers, solvers: bool = True) -> None:
    """``simulate``; its per-solver options (which import the solvers, and torch with them) only if ``solvers``."""
    parser = _parser(subparsers, "simulate", "Run a physics solver or the Moving MNIST generator and write its frames to a Zarr v3 store.", """
        earthsim simulate navier-stokes --out data/kolmogorov.zarr --trajectories 4 --frames 20
        earthsim simulate navier-stokes --flow decaying --resolution 128 --save-resolutions 64 32 --out data/decay.zarr
        earthsim simulate shallow-water --initial-condition galewsky --out data/galewsky.zarr
        earthsim simulate --entry kolmogorov-64        # the store a catalog entry records
    """)
    parser.add_argument("--entry", help="make the store of this solver-backed catalog entry")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.set_defaults(run=_run_simulate)
    if not solvers:
        return
    from earthsim import config
    from earthsim.sim import SOLVERS

    names = parser.add_subparsers(dest="solver", metavar="SOLVER")
    for name, (config_cls, _) in SOLVERS.items():
        sub = _parser(names, name, (config_cls.__doc__ or name).strip().splitlines()[0], f"""
            earthsim simulate {name} --out data/{name}.zarr
        """)
        sub.add_argument("--out", required=True, help="path of the Zarr store to write")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing store")
        config.add_arguments(sub, config_cls)


def _run_simulate(args) -> int:
    from earthsim import catalog, config
    from earthsim.sim import SOLVERS, generate

    if args.entry:
        path = generate(catalog.get_entry(args.entry), overwrite=args.overwrite)
    elif args.solver:
        config_cls, simulate = SOLVERS[args.solver]
        path = simulate(config.from_arguments(config_cls, args), args.out, overwrite=args.overwrite)
    else:
        print("earthsim simulate: name a SOLVER or --entry NAME (see --help)", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _add_ingest(subparsers) -> None:
    parser = _parser(subparsers, "ingest", "Convert netCDF or GRIB files into a Zarr v3 store in earthsim's conventions.", """
        earthsim ingest era5-uk-t2m                                   # a catalog entry's raw files into its store
        earthsim ingest my-era5-t2m.grib --out t2m.zarr --expect era5-uk-t2m      # files of your own
        earthsim ingest a.nc b.nc --out ab.zarr                        # no catalog check, conventions only
    """)
    parser.add_argument("inputs", nargs="+", help="a catalog entry (name or YAML file), or input files (.grib, .grb, .nc)")
    parser.add_argument("--out", help="output store (with input files; default: the entry's store)")
    parser.add_argument("--expect", help="catalog entry whose variables, levels, members, times and grid the data must match")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--accept-damaged", action="store_true",
                        help="ingest what can be read of GRIB files with damaged messages (refused otherwise); the "
                             "store's provenance records how many messages were lost")
    parser.set_defaults(run=_run_ingest)


def _run_ingest(args) -> int:
    from earthsim.data.ingest import ingest_inputs

    path = ingest_inputs(args.inputs, args.out, args.expect, overwrite=args.overwrite,
                         accept_damaged=args.accept_damaged)
    print(f"wrote {path}")
    return 0


def _add_catalog(subparsers) -> None:
    parser = _parser(subparsers, "catalog", "List the datasets in catalogs/ or show one entry.", """
        earthsim catalog list
        earthsim catalog show era5-uk-t2m
    """)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    _parser(actions, "list", "List dataset names with kind and whether their store exists.", "earthsim catalog list")
    show = _parser(actions, "show", "Print one entry, its paths resolved.", "earthsim catalog show kolmogorov-64")
    show.add_argument("name")
    parser.set_defaults(run=_run_catalog)


def _run_catalog(args) -> int:
    from earthsim import catalog

    if args.action == "list":
        from earthsim.errors import CatalogError

        bad = []
        for name in catalog.names():
            try:
                entry = catalog.get_entry(name)
            except CatalogError as error:
                bad.append(str(error))
                continue
            state = "ready" if entry.exists() else f"missing: {entry.source.command(name) if entry.source else '-'}"
            print(f"{name:24s} {entry.kind:8s} {state:44s} {entry.description}")
        for message in bad:
            print(f"earthsim catalog: error: {message}", file=sys.stderr)
        return 2 if bad else 0
    else:
        print(catalog.describe(catalog.get_entry(args.name)), end="")
    return 0


def _add_stats(subparsers) -> None:
    parser = _parser(subparsers, "stats", "Compute normalisation statistics (and the entry's climatology) with dask.", """
        earthsim stats era5-uk-t2m          # mean, std, std of one-step differences, day-of-year x hour climatology
        earthsim stats kolmogorov-64 --overwrite
    """)
    parser.add_argument("name", help="catalog dataset")
    parser.add_argument("--overwrite", action="store_true", help="recompute even if stored results exist")
    parser.set_defaults(run=_run_stats)


def _run_stats(args) -> int:
    from earthsim import catalog
    from earthsim.data.stats import compute_climatology, compute_statistics

    entry = catalog.get_entry(args.name)
    print(f"statistics: {compute_statistics(entry, overwrite=args.overwrite)}")
    if entry.climatology is not None:
        print(f"climatology: {compute_climatology(entry, overwrite=args.overwrite)}")
    return 0


def _add_train(subparsers) -> None:
    parser = _parser(subparsers, "train", "Train a model on a dataset: an experiment from catalogs/experiments or a YAML file.", """
        earthsim train kolmogorov-fno                                   # 64x64 Kolmogorov flow, FNO
        earthsim train kolmogorov-fno --set optimizer.lr=3e-4 --set epochs=2 --run-dir runs/try
        earthsim train kolmogorov-fno --run-dir runs/try --resume       # continue from the last checkpoint
        torchrun --standalone --nproc_per_node 2 -m earthsim train swe-sfno   # FSDP2 over 2 ranks
    """)
    parser.add_argument("experiment", help="experiment name or YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. optimizer.lr=3e-4 (repeatable)")
    parser.add_argument("--run-dir", help="where checkpoints, metrics and the exported model go "
                                          "(default: runs/EXPERIMENT)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    parser.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from pathlib import Path

    from earthsim.errors import EarthsimError
    from earthsim.train.config import experiment_path, load_experiment
    from earthsim.train.trainer import train

    train_config = load_experiment(args.experiment, args.overrides)
    run_dir = args.run_dir or str(Path("runs") / experiment_path(args.experiment).stem)
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise EarthsimError(f"--run-dir {run_dir} is a file, not a directory: give the run's folder (where "
                            "checkpoints, metrics and the exported model go)")
    from earthsim.train.distributed import close_world

    try:
        summary = train(train_config, run_dir, resume=args.resume)
    finally:
        close_world()
    if os.environ.get("RANK", "0") == "0":
        print(f"trained {summary['steps']} steps; model exported to {summary['export']}")
    return 0


def _add_refine(subparsers) -> None:
    parser = _parser(subparsers, "refine", "Spectral Refiner: fine-tune a trained spacetime-fno's output layer, with "
                     "many more modes, on the H⁻¹ norm of the Navier–Stokes residual of its prediction for chosen "
                     "windows; writes a new run folder (model.pt, refine.json).", """
        earthsim refine runs/refiner --dataset fno-paper-32 --windows 0 --out runs/refined-0
        earthsim refine runs/refiner --dataset fno-paper-32 --windows 0 21 42 --modes 16 16 6 --steps 50 --out runs/r
    """)
    parser.add_argument("model_run", metavar="RUN_OR_MODEL", help="run folder or model.pt of a trained spacetime-fno")
    parser.add_argument("--dataset", required=True, help="catalog dataset with the physics the model was trained on")
    parser.add_argument("--split", default="test", help="split the windows come from (default: test)")
    parser.add_argument("--windows", type=int, nargs="+", default=[0], metavar="INDEX",
                        help="window indices in the split, refined together (default: 0)")
    parser.add_argument("--modes", type=int, nargs=3, metavar=("Y", "X", "T"),
                        help="modes of the rebuilt output layer (default: every one the grid and windows resolve)")
    parser.add_argument("--steps", type=int, default=50, help="Adam steps (default: 50)")
    parser.add_argument("--lr-bias", type=float, default=1e-4, help="learning rate of the spectral bias")
    parser.add_argument("--lr-weight", type=float, default=1e-4, help="learning rate of the spectral weights")
    parser.add_argument("--out", required=True, help="run folder to write (model.pt, refine.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(run=_run_refine)


def _run_refine(args) -> int:
    from earthsim.train.refine import refine_export

    summary = refine_export(args.model_run, args.dataset, args.out, split=args.split, windows=tuple(args.windows),
                            modes=args.modes, steps=args.steps, lr_bias=args.lr_bias, lr_weight=args.lr_weight,
                            overwrite=args.overwrite)
    for when in ("before", "after"):
        values = summary[when]
        print(f"{when}: relative L2 {sum(values['relative_l2']) / len(values['relative_l2']):.4e}, residual H-1 "
              f"{sum(values['residual_hminus1']) / len(values['residual_hminus1']):.4e}")
    print(f"fine-tuned {summary['steps']} steps in {summary['seconds']:.2f} s; wrote {args.out}")
    return 0


def _add_forecast(subparsers) -> None:
    from earthsim.forecast.command import add_arguments  # argparse only; earthsim.forecast loads lazily

    parser = _parser(subparsers, "forecast", "Roll a trained model out from every initial time of a split into a "
                     "Zarr forecast store, or write a baseline (persistence, climatology, solver).", """
        earthsim forecast runs/kolmogorov-fno --dataset kolmogorov-64 --steps 20 --out forecasts/fno.zarr
        earthsim forecast runs/kolmogorov-fno --dataset kolmogorov-64 --steps 20 --members 8 --perturbation 0.05 --out forecasts/fno-ens.zarr
        earthsim forecast runs/fno-s0 runs/fno-s1 runs/fno-s2 --dataset kolmogorov-64 --steps 20 --out forecasts/fno-3.zarr
        earthsim forecast --baseline persistence --dataset kolmogorov-64 --steps 20 --out forecasts/persistence.zarr
        earthsim forecast --baseline solver --dataset kolmogorov-64 --steps 20 --out forecasts/solver.zarr
        earthsim forecast --baseline climatology --dataset era5-uk-t2m --steps 24 --out forecasts/climatology.zarr
        # interrupted? run the same command again: it resumes from OUT.partial
    """)
    add_arguments(parser)
    parser.set_defaults(run=_run_forecast)


def _run_forecast(args) -> int:
    from earthsim.forecast.command import run

    return run(args)


def _add_score(subparsers) -> None:
    from earthsim.score import METRICS

    parser = _parser(subparsers, "score", "Score forecast stores against a catalog dataset: scorecard (netCDF, CSV, "
                                          "Markdown) and PNG plots.", """
        earthsim score runs/fno/forecast.zarr persistence=runs/persistence.zarr --truth kolmogorov-64 --out runs/scores
        earthsim score fc.zarr --truth era5-uk-t2m --out scores --leads 6h 12h 24h
        earthsim score fc.zarr --truth era5-uk-t2m --out scores --climatology clim.zarr --video --data-range 40
    """)
    parser.add_argument("forecasts", nargs="+", metavar="FORECAST",
                        help="forecast store (WeatherBench 2 layout), optionally LABEL=PATH; baselines too")
    parser.add_argument("--truth", required=True, help="catalog dataset name (or YAML entry) to score against")
    parser.add_argument("--out", required=True, help="directory for scorecard.nc/.csv/.md, spectra.csv and plots/")
    parser.add_argument("--climatology", help="climatology store for ACC (default: the truth entry's)")
    parser.add_argument("--leads", nargs="+", metavar="LEAD",
                        help="lead times to score (weather: 6h, 1D or hours; fluids: solver units); default all")
    parser.add_argument("--metrics", nargs="+", metavar="METRIC", choices=sorted(METRICS),
                        help="compute only these scores (default: every score that applies)")
    parser.add_argument("--video", action="store_true", help="also per-frame MSE, MAE, SSIM and PSNR")
    parser.add_argument("--data-range", type=float,
                        help="data range for SSIM and PSNR (default: max - min of the truth, per variable)")
    parser.add_argument("--map-leads", nargs="+", metavar="LEAD",
                        help="lead times drawn on the field maps (default: first, middle and last)")
    parser.add_argument("--units", action="append", default=[], metavar="VARIABLE=UNITS",
                        help="units of a forecast variable whose store does not state them (repeatable); none are "
                             "guessed")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score what is there when forecast or truth has missing chunks or NaN (refused "
                             "otherwise); the scorecard counts the frames left out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_score)


def _run_score(args) -> int:
    from pathlib import Path

    from earthsim.score import markdown_table, score

    from earthsim.errors import EarthsimError

    units = {}
    for item in args.units:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise EarthsimError(f"--units {item!r}: expected VARIABLE=UNITS, e.g. t2m=K")
        if name in units and units[name] != value:
            raise EarthsimError(f"--units gives variable {name!r} two units: {units[name]!r} and {value!r}")
        units[name] = value
    card = score(args.forecasts, args.truth, args.out, climatology=args.climatology, progress=not args.quiet,
                 leads=args.leads, video=args.video, data_range=args.data_range, metrics=args.metrics,
                 map_leads=args.map_leads, units=units, allow_missing=args.allow_missing)
    print(markdown_table(card))
    out = Path(args.out)
    print(f"scorecard: {out / 'scorecard.nc'}, {out / 'scorecard.csv'}, {out / 'scorecard.md'}; plots: {out / 'plots'}")
    return 0


def _add_check(subparsers) -> None:
    parser = _parser(subparsers, "check", "Check a Zarr store: layout against the conventions, every chunk present "
                                          "and readable, its completion record, NaN values per array.", """
        earthsim check data/era5-uk-t2m.zarr
        earthsim check runs/demo/forecasts/fno.zarr
    """)
    parser.add_argument("store", help="path (or fsspec URL) of the Zarr store")
    parser.set_defaults(run=_run_check)


def _run_check(args) -> int:
    from earthsim.data.check import check_store

    report = check_store(args.store)
    print(report.table())
    if report.problems:
        print(f"earthsim check: {args.store}: {len(report.problems)} problem(s): {report.problems[0]}", file=sys.stderr)
        return 2
    return 0


def _add_demo(subparsers) -> None:
    parser = _parser(subparsers, "demo", "Run the end-to-end demo on built-in data: simulate, statistics, train an "
                     "FNO, forecast, score against baselines; and the ERA5 sample's baselines.", """
        earthsim demo
        earthsim demo --out runs/demo --epochs 2
    """)
    parser.add_argument("--out", default="runs/demo", help="where the run, forecasts and scorecards go (replaced)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the experiment's)")
    parser.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from earthsim.demo import run_demo

    run_demo(args.out, epochs=args.epochs)
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; given the ``command`` about to run, without the solver options of ``simulate``
    unless it is that command (they import torch: every other command starts faster)."""
    parser = argparse.ArgumentParser(
        prog="earthsim", description="Learning emulators of spatiotemporal physics and weather.",
        epilog="Run `earthsim SUBCOMMAND --help` for each subcommand's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"earthsim {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    _add_simulate(subparsers, solvers=command in (None, "simulate"))
    for add in (_add_ingest, _add_catalog, _add_stats, _add_train, _add_refine, _add_forecast, _add_score, _add_check,
                _add_demo):
        add(subparsers)
    return parser


def _output(args) -> str:
    """What the command writes, for an error that names no file: its --out, its run directory, or the stores of
    the catalog entry it makes."""
    from pathlib import Path

    if getattr(args, "out", None):
        return str(args.out)
    if args.command == "train":
        return str(args.run_dir or Path("runs") / Path(args.experiment).stem)
    entry = None
    if args.command in ("simulate", "stats"):
        entry = getattr(args, "entry", None) or getattr(args, "name", None)
    elif args.command == "ingest":
        entry = args.inputs[0]
    return f"the stores of {entry}" if entry else f"the output of earthsim {args.command}"


_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")


def _worker_error(error: BaseException, earthsim_only: bool = True) -> str | None:
    """The message of an earthsim error raised in a DataLoader worker process, which torch re-raises in the main
    process as ``Caught X in DataLoader worker process N. Original Traceback (most recent call last): ... X: message``
    (as X when X can be made from one string, else as RuntimeError); None for any other error (with
    ``earthsim_only=False``, the message of any error raised in a worker)."""
    from earthsim.errors import EarthsimError

    text = str(error)
    caught = _WORKER.match(text)
    if caught is None:
        return None
    name = caught.group(1)
    known, todo = set(), [EarthsimError]
    while todo:
        cls = todo.pop()
        known.add(cls.__name__)
        todo += cls.__subclasses__()
    lines = text.splitlines()
    for index in range(len(lines) - 1, 0, -1):
        qualified, sep, message = lines[index].partition(": ")
        if sep and qualified.split(".")[-1] == name and not qualified.startswith(" "):
            if not earthsim_only or name in known or qualified.startswith("earthsim."):
                return "\n".join([message, *lines[index + 1:]]).strip()
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    from earthsim.errors import EarthsimError, reason

    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except EarthsimError as error:
        message = _worker_error(error) or str(error)
        print(f"earthsim {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # a file that cannot be read or written: say which, without a traceback
        message = _worker_error(error, earthsim_only=False)  # raised in a DataLoader worker: its own message
        if message is None:
            message = f"{error.filename or _output(args)}: {error.strerror or reason(error)}"
        print(f"earthsim {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # an earthsim error raised in a DataLoader worker, re-raised by torch
        message = _worker_error(error)
        if message is None:
            raise
        print(f"earthsim {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"earthsim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
