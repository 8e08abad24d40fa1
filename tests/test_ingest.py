"""Ingest of netCDF and GRIB into Zarr v3 in earthsim's conventions, validated against catalog entries.

Real samples come from the package's ``sample_data`` and ``tests/data`` (ERA5 GRIB, ERA-Interim netCDF); bad inputs are small
netCDF files built here, each checked against a catalog entry written as YAML beside it. Truth is
independent of the code under test: values are compared with what cfgrib/xarray read straight from
the files, or with the analytic function the constructed fields were made from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from conftest import SAMPLE_DATA, TEST_DATA
from earthsim import catalog, cli
from earthsim.data.conventions import to_conventions
from earthsim.data.ingest import grib_damage, ingest, ingest_entry, open_inputs, validate_against_entry
from earthsim.data.store import open_zarr
from earthsim.errors import EarthsimError, ValidationError

UK = SAMPLE_DATA / "era5-2mt-2019-03-uk.grib"
MEMBERS_GRIB = SAMPLE_DATA / "era5-levels-members.grib"
CORRUPTED = TEST_DATA / "era5-levels-corrupted.grib"
ERAINT = TEST_DATA / "eraint_uvz.nc"
GRIB_KW = {"engine": "cfgrib", "backend_kwargs": {"indexpath": ""}}

TIMES = pd.date_range("2020-01-01T00:00", periods=6, freq="6h")
LAT = np.array([-30.0, -10.0, 10.0, 30.0])
LON = np.arange(0.0, 360.0, 45.0)
LEVELS = [500, 850]


@pytest.fixture(scope="module")
def uk_store(tmp_path_factory):
    """The era5-uk-t2m entry ingested once for the tests that read it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EARTHSIM_STORES", str(tmp_path_factory.mktemp("stores")))
        entry = catalog.get_entry("era5-uk-t2m")
        path = ingest_entry(entry, progress=False)
    return entry, path


def _nothing_written(out: Path) -> bool:
    """No store and no temporary under (or beside) the output name."""
    return not out.exists() and not any(p.name.startswith(out.name) for p in out.parent.glob("*"))


# ---------------------------------------------------------------- real GRIB entries


def test_uk_t2m_entry_ingests_in_conventions(uk_store):
    entry, path = uk_store
    assert path == Path(entry.store) and (path / "zarr.json").exists()
    ds = open_zarr(path)
    assert dict(ds.sizes) == {"time": 744, "latitude": 33, "longitude": 49}
    assert ds["t2m"].dims == ("time", "latitude", "longitude") and ds["t2m"].dtype == np.float32
    assert np.all(np.diff(ds.latitude) > 0) and np.allclose(ds.latitude, entry.grid.latitude.values())
    assert ds.attrs["longitude_convention"] == "[-180, 180)"
    assert ds.longitude.min() >= -180 and ds.longitude.max() < 180 and np.all(np.diff(ds.longitude) > 0)
    assert np.allclose(ds.longitude, entry.grid.longitude.values())
    assert ds["t2m"].attrs["units"] == "K" and ds["t2m"].attrs["long_name"] == "2 metre temperature"
    assert ds["t2m"].attrs["GRIB_shortName"] == "2t"
    assert not {"step", "valid_time", "number", "surface"} & set(ds.variables)
    assert {"step", "surface"} <= set(ds.attrs["scalar_coordinates"])
    chunks = ds["t2m"].encoding["chunks"]
    assert 1 < chunks[0] < 744 and chunks[1:] == (33, 49)
    prov = ds.attrs["provenance"]
    assert prov["producer"] == "earthsim.data.ingest" and prov["inputs"] == [str(UK.resolve())]
    assert prov["config"]["entry"] == "era5-uk-t2m" and "earthsim-weather" in prov["config"]["conventions"]
    assert prov["config"]["time_chunk"] == chunks[0]
    train = catalog.open_dataset(entry, split="train", generate=False)
    assert train.time.values[-1] == np.datetime64("2019-03-21T23:00")


