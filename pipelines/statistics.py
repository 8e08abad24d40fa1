"""Normalisation statistics of a catalog dataset on a dask cluster: mean, std and one-step-difference std of every
variable (per level) over its training split, one variable per task (earthsim.data.stats.compute_statistics).

    python -m pipelines.statistics era5-uk-t2m
    python -m pipelines.statistics kolmogorov-64 --scheduler tcp://10.0.0.5:8786 --overwrite
"""

from __future__ import annotations

import sys

from earthsim.data.stats import compute_statistics
from pipelines import job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("statistics", __doc__)
    parser.add_argument("dataset", help="catalog entry name or YAML path")
    parser.add_argument("--overwrite", action="store_true", help="recompute statistics that exist")
    args = parser.parse_args(argv)
    return run_job("statistics", args, lambda a: str(compute_statistics(a.dataset, a.progress, a.overwrite)))


if __name__ == "__main__":
    sys.exit(main())
