"""earthsim score against independent references: xskillscore, brute-force numpy formulas, analytic fields, skimage."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from conftest import write_store_entry
from earthsim import catalog
from earthsim.data.store import open_zarr, write_zarr
from earthsim.score import AlignmentError, evaluate, markdown_table, score
from earthsim.score import formulas as m

xs = pytest.importorskip("xskillscore", reason="xskillscore is the independent reference (pip install xskillscore)")

LAT = np.linspace(-90.0, 90.0, 13)  # with poles
LON = np.arange(24) * 15.0
LEVELS = [500.0, 850.0]


pytestmark = pytest.mark.usefixtures("stores")


def _weather_truth(tmp_path: Path, n_times: int = 24, lat=LAT, name: str = "wtruth", climatology: bool = False):
    rng = np.random.default_rng(1)
    times = pd.date_range("2020-01-01", periods=n_times, freq="6h")
    ds = xr.Dataset(
        {"z": (("time", "level", "latitude", "longitude"),
               (5000 + 300 * rng.normal(size=(n_times, 2, lat.size, LON.size))).astype(np.float32), {"units": "m"}),
         "t2m": (("time", "latitude", "longitude"),
                 (280 + 5 * rng.normal(size=(n_times, lat.size, LON.size))).astype(np.float32), {"units": "K"})},
        coords={"time": times, "level": LEVELS, "latitude": lat, "longitude": LON})
    stop = times[-1].isoformat()
    extra = {"levels": LEVELS,
             "grid": {"latitude": {"start": float(lat[0]), "stop": float(lat[-1]), "size": int(lat.size)},
                      "longitude": {"start": 0.0, "stop": 345.0, "size": 24}, "longitude_convention": "[0, 360)"},
             "time": {"start": times[0].isoformat(), "stop": stop, "step": "6h"},
             "splits": {"train": {"start": times[0].isoformat(), "stop": times[n_times // 2].isoformat()},
                        "validation": {"start": times[n_times // 2 + 1].isoformat(),
                                       "stop": times[n_times // 2 + 1].isoformat()},
                        "test": {"start": times[n_times // 2 + 2].isoformat(), "stop": stop}}}
    if climatology:
        extra["climatology"] = f"{name}.climatology.zarr"
    return write_store_entry(tmp_path, name, ds, "weather", **extra), ds


def _climatology(tmp_path: Path, truth: xr.Dataset) -> Path:
    """A smooth synthetic climatology (hour × day of year) on the truth's grid."""
    hours, days = np.array([0, 6, 12, 18]), np.arange(1, 367)
    shape = (4, 366, truth.latitude.size, truth.longitude.size)
    pattern = np.cos(np.deg2rad(truth.latitude.values))[:, None] * np.sin(np.deg2rad(truth.longitude.values))[None]
    base = np.broadcast_to(pattern, shape) + 0.01 * days[None, :, None, None] + 0.1 * hours[:, None, None, None]
    clim = xr.Dataset(
        {"z": (("hour", "dayofyear", "level", "latitude", "longitude"),
               np.stack([5000 + 100 * base, 5000 + 50 * base], axis=2).astype(np.float32), {"units": "m"}),
         "t2m": (("hour", "dayofyear", "latitude", "longitude"), (280 + 3 * base).astype(np.float32), {"units": "K"})},
        coords={"hour": hours, "dayofyear": days, "level": LEVELS, "latitude": truth.latitude.values,
                "longitude": truth.longitude.values})
    write_zarr(clim, tmp_path / "clim.zarr", progress=False)
    return tmp_path / "clim.zarr"


def _forecast(truth: xr.Dataset, inits: int, leads: int, make, members: int | None = None, name_lat=None) -> xr.Dataset:
    """A forecast store built from the truth: ``make(valid_fields, init_fields, rng) -> forecast fields``."""
    rng = np.random.default_rng(2)
    index = np.arange(inits)[:, None] + np.arange(leads)[None, :]
    data = {}
    for name in truth.data_vars:
        values = truth[name].values.astype(np.float64)
        valid = values[index]
        start = np.broadcast_to(values[:inits, None], valid.shape)
        if members:
            valid = np.repeat(valid[:, :, None], members, axis=2)
            start = np.repeat(start[:, :, None], members, axis=2)
        dims = ("time", "prediction_timedelta") + (("realization",) if members else ()) + truth[name].dims[1:]
        data[name] = (dims, make(valid, start, rng).astype(np.float32), dict(truth[name].attrs))
    coords = {"time": truth.time.values[:inits],
              "prediction_timedelta": pd.to_timedelta(np.arange(leads) * 6, "h").values,
              "level": LEVELS, "latitude": truth.latitude.values if name_lat is None else name_lat,
              "longitude": truth.longitude.values}
    if members:
        coords["realization"] = np.arange(members)
    return xr.Dataset(data, coords=coords)


def _write(tmp_path: Path, name: str, ds: xr.Dataset) -> str:
    write_zarr(ds, tmp_path / f"{name}.zarr", progress=False)
    return f"{name}={tmp_path / f'{name}.zarr'}"


def _closed_form_weights(lat_degrees: np.ndarray) -> np.ndarray:
    """Cell areas between latitude midpoints, caps at the poles: sin(φ+Δ/2) - sin(φ-Δ/2) clipped at ±90°."""
    phi = np.deg2rad(lat_degrees)
    half = np.deg2rad(abs(lat_degrees[1] - lat_degrees[0])) / 2
    area = np.sin(np.minimum(phi + half, np.pi / 2)) - np.sin(np.maximum(phi - half, -np.pi / 2))
    return area / area.mean()


def _valid_truth(truth: xr.Dataset, name: str, inits: int, leads: int) -> np.ndarray:
    index = np.arange(inits)[:, None] + np.arange(leads)[None, :]
    return truth[name].values.astype(np.float64)[index]


# ------------------------------------------------------------------------------------------ weights

@pytest.mark.parametrize("lat", [LAT, np.arange(-87.5, 90.0, 5.0)], ids=["with-poles", "without-poles"])
def test_weights_use_latitude_weights_and_match_closed_form(lat):
    from earthsim.data import grid

    assert m.latitude_weights is grid.latitude_weights  # the scorer and the training loss share one function
    weights = m.grid_weights((lat.size, 7), lat)
    expected = np.repeat(_closed_form_weights(lat), 7) / (lat.size * 7)
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)
    if lat[0] > -90:  # without poles the cell areas are exactly proportional to cos(latitude)
        cos = np.cos(np.deg2rad(lat))
        np.testing.assert_allclose(weights.reshape(lat.size, 7)[:, 0], cos / cos.sum() / 7, rtol=1e-12)


# ------------------------------------------------------------------------------- weather vs references

