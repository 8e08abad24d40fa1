"""The simulate job: trajectories as independent tasks writing their regions of one store, equal to the library's
simulation in this process; and a job whose driver is killed part-way (SIGKILL), run again to the same store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import xarray as xr

from earthsim.sim.navier_stokes import NavierStokesConfig, simulate_navier_stokes
from pipelines import simulate

OPTIONS = {"trajectories": 6, "batch_size": 1, "resolution": 32, "save_resolutions": (32, 16), "frames": 5,
           "spinup_time": 0.2, "chunk_frames": 5}


def _argv(out: Path) -> list[str]:
    flags = []
    for key, value in OPTIONS.items():
        flags += [f"--{key.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else (value,))]
    return ["navier-stokes", *flags, "--out", str(out)]


def _assert_same_store(left: Path, right: Path) -> None:
    for group in OPTIONS["save_resolutions"]:
        a, b = (xr.open_zarr(p, group=str(group), consolidated=False).load() for p in (left, right))
        for ds in (a, b):
            ds.attrs["provenance"].pop("created")
        xr.testing.assert_identical(a, b)


def test_simulate_job_equals_the_simulation_here(tmp_path, scheduler):
    assert simulate.main(["--scheduler", scheduler, "--no-progress", *_argv(tmp_path / "job.zarr")]) == 0
    here = simulate_navier_stokes(NavierStokesConfig(**OPTIONS), tmp_path / "here.zarr", progress=False)
    _assert_same_store(tmp_path / "job.zarr", here)


def test_a_job_killed_part_way_runs_again_to_the_same_store(tmp_path):
    out = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "pipelines.simulate", "--workers", "1", "--no-progress", *_argv(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    flags = Path(f"{out}.partial") / "done_regions" / "c"
    deadline = time.time() + 180
    while time.time() < deadline and driver.poll() is None and len(list(flags.glob("*")) if flags.exists() else []) < 2:
        time.sleep(0.01)
    assert driver.poll() is None, "the job ended before it could be killed"
    driver.send_signal(signal.SIGKILL)  # the driver only: its worker is left to notice on its own
    driver.wait()
    written = len(list(flags.glob("*")))
    assert 2 <= written < OPTIONS["trajectories"] and not out.exists()
    os.killpg(driver.pid, signal.SIGKILL)  # then the orphaned worker, so that its last task cannot finish the store
    done = sorted(int(p.name) for p in flags.glob("*"))
    chunks = Path(f"{out}.partial") / "32" / "vorticity" / "c"
    before = {str(p.relative_to(chunks)): p.stat().st_mtime_ns for index in done for p in (chunks / str(index)).rglob("*")
              if p.is_file()}
    assert before, "the flagged regions' chunks are on disk"

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.exists() and not Path(f"{out}.partial").exists()
    chunks = out / "32" / "vorticity" / "c"
    assert {k: (chunks / k).stat().st_mtime_ns for k in before} == before, "written regions were not written again"
    whole = simulate_navier_stokes(NavierStokesConfig(**OPTIONS), tmp_path / "whole.zarr", progress=False)
    _assert_same_store(out, whole)


def test_shallow_water_trajectories_as_tasks_equal_the_simulation_here(tmp_path, scheduler):
    from earthsim.sim.shallow_water import ShallowWaterConfig, simulate_shallow_water

    options = {"nlat": 17, "nlon": 32, "trajectories": 3, "frames": 3, "spinup_hours": 1.0, "initial_condition": "random"}
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    assert simulate.main(["--scheduler", scheduler, "--no-progress", "shallow-water", *argv,
                          "--out", str(tmp_path / "job.zarr")]) == 0
    here = simulate_shallow_water(ShallowWaterConfig(**options), tmp_path / "here.zarr", progress=False)
    a, b = (xr.open_zarr(p, consolidated=False).load() for p in (tmp_path / "job.zarr", here))
    for ds in (a, b):
        ds.attrs["provenance"].pop("created")
    xr.testing.assert_identical(a, b)
