"""Ingest many netCDF/GRIB files into one Zarr store in earthsim's conventions on a dask cluster, a block of time
steps per task, validated against a catalog entry when one is named (earthsim.data.ingest).

    python -m pipelines.ingest era5-uk-t2m                        # a catalog entry's files into its store
    python -m pipelines.ingest 2019-*.nc --out era5.zarr --expect era5-uk-t2m
"""

from __future__ import annotations

import sys

from earthsim.data.ingest import ingest_inputs
from pipelines import job_parser, run_job


def _ingest(args) -> str:
    return str(ingest_inputs(args.inputs, args.out, args.expect, progress=args.progress, overwrite=args.overwrite,
                             time_chunk=args.time_chunk, accept_damaged=args.accept_damaged))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("ingest", __doc__)
    parser.add_argument("inputs", nargs="+", help="netCDF/GRIB files in time order, or one catalog entry (name or YAML file)")
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