def test_weather_scores_match_xskillscore_and_brute_force(tmp_path):
    truth_yaml, truth = _weather_truth(tmp_path)
    inits, leads = 18, 4
    forecast = _forecast(truth, inits, leads, lambda v, s, rng: v + rng.normal(0.3, 20.0, v.shape) * (1 + 0 * s))
    clim_path = _climatology(tmp_path, truth)
    card = evaluate([_write(tmp_path, "noisy", forecast)], truth_yaml, climatology=clim_path, progress=False).scorecard

    weights = xr.DataArray(np.broadcast_to(_closed_form_weights(LAT)[:, None], (LAT.size, LON.size)),
                           dims=("latitude", "longitude"))
    clim = open_zarr(clim_path)
    valid = truth.time.values[np.arange(inits)[:, None] + np.arange(leads)[None, :]]
    for name, label, level in (("z", "z850", 850.0), ("t2m", "t2m", None)):
        dims = ("time", "prediction_timedelta", "latitude", "longitude")
        f = forecast[name].sel(level=level) if level else forecast[name]
        f = xr.DataArray(f.values.astype(np.float64), dims=dims)
        y_values = _valid_truth(truth, name, inits, leads)
        y = xr.DataArray(y_values[:, :, LEVELS.index(level)] if level else y_values, dims=dims)
        space = ["latitude", "longitude"]
        mse = xs.mse(f, y, dim=space, weights=weights)
        got = card.sel(model="noisy", variable=label)
        np.testing.assert_allclose(got["rmse"], np.sqrt(mse.mean("time")), rtol=1e-6)
        np.testing.assert_allclose(got["mse"], mse.mean("time"), rtol=1e-6)
        np.testing.assert_allclose(got["rmse_per_init"], xs.rmse(f, y, dim=space, weights=weights).mean("time"),
                                   rtol=1e-6)
        np.testing.assert_allclose(got["mae"], xs.mae(f, y, dim=space, weights=weights).mean("time"), rtol=1e-6)
        np.testing.assert_allclose(got["bias"], xs.me(f, y, dim=space, weights=weights).mean("time"), rtol=1e-6)

        # ACC: brute force, one initial time and lead at a time (xskillscore's pearson_r is centred)
        c_all = clim[name].sel(level=level) if level else clim[name]
        w = weights.values
        expected = np.zeros(leads)
        for i in range(inits):
            for lead in range(leads):
                t = pd.Timestamp(valid[i, lead])
                c = c_all.sel(hour=t.hour, dayofyear=t.day_of_year).values.astype(np.float64)
                fa, ya = f.values[i, lead] - c, y.values[i, lead] - c
                expected[lead] += np.sum(w * fa * ya) / np.sqrt(np.sum(w * fa ** 2) * np.sum(w * ya ** 2)) / inits
        np.testing.assert_allclose(got["acc"], expected, rtol=1e-6)
    assert "uncentred" in card["acc"].attrs["convention"]
    assert "sqrt after the time mean" in card["rmse"].attrs["convention"]


def test_perfect_forecast_and_persistence(tmp_path):
    truth_yaml, truth = _weather_truth(tmp_path)
    inits, leads = 16, 5
    perfect = _write(tmp_path, "perfect", _forecast(truth, inits, leads, lambda v, s, rng: v))
    persistence = _write(tmp_path, "persistence", _forecast(truth, inits, leads, lambda v, s, rng: s))
    card = evaluate([perfect, persistence], truth_yaml, climatology=_climatology(tmp_path, truth),
                    progress=False).scorecard
    assert np.all(card["rmse"].sel(model="perfect").values == 0.0)
    assert np.all(card["rmse_per_init"].sel(model="perfect").values == 0.0)
    np.testing.assert_allclose(card["acc"].sel(model="perfect"), 1.0, rtol=1e-12)
    lead0 = card.sel(model="persistence").isel(prediction_timedelta=0)
    assert np.all(lead0["rmse"].values == 0.0)  # persistence at lead 0 is the truth
    np.testing.assert_allclose(lead0["acc"], 1.0, rtol=1e-12)
    # later leads: brute-force persistence RMSE, truth at init vs truth at valid time
    w = _closed_form_weights(LAT)[:, None] / (LAT.size * LON.size)
    z = truth["z"].values[:, 0].astype(np.float64)
    for lead in range(1, leads):
        mse = np.mean([np.sum(w * (z[i] - z[i + lead]) ** 2) for i in range(inits)])
        assert card["rmse"].sel(model="persistence", variable="z500").values[lead] == pytest.approx(np.sqrt(mse),
                                                                                                     rel=1e-9)
        assert card["rmse"].sel(model="persistence", variable="z500").values[lead] > 100


def test_the_scorecard_does_not_depend_on_the_order_zarr_lists_arrays(tmp_path, monkeypatch):
    """Stores are unconsolidated, so Zarr lists their arrays as the directory listing and its concurrent metadata
    reads return them, an order that differs between file systems and runs: the scorecard's variables come in the
    same order whatever order the store is opened in."""
    truth_yaml, truth = _weather_truth(tmp_path)
    forecast = _write(tmp_path, "persistence", _forecast(truth, 4, 3, lambda v, s, rng: s))
    opened = xr.open_zarr
    cards = {}
    for order in ("forward", "reversed"):
        def open_in_order(*args, reverse=order == "reversed", **kwargs):
            ds = opened(*args, **kwargs)
            return ds[sorted(ds.data_vars, reverse=reverse)]
        monkeypatch.setattr(xr, "open_zarr", open_in_order)
        raw = xr.open_zarr(tmp_path / "persistence.zarr", consolidated=False)
        assert list(raw.data_vars) == (["z", "t2m"] if order == "reversed" else ["t2m", "z"])  # the patch bites
        cards[order] = evaluate([forecast], truth_yaml, progress=False).scorecard
    assert cards["forward"].variable.values.tolist() == ["t2m", "z500", "z850"]
    same = [card.drop_attrs(deep=False) for card in cards.values()]  # the card's attributes hold the time it was made
    xr.testing.assert_identical(*same)


