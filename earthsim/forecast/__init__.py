"""Batch forecasts: autoregressive rollouts of exported models and baselines, as resumable Zarr forecast stores.

    >>> from earthsim.forecast import run_forecast, persistence
    >>> run_forecast("runs/kolmogorov-fno", "kolmogorov-64", "test", steps=20, out="fno.zarr")
    >>> persistence("kolmogorov-64", "test", steps=20, out="persistence.zarr")
    >>> forecast_and_score(["runs/kolmogorov-fno"], ["persistence"], "kolmogorov-64", steps=20, out="runs/batch")

Stores follow the WeatherBench 2 layout (see :mod:`earthsim.forecast.store`), so the scorer reads
model forecasts and baselines alike. Every writer refuses an existing ``out`` unless ``overwrite``;
with ``keep=True`` a complete ``out`` of the same request, made from inputs unchanged since, is
returned as it is (a batch run started again redoes nothing). Names are imported on first use, so that the command line
can build its parser from :mod:`earthsim.forecast.command` without loading torch models.
"""

import importlib

_EXPORTS = {
    "climatology_forecast": "baselines", "persistence": "baselines", "solver_baseline": "baselines",
    "InitialConditions": "inputs", "run_forecast": "rollout", "forecast_and_score": "batch",
    "LEAD_DIM": "store", "forecast_template": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"earthsim.forecast.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'earthsim.forecast' has no attribute {name!r}")
