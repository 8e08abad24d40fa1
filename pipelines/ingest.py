"""Ingest many netCDF/GRIB files into one Zarr store in earthsim's conventions on a dask cluster, a block of time
steps per task, validated against a catalog entry when one is named (earthsim.data.ingest).

    python -m pipelines.ingest era5-uk-t2m                        # a catalog entry's files into its store
    python -m pipelines.ingest 2019-*.nc --out era5.zarr --expect era5-uk-t2m
"""

from __future__ import annotations

import sys

from earthsim import catalog
from earthsim.data.ingest import ingest, ingest_entry
from earthsim.errors import EarthsimError
from pipelines import job_parser, run_job


def _ingest(args) -> str:
    if args.out is None:
        if len(args.inputs) != 1 or args.inputs[0] not in catalog.names():
            raise EarthsimError(f"input files need --out STORE; {args.inputs[0]!r} is not a catalog entry")
        return str(ingest_entry(catalog.get_entry(args.inputs[0]), args.progress, args.overwrite,
                                accept_damaged=args.accept_damaged))
    expect = catalog.get_entry(args.expect) if args.expect else None
    return str(ingest(args.inputs, args.out, expect, args.progress, args.overwrite, time_chunk=args.time_chunk,
                      accept_damaged=args.accept_damaged))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("ingest", __doc__)
    parser.add_argument("inputs", nargs="+", help="netCDF/GRIB files in time order, or one catalog entry")
    parser.add_argument("--out", help="the Zarr store to write (with input files)")
    parser.add_argument("--expect", help="catalog entry the data must match")
    parser.add_argument("--time-chunk", type=int, help="time steps per chunk and task (default: about 1 MiB)")
    parser.add_argument("--accept-damaged", action="store_true",
                        help="ingest what a damaged GRIB holds and record the loss in the provenance")
    parser.add_argument("--overwrite", action="store_true", help="replace the store if it exists")
    args = parser.parse_args(argv)
    return run_job("ingest", args, _ingest)


if __name__ == "__main__":
    sys.exit(main())