def test_ensemble_crps_and_spread_skill_against_brute_force(tmp_path):
    truth_yaml, truth = _weather_truth(tmp_path, n_times=10)
    inits, leads, members = 6, 3, 5
    forecast = _forecast(truth, inits, leads, lambda v, s, rng: v + rng.normal(0.0, 30.0, v.shape), members=members)
    card = evaluate([_write(tmp_path, "ens", forecast)], truth_yaml, climatology=None, progress=False).scorecard
    got = card.sel(model="ens", variable="t2m")
    x = forecast["t2m"].values.astype(np.float64)  # [init, lead, member, lat, lon]
    y = _valid_truth(truth, "t2m", inits, leads)
    w = _closed_form_weights(LAT)[:, None] / (LAT.size * LON.size)

    skill = np.abs(x - y[:, :, None]).mean(axis=2)
    pairs = np.abs(x[:, :, :, None] - x[:, :, None, :]).sum(axis=(2, 3)) / (members * (members - 1))
    fair = skill - 0.5 * pairs  # brute-force unbiased CRPS, O(M²) pairs
    np.testing.assert_allclose(got["crps"], (fair * w).sum(axis=(-2, -1)).mean(axis=0), rtol=1e-6)

    # xskillscore's crps_ensemble is the empirical (M² denominator) estimator: fair + ½ E|X-X'| / M
    biased = xs.crps_ensemble(xr.DataArray(y, dims=("i", "l", "lat", "lon")),
                              xr.DataArray(x, dims=("i", "l", "member", "lat", "lon")), dim=[]).values
    np.testing.assert_allclose(biased, m.crps_biased_from_fair(fair, pairs, members), rtol=1e-9, atol=1e-9)
    assert np.all(biased >= fair - 1e-9)
    np.testing.assert_allclose(m.crps_fair(x, y, axis=2), fair, rtol=1e-12, atol=1e-9)

    mean = x.mean(axis=2)
    skill_rmse = np.sqrt(((mean - y) ** 2 * w).sum(axis=(-2, -1)).mean(axis=0))
    spread = np.sqrt((x.var(axis=2, ddof=1) * w).sum(axis=(-2, -1)).mean(axis=0))
    np.testing.assert_allclose(got["ensemble_mean_rmse"], skill_rmse, rtol=1e-6)
    np.testing.assert_allclose(got["rmse"], skill_rmse, rtol=1e-6)  # deterministic scores use the ensemble mean
    np.testing.assert_allclose(got["spread"], spread, rtol=1e-6)
    np.testing.assert_allclose(got["spread_skill"], np.sqrt((members + 1) / members) * spread / skill_rmse, rtol=1e-6)


# -------------------------------------------------------------------------------------- alignment

def test_alignment_errors_name_the_mismatch(tmp_path):
    truth_yaml, truth = _weather_truth(tmp_path, n_times=8)
    ok = _forecast(truth, 4, 3, lambda v, s, rng: v)

    nearly = _write(tmp_path, "nearly", ok.assign_coords(latitude=LAT + 5e-4))
    assert evaluate([nearly], truth_yaml, climatology=None, progress=False).scorecard["rmse"].max() < 1e-3

    shifted = _write(tmp_path, "shifted", ok.assign_coords(latitude=LAT + 0.01))
    with pytest.raises(AlignmentError, match=r"latitude differs .* by up to 0\.01 degrees"):
        evaluate([shifted], truth_yaml, climatology=None, progress=False)

    coarse = ok.isel(longitude=slice(0, 12))
    with pytest.raises(AlignmentError,
                       match=r"grid of the truth 'wtruth' \(\S+wtruth\.zarr\): longitude has 12 points, the grid has 24"):
        evaluate([_write(tmp_path, "coarse", coarse)], truth_yaml, climatology=None, progress=False)

    kilometres = ok.copy()
    kilometres["z"] = kilometres["z"].assign_attrs(units="km")
    with pytest.raises(AlignmentError, match=r"variable 'z' has units 'km' but the truth 'wtruth' \(\S+wtruth\.zarr\) "
                                             r"has 'm'"):
        evaluate([_write(tmp_path, "km", kilometres)], truth_yaml, climatology=None, progress=False)

    late = ok.assign_coords(time=ok.time.values + np.timedelta64(24, "h"))
    with pytest.raises(AlignmentError,
                       match=r"2 valid time\(s\) .* missing in the truth 'wtruth'.*2020-01-03T00:00:00"):
        evaluate([_write(tmp_path, "late", late)], truth_yaml, climatology=None, progress=False)

    extra = ok.assign(q=ok["t2m"].assign_attrs(units="kg kg**-1"))
    with pytest.raises(AlignmentError, match=r"variable\(s\) \['q'\] are not in the truth 'wtruth'"):
        evaluate([_write(tmp_path, "extra", extra)], truth_yaml, climatology=None, progress=False)


# ---------------------------------------------------------------------------------------- fluids

N = 32


def _mode_fields(trajectories: int, frames: int):
    """Truth cos(3x + 2y + φ) and its orthogonal partner sin(3x + 2y + φ) (equal norms, zero overlap)."""
    x = np.arange(N) * 2 * np.pi / N
    phase = 0.3 * np.arange(frames)[None, :] + 1.1 * np.arange(trajectories)[:, None]
    argument = 3 * x[None, None, None, :] + 2 * x[None, None, :, None] + phase[:, :, None, None]
    return np.cos(argument), np.sin(argument)


def _fluid_truth(tmp_path: Path, trajectories: int = 2, frames: int = 12, units: str = "solver time units"):
    truth, _ = _mode_fields(trajectories, frames)
    ds = xr.Dataset({"vorticity": (("trajectory", "time", "y", "x"), truth.astype(np.float32), {"units": "1"})},
                    coords={"trajectory": np.arange(trajectories),
                            "time": ("time", 0.1 * np.arange(frames), {"units": units})})
    path = write_store_entry(tmp_path, "modes", ds, "fluid", grid={"x": N, "y": N, "length": 2 * np.pi},
                       time={"step": 0.1, "units": units},
                       splits={"train": {"trajectory": [0, 1]}, "validation": {"trajectory": [1, 2]},
                               "test": {"trajectory": [1, 2]}})
    return path, ds


def _fluid_forecast(inits: int, leads: int, make, trajectories: int = 2, lead_units="solver time units"):
    """Fluid forecast store: dims trajectory, time, prediction_timedelta, y, x; ``make(truth, partner, lead)``."""
    truth, partner = _mode_fields(trajectories, inits + leads)
    index = np.arange(inits)[:, None] + np.arange(leads)[None, :]
    lead_index = np.broadcast_to(np.arange(leads)[None, :, None, None], (inits, leads, 1, 1))
    data = make(truth[:, index], partner[:, index], lead_index[None])
    return xr.Dataset(
        {"vorticity": (("trajectory", "time", "prediction_timedelta", "y", "x"), data.astype(np.float32),
                       {"units": "1"})},
        coords={"trajectory": np.arange(trajectories), "time": 0.1 * np.arange(inits),
                "prediction_timedelta": ("prediction_timedelta", 0.1 * np.arange(leads), {"units": lead_units})})


def _crossing(leads: np.ndarray, curve: np.ndarray, threshold: float) -> float:
    """The first fall below ``threshold`` by linear interpolation (a curve that does fall, after its first lead)."""
    k = int(np.flatnonzero(curve < threshold)[0])
    return leads[k - 1] + (curve[k - 1] - threshold) / (curve[k - 1] - curve[k]) * (leads[k] - leads[k - 1])


