"""The window dataset and its loaders, on tiny synthetic stores written in tmp_path.

Every window is checked against a direct numpy slice of the source arrays: each sample is matched
to the source frame its first input equals (found by search, not through the dataset's own index
arithmetic), and the rest of the window must then be the next frames of the same member or
trajectory, inside the split.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from conftest import write_store_entry
from earthsim import catalog
from earthsim.data.loader import ShardSampler, collate_windows, make_loader, worker_context
from earthsim.data.windows import WindowDataset
from earthsim.errors import ValidationError

LEVELS = [500, 850]
MEMBERS = 3
TIMES = pd.date_range("2020-01-01T00:00", periods=14, freq="6h")
WEATHER_SPLITS = {  # frames 0-7, 8-10, 11-13
    "train": {"start": str(TIMES[0]), "stop": str(TIMES[7])},
    "validation": {"start": str(TIMES[8]), "stop": str(TIMES[10])},
    "test": {"start": str(TIMES[11]), "stop": str(TIMES[13])},
}
TRAJECTORIES, FLUID_FRAMES, FLUID_STEP = 5, 10, 0.5


def _entry(tmp_path, name, kind, ds, **fields) -> catalog.DatasetEntry:
    return catalog.get_entry(write_store_entry(tmp_path, name, ds, kind, **fields))


def _statistics(ds: xr.Dataset, variables) -> xr.Dataset:
    """mean, std and std of one-step differences over the given (training) data, per level."""
    out = {}
    for name in variables:
        da = ds[name]
        over = [d for d in da.dims if d != "level"]
        diff = da.diff("time")
        out[name] = xr.concat(
            [da.mean(over), da.std(over), diff.std([d for d in diff.dims if d != "level"])], dim="statistic"
        ).astype("float64")
    return xr.Dataset(out).assign_coords(statistic=["mean", "std", "diff_std"])


@pytest.fixture(scope="module")
def weather(tmp_path_factory):
    """Time × realization × level × 4 × 8 grid (the ingest's order); t2m is stored member-first to show
    that any dim order works."""
    tmp_path = tmp_path_factory.mktemp("weather")
    rng = np.random.default_rng(0)
    lat, lon = np.linspace(-60, 60, 4), np.arange(8) * 45.0
    shape = (len(TIMES), MEMBERS, len(LEVELS), lat.size, lon.size)
    dims = ("time", "realization", "level", "latitude", "longitude")
    ds = xr.Dataset(
        {
            "z": (dims, (5e4 + 3e3 * rng.standard_normal(shape)).astype("float32")),
            "t": (dims, (260 + 15 * rng.standard_normal(shape)).astype("float32")),
            "t2m": (("realization", "time", "latitude", "longitude"),
                    (280 + 8 * rng.standard_normal((MEMBERS, len(TIMES), lat.size, lon.size))).astype("float32")),
            "orography": (("latitude", "longitude"), (500 + 300 * rng.standard_normal((lat.size, lon.size))).astype("float32")),
        },
        coords={"time": TIMES, "level": LEVELS, "latitude": lat, "longitude": lon, "realization": np.arange(MEMBERS)},
    )
    encoding = {v: {"chunks": tuple(3 if d == "time" else n for d, n in ds[v].sizes.items())} for v in ("z", "t", "t2m")}
    entry = _entry(
        tmp_path, "weather-test", "weather", ds, encoding=encoding,
        variables={"z": {"units": "m**2 s**-2"}, "t": {"units": "K"}, "t2m": {"units": "K"}},
        levels=LEVELS, members=MEMBERS, static=["orography"],
        grid={"latitude": {"start": -60.0, "stop": 60.0, "size": 4}, "longitude": {"start": 0.0, "stop": 315.0, "size": 8},
              "longitude_convention": "[0, 360)"},
        time={"start": str(TIMES[0]), "stop": str(TIMES[-1]), "step": "6h"}, splits=WEATHER_SPLITS,
    )
    stats = _statistics(ds.isel(time=slice(0, 8)), ["z", "t", "t2m"])
    return entry, ds, stats


@pytest.fixture(scope="module")
def fluid(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fluid")
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {"vorticity": (("trajectory", "time", "y", "x"), rng.standard_normal((TRAJECTORIES, FLUID_FRAMES, 8, 8)).astype("float32"))},
        coords={"time": np.arange(FLUID_FRAMES) * FLUID_STEP},
        attrs={"viscosity": 1e-3},
    )
    entry = _entry(  # one group per resolution, as the Navier-Stokes stores hold them
        tmp_path, "fluid-test", "fluid", {"8": ds}, encoding={"vorticity": {"chunks": (1, 4, 8, 8)}}, group="8", variables={"vorticity": {"units": "1/s"}},
        grid={"x": 8, "y": 8, "length": 6.283185307179586}, time={"step": FLUID_STEP, "units": "solver"},
        splits={"train": {"trajectory": [0, 3]}, "validation": {"trajectory": [3, 4]}, "test": {"trajectory": [4, 5]}},
    )
    stats = _statistics(ds.isel(trajectory=slice(0, 3)), ["vorticity"])
    return entry, ds, stats


def _weather_frames(ds) -> np.ndarray:
    """Source as [member, time, channel, lat, lon] in the documented channel order z500 z850 t500 t850 t2m."""
    z, t = (ds[name].transpose("realization", "time", ...).values for name in ("z", "t"))
    t2m = ds["t2m"].values[:, :, None]
    return np.concatenate([z, t, t2m], axis=2)


def _denormalise(dataset, tensor) -> np.ndarray:
    return (tensor * dataset.std[:, None, None] + dataset.mean[:, None, None]).numpy()


def _check_windows(dataset, source, frames_in_split, t_in, t_out, stride):
    """Each window equals source frames start, start+stride, … of one sequence, inside the split;
    the windows found are exactly every valid (sequence, start), once each."""
    found = []
    for i in range(len(dataset)):
        sample = dataset[i]
        x, y = _denormalise(dataset, sample["x"]), _denormalise(dataset, sample["y"])
        assert x.shape == (t_in, *source.shape[2:]) and y.shape == (t_out, *source.shape[2:])
        assert sample["x"].dtype == torch.float32 and sample["y"].dtype == torch.float32
        matches = [
            (s, f) for s in range(source.shape[0]) for f in range(source.shape[1])
            if np.allclose(x[0], source[s, f], rtol=1e-5, atol=1e-3)
        ]
        assert len(matches) == 1, f"sample {i}: first frame matches {matches}"
        sequence, start = matches[0]
        window = np.concatenate([x, y])
        frames = [start + k * stride for k in range(t_in + t_out)]
        assert set(frames) <= set(frames_in_split), f"sample {i} leaves the split: frames {frames}"
        np.testing.assert_allclose(window, source[sequence, frames], rtol=1e-5, atol=1e-3)
        found.append((sequence, start))
    last = max(frames_in_split) - (t_in + t_out - 1) * stride
    expected = {(s, f) for s in range(source.shape[0]) for f in frames_in_split if f <= last}
    assert sorted(found) == sorted(expected)


def test_weather_windows_equal_source_slices(weather):
    entry, ds, stats = weather
    dataset = WindowDataset(entry, "train", t_in=2, t_out=1, stride=2, statistics=stats)
    assert dataset.channels == ["z500", "z850", "t500", "t850", "t2m"]
    assert dataset.channel_variables == ["z", "z", "t", "t", "t2m"]  # t2m is not a level of t
    assert len(dataset) == MEMBERS * (8 - 2 * 2)
    _check_windows(dataset, _weather_frames(ds), range(0, 8), t_in=2, t_out=1, stride=2)
    assert float(dataset[0]["lead_time"]) == 12.0 and dataset.lead_times == (12.0,) and dataset.time_step == 6.0
    expected_mean = [stats["z"].sel(statistic="mean", level=lv) for lv in LEVELS] + [
        stats["t"].sel(statistic="mean", level=lv) for lv in LEVELS] + [stats["t2m"].sel(statistic="mean")]
    np.testing.assert_allclose(dataset.mean.numpy(), np.array(expected_mean, dtype=np.float32))
    np.testing.assert_allclose(dataset.diff_std[-1].item(), float(stats["t2m"].sel(statistic="diff_std")), rtol=1e-6)


def test_weather_validation_split_stays_inside_its_times(weather):
    entry, ds, stats = weather
    dataset = WindowDataset(entry, "validation", t_in=1, t_out=1, statistics=stats)
    assert len(dataset) == MEMBERS * 2
    _check_windows(dataset, _weather_frames(ds), range(8, 11), t_in=1, t_out=1, stride=1)


def test_static_fields_and_unnormalised_samples(weather):
    entry, ds, stats = weather
    dataset = WindowDataset(entry, "test", t_in=1, t_out=2, normalise=False)
    assert dataset.mean is None and dataset.static_channels == ["orography"]
    sample = dataset[len(dataset) - 1]  # last member, first test frame
    np.testing.assert_array_equal(sample["x"][0, 0].numpy(), ds["z"].values[11, MEMBERS - 1, 0])
    np.testing.assert_array_equal(sample["y"][1, 4].numpy(), ds["t2m"].values[MEMBERS - 1, 13])
    np.testing.assert_array_equal(sample["static"][0].numpy(), ds["orography"].values)
    normalised = WindowDataset(entry, "test", t_in=1, t_out=2, statistics=stats)[0]["static"]
    orography = ds["orography"].values.astype(np.float64)
    np.testing.assert_allclose(normalised[0].numpy(), (orography - orography.mean()) / orography.std(), rtol=1e-5)
    assert normalised.shape == (1, 4, 8)


def test_fluid_windows_follow_trajectories(fluid):
    entry, ds, stats = fluid
    source = ds["vorticity"].values[:, :, None]  # [trajectory, time, channel, y, x]
    train = WindowDataset(entry, "train", t_in=3, t_out=2, stride=1, statistics=stats)
    assert train.channels == ["vorticity"] and len(train) == 3 * (FLUID_FRAMES - 4)
    assert float(train[0]["lead_time"]) == FLUID_STEP
    _check_windows(train, source[:3], range(FLUID_FRAMES), t_in=3, t_out=2, stride=1)
    test = WindowDataset(entry, "test", t_in=1, t_out=1, stride=3, statistics=stats)
    assert len(test) == FLUID_FRAMES - 3 and float(test[0]["lead_time"]) == 3 * FLUID_STEP
    _check_windows(test, source[4:5], range(FLUID_FRAMES), t_in=1, t_out=1, stride=3)
    assert "static" not in test[0]


def _sphere(tmp_path, trajectories: int, seed: int, **fields) -> tuple[catalog.DatasetEntry, xr.Dataset]:
    """Shallow-water-like h and u: ``trajectories`` of 6 hourly frames on a 4 x 8 latitude/longitude grid; the last
    trajectory is the test split, the others train."""
    rng = np.random.default_rng(seed)
    shape = (trajectories, 6, 4, 8)
    ds = xr.Dataset(
        {name: (("trajectory", "time", "latitude", "longitude"), rng.standard_normal(shape).astype("float32"))
         for name in ("h", "u")},
        coords={"time": np.arange(6) * 1.0, "latitude": np.linspace(-90, 90, 4), "longitude": np.arange(8) * 45.0},
    )
    entry = _entry(
        tmp_path, "sphere", "fluid", ds, variables={"h": {"units": "m"}, "u": {"units": "m s**-1"}},
        grid={"latitude": {"start": -90.0, "stop": 90.0, "size": 4}, "longitude": {"start": 0.0, "stop": 315.0, "size": 8}},
        time={"step": 1.0, "units": "hours"},
        splits={"train": {"trajectory": [0, trajectories - 1]}, "test": {"trajectory": [trajectories - 1, trajectories]}},
        **fields,
    )
    return entry, ds


def test_fluid_on_the_sphere_uses_latitude_longitude(tmp_path):
    """Shallow water is a fluid (trajectory splits) on a latitude/longitude grid with numeric hours."""
    entry, ds = _sphere(tmp_path, trajectories=2, seed=2)
    dataset = WindowDataset(entry, "test", t_in=2, t_out=1, stride=2, normalise=False)
    assert dataset.channels == ["h", "u"] and len(dataset) == 6 - 4 and dataset.lead_times == (2.0,)
    source = np.stack([ds["h"].values, ds["u"].values], axis=2)  # [trajectory, time, channel, lat, lon]
    np.testing.assert_array_equal(dataset[1]["x"].numpy(), source[1, [1, 3]])
    np.testing.assert_array_equal(dataset[1]["y"].numpy(), source[1, [5]])


def test_zarr_python_fallback_for_urls(fluid, tmp_path):
    """A store tensorstore's file kvstore cannot take (an fsspec URL) is read through zarr-python."""
    fsspec = pytest.importorskip("fsspec")
    entry, ds, stats = fluid
    fs = fsspec.filesystem("memory")
    fs.put(entry.store, "/loader-test/fluid.zarr", recursive=True)
    url_entry = _entry(
        tmp_path, "fluid-url", "fluid", None, store="memory://loader-test/fluid.zarr", group="8",
        variables={"vorticity": {"units": "1/s"}},
        grid={"x": 8, "y": 8, "length": 6.283185307179586}, time={"step": FLUID_STEP, "units": "solver"},
        splits={"train": {"trajectory": [0, 3]}},
    )
    local = WindowDataset(entry, "train", t_in=2, statistics=stats)
    remote = WindowDataset(url_entry, "train", t_in=2, statistics=stats)
    for i in (0, 7, len(local) - 1):
        torch.testing.assert_close(remote[i]["x"], local[i]["x"], rtol=0, atol=0)
        torch.testing.assert_close(remote[i]["y"], local[i]["y"], rtol=0, atol=0)
    assert type(remote._readers[0]).__name__ == "_ZarrReader"
    assert type(local._readers[0]).__name__ == "_TensorStoreReader"


def test_getitem_touches_no_dask(weather, monkeypatch):
    import dask
    import dask.array
    import dask.local

    entry, _, stats = weather
    dataset = WindowDataset(entry, "train", t_in=2, statistics=stats)

    def forbidden(*args, **kwargs):
        raise AssertionError("dask was used in __getitem__")

    monkeypatch.setattr(dask.local, "get_async", forbidden)
    monkeypatch.setattr(dask, "compute", forbidden)
    monkeypatch.setattr(dask.array.Array, "compute", forbidden)
    monkeypatch.setattr(dask.array.Array, "__array__", forbidden)
    with pytest.raises(AssertionError, match="dask was used"):
        dask.array.ones(3).sum().compute()  # the patch is live
    assert dataset[0]["x"].shape == (2, 5, 4, 8)
    assert len(next(iter(make_loader(dataset, batch_size=3)))["x"]) == 3
    assert dataset[0]["static"].shape == (1, 4, 8)


def test_pickling_before_and_after_first_use(weather):
    entry, _, stats = weather
    dataset = WindowDataset(entry, "train", t_in=2, statistics=stats)
    fresh = pickle.loads(pickle.dumps(dataset))
    first = dataset[5]
    assert dataset._readers is not None
    used = pickle.loads(pickle.dumps(dataset))
    assert used._readers is None and used._static is None  # open handles stay behind
    for copy in (fresh, used):
        sample = copy[5]
        for key in ("x", "y", "lead_time", "static"):
            torch.testing.assert_close(sample[key], first[key], rtol=0, atol=0)


@pytest.mark.timeout(120)
def test_loader_batches_identical_for_0_1_2_workers_after_dask(fluid):
    """Running dask's threaded scheduler in the parent, then starting workers, must not hang (no fork)."""
    import dask
    import dask.array

    entry, _, stats = fluid
    assert worker_context() in ("forkserver", "spawn")
    with dask.config.set(scheduler="threads"):
        assert float(dask.array.ones((64, 64), chunks=16).sum().compute()) == 64 * 64
    dataset = WindowDataset(entry, "train", t_in=2, t_out=1, statistics=stats)
    runs = {}
    for workers in (0, 1, 2):
        loader = make_loader(dataset, batch_size=4, num_workers=workers, shuffle=True, seed=3)
        runs[workers] = list(loader)
    reference = runs[0]
    assert len(reference) == -(-len(dataset) // 4)
    assert reference[0]["x"].shape == (4, 2, 1, 8, 8) and reference[0]["lead_time"].shape == (4,)
    for workers in (1, 2):
        assert len(runs[workers]) == len(reference)
        for a, b in zip(reference, runs[workers]):
            for key in ("x", "y", "lead_time"):
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    shuffled = torch.cat([b["x"] for b in reference])
    in_order = torch.stack([dataset[i]["x"] for i in range(len(dataset))])
    assert not torch.equal(shuffled, in_order)
    assert sorted(shuffled.flatten(1).sum(1).tolist()) == pytest.approx(sorted(in_order.flatten(1).sum(1).tolist()))


def test_weather_batches_keep_static_unbatched(weather):
    entry, _, stats = weather
    dataset = WindowDataset(entry, "train", t_in=2, statistics=stats)
    batch = next(iter(make_loader(dataset, batch_size=3, shuffle=False)))
    assert batch["x"].shape == (3, 2, 5, 4, 8) and batch["y"].shape == (3, 1, 5, 4, 8)
    assert batch["static"].shape == (1, 4, 8)
    torch.testing.assert_close(batch["x"][2], dataset[2]["x"], rtol=0, atol=0)
    rows = dataset.__getitems__([4, 0, 3])  # written into one buffer, handed on uncopied
    stacked = collate_windows([dataset[i] for i in (4, 0, 3)])
    batch = collate_windows(rows)
    assert batch["x"].data_ptr() == rows[0]["x"].data_ptr() and batch["y"].data_ptr() == rows[0]["y"].data_ptr()
    for key in ("x", "y", "lead_time", "static"):
        torch.testing.assert_close(batch[key], stacked[key], rtol=0, atol=0)


def _sample_keys(batches):
    return [tuple(row) for b in batches for row in b["x"].flatten(1)[:, :4].tolist()]


@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_get_disjoint_shards_covering_the_data(fluid, drop_last):
    entry, _, stats = fluid
    dataset = WindowDataset(entry, "train", t_in=2, t_out=2, statistics=stats)
    assert len(dataset) % 2 == 1  # odd, so the uneven end is exercised
    shards = [
        _sample_keys(make_loader(dataset, batch_size=2, seed=7, rank=r, world_size=2, drop_last=drop_last))
        for r in range(2)
    ]
    every = _sample_keys(make_loader(dataset, batch_size=len(dataset), shuffle=False))
    assert len(set(every)) == len(dataset)
    assert not set(shards[0]) & set(shards[1])
    if drop_last:
        assert len(shards[0]) == len(shards[1]) == (len(dataset) // 2) // 2 * 2
    else:
        assert sorted(shards[0] + shards[1]) == sorted(every)
        assert abs(len(shards[0]) - len(shards[1])) == 1


def test_sampler_epochs_and_resume():
    first = list(ShardSampler(11, rank=1, world_size=2, seed=0, epoch=0))
    assert list(ShardSampler(11, rank=1, world_size=2, seed=0, epoch=0)) == first
    assert list(ShardSampler(11, rank=1, world_size=2, seed=0, epoch=1)) != first
    assert list(ShardSampler(11, rank=1, world_size=2, seed=0, epoch=0, start=2)) == first[2:]
    assert len(ShardSampler(11, rank=0, world_size=2)) == 6 and len(ShardSampler(11, rank=1, world_size=2)) == 5
    assert len(ShardSampler(11, rank=0, world_size=2, drop_last=True)) == 5


def test_loader_resumes_part_way_through_an_epoch(fluid):
    entry, _, stats = fluid
    dataset = WindowDataset(entry, "train", t_in=2, statistics=stats)
    loader = make_loader(dataset, batch_size=3, seed=1)
    loader.sampler.set_epoch(2)
    full = list(loader)
    loader.sampler.set_epoch(2, start=2 * 3)  # two batches of 3 already done
    resumed = list(loader)
    assert len(resumed) == len(full) - 2
    for a, b in zip(full[2:], resumed):
        torch.testing.assert_close(a["x"], b["x"], rtol=0, atol=0)


def test_packed_stores_are_refused(fluid, tmp_path):
    """Values packed as int16 with scale_factor would be read raw, so the dataset refuses them."""
    entry, ds, stats = fluid
    packed = _entry(
        tmp_path, "packed", "fluid", ds, encoding={"vorticity": {"dtype": "int16", "scale_factor": 0.001,
                                                                 "_FillValue": -32768}}, variables={"vorticity": {"units": "1/s"}},
        grid={"x": 8, "y": 8, "length": 6.283185307179586}, time={"step": FLUID_STEP, "units": "solver"},
        splits={"train": {"trajectory": [0, 3]}},
    )
    with pytest.raises(ValidationError, match="'vorticity' is stored as int16 with scale_factor"):
        WindowDataset(packed, "train", statistics=stats)


def test_bad_requests_name_what_is_wrong(weather, fluid):
    entry, _, stats = weather
    with pytest.raises(ValidationError, match="split 'validation'.*3 frames"):
        WindowDataset(entry, "validation", t_in=3, t_out=1, statistics=stats)
    with pytest.raises(ValidationError, match="unknown variable 'q'"):
        WindowDataset(entry, "train", variables=["q"], statistics=stats)
    with pytest.raises(ValidationError, match="no variable 't2m'"):
        WindowDataset(entry, "train", statistics=stats.drop_vars("t2m"))
    with pytest.raises(ValidationError, match="std must be finite and > 0"):
        WindowDataset(entry, "train", statistics=stats.assign(t=stats["t"] * 0))
    with pytest.raises(ValidationError, match="stride must be an integer"):
        WindowDataset(fluid[0], "train", stride=0, statistics=fluid[2])


def test_layout_accessors_and_raw_frame_reads(weather, fluid):
    """The public layout (sequences, levels, valid starts) and ``read_frames`` against numpy slices of the source."""
    entry, ds, stats = weather
    dataset = WindowDataset(entry, "train", t_in=2, t_out=1, stride=2, statistics=stats)
    assert dataset.sequence_dims == ("realization",)
    assert dataset.sequences == [(m,) for m in range(MEMBERS)]
    assert list(dataset.levels) == ["z", "t"] and dataset.levels["z"].tolist() == LEVELS
    np.testing.assert_array_equal(dataset.starts, np.arange(8 - 4))  # train frames 0-7, windows span 5 frames
    assert [dataset.locate(i) for i in range(len(dataset))] == [
        (sequence, int(start), 2) for sequence in dataset.sequences for start in dataset.starts]  # lead = stride
    source = _weather_frames(ds)  # [member, time, channel, lat, lon], physical units
    frames = dataset.read_frames(2, 1, 3)  # raw, not normalised, consecutive frames
    assert frames.dtype == np.float32 and frames.shape == (3, 5, 4, 8)
    np.testing.assert_array_equal(frames, source[2, 1:4])
    np.testing.assert_array_equal(dataset.read_frames(1, 0, 4, step=2), source[1, [0, 2, 4, 6]])
    with pytest.raises(IndexError, match="leave split 'train'"):
        dataset.read_frames(0, 6, 3)  # frame 8 belongs to the validation split
    with pytest.raises(IndexError, match="sequence 3 out of range"):
        dataset.read_frames(MEMBERS, 0, 1)
    test = WindowDataset(entry, "test", statistics=stats)
    np.testing.assert_array_equal(test.starts, [11, 12])
    with pytest.raises(IndexError, match="leave split 'test'"):
        test.read_frames(0, 10, 1)
    assert test.dataset["time"].size == len(TIMES) and "orography" in test.dataset  # the whole store, lazily
    assert pickle.loads(pickle.dumps(test)).dataset.sizes == test.dataset.sizes  # reopened after unpickling

    fentry, fds, fstats = fluid
    train = WindowDataset(fentry, "train", t_in=3, t_out=2, statistics=fstats)
    assert train.sequence_dims == ("trajectory",) and train.sequences == [(0,), (1,), (2,)] and train.levels == {}
    np.testing.assert_array_equal(train.starts, np.arange(FLUID_FRAMES - 4))
    np.testing.assert_array_equal(train.read_frames(1, 2, 5)[:, 0], fds["vorticity"].values[1, 2:7])


def test_a_fluids_climatology_field_is_its_mean_over_the_training_trajectories(fluid, tmp_path):
    """A fluid's climatology (shallow water on the sphere) is its time mean, no day of year: ``h_climatology``
    is that one map at every frame of any split; an entry without a climatology store is refused by name."""
    from earthsim.data.stats import compute_statistics

    with pytest.raises(ValidationError, match=r"fluid-test.*\['vorticity_climatology'\] need a climatology, and "
                                              r"entry 'fluid-test' names no climatology store"):
        WindowDataset(fluid[0], "test", derived=["vorticity_climatology"], normalise=False)
    entry, ds = _sphere(tmp_path, trajectories=3, seed=3, climatology=str(tmp_path / "sphere.clim.zarr"))
    compute_statistics(entry, progress=False)
    windows = WindowDataset(entry, "test", t_in=2, derived=["h_climatology"], normalise=False)
    mean = ds.h.values[:2].astype(np.float64).mean(axis=(0, 1))  # the training trajectories at every time
    sample = windows[3]
    for frame in [*sample["x"], *sample["y"]]:
        np.testing.assert_allclose(frame[2].numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(windows.read_frames(0, 0, 3, 2)[:, 2], np.broadcast_to(mean, (3, 4, 8)), rtol=1e-5,
                               atol=1e-6)


def test_static_statistics_are_what_static_fields_use(weather):
    entry, ds, stats = weather
    orography = ds["orography"].values.astype(np.float64)
    own = WindowDataset(entry, "test", statistics=stats)  # the statistics have no orography: its own mean and std
    np.testing.assert_array_equal(own.raw_static_fields(), orography[None])
    mean, std = own.static_statistics()
    np.testing.assert_allclose(mean, [orography.mean()])
    np.testing.assert_allclose(std, [orography.std()])
    np.testing.assert_allclose(own.static_fields().numpy(), ((orography - mean[0]) / std[0])[None], rtol=1e-6)
    recorded = stats.assign(orography=("statistic", [400.0, 250.0, 1.0]))
    kept = WindowDataset(entry, "test", statistics=recorded)
    assert [a.tolist() for a in kept.static_statistics()] == [[400.0], [250.0]]
    np.testing.assert_allclose(kept.static_fields().numpy(), ((orography - 400.0) / 250.0)[None], rtol=1e-6)
