"""Bad inputs and faults, each through the real command line in a subprocess: exit status 2, one message naming the
file or key and what was expected, no Python traceback, no partial output under the final name, and nothing run
from a planted file. The world the cases break is built once: a small fluid dataset with its statistics, a trained
export, forecast stores, an experiment and a checkpointed run."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from conftest import TEST_DATA, SAMPLE_DATA
from earthsim.data.stats import compute_statistics
from earthsim.data.store import write_zarr
from earthsim.forecast import persistence
from earthsim.models import DataSpec, build_model, export_model
from earthsim.data.windows import WindowDataset
from synthetic import write_waves_entry

class World:
    """Paths of the files the cases start from (built once per module, copied where a case damages them)."""

    def __init__(self, root: Path):
        self.root = root
        self.entry = write_waves_entry(root / "waves", frames=12)
        compute_statistics(str(self.entry), progress=False)
        windows = WindowDataset(str(self.entry), "train")
        model = build_model("fno", {"n_modes": [4, 4], "hidden_channels": 4, "n_layers": 1},
                            DataSpec.from_windows(windows))
        self.export = export_model(model, root / "run" / "model.pt", dataset="waves", stride=1, lead_strides=(1,))
        self.forecast = persistence(str(self.entry), "test", steps=3, out=root / "persistence.zarr", progress=False)
        experiment = {"data": {"dataset": str(self.entry), "batch_size": 4},
                      "model": {"name": "fno", "params": {"n_modes": [4, 4], "hidden_channels": 4, "n_layers": 1}},
                      "optimizer": {"warmup_steps": 1}, "epochs": 1, "max_steps": 2, "device": "cpu",
                      "checkpoint": {"every_steps": 1, "keep": 1}, "validation": {"rollout_steps": 1, "max_batches": 1}}
        self.experiment = root / "experiment.yaml"
        self.experiment.write_text(yaml.safe_dump(experiment))
        self.trained = root / "trained"
        _earthsim("train", self.experiment, "--run-dir", self.trained, cwd=root, check=True)


def _earthsim(*args, cwd: Path, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "earthsim", *map(str, args)], cwd=cwd, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("world"))


@dataclass
class Case:
    """A command that must be refused: ``prepare(world, folder)`` sets its fault up and returns the arguments."""

    prepare: Callable[[World, Path], list]
    says: tuple[str, ...]  # fragments the one-line message must hold
    absent: tuple[str, ...] = ()  # outputs (relative to the case folder) that must not exist afterwards
    env: dict = field(default_factory=dict)


def _copy(world: World, name: str, folder: Path) -> Path:
    """A copy of one of the world's stores, to damage."""
    source = {"forecast": world.forecast, "truth": world.entry.parent / "waves.zarr"}[name]
    target = folder / source.name
    shutil.copytree(source, target)
    return target


def _truth_copy(world: World, folder: Path) -> Path:
    """The waves entry with its store copied into ``folder`` (to damage the truth without touching the world)."""
    raw = yaml.safe_load(world.entry.read_text())
    store = _copy(world, "truth", folder)
    raw.update(store=str(store), statistics=str(world.entry.parent / "waves.stats.zarr"))
    path = folder / "waves.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _chunk(store: Path, variable: str) -> Path:
    return sorted(p for p in (store / variable / "c").rglob("*") if p.is_file())[0]


def _read_only(folder: Path) -> Path:
    """A folder nothing can be written into: read-only by its mode, or, for root (whom modes do not bind), a folder
    in sysfs, where nobody can create anything."""
    if os.geteuid() == 0:
        return Path("/sys/earthsim-locked")
    target = folder / "locked"
    target.mkdir()
    target.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return target