def test_fluid_correlation_relative_l2_and_decorrelation_time(tmp_path):
    truth_yaml, _ = _fluid_truth(tmp_path)
    inits, leads = 4, 8
    angle = lambda lead: 0.2 * lead  # noqa: E731  correlation cos(0.2 l) by construction
    rotated = _fluid_forecast(inits, leads, lambda t, p, lead: np.cos(angle(lead)) * t + np.sin(angle(lead)) * p)
    same = _fluid_forecast(inits, leads, lambda t, p, lead: t)
    negative = _fluid_forecast(inits, leads, lambda t, p, lead: -t)
    card = evaluate([_write(tmp_path, "rotated", rotated), _write(tmp_path, "same", same),
                     _write(tmp_path, "negative", negative)], truth_yaml, progress=False).scorecard
    card = card.sel(variable="vorticity")
    expected = np.cos(angle(np.arange(leads)))
    np.testing.assert_allclose(card["correlation"].sel(model="rotated"), expected, atol=1e-6)
    np.testing.assert_allclose(card["correlation"].sel(model="same"), 1.0, atol=1e-7)
    np.testing.assert_allclose(card["correlation"].sel(model="negative"), -1.0, atol=1e-7)
    np.testing.assert_allclose(card["rel_l2"].sel(model="rotated"), np.sqrt(2 - 2 * expected), atol=1e-6)
    np.testing.assert_allclose(card["rel_l2"].sel(model="negative"), 2.0, atol=1e-6)
    lead = 0.1 * np.arange(leads)
    for threshold in (0.95, 0.8):
        assert card["decorrelation_time"].sel(model="rotated", threshold=threshold) == pytest.approx(
            _crossing(lead, expected, threshold), abs=1e-6)
        assert np.isposinf(card["decorrelation_time"].sel(model="same", threshold=threshold))
        assert card["decorrelation_time"].sel(model="negative", threshold=threshold) == 0.0
    table = markdown_table(card.expand_dims(variable=["vorticity"]))
    assert "| same | vorticity | > last lead | > last lead |" in table
    # the same field has the truth's spectrum: zero log-ratio in every band
    np.testing.assert_allclose(card["spectrum_log_ratio"].sel(model="same").isel(prediction_timedelta=0)
                               .sel(band=["low", "mid"]), 0.0, atol=1e-6)


def test_fluid_alignment_errors(tmp_path):
    truth_yaml, _ = _fluid_truth(tmp_path)
    ok = _fluid_forecast(3, 3, lambda t, p, lead: t)
    small = ok.isel(x=slice(0, 16))
    with pytest.raises(AlignmentError,
                       match=r"grid sizes \{'y': 32, 'x': 16\} differ from the truth 'modes' \(\S+modes\.zarr\)"):
        evaluate([_write(tmp_path, "small", small)], truth_yaml, progress=False)
    hours = _fluid_forecast(3, 3, lambda t, p, lead: t, lead_units="hours")
    with pytest.raises(AlignmentError, match="prediction_timedelta has units 'hours' but the truth 'modes'"):
        evaluate([_write(tmp_path, "hours", hours)], truth_yaml, progress=False)
    long = _fluid_forecast(3, 12, lambda t, p, lead: t)
    with pytest.raises(AlignmentError, match=r"valid time\(s\) .* missing .*: 1.2, 1.3"):
        evaluate([_write(tmp_path, "long", long)], truth_yaml, progress=False)


@pytest.mark.parametrize("n, length", [((3, 4), 2 * np.pi), ((16, 0), 2 * np.pi), ((0, 2), 5.0)])
def test_energy_spectrum_of_a_single_mode(n, length):
    amplitude = 1.7
    x = np.arange(N) * length / N
    omega = amplitude * np.cos(2 * np.pi / length * (n[0] * x[None, :] + n[1] * x[:, None]))
    spectrum = m.isotropic_energy_spectrum(omega[None], length)[0]
    shell = int(round(np.hypot(*n)))
    k2 = (2 * np.pi / length) ** 2 * (n[0] ** 2 + n[1] ** 2)
    # velocity amplitude A/|k|: kinetic energy ½ mean |u|² = A²/(4|k|²)
    # (A²/(2|k|²) for the Nyquist mode, whose cosine samples are ±1)
    energy = amplitude ** 2 / (4 * k2) * (2 if N // 2 in n else 1)
    assert spectrum[shell] == pytest.approx(energy, rel=1e-12)
    assert np.delete(spectrum, shell).max() < 1e-12 * energy
    assert spectrum.sum() == pytest.approx(energy, rel=1e-12)


def test_zonal_spectrum_parseval_and_mode():
    lat = np.array([-45.0, 0.0, 30.0])
    lon = np.arange(36) * 10.0
    rng = np.random.default_rng(3)
    field = rng.normal(size=(2, 3, 36))
    spectrum = m.zonal_energy_spectrum(field, lat, lon)
    circumference = 2 * np.pi * m.EARTH_RADIUS_M * np.cos(np.deg2rad(lat))
    # Parseval: the sum is the discrete integral of f² around the circle, once the Nyquist term (doubled by WB2's
    # code like every k > 0) is counted once
    nyquist = circumference * (np.fft.rfft(field, axis=-1, norm="forward")[..., -1].real ** 2)
    np.testing.assert_allclose(spectrum.sum(-1) - nyquist, (circumference / 36)[None] * (field ** 2).sum(-1),
                               rtol=1e-12)
    wave = np.cos(np.deg2rad(lon) * 5)[None, None] * np.ones((1, 3, 1))
    single = m.zonal_energy_spectrum(wave, lat, lon)[0]
    np.testing.assert_allclose(single[:, 5], circumference * 0.5, rtol=1e-12)
    assert np.delete(single, 5, axis=-1).max() < 1e-20 * single.max()


def test_threshold_crossing_conventions():
    leads = np.array([0.0, 1.0, 2.0, 3.0])
    assert m.threshold_crossing(leads, [1.0, 0.9, 0.7, 0.5], 0.8) == pytest.approx(1.5)
    assert m.threshold_crossing(leads, [0.7, 0.9, 0.7, 0.5], 0.8) == 0.0
    assert np.isposinf(m.threshold_crossing(leads, [1.0, 0.99, 0.98, 0.97], 0.8))
    # a lead without data before the fall: when it fell is unknown; after the fall it does not matter
    assert np.isnan(m.threshold_crossing(leads, [1.0, np.nan, 0.7, 0.5], 0.8))
    assert np.isnan(m.threshold_crossing(leads, [np.nan] * 4, 0.8))
    assert m.threshold_crossing(leads, [1.0, 0.9, 0.7, np.nan], 0.8) == pytest.approx(1.5)


# ------------------------------------------------------------------------------------ video metrics

def test_ssim_and_psnr_against_skimage_or_formula():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 24, 20))
    b = a + rng.normal(scale=0.5, size=a.shape)
    data_range = float(a.max() - a.min())
    got = m.ssim(a, b, data_range)
    mse = ((a - b) ** 2).mean(axis=(-2, -1))
    if importlib.util.find_spec("skimage") is not None:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        expected = [structural_similarity(a[i], b[i], data_range=data_range, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False) for i in range(3)]
        np.testing.assert_allclose(got, expected, rtol=1e-9)
        np.testing.assert_allclose(m.psnr(mse, data_range),
                                   [peak_signal_noise_ratio(a[i], b[i], data_range=data_range) for i in range(3)],
                                   rtol=1e-12)
    else:  # skimage absent: PSNR's formula; SSIM of an image with itself is 1
        np.testing.assert_allclose(m.psnr(mse, data_range), 10 * np.log10(data_range ** 2 / mse), rtol=1e-12)
        np.testing.assert_allclose(m.ssim(a, a, data_range), 1.0, rtol=1e-12)
    assert np.all(got < 1) and np.all(got > 0)


