"""Day-of-year × hour climatology of a weather dataset on a dask cluster, smoothed as WeatherBench 2 does, a task
per variable, hour and level (earthsim.data.stats.compute_climatology; a fluid on the sphere: its time mean).

    python -m pipelines.climatology era5-uk-t2m --window-days 61
"""

from __future__ import annotations

import sys

from earthsim.data.stats import DEFAULT_WINDOW_DAYS, compute_climatology
from pipelines import job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("climatology", __doc__)
    parser.add_argument("dataset", help="catalog entry name or YAML path")
    parser.add_argument("--window-days", type=int, default=DEFAULT_WINDOW_DAYS,
                        help=f"triangular smoothing window in days (default {DEFAULT_WINDOW_DAYS}, WeatherBench 2's)")
    parser.add_argument("--overwrite", action="store_true", help="recompute a climatology that exists")
    args = parser.parse_args(argv)
    return run_job("climatology", args, lambda a: str(compute_climatology(
        a.dataset, a.progress, a.overwrite, window_days=a.window_days)))


if __name__ == "__main__":
    sys.exit(main())
