"""Regrid a store in earthsim's conventions (or a netCDF/GRIB file) to WeatherBench's equiangular latitude/longitude
grid on a dask cluster: first-order conservative or bilinear, a block of time steps per task
(earthsim.data.regrid.regrid_store).

    python -m pipelines.regrid era5.zarr --resolution 5.625 --out era5-5.625.zarr
    python -m pipelines.regrid tests/data/eraint_uvz.nc --resolution 5.625 --method bilinear --out eraint.zarr
"""

from __future__ import annotations

import sys

from earthsim.data.regrid import METHODS, regrid_store
from pipelines import job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("regrid", __doc__)
    parser.add_argument("source", help="Zarr store (path or fsspec URL) or netCDF/GRIB file")
    parser.add_argument("--out", required=True, help="the Zarr store to write")
    parser.add_argument("--resolution", type=float, default=5.625,
                        help="target grid spacing in degrees (default 5.625: WeatherBench's 32 × 64)")
    parser.add_argument("--method", choices=METHODS, default="conservative", help="default conservative")
    parser.add_argument("--records-per-region", type=int,
                        help="time steps per task and chunk (default: the source's time chunk)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    return run_job("regrid", args, lambda a: str(regrid_store(
        a.source, a.out, a.resolution, a.method, progress=a.progress, overwrite=a.overwrite,
        records_per_region=a.records_per_region)))


if __name__ == "__main__":
    sys.exit(main())