def test_score_writes_scorecard_files_and_video_scores(tmp_path, capsys):
    truth_yaml, truth = _fluid_truth(tmp_path)
    rng = np.random.default_rng(5)
    noisy = _fluid_forecast(3, 4, lambda t, p, lead: t + 0.3 * rng.normal(size=t.shape))
    out = tmp_path / "scores"
    card = score([_write(tmp_path, "noisy", noisy)], truth_yaml, out, progress=False, video=True)
    data_range = float(truth["vorticity"].max() - truth["vorticity"].min())
    assert card["data_range"].sel(model="noisy", variable="vorticity") == pytest.approx(data_range, rel=1e-6)
    assert "data_range" in card["ssim"].attrs["convention"]
    # per-frame SSIM / PSNR against the direct formulas on each (trajectory, init) frame, averaged
    f = noisy["vorticity"].values.astype(np.float64)
    truth_values = truth["vorticity"].values.astype(np.float64)
    index = np.arange(3)[:, None] + np.arange(4)[None, :]
    y = truth_values[:, index]
    mse = ((f - y) ** 2).mean(axis=(-2, -1))
    np.testing.assert_allclose(card["psnr"].sel(model="noisy", variable="vorticity"),
                               (10 * np.log10(data_range ** 2 / mse)).mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(card["ssim"].sel(model="noisy", variable="vorticity"),
                               m.ssim(f, y, data_range).mean(axis=(0, 1)), rtol=1e-6)
    # OpenSTL's MSE and MAE: np.mean(err, axis=(0, 1)).sum() over [samples, frames, H, W], here per lead
    for metric, err in (("frame_mse", (f - y) ** 2), ("frame_mae", np.abs(f - y))):
        openstl = [np.mean(err[:, :, lead][:, :, None], axis=(0, 1)).sum() for lead in range(4)]
        np.testing.assert_allclose(card[metric].sel(model="noisy", variable="vorticity"), openstl, rtol=1e-6)

    names = sorted(p.name for p in out.iterdir())
    assert names == ["plots", "scorecard.csv", "scorecard.md", "scorecard.nc", "spectra.csv"]
    assert not any(".tmp-" in p.name for p in out.rglob("*"))
    reread = xr.open_dataset(out / "scorecard.nc")
    np.testing.assert_allclose(reread["rmse"], card["rmse"])
    table = pd.read_csv(out / "scorecard.csv")
    rmse = table[(table.metric == "rmse") & (table.model == "noisy")].sort_values("lead")
    np.testing.assert_allclose(rmse["value"], card["rmse"].sel(model="noisy", variable="vorticity"))
    assert {"decorrelation_time_0.95", "spectrum_log_ratio_high", "ssim", "psnr"} <= set(table.metric)
    markdown = (out / "scorecard.md").read_text()
    assert "| noisy | vorticity |" in markdown and "## ssim" in markdown
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["energy_spectrum_vorticity.png", "fields_noisy_vorticity.png", "scores_vorticity.png"]
    assert all((out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


# ------------------------------------------------------------------------------------ real data

def _ingested(entry_name: str):
    from earthsim.data.ingest import ingest_entry

    entry = catalog.get_entry(catalog.BUILTIN_CATALOGS / "datasets" / f"{entry_name}.yaml")
    ingest_entry(entry, progress=False)  # a failure here is a bug, not a reason to skip
    return entry, catalog.open_dataset(entry).load()


def test_era5_ensemble_against_its_own_mean(tmp_path):
    """Smoke test of the ensemble path on real data: 10 ERA5 members against their mean, and member 0."""
    entry, ds = _ingested("era5-ensemble")
    members = ds.sizes["realization"]
    lead0 = {"prediction_timedelta": [np.timedelta64(0, "ns")]}
    forecast = ds.drop_vars([v for v in ds.coords if v not in ds.dims]).expand_dims(lead0, axis=1)
    forecast = forecast.transpose("time", "prediction_timedelta", "realization", "level", "latitude", "longitude")
    mean_truth = ds.mean("realization").astype(np.float32)
    for name in ds.data_vars:
        mean_truth[name].attrs = dict(ds[name].attrs)
    grid = {"latitude": {"start": -90.0, "stop": 90.0, "size": 61},
            "longitude": {"start": 0.0, "stop": 357.0, "size": 120}, "longitude_convention": "[0, 360)"}
    common = dict(levels=[500, 850], grid=grid, time={"start": "2017-01-01T00:00", "stop": "2017-01-02T12:00",
                                                      "step": "12h"},
                  splits={"train": {"start": "2017-01-01T00:00", "stop": "2017-01-01T12:00"},
                          "validation": {"start": "2017-01-02T00:00", "stop": "2017-01-02T00:00"},
                          "test": {"start": "2017-01-02T12:00", "stop": "2017-01-02T12:00"}})
    mean_yaml = write_store_entry(tmp_path, "ens-mean", mean_truth, "weather", **common)
    card = evaluate([_write(tmp_path, "members", forecast)], mean_yaml, climatology=None, progress=False).scorecard
    got = card.sel(model="members").isel(prediction_timedelta=0)

    w = _closed_form_weights(ds.latitude.values)[:, None] / (61 * 120)
    for label, name, level in (("z500", "z", 500), ("t850", "t", 850)):
        x = ds[name].sel(level=level).values.astype(np.float64)  # [time, member, lat, lon]
        y = mean_truth[name].sel(level=level).values.astype(np.float64)
        fair = np.abs(x - y[:, None]).mean(1) - 0.5 * np.abs(x[:, :, None] - x[:, None]).sum((1, 2)) / (
            members * (members - 1))
        crps = (fair * w).sum((-2, -1)).mean()
        assert got["crps"].sel(variable=label) == pytest.approx(crps, rel=1e-6)
        # against its own mean: 0 < CRPS < E|X - mean| (a Gaussian ensemble gives CRPS ≈ 0.23 σ)
        assert 0 < got["crps"].sel(variable=label) < (np.abs(x - y[:, None]).mean(1) * w).sum((-2, -1)).mean()
        assert got["ensemble_mean_rmse"].sel(variable=label) < 1e-3 * got["spread"].sel(variable=label)  # float32 mean
        print(f"ERA5 ensemble vs its mean, {label}: CRPS {float(got['crps'].sel(variable=label)):.5g}, spread "
              f"{float(got['spread'].sel(variable=label)):.5g}, ensemble-mean RMSE "
              f"{float(got['ensemble_mean_rmse'].sel(variable=label)):.3g}, spread/skill "
              f"{float(got['spread_skill'].sel(variable=label)):.3g}")

    # one perturbed member as truth, the other perturbed members as the ensemble (member 0 is ERA5's control, closer
    # to the mean than a perturbed member): exchangeable members give spread/skill near 1
    truth_member = ds.isel(realization=1).drop_vars([v for v in ds.coords if v not in ds.dims], errors="ignore")
    truth_member = truth_member.astype(np.float32)
    for name in ds.data_vars:
        truth_member[name].attrs = dict(ds[name].attrs)
    member_yaml = write_store_entry(tmp_path, "member1", truth_member, "weather", **common)
    rest = forecast.isel(realization=slice(2, None))
    card1 = evaluate([_write(tmp_path, "rest", rest)], member_yaml, climatology=None, progress=False).scorecard
    scores = card1.sel(model="rest").isel(prediction_timedelta=0)
    labels = scores["variable"].values.tolist()
    print("ERA5 members 2-9 vs member 1: spread/skill", dict(zip(labels, scores["spread_skill"].values.round(3))),
          "CRPS", dict(zip(labels, scores["crps"].values.round(4))))
    assert np.all((scores["spread_skill"] > 0.8) & (scores["spread_skill"] < 1.25))


def test_fluid_on_the_sphere_uses_area_weights(tmp_path):
    """Fluids on a latitude/longitude grid (shallow water): per-trajectory alignment, area-weighted scores."""
    rng = np.random.default_rng(6)
    lat, lon = np.linspace(-90, 90, 9), np.arange(16) * 22.5
    values = rng.normal(size=(2, 8, 9, 16)).astype(np.float32)
    ds = xr.Dataset({"h": (("trajectory", "time", "latitude", "longitude"), values, {"units": "m"})},
                    coords={"trajectory": [0, 1], "time": ("time", np.arange(8.0), {"units": "hours"}),
                            "latitude": lat, "longitude": lon})
    truth_yaml = write_store_entry(tmp_path, "sphere", ds, "fluid", time={"step": 1.0, "units": "hours"},
                             grid={"latitude": {"start": -90.0, "stop": 90.0, "size": 9},
                                   "longitude": {"start": 0.0, "stop": 337.5, "size": 16}},
                             splits={"train": {"trajectory": [0, 1]}, "validation": {"trajectory": [1, 2]},
                                     "test": {"trajectory": [1, 2]}})
    index = np.arange(4)[:, None] + np.arange(3)[None, :]
    truth_valid = values.astype(np.float64)[:, index]  # [trajectory, init, lead, lat, lon]
    predicted = truth_valid + rng.normal(scale=0.5, size=truth_valid.shape)
    forecast = xr.Dataset({"h": (("trajectory", "time", "prediction_timedelta", "latitude", "longitude"),
                                 predicted.astype(np.float32), {"units": "m"})},
                          coords={"trajectory": [0, 1], "time": np.arange(4.0),
                                  "prediction_timedelta": ("prediction_timedelta", np.arange(3.0), {"units": "hours"}),
                                  "latitude": lat, "longitude": lon})
    card = evaluate([_write(tmp_path, "sw", forecast)], truth_yaml, progress=False).scorecard.sel(model="sw",
                                                                                                  variable="h")
    w = _closed_form_weights(lat)[:, None] / (9 * 16)
    f = predicted.astype(np.float32).astype(np.float64)
    mse = (((f - truth_valid) ** 2) * w).sum((-2, -1))
    np.testing.assert_allclose(card["rmse"], np.sqrt(mse.mean((0, 1))), rtol=1e-6)
    np.testing.assert_allclose(card["rel_l2"], np.sqrt(mse / (truth_valid ** 2 * w).sum((-2, -1))).mean((0, 1)),
                               rtol=1e-6)
    assert "zonal_spectrum" in card and "acc" not in card


def test_era5_uk_month_persistence_and_climatology_baselines(tmp_path):
    """Real data: persistence and climatology baselines over the test week of the ERA5 UK month at 1-24 h."""
    from earthsim.data.stats import load_climatology

    entry, ds = _ingested("era5-uk-t2m")
    test = entry.split("test").select(ds)
    inits = test.time.values[:-24]  # every valid time up to 24 h ahead stays inside the month
    leads = pd.to_timedelta(np.arange(1, 25), "h").values
    valid = inits[:, None] + leads[None, :]
    t2m = ds["t2m"]
    persistence = np.broadcast_to(t2m.sel(time=inits).values[:, None], (inits.size, leads.size) + t2m.shape[1:])
    clim = load_climatology(entry, progress=False)["t2m"]
    times = pd.DatetimeIndex(valid.ravel())
    at_valid = clim.sel(hour=xr.DataArray(times.hour.values, dims="v"),
                        dayofyear=xr.DataArray(times.day_of_year.values, dims="v")).values
    coords = {"time": inits, "prediction_timedelta": leads, "latitude": ds.latitude.values,
              "longitude": ds.longitude.values}
    dims = ("time", "prediction_timedelta", "latitude", "longitude")
    stores = []
    for label, values in (("persistence", persistence), ("climatology", at_valid.reshape(persistence.shape))):
        store = xr.Dataset({"t2m": (dims, values.astype(np.float32), dict(t2m.attrs))}, coords=coords)
        stores.append(_write(tmp_path, label, store))
    card = evaluate(stores, entry, progress=False).scorecard.sel(variable="t2m")  # ACC: the entry's climatology

    truth = t2m.values.astype(np.float64)[np.searchsorted(ds.time.values, valid)]
    w = _closed_form_weights(ds.latitude.values)[:, None] / t2m[0].size
    for label, values in (("persistence", persistence), ("climatology", at_valid.reshape(persistence.shape))):
        f = values.astype(np.float32).astype(np.float64)
        rmse = np.sqrt((((f - truth) ** 2) * w).sum((-2, -1)).mean(0))
        np.testing.assert_allclose(card["rmse"].sel(model=label), rmse, rtol=1e-6)
    shown = [0, 5, 11, 23]
    print("ERA5 UK t2m, test week, leads", [f"{h + 1}h" for h in shown])
    for label in ("persistence", "climatology"):
        print(f"  {label}: RMSE {np.round(card['rmse'].sel(model=label).values[shown], 3).tolist()} K, "
              f"ACC {np.round(card['acc'].sel(model=label).values[shown], 3).tolist()}, "
              f"bias {np.round(card['bias'].sel(model=label).values[shown], 3).tolist()} K")
    persistence_rmse = card["rmse"].sel(model="persistence").values
    assert persistence_rmse[0] < persistence_rmse[11]  # persistence error grows from 1 h towards 12 h (diurnal cycle)
    # the climatology forecast has no anomaly: its ACC is 0/0, NaN (as in WB2); persistence's is defined
    assert np.all(np.isnan(card["acc"].sel(model="climatology").values))
    assert np.all(np.isfinite(card["acc"].sel(model="persistence").values))


# ------------------------------------------------------------------------ refusals (review H6, M8, M13, L14, L16)

def _cli(args: list, capsys) -> str:
    """Run ``earthsim score ARGS`` in this process; it must be refused (status 2) in one line: that line."""
    from earthsim.cli import main

    assert main(["score", *map(str, args), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("earthsim score: error: "), err
    return lines[0]


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if ".tmp-" in p.name], "a temporary was left behind"


def test_score_refuses_an_unwritable_out_before_scoring(tmp_path, monkeypatch, capsys):
    from earthsim.score import evaluation

    truth_yaml, _ = _fluid_truth(tmp_path)
    forecast = _write(tmp_path, "same", _fluid_forecast(3, 3, lambda t, p, lead: t))
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("scored although --out cannot be written"))
    (tmp_path / "file").write_text("")
    line = _cli([forecast, "--truth", truth_yaml, "--out", tmp_path / "file"], capsys)
    assert f"--out {tmp_path / 'file'} is a file" in line
    line = _cli([forecast, "--truth", truth_yaml, "--out", tmp_path / "file" / "scores"], capsys)
    assert f"--out {tmp_path / 'file' / 'scores'}: cannot create its folder" in line
    _no_temporaries(tmp_path)


def test_score_write_failure_names_out_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    truth_yaml, _ = _fluid_truth(tmp_path)
    forecast = _write(tmp_path, "same", _fluid_forecast(3, 3, lambda t, p, lead: t))
    out = tmp_path / "scores"

    def hdf_error(self, *args, **kwargs):
        raise RuntimeError("NetCDF: HDF error\nmore detail")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", hdf_error)
    line = _cli([forecast, "--truth", truth_yaml, "--out", out], capsys)
    assert line == f"earthsim score: error: --out {out}: writing the scores failed (RuntimeError: NetCDF: HDF error)"
    assert not out.exists()
    _no_temporaries(tmp_path)


def test_score_replaces_its_own_outputs_and_keeps_other_files(tmp_path):
    truth_yaml, _ = _fluid_truth(tmp_path)
    forecast = _write(tmp_path, "same", _fluid_forecast(3, 3, lambda t, p, lead: t))
    out = tmp_path / "scores"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "stale.png").write_bytes(b"")
    (out / "scorecard.md").write_text("old")
    (out / "notes.txt").write_text("mine")
    score([forecast], truth_yaml, out, progress=False)
    assert (out / "notes.txt").read_text() == "mine" and (out / "scorecard.md").read_text() != "old"
    assert not (out / "plots" / "stale.png").exists() and (out / "scorecard.nc").exists()
    _no_temporaries(tmp_path)


def test_infinities_are_refused_as_non_finite_or_left_out_like_nan(tmp_path, capsys):
    truth_yaml, _ = _fluid_truth(tmp_path)
    ok = _fluid_forecast(3, 3, lambda t, p, lead: t)
    values = ok["vorticity"].values.copy()
    values[0, 0, 1, 5, 5] = np.inf
    values[1, 2, 0, 0, 0] = -np.inf
    forecast = _write(tmp_path, "inf", ok.copy(data={"vorticity": values}))
    line = _cli([forecast, "--truth", truth_yaml, "--out", tmp_path / "scores"], capsys)
    assert "2 forecast frame(s) hold NaN or inf (non-finite values)" in line and "--allow-missing" in line
    assert not (tmp_path / "scores").exists()
    card = evaluate([forecast], truth_yaml, progress=False, allow_missing=True).scorecard
    assert card["frames_left_out"].sel(model="inf", variable="vorticity", side="forecast") == 2
    assert np.isfinite(card["rmse"]).all() and float(card["rmse"].max()) < 1e-6  # the rest is the truth itself

    # every frame of the first lead left out: when the correlation fell is unknown, not "never"
    values[:, :, 0] = np.nan
    hole = _write(tmp_path, "hole", ok.copy(data={"vorticity": values}))
    card = evaluate([hole], truth_yaml, progress=False, allow_missing=True).scorecard
    assert np.isnan(card["decorrelation_time"]).all()
    assert "| hole | vorticity | no data | no data |" in markdown_table(card)


def test_an_unreadable_truth_is_named_by_its_store(tmp_path):
    truth_yaml, _ = _fluid_truth(tmp_path)
    forecast = _write(tmp_path, "same", _fluid_forecast(3, 3, lambda t, p, lead: t))
    chunk = sorted(p for p in (tmp_path / "modes.zarr" / "vorticity" / "c").rglob("*") if p.is_file())[0]
    chunk.write_bytes(b"\x00" * 17)
    with pytest.raises(AlignmentError) as refused:
        evaluate([forecast], truth_yaml, progress=False)
    message = str(refused.value)
    assert message.startswith(f"truth 'modes' ({tmp_path / 'modes.zarr'}), variable 'vorticity': cannot be read")
    assert "\n" not in message and f"earthsim check {tmp_path / 'modes.zarr'}" in message


def test_units_flag_names_only_scored_variables_and_never_contradicts_the_store(tmp_path, capsys):
    truth_yaml, _ = _fluid_truth(tmp_path)
    forecast = _write(tmp_path, "same", _fluid_forecast(3, 3, lambda t, p, lead: t))
    args = [forecast, "--truth", truth_yaml, "--out", tmp_path / "scores"]
    line = _cli(args + ["--units", "vorticty=1"], capsys)
    assert "--units names ['vorticty'], which is not a variable scored in the forecast store(s)" in line
    assert "['vorticity']" in line
    line = _cli(args + ["--units", "vorticity=s**-1"], capsys)
    assert "--units vorticity=s**-1 conflicts with the units the store states for variable 'vorticity', '1'" in line
    line = _cli(args + ["--units", "vorticity=1", "--units", "vorticity=2"], capsys)
    assert "two units" in line
    assert not (tmp_path / "scores").exists()
    # the units the store states, stated again, are no conflict
    card = score([forecast], truth_yaml, tmp_path / "scores", progress=False, units={"vorticity": "1"})
    import json

    config = json.loads(card.attrs["provenance"])["config"]
    assert config["units_stated"] == {"vorticity": "1"} and config["allow_missing"] is False


def test_an_earthsim_store_without_its_completion_record_is_refused(tmp_path, capsys):
    import zarr

    from earthsim.data.store import COMPLETE_ATTR, provenance

    truth_yaml, _ = _fluid_truth(tmp_path)
    ds = _fluid_forecast(3, 3, lambda t, p, lead: t)
    ds.attrs["provenance"] = provenance("earthsim.forecast.persistence", [], {})
    for name in ("old.zarr", "fc.zarr.partial"):
        write_zarr(ds, tmp_path / name, progress=False)
        del zarr.open_group(str(tmp_path / name), mode="r+").attrs[COMPLETE_ATTR]
    line = _cli([tmp_path / "old.zarr", "--truth", truth_yaml, "--out", tmp_path / "scores"], capsys)
    assert "was written by earthsim (earthsim.forecast.persistence" in line and "no completion record" in line
    assert "incomplete" in line and "older than 0.2.0" in line and "`earthsim forecast`" in line and "resumes" in line
    line = _cli([tmp_path / "fc.zarr.partial", "--truth", truth_yaml, "--out", tmp_path / "scores"], capsys)
    assert f"renames it to {tmp_path / 'fc.zarr'}" in line
    assert not (tmp_path / "scores").exists()
    # a store that is not earthsim's (no provenance record) is scored as before
    plain = _write(tmp_path, "plain", _fluid_forecast(3, 3, lambda t, p, lead: t))
    del zarr.open_group(plain.split("=", 1)[1], mode="r+").attrs[COMPLETE_ATTR]
    assert evaluate([plain], truth_yaml, progress=False).scorecard["rmse"].max() < 1e-6


def test_score_into_an_out_whose_parent_is_read_only(tmp_path, monkeypatch):
    """The temporary goes beside --out; when only --out itself can be written, inside it."""
    from earthsim.score import output

    truth_yaml, _ = _fluid_truth(tmp_path)
    forecast = _write(tmp_path, "same", _fluid_forecast(3, 3, lambda t, p, lead: t))
    out = tmp_path / "locked" / "scores"
    out.mkdir(parents=True)
    mkdir = Path.mkdir

    def refuse_beside(self, *args, **kwargs):
        if self.parent == out.parent and ".tmp-" in self.name:
            raise PermissionError(13, "Permission denied", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse_beside)
    score([forecast], truth_yaml, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(output.OUTPUTS)  # and no temporary inside
    _no_temporaries(tmp_path)


def test_decorrelation_time_bootstrap_resamples_trajectories_and_pairs_stores(tmp_path):
    """Two trajectories whose correlations fall as cos(0.2 l) and cos(0.35 l): a resample of two trajectories is
    (0, 0), (0, 1) or (1, 1) with chances 1/4, 1/2, 1/4, so the replicates take exactly the crossing times of
    cos(0.2 l), of the mean of both curves and of cos(0.35 l) in about those shares; two stores scored on the same
    samples share their resamples (a paired bootstrap), and identical stores have identical replicates."""
    truth_yaml, _ = _fluid_truth(tmp_path)
    inits, leads = 1, 11
    rates = np.array([0.2, 0.35])[:, None, None, None, None]  # per trajectory
    make = lambda t, p, lead: np.cos(rates * lead) * t + np.sin(rates * lead) * p  # noqa: E731
    stores = [_write(tmp_path, name, _fluid_forecast(inits, leads, make)) for name in ("first", "second")]
    card = evaluate(stores, truth_yaml, progress=False).scorecard.sel(variable="vorticity")
    lead = 0.1 * np.arange(leads)
    slow, fast = np.cos(0.2 * np.arange(leads)), np.cos(0.35 * np.arange(leads))
    for threshold in (0.95, 0.8):
        times = [_crossing(lead, curve, threshold) for curve in (slow, (slow + fast) / 2, fast)]
        assert card["decorrelation_time"].sel(model="first", threshold=threshold) == pytest.approx(times[1], abs=1e-6)
        replicates = card["decorrelation_time_bootstrap"].sel(model="first", threshold=threshold).values
        nearest = np.abs(replicates[:, None] - np.array(times)[None, :]).argmin(axis=1)
        np.testing.assert_allclose(replicates, np.array(times)[nearest], atol=1e-6)
        shares = np.bincount(nearest, minlength=3) / replicates.size
        np.testing.assert_allclose(shares, [0.25, 0.5, 0.25], atol=0.07)  # 5 sigma of 1000 draws
        low, high = (card[f"decorrelation_time_{bound}"].sel(model="first", threshold=threshold) for bound in
                     ("low", "high"))
        assert low == pytest.approx(times[2], abs=1e-6) and high == pytest.approx(times[0], abs=1e-6)
        np.testing.assert_array_equal(replicates,
                                      card["decorrelation_time_bootstrap"].sel(model="second", threshold=threshold))


def test_markdown_has_no_rows_for_variables_a_model_does_not_forecast():
    """A decorrelation time of inf reads "> last lead" (stays correlated), one of NaN "no data"; a variable the
    model never forecast gets no row at all."""
    from earthsim.score import markdown_table

    leads = np.array([0.1, 0.2])
    correlation = np.array([[[0.99, 0.97], [np.nan, np.nan]], [[0.9, 0.7], [0.8, 0.6]]])  # model × variable × lead
    card = xr.Dataset(
        {"correlation": (("model", "variable", "prediction_timedelta"), correlation),
         "decorrelation_time": (("model", "variable", "threshold"),
                                np.array([[[np.inf], [np.nan]], [[np.nan], [0.12]]]))},
        coords={"model": ["fno", "persistence"], "variable": ["vorticity", "u"], "prediction_timedelta": leads,
                "threshold": [0.8]})
    text = markdown_table(card)
    assert "| fno | vorticity | > last lead |" in text  # stays above the threshold: said so
    assert "| fno | u |" not in text  # never forecast: no row at all
    assert "| persistence | vorticity | no data |" in text  # a lead without data before the fall
    assert "| persistence | u | 0.12 |" in text
