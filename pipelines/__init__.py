"""Pipeline jobs on dask.distributed: each module is one job with ``main(argv)``, run as ``python -m pipelines.NAME``.

- ``ingest``: many netCDF/GRIB files (or a catalog entry's) → one Zarr store, a block of time steps per task;
- ``statistics``: normalisation statistics of a catalog dataset, a variable per task;
- ``climatology``: its day-of-year × hour climatology (WeatherBench 2's smoothing), a task per variable,
  hour and level;
- ``regrid``: a store or file → WeatherBench's equiangular grid (conservative or bilinear);
- ``simulate``: a solver's trajectories as independent tasks writing their regions of one store;
- ``forecast_score``: forecasts of many trained models (a batch forecast run), then one scorecard.

Every job composes library functions, runs on a new ``LocalCluster`` or on the scheduler named by
``--scheduler``, prints the dashboard's link and progress bars, and writes through ``OUT.partial``
region by region: a killed job run again resumes where it stopped, and nothing appears under the
final name before it is complete. Bad input is refused in one line with exit status 2. Each job
has its test beside it (``NAME_test.py``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from earthsim.data.cluster import add_cluster_arguments, cluster_from_arguments


def job_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of job ``name``, with the options every job shares."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cluster_arguments(parser)
    return parser


def run_job(name: str, args: argparse.Namespace, body: Callable[[argparse.Namespace], str]) -> int:
    """Run ``body(args)`` on the cluster the options ask for and print what it wrote; refusals become one line
    naming what was wrong and exit status 2."""
    from earthsim.errors import EarthsimError, reason

    try:
        with cluster_from_arguments(args):
            wrote = body(args)
    except EarthsimError as error:
        print(f"pipelines.{name}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"pipelines.{name}: error: {error.filename or ''}{': ' if error.filename else ''}"
              f"{error.strerror or reason(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pipelines.{name}: interrupted; run it again to resume", file=sys.stderr)
        return 130
    print(f"wrote {wrote}")
    return 0
