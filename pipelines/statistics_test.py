"""The statistics job against xarray's own mean and std of the training split; on a scheduler started as a separate
process, as a cluster's would be."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import xarray as xr

from earthsim.data.store import open_zarr
from pipelines import statistics
from pipelines.conftest import global_weather, write_entry


def _expected(ds: xr.Dataset) -> xr.Dataset:
    """Mean, std and std of 6-hourly differences over the training split (all but the last day), computed here."""
    train = ds.isel(time=slice(0, -4)).astype(np.float64)
    out = {}
    for name, da in train.data_vars.items():
        dims = [d for d in da.dims if d != "level"]
        diff = da.diff("time")
        out[name] = xr.concat([da.mean(dims), da.std(dims), diff.std(dims)],
                              dim=xr.DataArray(["mean", "std", "diff_std"], dims="statistic"))
    return xr.Dataset(out)


def test_statistics_job_equals_xarray(catalog_folder, tmp_path, scheduler):
    ds = global_weather()
    write_entry(catalog_folder, "wx", ds, tmp_path / "stores" / "wx.zarr")
    assert statistics.main(["wx", "--scheduler", scheduler, "--no-progress"]) == 0
    result = open_zarr(tmp_path / "stores" / "wx.stats.zarr").load()
    xr.testing.assert_allclose(result.drop_attrs().reset_coords(drop=True).astype(np.float64),
                               _expected(ds).reset_coords(drop=True), rtol=1e-6)
    assert not list(tmp_path.rglob("*.partial"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_statistics_job_on_a_scheduler_started_as_its_own_process(catalog_folder, tmp_path):
    """`dask scheduler` and `dask worker` as separate processes, the job connecting by address (as on a cluster)."""
    ds = global_weather(days=3)
    write_entry(catalog_folder, "wx", ds, tmp_path / "stores" / "wx.zarr")
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                                  address.rsplit(":", 1)[1], "--dashboard-address", ":0"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--nworkers", "1",
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from distributed import Client

        deadline = time.time() + 120
        while True:  # until the worker has joined
            try:
                with Client(address, timeout="5s") as client:
                    if client.scheduler_info()["workers"]:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "the dask scheduler or worker did not start"
            time.sleep(1)
        assert statistics.main(["wx", "--scheduler", address, "--no-progress"]) == 0
        with Client(address) as client:  # the work ran on that worker
            assert sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values()) > 0
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(timeout=60)
    result = open_zarr(tmp_path / "stores" / "wx.stats.zarr").load()
    xr.testing.assert_allclose(result.drop_attrs().reset_coords(drop=True).astype(np.float64),
                               _expected(ds).reset_coords(drop=True), rtol=1e-6)


def test_a_scheduler_without_workers_is_refused_instead_of_waiting(catalog_folder, tmp_path, monkeypatch, capsys):
    from distributed import LocalCluster

    from earthsim.data import cluster

    write_entry(catalog_folder, "wx", global_weather(days=2), tmp_path / "stores" / "wx.zarr")
    monkeypatch.setattr(cluster, "WORKER_WAIT_SECONDS", 1)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        assert statistics.main(["wx", "--scheduler", empty.scheduler_address, "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("pipelines.statistics: error: --scheduler") and "no dask worker joined it" in error
    assert not (tmp_path / "stores" / "wx.stats.zarr").exists()
