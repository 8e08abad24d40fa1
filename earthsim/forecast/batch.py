"""A batch forecast run: one dataset split forecast by many exported models and baselines, each forecast an
independent task (on the active dask cluster, if any), then scored together in one scorecard.

    >>> from earthsim.forecast.batch import forecast_and_score
    >>> forecast_and_score(["runs/kolmogorov-fno", "tsm=runs/tsm"], ["persistence"], "kolmogorov-64",
    ...                    steps=10, out="runs/batch")

writes ``OUT/forecasts/NAME.zarr`` per model and baseline and the scorecard in ``OUT/scores``. A complete
forecast store of the same request (made from inputs unchanged since) is kept and an interrupted one resumes,
so a killed run started again continues; a store of another request is refused unless ``overwrite``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import xarray as xr

from earthsim.data.cluster import run_tasks
from earthsim.data.store import is_complete
from earthsim.errors import EarthsimError
from earthsim.forecast.command import baseline_writer


def forecast_and_score(models: list[str], baselines: list[str], dataset: str, steps: int, out: str | Path,
                       split: str = "test", mode: str | None = None, lead_stride: int | None = None,
                       device: str = "cpu", solver_resolution: int | None = None, inits: list | None = None,
                       batch_size: int | None = None, overwrite: bool = False, progress: bool = True) -> xr.Dataset:
    """Forecast ``split`` of ``dataset`` ``steps`` frames ahead with each of ``models`` (run folders or model.pt
    files, optionally ``NAME=PATH``) and ``baselines`` (names of :data:`earthsim.forecast.command.BASELINES`),
    then score them all; returns the scorecard (written to ``OUT/scores``). ``mode``, ``lead_stride``,
    ``device``, ``inits`` (the same initial times for every forecast) and ``batch_size`` (initial times per
    model call; default: each writer's own) are as for :func:`earthsim.forecast.run_forecast`;
    ``solver_resolution`` is the solver baseline's."""
    from earthsim.forecast import run_forecast
    from earthsim.score import score
    from earthsim.score.align import parse_forecast

    out = Path(out)
    named = [parse_forecast(model) for model in models]
    names = [name for name, _ in named] + list(baselines)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EarthsimError(f"forecast names {repeated} are given twice; name them NAME=PATH")
    if solver_resolution is not None and "solver" not in baselines:
        raise EarthsimError("solver_resolution applies to the solver baseline, which is not asked for")
    scores = out / "scores"
    if scores.exists() and not overwrite:
        raise EarthsimError(f"{scores} already exists; remove it or pass --overwrite")
    stores = {name: out / "forecasts" / f"{name}.zarr" for name in names}
    common = dict(dataset=dataset, split=split, steps=steps, inits=inits, overwrite=overwrite)
    common |= {} if batch_size is None else {"batch_size": batch_size}
    lead = {} if lead_stride is None else {"lead_stride": lead_stride}
    solver = {"device": device, "resolution": solver_resolution}
    tasks = ([dict(make=run_forecast, checkpoint=path, out=stores[name], mode=mode, device=device, **lead, **common)
              for name, path in named]
             + [dict(make=baseline_writer(name), out=stores[name], **(solver if name == "solver" else {}), **lead,
                     **common) for name in baselines])
    kept = sum(path.exists() and is_complete(path) for path in stores.values())
    print(f"{kept} of {len(tasks)} forecasts already written (kept if of the same request)", file=sys.stderr)
    run_tasks(forecast_task, [(task,) for task in tasks], progress=progress, description="forecasts")
    return score([f"{name}={path}" for name, path in stores.items()], dataset, scores, progress=progress)


def forecast_task(task: dict) -> str:
    """One forecast store, a task for a worker: ``task["make"]`` (a model's run_forecast, with its
    ``checkpoint``, or a baseline's writer) called with the rest, keeping a complete store of the same request."""
    task = dict(task)
    make, checkpoint = task.pop("make"), task.pop("checkpoint", None)
    dataset, split = task.pop("dataset"), task.pop("split")
    first = (checkpoint, dataset, split) if checkpoint is not None else (dataset, split)
    return str(make(*first, progress=False, keep=True, **task))
