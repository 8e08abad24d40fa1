"""Region-by-region writes (earthsim.data.store.PartialStore): resume only what is missing, never mix requests or
versions of an input, and finish a store killed between dropping its flags and its rename."""

from __future__ import annotations

import shutil

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from earthsim.data.store import PartialStore, is_complete, mark_complete, open_zarr, provenance, write_region
from earthsim.errors import EarthsimError


def _template() -> xr.Dataset:
    return xr.Dataset({"a": (("time", "x"), da.zeros((4, 3), chunks=(1, 3), dtype=np.float32)),
                       "s": ((), np.float32(0))}, coords={"time": np.arange(4), "x": np.arange(3)})


def _values(index: int) -> xr.Dataset:
    return xr.Dataset({"a": (("time", "x"), np.full((1, 3), index + 1, np.float32))})


def test_resume_writes_only_the_missing_regions_and_a_changed_input_is_refused(tmp_path):
    """Also: a finished store is kept only when asked and only when of the same request and input versions."""
    source = tmp_path / "input.nc"
    source.write_bytes(b"version 1")
    record = provenance("test", [str(source)], {"what": "a"})
    out = tmp_path / "out.zarr"
    store = PartialStore(out, _template(), 4, record)
    for index in (0, 2):
        write_region(store.partial, index, {"": _values(index)}, {"time": slice(index, index + 1)}, value=10 + index)
    again = PartialStore(out, _template(), 4, record)
    assert again.pending() == [1, 3] and again.flags()[[0, 2]].tolist() == [10, 12]
    with pytest.raises(EarthsimError, match="another request"):
        PartialStore(out, _template(), 4, provenance("test", [str(source)], {"what": "b"}))
    source.write_bytes(b"version 2, longer")  # the input changed: its regions would mix two versions
    with pytest.raises(EarthsimError, match="input_versions"):
        PartialStore(out, _template(), 4, record)
    restarted = PartialStore(out, _template(), 4, provenance("test", [str(source)], {"what": "a"}), overwrite=True)
    assert restarted.pending() == [0, 1, 2, 3]
    for index in restarted.pending():
        write_region(restarted.partial, index, {"": _values(index)}, {"time": slice(index, index + 1)})
    write_region(restarted.partial, 0, {"": xr.Dataset({"s": ((), np.float32(5))})}, {})  # a variable written whole
    path = restarted.finish()
    result = xr.open_zarr(path, consolidated=False).load()
    assert result.a[:, 0].values.tolist() == [1, 2, 3, 4] and float(result.s) == 5
    assert is_complete(path)
    with pytest.raises(EarthsimError, match="already exists"):
        PartialStore(out, _template(), 4, record)
    kept = PartialStore(out, _template(), 4, record, keep=True)  # the same request, inputs unchanged: kept as it is
    assert kept.kept and kept.pending() == [] and kept.finish() == path
    assert xr.open_zarr(path, consolidated=False).a[:, 0].values.tolist() == [1, 2, 3, 4]
    with pytest.raises(EarthsimError, match="another request.*what: 'a' there, 'b' now"):
        PartialStore(out, _template(), 4, provenance("test", [str(source)], {"what": "b"}), keep=True)
    source.write_bytes(b"version 3")
    with pytest.raises(EarthsimError, match="changed inputs.*input_versions"):
        PartialStore(out, _template(), 4, record, keep=True)
    replaced = PartialStore(out, _template(), 4, record, keep=True, overwrite=True)
    assert not replaced.kept and replaced.pending() == [0, 1, 2, 3]


def test_a_store_killed_after_dropping_its_flags_is_finished_by_the_next_run(tmp_path):
    record = provenance("test", [], {"what": "a"})
    store = PartialStore(tmp_path / "out.zarr", _template(), 4, record)
    for index in range(4):
        write_region(store.partial, index, {"": _values(index)}, {"time": slice(index, index + 1)})
    mark_complete(store.partial)  # what finish() does before the rename, where the run is killed
    shutil.rmtree(store.partial / "done_regions")
    again = PartialStore(tmp_path / "out.zarr", _template(), 4, record)
    assert again.complete and again.pending() == []
    with pytest.raises(EarthsimError, match="flags were dropped"):
        again.flags()  # its reported values are gone: callers check `complete` first
    assert again.finish() == tmp_path / "out.zarr"


def test_open_zarr_orders_variables_by_name_and_keeps_every_coordinate(tmp_path):
    ds = xr.Dataset({"z": ("time", np.arange(3.0)), "a": ("time", np.ones(3))},
                    coords={"time": [0.0, 1.0, 2.0], "level": ("level", [500.0, 850.0])}, attrs={"title": "t"})
    ds.to_zarr(tmp_path / "s.zarr", consolidated=False)
    opened = open_zarr(tmp_path / "s.zarr")
    assert list(opened.data_vars) == ["a", "z"]
    xr.testing.assert_identical(opened.load(), ds)  # a coordinate no variable uses (level) and the attributes stay


def test_stale_temporaries_are_removed_and_a_live_writers_kept_and_named(tmp_path, capsys):
    import subprocess

    from earthsim.data.store import remove_stale_temporaries

    finished = subprocess.Popen(["true"])
    finished.wait()  # exited and reaped: no process holds its number now
    dead = tmp_path / f"x.zarr.tmp-{finished.pid}-0badcafe"
    live = tmp_path / "x.zarr.tmp-1-cafebabe"  # process 1 always runs
    for folder in (dead, live):
        (folder / "t2m").mkdir(parents=True)
    assert remove_stale_temporaries(tmp_path / "x.zarr") == [dead]
    assert not dead.exists() and live.exists()
    err = capsys.readouterr().err
    assert f"removed {dead}, left by an interrupted run" in err
    assert f"kept {live}: process 1 is still running" in err