def test_uk_t2m_store_equals_cfgrib_read_exactly(uk_store):
    _, path = uk_store
    stored = open_zarr(path).load()
    with xr.open_dataset(UK, **GRIB_KW) as raw:
        flipped = raw.isel(latitude=slice(None, None, -1)).load()
    assert stored["t2m"].dtype == flipped["t2m"].dtype == np.float32
    assert np.array_equal(stored["t2m"].values, flipped["t2m"].values)  # bitwise: no NaNs in this sample
    assert np.array_equal(stored.time.values, flipped.valid_time.values)
    assert np.array_equal(stored.latitude.values, flipped.latitude.values)
    assert np.array_equal(stored.longitude.values, flipped.longitude.values)


def test_ensemble_entry_ingests_with_members_and_levels(stores):
    entry = catalog.get_entry("era5-ensemble")
    ds = open_zarr(ingest_entry(entry, progress=False))
    assert ds["z"].dims == ("time", "realization", "level", "latitude", "longitude")
    assert dict(ds.sizes) == {"time": 4, "realization": 10, "level": 2, "latitude": 61, "longitude": 120}
    assert ds.level.values.tolist() == [500.0, 850.0] and ds.level.attrs["units"] == "hPa"
    assert ds.realization.values.tolist() == list(range(10))
    assert np.all(np.diff(ds.latitude) > 0) and np.allclose(ds.latitude, entry.grid.latitude.values())
    assert ds.attrs["longitude_convention"] == "[0, 360)" and np.allclose(ds.longitude, entry.grid.longitude.values())
    assert ds["z"].dtype == ds["t"].dtype == np.float32
    assert ds["z"].attrs["units"] == "m**2 s**-2" and ds["t"].attrs["long_name"] == "Temperature"
    assert ds["t"].encoding["chunks"] == (1, 10, 2, 61, 120)
    with xr.open_dataset(MEMBERS_GRIB, **GRIB_KW) as raw:
        want = raw["z"].sel(isobaricInhPa=500, number=3).isel(time=2, latitude=slice(None, None, -1)).values
        want_t = raw["t"].sel(isobaricInhPa=850, number=9).isel(time=0, latitude=slice(None, None, -1)).values
    assert np.array_equal(ds["z"].sel(level=500, realization=3).isel(time=2).values, want)
    assert np.array_equal(ds["t"].sel(level=850, realization=9).isel(time=0).values, want_t)


