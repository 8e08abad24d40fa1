"""Lead time and forcings through the whole path: windows that draw each sample's lead from a set, the trainer
handing ``lead_time`` to the model in training and validation, forecasts rolled out iteratively or directly,
and models that predict fewer channels than they read (the rest forcings, read from data at every step)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from conftest import write_store_entry
from earthsim.data.stats import compute_statistics
from earthsim.data.windows import WindowDataset
from earthsim.errors import ValidationError
from earthsim.forecast import run_forecast
from earthsim.models import MODELS, DataSpec, EarthsimModel, build_model, export_model, load_exported
from earthsim.models.base import _Entry
from earthsim.train.config import from_mapping
from earthsim.train.trainer import train
from synthetic import advected_waves, write_waves_entry


@dataclasses.dataclass
class DriftConfig:
    t_in: int = 1
    t_out: int = 1


class Drift(EarthsimModel):
    """A lead-conditioned test model: the last frame plus a learned drift times the lead (normalised units).

    Iterating it k times at lead L and calling it once at lead k·L give the same forecast, which is what the
    direct and iterative forecasts are checked against. ``seen`` records every lead_time it is given.
    """

    lead_conditioned = True
    seen: list = []

    def __init__(self, config: DriftConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.t_in, self.t_out = config.t_in, config.t_out
        self.drift = nn.Parameter(torch.zeros(len(spec.outputs)))

    def network(self, x, static, lead_time):
        Drift.seen.append(lead_time.detach().clone())
        last = x[:, -1:, self.spec.output_index]
        return last + self.drift.view(1, 1, -1, 1, 1) * lead_time.to(x).view(-1, 1, 1, 1, 1)

    def fsdp_units(self):
        return []


@pytest.fixture
def drift():
    """The Drift model, registered for the length of one test."""
    MODELS["drift"] = _Entry(DriftConfig, lambda config, spec: Drift(config, spec))
    Drift.seen = []
    yield Drift
    del MODELS["drift"]


@pytest.fixture
def waves(tmp_path, monkeypatch):
    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path))
    path = write_waves_entry(tmp_path, frames=16)
    compute_statistics(str(path), progress=False)
    return path


def test_windows_draw_each_samples_lead_from_the_set(waves):
    ds = advected_waves(frames=16)
    windows = WindowDataset(str(waves), "train", t_in=2, t_out=2, stride=1, lead_strides=(1, 3), normalise=False)
    # inputs at s, s+1; targets at s+1+L, s+1+2L: the largest lead (3) leaves starts 0..8 of 16 frames
    assert len(windows) == 4 * 9 * 2 and windows.lead_times == pytest.approx((0.1, 0.3))
    for index in (0, 1, 7, 2 * 9 * 2 + 5):
        sequence, start, lead = windows.locate(index)
        sample = windows[index]
        truth = ds.vorticity.values[sequence[0]]
        np.testing.assert_array_equal(sample["x"][:, 0].numpy(), truth[[start, start + 1]])
        np.testing.assert_array_equal(sample["y"][:, 0].numpy(), truth[[start + 1 + lead, start + 1 + 2 * lead]])
        assert float(sample["lead_time"]) == pytest.approx(0.1 * lead) and lead == (1, 3)[index % 2]
    batch = windows.__getitems__([0, 1, 2, 3])
    assert [float(s["lead_time"]) for s in batch] == pytest.approx([0.1, 0.3, 0.1, 0.3])


def _experiment(entry, **data):
    return from_mapping({
        "data": {"dataset": str(entry), "batch_size": 4, **data},
        "model": {"name": "drift", "params": {}}, "optimizer": {"lr": 0.01, "warmup_steps": 1},
        "epochs": 1, "max_steps": 3, "device": "cpu", "validation": {"rollout_steps": 2, "max_batches": 2}})


def test_the_trainer_hands_each_samples_lead_time_to_the_model(waves, drift, tmp_path):
    summary = train(_experiment(waves, lead_strides=[1, 2]), tmp_path / "run", progress=False)
    seen = torch.cat(drift.seen)
    assert set(np.round(seen.double().numpy(), 6).tolist()) == {0.1, 0.2}  # training and validation batches alike
    assert "rmse_vorticity_step2" in summary["validation"]  # two leads: the validation key names the step
    model, record = load_exported(summary["export"])
    assert record.lead_strides == (1, 2) and model.spec.lead_times == pytest.approx((0.1, 0.2))


def test_direct_and_iterative_forecasts_of_a_lead_conditioned_model(waves, drift, tmp_path):
    spec = DataSpec.from_windows(WindowDataset(str(waves), "train", lead_strides=(1, 2, 3, 4)))
    model = build_model("drift", {}, spec)
    with torch.no_grad():
        model.drift.fill_(0.5)
    path = export_model(model, tmp_path / "model.pt", dataset="waves", stride=1, lead_strides=(1, 2, 3, 4))
    common = dict(steps=4, inits=["0.0", "0.5"], progress=False)
    iterative = run_forecast(path, str(waves), "test", out=tmp_path / "i.zarr", lead_stride=1, **common)
    direct = run_forecast(path, str(waves), "test", out=tmp_path / "d.zarr", mode="direct", **common)
    a, b = (xr.open_zarr(p, consolidated=False).vorticity.load() for p in (iterative, direct))
    xr.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    truth = advected_waves(frames=16).vorticity.values[5:7]  # the test trajectories
    std = spec.statistics.std[0]
    for k in range(4):  # x_last + drift · lead, in normalised units: + 0.5 · 0.1 (k + 1) · std
        expected = truth[:, [0, 5]] + 0.5 * 0.1 * (k + 1) * std
        np.testing.assert_allclose(b.isel(prediction_timedelta=k).values, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValidationError, match=r"trained at leads of 1 to 4 store frames; a direct forecast of 4 "
                                              r"steps 2 frames apart reaches 8"):
        run_forecast(path, str(waves), "test", out=tmp_path / "x.zarr", mode="direct", lead_stride=2, **common)
    with pytest.raises(ValidationError, match=r"trained at leads of \[1, 2, 3, 4\] store frames: choose one"):
        run_forecast(path, str(waves), "test", out=tmp_path / "x.zarr", mode="iterative", **common)
    default = run_forecast(path, str(waves), "test", out=tmp_path / "default.zarr", **common)  # several leads: direct
    assert xr.open_zarr(default, consolidated=False).attrs["mode"] == "direct"
    xr.testing.assert_identical(xr.open_zarr(default, consolidated=False).vorticity.load(), b)


def test_direct_forecasts_need_a_lead_conditioned_model(waves, tmp_path):
    spec = DataSpec.from_windows(WindowDataset(str(waves), "train"))
    model = build_model("fno", {"n_modes": [4, 4], "hidden_channels": 4, "n_layers": 1}, spec)
    path = export_model(model, tmp_path / "model.pt", dataset="waves", stride=1, lead_strides=(1,))
    with pytest.raises(ValidationError, match="is not lead-conditioned, so it forecasts iteratively only"):
        run_forecast(path, str(waves), "test", steps=2, out=tmp_path / "x.zarr", mode="direct", progress=False)


@pytest.fixture
def forced(tmp_path, monkeypatch):
    """Waves plus a second variable, 'forcing', that a model reads but does not predict."""
    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path))
    ds = advected_waves(frames=12)
    ds["forcing"] = (np.cos(ds.vorticity * 0.5) + ds.time * 0.2).astype(np.float32).assign_attrs(units="1")
    path = write_store_entry(tmp_path, "forced", ds, "fluid", grid={"x": 16, "y": 16, "length": 2 * np.pi},
                             time={"step": 0.1, "units": "solver time units"},
                             splits={"train": {"trajectory": [0, 4]}, "validation": {"trajectory": [4, 5]},
                                     "test": {"trajectory": [5, 6]}})
    compute_statistics(str(path), progress=False)
    return path, ds


def test_a_model_predicting_fewer_channels_than_it_reads_trains_and_forecasts_with_forcings(forced, tmp_path):
    entry, ds = forced
    cfg = from_mapping({
        "data": {"dataset": str(entry), "batch_size": 4, "output_variables": ["vorticity"]},
        "model": {"name": "fno", "params": {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 2}},
        "rollout": {"start_steps": 2, "max_steps": 2}, "epochs": 1, "max_steps": 2, "device": "cpu",
        "validation": {"rollout_steps": 2, "max_batches": 1}})
    summary = train(cfg, tmp_path / "run", progress=False)
    model, _ = load_exported(summary["export"])
    assert model.spec.inputs == ("vorticity", "forcing") and model.spec.outputs == ("vorticity",)
    assert set(summary["validation"]) == {"loss", "rmse_vorticity_lead0.2"}

    out = xr.open_zarr(run_forecast(summary["export"], str(entry), "test", steps=3, inits=["0.2"],
                                    out=tmp_path / "f.zarr", progress=False), consolidated=False).load()
    assert list(out.data_vars) == ["vorticity"]  # the store holds what the model predicts
    vorticity, forcing = ds.vorticity.values[5], ds.forcing.values[5]  # the test trajectory
    frame = np.stack([vorticity[2], forcing[2]])[None, None]  # [B, T, C, H, W] at the initial time
    expected = []
    with torch.no_grad():
        for k in range(3):  # by hand: each prediction completed with the true forcing at its valid time
            pred = model(torch.from_numpy(frame)).numpy()
            expected.append(pred[0, 0, 0])
            frame = np.stack([pred[0, 0, 0], forcing[3 + k]])[None, None]
    np.testing.assert_allclose(out.vorticity.isel(trajectory=0, time=0).values, np.stack(expected), rtol=1e-5,
                               atol=1e-5)