def _planted_pickle(path: Path, marker: Path) -> None:
    """A pickle that creates ``marker`` when loaded by a plain unpickler."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Payload()))


def _no_units(world: World, folder: Path) -> list:
    import xarray as xr

    ds = xr.open_zarr(world.forecast, consolidated=False).load()
    del ds["vorticity"].attrs["units"]
    write_zarr(ds, folder / "nounits.zarr", progress=False)
    return ["score", folder / "nounits.zarr", "--truth", world.entry, "--out", folder / "scores"]


def _nan_forecast(world: World, folder: Path) -> list:
    import xarray as xr

    ds = xr.open_zarr(world.forecast, consolidated=False).load()
    ds["vorticity"][0, 2] = np.nan
    write_zarr(ds, folder / "nan.zarr", progress=False)
    return ["score", folder / "nan.zarr", "--truth", world.entry, "--out", folder / "scores"]


def _damaged_run(world: World, folder: Path, damage: Callable[[Path], None]) -> list:
    run = folder / "run"
    shutil.copytree(world.trained, run)
    checkpoint = sorted((run / "checkpoints").iterdir())[-1]
    damage(checkpoint)
    return ["train", world.experiment, "--run-dir", run, "--resume"]


def _malformed_catalog(world: World, folder: Path) -> list:
    (folder / "catalogs" / "datasets").mkdir(parents=True)
    (folder / "catalogs" / "datasets" / "broken.yaml").write_text("name: broken\nkind: [unclosed\n")
    return ["catalog", "list"]


def _old_export(world: World, folder: Path) -> list:
    import torch

    (folder / "old").mkdir()
    torch.save({"model": "fno", "config": {}, "data_shape": {}, "state_dict": {}}, folder / "old" / "model.pt")
    return ["forecast", folder / "old", "--dataset", world.entry, "--steps", "2", "--out", folder / "f.zarr"]


def _lat_mse_on_a_box(world: World, folder: Path) -> list:
    raw = yaml.safe_load(world.experiment.read_text())
    raw["loss"] = {"name": "lat_mse"}
    path = folder / "latmse.yaml"
    path.write_text(yaml.safe_dump(raw))
    return ["train", path, "--run-dir", folder / "run"]


def _experiment_with(world: World, folder: Path, **changes) -> Path:
    raw = yaml.safe_load(world.experiment.read_text())
    for key, value in changes.items():
        section, _, name = key.partition("__")
        raw.setdefault(section, {})[name] = value
    path = folder / "changed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


CASES = {
    # ---- ingest
    "ingest: missing input": Case(lambda w, d: ["ingest", d / "nope.grib", "--out", d / "x.zarr"],
                                  ("nope.grib", "does not exist"), ("x.zarr",)),
    "ingest: neither GRIB nor netCDF": Case(
        lambda w, d: (d / "notes.txt").write_text("hello") and ["ingest", d / "notes.txt", "--out", d / "x.zarr"],
        ("notes.txt", "neither GRIB nor netCDF"), ("x.zarr",)),
    "ingest: damaged GRIB": Case(lambda w, d: ["ingest", TEST_DATA / "era5-levels-corrupted.grib", "--out", d / "x.zarr"],
                                 ("era5-levels-corrupted.grib", "1 of 2 GRIB messages cannot be read"), ("x.zarr",)),
    "ingest: output exists": Case(
        lambda w, d: (d / "x.zarr").mkdir() or ["ingest", SAMPLE_DATA / "era5-2mt-2019-03-uk.grib", "--out", d / "x.zarr"],
        ("x.zarr", "already exists")),
    "ingest: read-only output folder": Case(
        lambda w, d: ["ingest", SAMPLE_DATA / "era5-2mt-2019-03-uk.grib", "--out", _read_only(d) / "x.zarr"],
        ("locked",), ("locked/x.zarr",)),
    "ingest: unknown --expect": Case(
        lambda w, d: ["ingest", SAMPLE_DATA / "era5-2mt-2019-03-uk.grib", "--out", d / "x.zarr", "--expect", "nope"],
        ("unknown dataset 'nope'",), ("x.zarr",)),
    "ingest: data unlike the entry": Case(
        lambda w, d: ["ingest", SAMPLE_DATA / "era5-2mt-2019-03-uk.grib", "--out", d / "x.zarr", "--expect",
                      "era5-ensemble"], ("era5-2mt-2019-03-uk.grib", "missing variable 'z'"), ("x.zarr",)),
    "ingest: files without --out": Case(lambda w, d: ["ingest", SAMPLE_DATA / "era5-2mt-2019-03-uk.grib"],
                                        ("input files need --out",)),
    # ---- catalog and statistics
    "catalog: unknown entry": Case(lambda w, d: ["catalog", "show", "nope"], ("unknown dataset 'nope'",)),
    "catalog: one malformed entry among good ones": Case(_malformed_catalog, ("broken.yaml", "not valid YAML"),
                                                         env={"EARTHSIM_CATALOGS": "{folder}/catalogs"}),
    "catalog: entry file not valid YAML": Case(
        lambda w, d: (d / "bad.yaml").write_text("name: [") and ["catalog", "show", d / "bad.yaml"],
        ("bad.yaml", "not valid YAML")),
    "stats: unknown entry": Case(lambda w, d: ["stats", "nope"], ("unknown dataset 'nope'",)),
    "stats: store is an empty folder": Case(
        lambda w, d: _empty_store_entry(w, d), ("empty.zarr", "not a readable Zarr store"), ("empty.stats.zarr",)),
    "stats: missing store and no source": Case(
        lambda w, d: _empty_store_entry(w, d, create=False), ("empty.zarr", "no 'source'")),
    # ---- train
    "train: unknown experiment": Case(lambda w, d: ["train", "nope"], ("unknown experiment 'nope'",)),
    "train: --set value not YAML": Case(
        lambda w, d: ["train", w.experiment, "--set", "optimizer.lr=[1", "--run-dir", d / "run"],
        ("--set 'optimizer.lr=[1'", "not valid YAML"), ("run",)),
    "train: --set unknown key": Case(
        lambda w, d: ["train", w.experiment, "--set", "optimizer.rate=1", "--run-dir", d / "run"],
        ("unknown key(s) ['rate']",), ("run",)),
    "train: --resume in an empty folder": Case(
        lambda w, d: (d / "run").mkdir() or ["train", w.experiment, "--run-dir", d / "run", "--resume"],
        ("holds no checkpoint",), ("run/checkpoints", "run/config.yaml")),
    "train: --resume in a mistyped folder": Case(
        lambda w, d: ["train", w.experiment, "--run-dir", d / "rnu", "--resume"], ("rnu", "holds no checkpoint"),
        ("rnu",)),
    "train: existing run without --resume": Case(
        lambda w, d: ["train", w.experiment, "--run-dir", w.trained], ("already has checkpoints", "--resume")),
    "train: loss that needs latitudes on a box": Case(_lat_mse_on_a_box, ("lat_mse", "latitude weights"), ("run",)),
    "train: read-only run folder": Case(
        lambda w, d: ["train", w.experiment, "--run-dir", _read_only(d) / "run"], ("locked",), ("locked/run",)),
    "train: altered checkpoint metadata": Case(
        lambda w, d: _damaged_run(w, d, lambda c: _planted_pickle(c / ".metadata", d / "pwned")),
        (".metadata", "refused", "posix.system"), ("pwned",)),
    "train: a deleted checkpoint shard": Case(
        lambda w, d: _damaged_run(w, d, lambda c: next(c.glob("*.distcp")).unlink()),
        ("step-", "cannot be read")),
    "train: experiment not valid YAML": Case(
        lambda w, d: (d / "exp.yaml").write_text("data: [") and ["train", d / "exp.yaml"], ("exp.yaml", "not valid YAML")),
    "train: leads for a model that ignores them": Case(
        lambda w, d: ["train", _experiment_with(w, d, data__lead_strides=[1, 2]), "--run-dir", d / "run"],
        ("need a lead-conditioned model",), ("run",)),
    # ---- forecast
    "forecast: no export": Case(lambda w, d: ["forecast", d / "nothing", "--dataset", w.entry, "--steps", "2",
                                              "--out", d / "f.zarr"], ("no exported model",), ("f.zarr",)),
    "forecast: export of another format": Case(_old_export, ("export format 1", "reads format 2"), ("f.zarr",)),
    "forecast: export that is random bytes": Case(
        lambda w, d: (d / "model.pt").write_bytes(os.urandom(256)) and [
            "forecast", d / "model.pt", "--dataset", w.entry, "--steps", "2", "--out", d / "f.zarr"],
        ("model.pt", "not a loadable earthsim model file"), ("f.zarr",)),
    "forecast: export with a planted pickle": Case(
        lambda w, d: _planted_pickle(d / "model.pt", d / "pwned") or [
            "forecast", d / "model.pt", "--dataset", w.entry, "--steps", "2", "--out", d / "f.zarr"],
        ("model.pt", "not a loadable earthsim model file"), ("f.zarr", "pwned")),
    "forecast: output exists": Case(
        lambda w, d: (d / "f.zarr").mkdir() or ["forecast", w.export, "--dataset", w.entry, "--steps", "2",
                                                  "--out", d / "f.zarr"], ("f.zarr", "already exists")),
    "forecast: read-only output folder": Case(
        lambda w, d: ["forecast", w.export, "--dataset", w.entry, "--steps", "2", "--out", _read_only(d) / "f.zarr"],
        ("locked",), ("locked/f.zarr", "locked/f.zarr.partial")),
    "forecast: more steps than the split holds": Case(
        lambda w, d: ["forecast", w.export, "--dataset", w.entry, "--steps", "50", "--out", d / "f.zarr"],
        ("steps=50", "at most"), ("f.zarr", "f.zarr.partial")),
    "forecast: unknown split": Case(
        lambda w, d: ["forecast", w.export, "--dataset", w.entry, "--split", "nope", "--steps", "2",
                      "--out", d / "f.zarr"], ("no split 'nope'",), ("f.zarr",)),
    "forecast: model and baseline": Case(
        lambda w, d: ["forecast", w.export, "--baseline", "persistence", "--dataset", w.entry, "--steps", "2",
                      "--out", d / "f.zarr"], ("not both",), ("f.zarr",)),
    "forecast: direct mode of a fixed-step model": Case(
        lambda w, d: ["forecast", w.export, "--mode", "direct", "--dataset", w.entry, "--steps", "2",
                      "--out", d / "f.zarr"], ("not lead-conditioned",), ("f.zarr", "f.zarr.partial")),
    "forecast: a dataset chunk of random bytes": Case(
        lambda w, d: _random_chunk(_copy(w, "truth", d), "vorticity", last=True) or [
            "forecast", w.export, "--dataset", _truth_copy_of(w, d), "--steps", "2", "--out", d / "f.zarr"],
        ("vorticity", "cannot be read"), ("f.zarr",)),
    # ---- score
    "score: a forecast chunk missing": Case(
        lambda w, d: _chunk(_copy(w, "forecast", d), "vorticity").unlink() or [
            "score", d / "persistence.zarr", "--truth", w.entry, "--out", d / "scores"],
        ("persistence.zarr", "vorticity", "chunks missing"), ("scores",)),
    "score: a truth chunk missing": Case(
        lambda w, d: _delete_truth_chunk(w, d), ("waves.zarr", "vorticity", "chunks missing"), ("scores",)),
    "score: NaN in the forecast": Case(_nan_forecast, ("nan.zarr", "vorticity", "hold NaN"), ("scores",)),
    "score: forecast without units": Case(_no_units, ("nounits.zarr", "no units attribute"), ("scores",)),
    "score: stated units unlike the truth's": Case(
        lambda w, d: _no_units(w, d) + ["--units", "vorticity=s**-1"], ("units 's**-1'", "the truth"), ("scores",)),
    "score: --units without '='": Case(
        lambda w, d: ["score", w.forecast, "--truth", w.entry, "--out", d / "scores", "--units", "vorticity"],
        ("expected VARIABLE=UNITS",), ("scores",)),
    "score: a forecast chunk of random bytes": Case(
        lambda w, d: _random_chunk(_copy(w, "forecast", d), "vorticity") or [
            "score", d / "persistence.zarr", "--truth", w.entry, "--out", d / "scores"],
        ("persistence.zarr", "vorticity", "cannot be read"), ("scores",)),
    "score: store that is an empty folder": Case(
        lambda w, d: (d / "empty.zarr").mkdir() or ["score", d / "empty.zarr", "--truth", w.entry, "--out", d / "s"],
        ("empty.zarr", "not a readable Zarr store"), ("s",)),
    "score: read-only --out": Case(
        lambda w, d: ["score", w.forecast, "--truth", w.entry, "--out", _read_only(d) / "scores"], ("locked",),
        ("locked/scores",)),
    # ---- check and simulate
    "check: a missing chunk": Case(lambda w, d: _chunk(_copy(w, "forecast", d), "vorticity").unlink() or [
        "check", d / "persistence.zarr"], ("persistence.zarr", "chunks missing")),
    "check: a chunk of random bytes": Case(lambda w, d: _random_chunk(_copy(w, "forecast", d), "vorticity") or [
        "check", d / "persistence.zarr"], ("vorticity", "cannot be decoded")),
    "check: an empty folder": Case(lambda w, d: (d / "e.zarr").mkdir() or ["check", d / "e.zarr"],
                                   ("e.zarr", "not a readable Zarr store")),
    "simulate: a bad config": Case(
        lambda w, d: ["simulate", "navier-stokes", "--out", d / "ns.zarr", "--resolution", "7"],
        ("resolution",), ("ns.zarr",)),
}


def _empty_store_entry(world: World, folder: Path, create: bool = True) -> list:
    raw = yaml.safe_load(world.entry.read_text())
    raw.update(name="empty", store=str(folder / "empty.zarr"), statistics=str(folder / "empty.stats.zarr"))
    if create:
        (folder / "empty.zarr").mkdir()
    path = folder / "empty.yaml"
    path.write_text(yaml.safe_dump(raw))
    return ["stats", path]


def _random_chunk(store: Path, variable: str, last: bool = False) -> None:
    chunks = sorted(p for p in (store / variable / "c").rglob("*") if p.is_file())
    (chunks[-1] if last else chunks[0]).write_bytes(os.urandom(200))


def _truth_copy_of(world: World, folder: Path) -> Path:
    raw = yaml.safe_load(world.entry.read_text())
    raw.update(store=str(folder / "waves.zarr"), statistics=str(world.entry.parent / "waves.stats.zarr"))
    path = folder / "waves.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _delete_truth_chunk(world: World, folder: Path) -> list:
    entry = _truth_copy(world, folder)
    _chunk(folder / "waves.zarr", "vorticity").unlink()
    return ["score", world.forecast, "--truth", entry, "--out", folder / "scores"]


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_fault_is_refused_by_name(name, world, tmp_path):
    case = CASES[name]
    args = case.prepare(world, tmp_path)
    env = {k: v.format(folder=tmp_path) for k, v in case.env.items()}
    run = _earthsim(*args, cwd=tmp_path, env=env)
    assert run.returncode == 2, f"exit {run.returncode}\n{run.stdout[-1500:]}\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("earthsim ")]
    assert len(errors) == 1, run.stderr[-2000:]  # the message: one line (ingest's check lists each difference after it)
    message = run.stderr[run.stderr.index(errors[0]):]
    for fragment in case.says:
        assert fragment in message, (fragment, message[-2000:])
    for relative in case.absent:
        assert not (tmp_path / relative).exists(), f"{relative} was left behind"
    assert not list(tmp_path.rglob("*.tmp-*")), "a temporary was left behind"


# ------------------------------------------------------------------------- kill -9, then run again

def _present(folder: Path, pattern: str) -> list[Path]:
    """Paths under ``folder`` matching ``pattern``, while a job renames folders in it (a folder that vanishes mid-walk
    is walked again)."""
    while True:
        try:
            return list(folder.rglob(pattern))
        except FileNotFoundError:
            continue


def _kill_when_a_temporary_appears(args: list, cwd: Path, env: dict, pattern: str) -> list[Path]:
    """Start ``earthsim ARGS``, SIGKILL it as soon as a temporary matching ``pattern`` exists, return the leftovers."""
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "earthsim", *map(str, args)], cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not _present(cwd, pattern):
        time.sleep(0.002)
    assert process.poll() is None, "the job ended before it could be killed"
    time.sleep(0.3)  # part-way into writing
    process.send_signal(signal.SIGKILL)
    process.wait()
    return list(cwd.rglob(pattern))


def _same_store(a: Path, b: Path, where_made: bool = True) -> None:
    """The same data and attributes; the provenance too but for its time (and, unless ``where_made``, its paths).

    cfgrib's ``history`` attribute opens with the minute of conversion, so two ingests a minute apart
    differ there; it is compared without that time.
    """
    import xarray as xr

    left, right = (xr.open_zarr(p, consolidated=False).load() for p in (a, b))
    for ds in (left, right):
        record = ds.attrs.pop("provenance")
        record.pop("created")
        if where_made:
            ds.attrs["provenance"] = record
        if "history" in ds.attrs:
            ds.attrs["history"] = ds.attrs["history"].split(" ", 1)[-1]
    xr.testing.assert_identical(left, right)


def test_an_ingest_killed_part_way_runs_again_to_the_same_store(tmp_path):
    grib = SAMPLE_DATA / "era5-2mt-2019-03-uk.grib"
    args = ["ingest", grib, "--out", tmp_path / "killed.zarr", "--expect", "era5-uk-t2m"]
    left = _kill_when_a_temporary_appears(args, tmp_path, {}, "killed.zarr.partial")
    assert left and not (tmp_path / "killed.zarr").exists()
    _earthsim(*args, cwd=tmp_path, check=True)  # resumes the partial store
    _earthsim("ingest", grib, "--out", tmp_path / "whole.zarr", "--expect", "era5-uk-t2m", cwd=tmp_path, check=True)
    _same_store(tmp_path / "killed.zarr", tmp_path / "whole.zarr")
    assert not list(tmp_path.rglob("*.tmp-*")) and not list(tmp_path.rglob("*.partial"))


def test_a_statistics_job_killed_part_way_runs_again_to_the_same_result(tmp_path):
    env = {"EARTHSIM_STORES": str(tmp_path / "stores")}
    _earthsim("ingest", "era5-uk-t2m", cwd=tmp_path, env=env, check=True)
    left = _kill_when_a_temporary_appears(["stats", "era5-uk-t2m"], tmp_path, env, "era5-uk-t2m.climatology.zarr.partial")
    assert left and not (tmp_path / "stores" / "era5-uk-t2m.climatology.zarr").exists()
    _earthsim("stats", "era5-uk-t2m", cwd=tmp_path, env=env, check=True)  # resumes the partial store
    assert not list(tmp_path.rglob("*.tmp-*")) and not list(tmp_path.rglob("*.partial"))
    reference = {"EARTHSIM_STORES": str(tmp_path / "reference")}
    _earthsim("ingest", "era5-uk-t2m", cwd=tmp_path, env=reference, check=True)
    _earthsim("stats", "era5-uk-t2m", cwd=tmp_path, env=reference, check=True)
    for name in ("era5-uk-t2m.stats.zarr", "era5-uk-t2m.climatology.zarr"):
        _same_store(tmp_path / "stores" / name, tmp_path / "reference" / name, where_made=False)


# ------------------------------------------------------------------------- stores written by other tools, and damage
# earthsim check, ingest and stats on small stores and files made here; each refusal as above: exit status 2, one line
# naming the file, variable or key, no traceback, nothing left under the output name.

def _assert_refused(run: subprocess.CompletedProcess, folder: Path, says: tuple[str, ...], absent: tuple[str, ...] = ()):
    assert run.returncode == 2, f"exit {run.returncode}\n{run.stdout[-1500:]}\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("earthsim ")]
    assert len(errors) == 1, run.stderr[-2000:]
    for fragment in says:
        assert fragment in errors[0], (fragment, errors[0])
    for relative in absent:
        assert not (folder / relative).exists(), f"{relative} was left behind"
    assert not list(folder.rglob("*.tmp-*")), "a temporary was left behind"


def _tiny_store(path: Path, zarr_format: int = 3, shards: bool = False, values: np.ndarray | None = None,
                latitude=(-10.0, 0.0, 10.0), coordinates: bool = True) -> Path:
    """A complete store as another tool writes it: t (time 4, latitude 3, longitude 2) in K, stored in two chunks
    of two time steps (two shards of two one-step chunks each when ``shards``), Zarr v3 or v2."""
    import xarray as xr

    from earthsim.data.store import COMPLETE_ATTR

    values = np.arange(1.0, 25.0, dtype=np.float32).reshape(4, 3, 2) if values is None else values
    coords = {"time": np.arange(4.0), "latitude": list(latitude), "longitude": [0.0, 90.0]} if coordinates else {}
    ds = xr.Dataset({"t": (("time", "latitude", "longitude"), values, {"units": "K"})}, coords=coords,
                    attrs={COMPLETE_ATTR: "written whole by a test"})
    encoding = {"chunks": (1, 3, 2), "shards": (2, 3, 2)} if shards else {"chunks": (2, 3, 2)}
    ds.to_zarr(path, zarr_format=zarr_format, encoding={"t": encoding}, consolidated=zarr_format == 2)
    return path


@pytest.mark.parametrize("kind", ["sharded v3", "v2"])
def test_check_counts_shards_and_v2_chunks_and_finds_the_one_deleted(kind, tmp_path):
    store = _tiny_store(tmp_path / "s.zarr", zarr_format=2 if kind == "v2" else 3, shards=kind == "sharded v3")
    whole = _earthsim("check", store, cwd=tmp_path, check=True)
    assert "| t | time, latitude, longitude | 2 of 2 |" in whole.stdout and "whole, readable" in whole.stdout
    chunk = store / "t" / ("1.0.0" if kind == "v2" else "c/1/0/0")
    chunk.unlink()
    _assert_refused(_earthsim("check", store, cwd=tmp_path), tmp_path,
                    ("s.zarr", "t: 1 of 2 chunks missing", "(1, 0, 0)"))


def test_a_chunk_equal_to_the_fill_value_is_written_so_the_store_stays_whole(world, tmp_path, capsys):
    """A coordinate [0] (one trajectory, one ensemble member) equals the fill value of an integer array: the
    template writes of a simulation and of a forecast still write its chunk, and zero fields stay whole too."""
    _earthsim("simulate", "navier-stokes", "--out", tmp_path / "ns.zarr", "--resolution", "16", "--save-resolutions",
              "16", "--trajectories", "1", "--frames", "2", "--save-interval", "0.05", "--spinup-time", "0.01",
              "--coarse-spinup-time", "0", "--coarse-resolution", "16", "--max-velocity", "1", cwd=tmp_path, check=True)
    _earthsim("forecast", world.export, "--dataset", world.entry, "--steps", "2", "--members", "1", "--out",
              tmp_path / "f.zarr", cwd=tmp_path, check=True)
    write_zarr(__import__("xarray").open_zarr(_tiny_store(tmp_path / "t.zarr", values=np.zeros((4, 3, 2), np.float32)),
                                              consolidated=False).load(), tmp_path / "zeros.zarr", progress=False)
    from earthsim.cli import main

    capsys.readouterr()
    for store in ("ns.zarr", "f.zarr", "zeros.zarr", world.forecast, world.entry.parent / "waves.zarr",
                  world.entry.parent / "waves.stats.zarr"):
        status = main(["check", str(tmp_path / store)])  # in this process: the command's exit status and output
        out = capsys.readouterr()
        assert status == 0 and "whole, readable" in out.out, (store, out.out[-2000:], out.err[-2000:])


def _break_metadata(store: Path, relative: str, text: str | None) -> Path:
    target = store / relative
    if text is None:
        target.unlink()
    else:
        target.write_text(text)
    return store


CHECKS = {  # damage to a tiny store -> what the one line says
    "orphan folder (array metadata deleted)": (
        lambda d: _break_metadata(_tiny_store(d / "s.zarr"), "t/zarr.json", None),
        ("s.zarr/t:", "2 file(s)", "no zarr.json or .zarray")),
    "orphan folder in a v2 store": (
        lambda d: _break_metadata(_tiny_store(d / "s.zarr", zarr_format=2), "t/.zarray", None),
        ("s.zarr/t:", "no zarr.json or .zarray")),
    "array metadata not JSON": (
        lambda d: _break_metadata(_tiny_store(d / "s.zarr"), "t/zarr.json", '{"zarr_format": 3,'),
        ("s.zarr/t/zarr.json", "cannot be read as JSON", "JSONDecodeError")),
    "root metadata empty": (
        lambda d: _break_metadata(_tiny_store(d / "s.zarr"), "zarr.json", ""), ("s.zarr/zarr.json", "as JSON")),
    "v2 metadata not JSON": (
        lambda d: _break_metadata(_tiny_store(d / "s.zarr", zarr_format=2), "t/.zarray", "\x00\x01"),
        ("s.zarr/t/.zarray", "as JSON")),
    "dims without coordinates": (
        lambda d: _tiny_store(d / "s.zarr", coordinates=False), ("dim 'time' has no coordinate array",)),
    "latitude decreasing": (
        lambda d: _tiny_store(d / "s.zarr", latitude=(10.0, 0.0, -10.0)), ("latitude", "not increasing")),
    "float64 data with a time dim": (
        lambda d: _tiny_store(d / "s.zarr", values=np.ones((4, 3, 2))), ("t: dtype float64", "float32")),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_names_a_damaged_or_unconventional_store(name, tmp_path):
    prepare, says = CHECKS[name]
    _assert_refused(_earthsim("check", prepare(tmp_path), cwd=tmp_path), tmp_path, says)


def test_check_counts_infinities_with_nan(tmp_path):
    values = np.ones((4, 3, 2), np.float32)
    values[0, 0, 0], values[3, 2, 1], values[2, 1, 0] = np.nan, np.inf, -np.inf
    run = _earthsim("check", _tiny_store(tmp_path / "s.zarr", values=values), cwd=tmp_path, check=True)
    assert "non-finite values" in run.stdout and "| t | time, latitude, longitude | 2 of 2 | 0 | 3 of 24 |" in run.stdout


def _tiny_netcdf(path: Path, times, engine: str = "scipy") -> Path:
    """A classic netCDF file (the scipy engine writes netCDF3) of t (time, latitude 3, longitude 4) in K."""
    import xarray as xr

    values = np.arange(len(times) * 12, dtype=np.float32).reshape(len(times), 3, 4) + 250
    xr.Dataset({"t": (("time", "latitude", "longitude"), values, {"units": "K", "long_name": "Temperature"})},
               coords={"time": times, "latitude": [-10.0, 0.0, 10.0], "longitude": [0.0, 90.0, 180.0, 270.0]},
               ).to_netcdf(path, engine=engine)
    return path


def test_ingest_refuses_a_truncated_netcdf3_file_naming_both_sizes(tmp_path):
    import pandas as pd

    whole = _tiny_netcdf(tmp_path / "whole.nc", pd.date_range("2020-01-01", periods=8, freq="6h"))
    data = whole.read_bytes()
    assert data[:4] in (b"CDF\x01", b"CDF\x02")  # classic netCDF3 (scipy: 64-bit offsets)
    (tmp_path / "cut.nc").write_bytes(data[:-40])
    _assert_refused(_earthsim("ingest", tmp_path / "cut.nc", "--out", tmp_path / "x.zarr", cwd=tmp_path), tmp_path,
                    ("cut.nc", "truncated netCDF", f"ends at byte {len(data)}", f"the file has {len(data) - 40} bytes"),
                    ("x.zarr",))
    _earthsim("ingest", whole, "--out", tmp_path / "w.zarr", cwd=tmp_path, check=True)


def test_ingest_refuses_garbage_outside_grib_messages_and_empty_files(tmp_path):
    data = SAMPLE_DATA.joinpath("era5-2mt-2019-03-uk.grib").read_bytes()
    second = data.index(b"GRIB", 4)
    (tmp_path / "between.grib").write_bytes(data[:second] + b"\x00\x00junk-bytes-here" + data[second:])
    (tmp_path / "after.grib").write_bytes(data + b"\x00" * 16 + b"trailing junk")  # zero padding alone is fine
    (tmp_path / "empty.grib").write_bytes(b"")
    (tmp_path / "empty.nc").write_bytes(b"")
    for name, says in (("between.grib", "15 non-zero byte(s) lie outside its 744 valid GRIB message(s)"),
                       ("after.grib", "13 non-zero byte(s) lie outside"), ("empty.grib", "empty (0 bytes)"),
                       ("empty.nc", "empty (0 bytes)")):
        run = _earthsim("ingest", tmp_path / name, "--out", tmp_path / "x.zarr", cwd=tmp_path)
        _assert_refused(run, tmp_path, (name, says), ("x.zarr",))
    assert "--accept-damaged" in run.stderr or name.startswith("empty")


def test_ingest_refuses_files_with_a_gap_between_their_times(tmp_path):
    import pandas as pd

    times = pd.date_range("2020-01-01", periods=12, freq="6h")
    _tiny_netcdf(tmp_path / "a.nc", times[:4])
    _tiny_netcdf(tmp_path / "c.nc", times[8:])  # b.nc, the times between, is missing
    _assert_refused(_earthsim("ingest", tmp_path / "a.nc", tmp_path / "c.nc", "--out", tmp_path / "x.zarr",
                              cwd=tmp_path), tmp_path,
                    ("a.nc, ", "c.nc", "irregular", "every 6h", "2020-01-01T18:00 to 2020-01-03T00:00 (30h)"), ("x.zarr",))
    _tiny_netcdf(tmp_path / "b.nc", times[4:8])
    _earthsim("ingest", tmp_path / "a.nc", tmp_path / "b.nc", tmp_path / "c.nc", "--out", tmp_path / "x.zarr",
              cwd=tmp_path, check=True)


def test_a_full_disk_while_ingesting_names_the_output(tmp_path):
    """ENOSPC (likewise EFBIG, EDQUOT, EROFS) without a file name: the output's failure, not the input's."""
    import pandas as pd

    source = _tiny_netcdf(tmp_path / "a.nc", pd.date_range("2020-01-01", periods=4, freq="6h"))
    script = ("import errno, sys, zarr.storage._local as local\n"
              "put = local._put\n"
              "def full(path, *args, **kwargs):\n"
              "    if '/c/' in str(path):\n"
              "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
              "    return put(path, *args, **kwargs)\n"
              "local._put = full\n"
              "from earthsim.cli import main\n"
              "raise SystemExit(main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", script, "ingest", str(source), "--out", str(tmp_path / "x.zarr")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    _assert_refused(run, tmp_path, (f"{tmp_path / 'x.zarr'}: writing failed: No space left on device",), ("x.zarr",))
    assert "a.nc" not in run.stderr


def test_statistics_refuse_non_finite_values_naming_the_variable_and_count(world, tmp_path):
    import xarray as xr

    ds = xr.open_zarr(world.entry.parent / "waves.zarr", consolidated=False).load()
    ds["vorticity"][0, 1, 2, 3] = np.inf
    ds["vorticity"][1, 0, 0, 0] = -np.inf
    ds["vorticity"][2, 3, 1, 1] = np.nan
    ds.attrs.pop("provenance", None)
    write_zarr(ds, tmp_path / "inf.zarr", progress=False)
    raw = yaml.safe_load(world.entry.read_text())
    raw.update(name="inf", store=str(tmp_path / "inf.zarr"), statistics=str(tmp_path / "inf.stats.zarr"))
    (tmp_path / "inf.yaml").write_text(yaml.safe_dump(raw))
    run = _earthsim("stats", tmp_path / "inf.yaml", cwd=tmp_path)
    _assert_refused(run, tmp_path, ("inf.zarr", "variable 'vorticity' holds 3 non-finite value(s)", "split 'train'"),
                    ("inf.stats.zarr",))
    assert "Warning" not in run.stderr, run.stderr


def test_a_window_holding_inf_never_becomes_a_sample(world, tmp_path):
    """Statistics made before the store was damaged: the loader itself refuses the window, for +inf as for NaN."""
    import xarray as xr

    from earthsim.data.windows import WindowDataset
    from earthsim.errors import ValidationError

    ds = xr.open_zarr(world.entry.parent / "waves.zarr", consolidated=False).load()
    ds["vorticity"][0, 1, 2, 3] = np.inf
    ds.attrs.pop("provenance", None)
    write_zarr(ds, tmp_path / "inf.zarr", progress=False)
    raw = yaml.safe_load(world.entry.read_text())
    raw.update(store=str(tmp_path / "inf.zarr"))  # the clean store's statistics
    (tmp_path / "inf.yaml").write_text(yaml.safe_dump(raw))
    windows = WindowDataset(str(tmp_path / "inf.yaml"), "train")
    with pytest.raises(ValidationError, match=r"variable 'vorticity' holds non-finite values \(NaN or ±inf\) in 1 "
                                              r"frame\(s\) of the window of sample 0"):
        windows[0]
    assert windows[2]["x"].isfinite().all()  # windows that do not reach the damaged frame are read