def test_damaged_grib_is_refused_by_default_naming_how_many_messages(tmp_path, capsys):
    assert grib_damage(CORRUPTED) == (1, 2, 0) and grib_damage(UK) == (0, 744, 0) and not grib_damage(UK)
    out = tmp_path / "corrupted.zarr"
    with pytest.raises(EarthsimError, match=r"era5-levels-corrupted.grib: 1 of 2 GRIB messages cannot be read"):
        ingest([CORRUPTED], out, progress=False)
    assert _nothing_written(out)
    assert cli.main(["ingest", str(CORRUPTED), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 GRIB messages cannot be read" in err and "Traceback" not in err and "skipping" not in err
    assert _nothing_written(out)

    accepted = ingest([CORRUPTED], out, progress=False, accept_damaged=True)  # what can be read, loss recorded
    record = open_zarr(accepted).attrs["provenance"]["config"]["damaged_inputs_accepted"]
    assert record == {str(CORRUPTED.resolve()): {"unreadable_messages": 1, "messages": 2, "stray_bytes": 0}}


def test_corrupted_grib_fails_validation_and_cli_exits_nonzero(stores, tmp_path, capsys):
    out = tmp_path / "corrupted.zarr"
    with pytest.raises(ValidationError) as caught:
        ingest([CORRUPTED], out, expect=catalog.get_entry("era5-ensemble"), progress=False, accept_damaged=True)
    message = str(caught.value)
    assert str(CORRUPTED) in message
    for part in ("missing variable 'z'", "missing level 500 hPa", "member count 1", "missing 3 time(s)"):
        assert part in message
    assert _nothing_written(out)

    args = ["ingest", str(CORRUPTED), "--out", str(out), "--expect", "era5-ensemble", "--accept-damaged"]
    assert cli.main(args) == 2
    assert "missing variable 'z'" in capsys.readouterr().err
    assert _nothing_written(out)

    run = subprocess.run([sys.executable, "-m", "earthsim", *args], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "earthsim ingest: error:" in run.stderr and "member count 1" in run.stderr
    assert _nothing_written(out)


# ---------------------------------------------------------------- constructed inputs


def _field(level, lat, lon, member, hours) -> np.ndarray:
    """The analytic field the constructed files hold (lon in [0, 360), level in hPa)."""
    return 250.0 + lat / 10 + lon / 100 + level / 1000 + member + hours / 10


def _tiny(times=TIMES) -> xr.Dataset:
    """A 6-hourly, 2-member, 2-level field on a 4 x 8 grid, already named in the conventions."""
    hours = ((times - TIMES[0]) / pd.Timedelta("1h")).to_numpy()
    t = _field(np.array(LEVELS)[None, None, :, None, None], LAT[None, None, None, :, None],
               LON[None, None, None, None, :], np.arange(2)[None, :, None, None, None], hours[:, None, None, None, None])
    dims = ("time", "realization", "level", "latitude", "longitude")
    return xr.Dataset(
        {"t": (dims, t, {"units": "K", "long_name": "Temperature"}),
         "z": (dims, 9.81 * t * 20, {"units": "m**2 s**-2", "long_name": "Geopotential"})},
        coords={"time": times, "realization": [0, 1], "level": LEVELS, "latitude": LAT, "longitude": LON},
    )


def _entry(tmp_path: Path, **changes) -> catalog.DatasetEntry:
    """A catalog entry for _tiny(), written as YAML in tmp_path and read back by path."""
    raw = {
        "name": "tiny", "kind": "weather", "description": "constructed test field",
        "store": "tiny.zarr", "source": {"ingest": ["tiny.nc"]},
        "variables": {"t": {"units": "K", "long_name": "Temperature"},
                      "z": {"units": "m**2 s**-2", "long_name": "Geopotential"}},
        "levels": LEVELS, "members": 2,
        "grid": {"latitude": {"start": -30.0, "stop": 30.0, "size": 4},
                 "longitude": {"start": 0.0, "stop": 315.0, "size": 8}, "longitude_convention": "[0, 360)"},
        "time": {"start": "2020-01-01T00:00", "stop": "2020-01-02T06:00", "step": "6h"},
        "splits": {"train": {"start": "2020-01-01T00:00", "stop": "2020-01-02T06:00"}},
        "statistics": "tiny.stats.zarr", "licence": "test data", "provenance": "constructed in tests/test_ingest.py",
        **changes,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return catalog.get_entry(path)


def _with_nan_field(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy(deep=True)
    ds["t"].loc[{"time": TIMES[2], "realization": 1, "level": 850}] = np.nan
    return ds


def _set_units(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds["t"].attrs["units"] = "degC"
    return ds


BAD = {
    "missing variable": (lambda ds: ds.drop_vars("z"), ["missing variable 'z'"]),
    "extra variable": (lambda ds: ds.assign(q=(ds.t * 0).assign_attrs(units="1")), ["extra variable 'q'"]),
    "missing level": (lambda ds: ds.sel(level=[500]), ["missing level 850 hPa"]),
    "member count": (lambda ds: ds.isel(realization=[0]), ["member count 1", "entry expects 2"]),
    "missing time": (lambda ds: ds.drop_isel(time=3), ["missing 1 time(s)", "2020-01-01T18:00"]),
    "extra time": (lambda ds: xr.concat([ds, ds.isel(time=[5]).assign_coords(time=[TIMES[-1] + pd.Timedelta("6h")])],
                                        "time"), ["extra 1 time(s)", "2020-01-02T12:00"]),
    "duplicated time": (lambda ds: xr.concat([ds, ds.isel(time=[5])], "time"), ["duplicated time(s): 2020-01-02T06:00"]),
    "non-monotonic time": (lambda ds: ds.isel(time=[0, 1, 3, 2, 4, 5]),
                           ["not increasing", "2020-01-01T12:00 after 2020-01-01T18:00"]),
    "all-NaN field": (_with_nan_field, ["variable 't' is all NaN at 1 field(s)",
                                        "time 2020-01-01T12:00, realization 1, level 850"]),
    "shifted grid": (lambda ds: ds.assign_coords(latitude=ds.latitude + 0.5),
                     ["latitude grid mismatch", "by up to 0.5 degrees"]),
    "grid size": (lambda ds: ds.isel(longitude=slice(0, 7)), ["longitude grid mismatch: 7 points"]),
    "wrong units": (_set_units, ["variable 't' has units 'degC'; entry expects 'K'"]),
}


def test_constructed_good_file_ingests_and_matches_the_field(tmp_path):
    ds = _tiny()
    ds["t"][0, 0, 0, 0, 0] = np.nan  # a single missing value is not an all-NaN field
    ds.to_netcdf(tmp_path / "tiny.nc")
    entry = _entry(tmp_path)
    stored = open_zarr(ingest_entry(entry, progress=False)).load()
    assert stored["t"].dtype == np.float32 and stored["t"].dims == ds["t"].dims
    assert np.array_equal(stored["t"].values, ds["t"].values.astype(np.float32), equal_nan=True)
    assert np.array_equal(stored.time.values, TIMES.values)


@pytest.mark.parametrize("case", list(BAD))
def test_constructed_bad_input_is_rejected_naming_the_difference(tmp_path, case):
    mutate, parts = BAD[case]
    mutate(_tiny()).to_netcdf(tmp_path / "tiny.nc")
    entry = _entry(tmp_path)
    with pytest.raises(ValidationError) as caught:
        ingest_entry(entry, progress=False)
    message = str(caught.value)
    assert "1 difference(s) from catalog entry 'tiny'" in message and str(tmp_path / "tiny.nc") in message
    for part in parts:
        assert part in message
    assert _nothing_written(Path(entry.store))


def test_every_difference_is_listed_at_once(tmp_path):
    ds = _set_units(_tiny().drop_vars("z").drop_isel(time=0)).assign_coords(longitude=LON + 1.0)
    ds.to_netcdf(tmp_path / "tiny.nc")
    entry = _entry(tmp_path)
    with pytest.raises(ValidationError) as caught:
        ingest_entry(entry, progress=False)
    message = str(caught.value)
    assert "4 difference(s)" in message
    for part in ("missing variable 'z'", "units 'degC'", "missing 1 time(s)", "longitude grid mismatch"):
        assert part in message
    assert _nothing_written(Path(entry.store))


def test_cf_names_decreasing_latitude_and_0_360_longitude_come_out_in_convention(tmp_path):
    plev = np.array([85000.0, 50000.0])  # Pa, decreasing
    lat = LAT[::-1]
    hours = np.arange(2) * 6.0
    values = _field(plev[None, :, None, None] / 100, lat[None, None, :, None], LON[None, None, None, :], 0,
                    hours[:, None, None, None])
    raw = xr.Dataset(
        {"ta": (("time", "plev", "lat", "lon"), values, {"units": "K"}),
         "lat_bnds": (("lat", "bnds"), np.stack([lat - 10, lat + 10], axis=1))},
        coords={"time": TIMES[:2], "plev": ("plev", plev, {"units": "Pa"}), "lat": ("lat", lat, {"bounds": "lat_bnds"}),
                "lon": LON, "height": 2.0},
    )
    raw.to_netcdf(tmp_path / "cf.nc")
    out = ingest([tmp_path / "cf.nc"], tmp_path / "cf.zarr", progress=False)
    ds = open_zarr(out).load()
    assert ds["ta"].dims == ("time", "level", "latitude", "longitude") and set(ds.data_vars) == {"ta"}
    assert ds.level.values.tolist() == [500.0, 850.0] and ds.level.attrs["units"] == "hPa"
    assert ds.latitude.values.tolist() == [-30.0, -10.0, 10.0, 30.0]
    assert ds.longitude.values.tolist() == [-180.0, -135.0, -90.0, -45.0, 0.0, 45.0, 90.0, 135.0]
    assert ds.attrs["scalar_coordinates"] == {"height": 2.0}
    assert ds["ta"].dtype == np.float32 and ds["ta"].attrs["long_name"] == "ta"
    want = _field(ds.level.values[None, :, None, None], ds.latitude.values[None, None, :, None],
                  (ds.longitude.values % 360)[None, None, None, :], 0, hours[:, None, None, None])
    assert np.array_equal(ds["ta"].values, want.astype(np.float32))


@pytest.mark.filterwarnings("ignore:variable .* has non-conforming '_FillValue'")  # the file's own NaN fill on int16
def test_eraint_netcdf_keeps_its_month_dim(tmp_path):
    out = ingest([ERAINT], tmp_path / "eraint.zarr", progress=False)
    ds = open_zarr(out)
    assert ds["z"].dims == ("month", "level", "latitude", "longitude")
    assert ds.month.values.tolist() == [1, 7] and ds.level.values.tolist() == [200.0, 500.0, 850.0]
    assert np.all(np.diff(ds.latitude) > 0) and ds.longitude.values[0] == -180.0 and ds.longitude.values[-1] == 179.25
    assert ds["u"].encoding["chunks"][0] == 1 and ds["u"].encoding["dtype"] == np.float32
    assert "scale_factor" not in ds["z"].encoding  # the source's int16 packing is not carried over
    with xr.open_dataset(ERAINT) as raw:
        for name in ("z", "u", "v"):
            assert np.array_equal(ds[name].values, raw[name].values[:, :, ::-1].astype(np.float32))
        assert ds["u"].attrs["units"] == raw["u"].attrs["units"] and ds["u"].attrs["long_name"] == "U component of wind"
        shifted = to_conventions(raw, "[0, 360)")
        assert shifted.longitude.values[0] == 0.0 and np.all(np.diff(shifted.longitude) > 0)
        assert np.array_equal(shifted["v"].sel(longitude=180.0).values,
                              raw["v"].sel(longitude=-180.0).values[:, :, ::-1].astype(np.float32))
    with pytest.raises(ValidationError, match="no time dim"):
        validate_against_entry(ds, _entry(tmp_path), "eraint")


def test_grib_time_conventions():
    """Analyses with a non-zero scalar step take valid_time as time; forecasts get prediction_timedelta;
    a scalar time, level and ensemble member become length-1 dims."""
    grid = {"latitude": [10.0, 0.0], "longitude": [0.0, 1.0]}
    analysis = xr.Dataset(
        {"t": (("time", "latitude", "longitude"), np.ones((2, 2, 2)), {"units": "K"})},
        coords={"time": TIMES[:2], "step": np.timedelta64(6, "h"),
                "valid_time": ("time", (TIMES[:2] + pd.Timedelta("6h")).values), **grid},
    )
    ds = to_conventions(analysis)
    assert ds.time.values.tolist() == (TIMES[:2] + pd.Timedelta("6h")).values.tolist()
    assert "valid_time" not in ds.variables and ds.attrs["scalar_coordinates"] == {"step": "0 days 06:00:00"}

    steps = pd.to_timedelta([0, 6, 12], unit="h")
    forecast = xr.Dataset(
        {"t": (("time", "step", "latitude", "longitude"), np.ones((2, 3, 2, 2)), {"units": "K"})},
        coords={"time": TIMES[:2], "step": steps,
                "valid_time": (("time", "step"), TIMES[:2].values[:, None] + steps.values),
                **grid},
    )
    ds = to_conventions(forecast)
    assert ds["t"].dims == ("time", "prediction_timedelta", "latitude", "longitude") and "valid_time" not in ds.variables

    single = xr.Dataset(
        {"t": (("latitude", "longitude"), np.ones((2, 2)), {"units": "K", "GRIB_totalNumber": 10})},
        coords={"time": TIMES[0], "valid_time": TIMES[0], "isobaricInhPa": 850.0, "number": 4,
                "step": np.timedelta64(0, "ns"), **grid},
    )
    ds = to_conventions(single)
    assert ds["t"].dims == ("time", "realization", "level", "latitude", "longitude") and ds["t"].shape == (1, 1, 1, 2, 2)
    assert ds.realization.values.tolist() == [4] and ds.level.values.tolist() == [850.0]

    cds = xr.Dataset(  # ERA5 netCDF from the new CDS: the time axis is valid_time, levels pressure_level
        {"t": (("valid_time", "pressure_level", "latitude", "longitude"), np.ones((2, 2, 2, 2)), {"units": "K"})},
        coords={"valid_time": TIMES[:2], "pressure_level": ("pressure_level", [850.0, 500.0], {"units": "hPa"}),
                "number": 0, **grid},
    )
    ds = to_conventions(cds)
    assert ds["t"].dims == ("time", "level", "latitude", "longitude") and ds.level.values.tolist() == [500.0, 850.0]
    assert np.array_equal(ds.time.values, TIMES[:2].values) and ds.attrs["scalar_coordinates"] == {"realization": 0}


def test_several_files_concatenate_along_time_in_the_order_given(tmp_path):
    ds = _tiny()
    ds.isel(time=slice(0, 4)).to_netcdf(tmp_path / "a.nc")
    ds.isel(time=slice(4, None)).to_netcdf(tmp_path / "b.nc")
    entry = _entry(tmp_path)
    out = ingest([tmp_path / "a.nc", tmp_path / "b.nc"], tmp_path / "ab.zarr", expect=entry, progress=False)
    stored = open_zarr(out).load()
    assert np.array_equal(stored.time.values, TIMES.values)
    assert np.array_equal(stored["z"].values, ds["z"].values.astype(np.float32))
    assert len(stored.attrs["provenance"]["inputs"]) == 2

    with pytest.raises(ValidationError, match="not increasing"):
        ingest([tmp_path / "b.nc", tmp_path / "a.nc"], tmp_path / "ba.zarr", expect=entry, progress=False)
    assert _nothing_written(tmp_path / "ba.zarr")

    ds.isel(time=slice(4, None)).assign_coords(latitude=LAT + 1).to_netcdf(tmp_path / "c.nc")
    with pytest.raises(EarthsimError, match="latitude differs between"):
        ingest([tmp_path / "a.nc", tmp_path / "c.nc"], tmp_path / "ac.zarr", progress=False)


def test_inputs_stream_through_dask_in_time_blocks(tmp_path, monkeypatch):
    """Every read from the file is one block of time steps; none reads a whole variable."""
    from xarray.backends.netCDF4_ import NetCDF4ArrayWrapper  # the netCDF4 engine's lazy array

    reads: dict[str, list[tuple[int, ...]]] = {}
    original = NetCDF4ArrayWrapper._getitem

    def recording(self, key):
        array = original(self, key)
        reads.setdefault(self.variable_name, []).append(np.shape(array))
        return array

    monkeypatch.setattr(NetCDF4ArrayWrapper, "_getitem", recording)
    times = pd.date_range("2020-01-01", periods=12, freq="6h")
    ds = _tiny(times)
    ds.to_netcdf(tmp_path / "long.nc")
    lazy = open_inputs([tmp_path / "long.nc"], "[0, 360)", time_chunk=3)
    assert lazy["t"].chunks == ((3, 3, 3, 3), (2,), (2,), (4,), (8,)) and "t" not in reads  # opened lazily
    out = ingest([tmp_path / "long.nc"], tmp_path / "long.zarr", progress=False, time_chunk=3,
                 longitude_convention="[0, 360)")
    assert len(reads["t"]) >= 4 and {shape[0] for shape in reads["t"]} == {3}
    assert all(shape[1:] == (2, 2, 4, 8) for shape in reads["t"])
    stored = open_zarr(out)
    assert stored["t"].encoding["chunks"] == (3, 2, 2, 4, 8)
    assert np.array_equal(stored["t"].values, ds["t"].values.astype(np.float32))


def test_missing_unreadable_and_existing_paths_are_named(tmp_path):
    with pytest.raises(EarthsimError, match=r"nope\.nc does not exist"):
        ingest([tmp_path / "nope.nc"], tmp_path / "x.zarr", progress=False)
    (tmp_path / "junk.nc").write_bytes(b"not a netCDF file at all")
    with pytest.raises(EarthsimError, match=r"junk\.nc: neither GRIB nor netCDF"):
        ingest([tmp_path / "junk.nc"], tmp_path / "x.zarr", progress=False)
    _tiny().to_netcdf(tmp_path / "whole.nc")
    data = (tmp_path / "whole.nc").read_bytes()
    (tmp_path / "cut.nc").write_bytes(data[: len(data) // 3])
    with pytest.raises(EarthsimError, match=r"cut\.nc"):
        ingest([tmp_path / "cut.nc"], tmp_path / "x.zarr", progress=False)
    assert _nothing_written(tmp_path / "x.zarr")

    assert cli.main(["ingest", str(tmp_path / "whole.nc"), "--out", str(tmp_path / "w.zarr")]) == 0
    with pytest.raises(EarthsimError, match="already exists"):
        ingest([tmp_path / "whole.nc"], tmp_path / "w.zarr", progress=False)
    ingest([tmp_path / "whole.nc"], tmp_path / "w.zarr", progress=False, overwrite=True)
    assert open_zarr(tmp_path / "w.zarr").attrs["provenance"]["config"]["entry"] is None


@pytest.mark.parametrize("engine, form", [("scipy", "NETCDF3_CLASSIC"), ("scipy", "NETCDF3_64BIT"),
                                          ("netcdf4", "NETCDF3_64BIT_DATA")])
def test_classic_netcdf_header_gives_the_exact_size_of_whole_files(tmp_path, engine, form):
    """CDF-1, CDF-2 and CDF-5, with and without a record (unlimited) dim, a lone short record variable unpadded."""
    from earthsim.data.ingest import classic_netcdf_sizes

    ds = _tiny().isel(realization=0, level=0).drop_vars(["realization", "level"])
    ds["count"] = ("time", np.arange(6, dtype=np.int16))
    for name, part, unlimited in (("all", ds, ["time"]), ("fixed", ds, []), ("lone", ds[["count"]], ["time"])):
        path = tmp_path / f"{name}.nc"
        part.to_netcdf(path, engine=engine, format=form, unlimited_dims=unlimited)
        size = path.stat().st_size
        needed, actual = classic_netcdf_sizes(path)
        assert actual == size and size - 4 < needed <= size, name  # but the padding of the last record
        path.write_bytes(path.read_bytes()[:needed - 1])
        assert classic_netcdf_sizes(path) == (needed, needed - 1), name
        path.write_bytes(path.read_bytes()[:20])
        with pytest.raises(EarthsimError, match=rf"{name}\.nc: truncated netCDF file: the file \(20 bytes\) ends inside"):
            classic_netcdf_sizes(path)
    assert classic_netcdf_sizes(ERAINT)[0] == ERAINT.stat().st_size and classic_netcdf_sizes(UK) is None


def test_grib_damage_counts_non_zero_bytes_outside_messages(tmp_path):
    data = UK.read_bytes()
    second = data.index(b"GRIB", 4)
    (tmp_path / "padded.grib").write_bytes(data[:second] + bytes(8) + data[second:] + bytes(4))
    assert grib_damage(tmp_path / "padded.grib") == (0, 744, 0)
    (tmp_path / "junk.grib").write_bytes(b"ab" + data[:second] + b"\x00xyz" + data[second:] + b"\x01")
    assert grib_damage(tmp_path / "junk.grib") == (0, 744, 6)
    (tmp_path / "empty.grib").write_bytes(b"")
    assert grib_damage(tmp_path / "empty.grib") == (0, 0, 0)
