"""Simulate at scale on a dask cluster: a solver's trajectories in batches, each batch an independent task that
writes its region of one store (earthsim.sim). A catalog entry's store, or a solver with options as in
`earthsim simulate navier-stokes --help`.

    python -m pipelines.simulate --entry kolmogorov-64
    python -m pipelines.simulate --workers 8 navier-stokes --trajectories 64 --batch-size 4 --out ns.zarr
"""

from __future__ import annotations

import sys

import argparse

from earthsim import catalog, config
from earthsim.errors import EarthsimError
from earthsim.sim import REGION_SOLVERS, SOLVERS, generate
from pipelines import job_parser, run_job


def _simulate(args) -> str:
    if args.entry:
        entry = catalog.get_entry(args.entry)
        if entry.source is None or entry.source.solver not in REGION_SOLVERS:
            raise EarthsimError(f"{entry.path}: pipelines.simulate runs {list(REGION_SOLVERS)} entries; "
                                f"use `earthsim simulate --entry {args.entry}` for the others")
        return str(generate(entry, progress=args.progress, overwrite=args.overwrite))
    if not args.solver:
        raise EarthsimError("name a SOLVER (with --out STORE) or --entry NAME (see --help)")
    config_cls, simulate = SOLVERS[args.solver]
    return str(simulate(config.from_arguments(config_cls, args), args.out, progress=args.progress,
                        overwrite=args.overwrite))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("simulate", __doc__)
    parser.add_argument("--entry", help="make this catalog entry's store")
    parser.add_argument("--overwrite", action="store_true", help="replace the store if it exists")
    solvers = parser.add_subparsers(dest="solver", metavar="SOLVER")
    for name in REGION_SOLVERS:
        config_cls = SOLVERS[name][0]
        sub = solvers.add_parser(name, help=config_cls.__doc__.strip().splitlines()[0])
        sub.add_argument("--out", required=True, help="the Zarr store to write")
        sub.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                         help="replace the store if it exists")
        config.add_arguments(sub, config_cls)
    args = parser.parse_args(argv)
    return run_job("simulate", args, _simulate)


if __name__ == "__main__":
    sys.exit(main())
