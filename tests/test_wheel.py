"""The built wheel stands on its own: installed into a fresh venv, run from an empty folder, it finds its
catalogs and the sample files of its built-in entries (no checkout, no ../shared)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import xarray as xr

REPO = Path(__file__).resolve().parents[1]


def _run(args: list, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    run = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{args} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run


def test_wheel_in_a_fresh_venv_lists_catalogs_and_ingests_a_builtin_entry(tmp_path):
    source = tmp_path / "source"  # setuptools writes build/ into the tree it builds: keep the checkout clean
    local = {".git", ".venv", "data", "runs", "build", ".pytest_cache"}  # the checkout's own, top level only
    shutil.copytree(REPO, source, ignore=lambda folder, names: [
        n for n in names if (Path(folder) == REPO and n in local) or n == "__pycache__" or n.endswith(".egg-info")])
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, source],
         cwd=tmp_path)
    (wheel,) = wheels.glob("earthsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("earthsim/catalogs/datasets/era5-uk-t2m.yaml", "earthsim/catalogs/experiments/kolmogorov-fno.yaml",
                    "earthsim/sample_data/era5-2mt-2019-03-uk.grib", "earthsim/sample_data/README.md"):
        assert shipped in names

    # A fresh venv that sees this venv's third-party packages (torch & co.) through a .pth line, so
    # nothing is downloaded; a .pth line adds a folder without running its .pth files, so the
    # checkout's editable install is not visible there.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
                .stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel],
         cwd=tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHSIM_") and k != "PYTHONPATH"}
    where = _run([python, "-c", "import earthsim; print(earthsim.__file__)"], cwd=empty, env=env).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the installed wheel, not the checkout
    listing = _run([venv / "bin" / "earthsim", "catalog", "list"], cwd=empty, env=env).stdout
    for name in ("era5-uk-t2m", "era5-ensemble", "kolmogorov-64", "shallow-water"):
        assert name in listing

    _run([venv / "bin" / "earthsim", "ingest", "era5-uk-t2m"], cwd=empty, env=env)
    store = empty / "data" / "era5-uk-t2m.zarr"  # stores default to data/ in the current folder
    with xr.open_zarr(store, consolidated=False) as ds:
        assert ds["t2m"].shape == (744, 33, 49) and ds["t2m"].attrs["units"] == "K"
