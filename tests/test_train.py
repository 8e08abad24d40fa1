"""The trainer: config errors before training, a falling loss, resume after SIGKILL, 2 ranks = 1 rank, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from earthsim.errors import EarthsimError
from earthsim.models import load_exported
from earthsim.train.config import from_mapping, load_experiment
from earthsim.train.metrics import read_metrics
from earthsim.train.trainer import train
from synthetic import write_waves_entry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fluid_entry(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path))
    return write_waves_entry(tmp_path)


def _experiment(dataset: Path, **changes) -> dict:
    raw = {
        "data": {"dataset": str(dataset), "t_in": 1, "t_out": 1, "batch_size": 4},
        "model": {"name": "fno", "params": {"n_modes": [6, 6], "hidden_channels": 8, "n_layers": 2}},
        "optimizer": {"lr": 0.01, "warmup_steps": 2},
        "epochs": 3, "seed": 0, "device": "cpu",
        "checkpoint": {"every_steps": 3, "keep": 2},
        "validation": {"rollout_steps": 2, "max_batches": 4},
    }
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[key] = value
    return raw


def _write_experiment(tmp_path: Path, raw: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_config_errors_name_the_key(fluid_entry):
    with pytest.raises(EarthsimError, match=r"unknown key\(s\) \['lr_max'\]"):
        from_mapping({**_experiment(fluid_entry), "optimizer": {"lr_max": 1.0}})
    with pytest.raises(EarthsimError, match=r"optimizer.lr: expected float"):
        from_mapping({**_experiment(fluid_entry), "optimizer": {"lr": "fast"}})
    with pytest.raises(EarthsimError, match=r"parallelism.param_dtype: 'fp8' is not one of \['auto', 'float32', 'bfloat16'\]"):
        from_mapping(_experiment(fluid_entry, **{"parallelism.param_dtype": "fp8"}))
    with pytest.raises(EarthsimError, match=r"unknown key\(s\) \['residual'\]"):  # residual is the model's
        from_mapping(_experiment(fluid_entry, residual=True))


@pytest.mark.parametrize("changes,message", [
    ({"model": {"name": "fno", "params": {"t_in": 2}}}, r"model.params.t_in=2 does not match data.t_in=1"),
    ({"model": {"name": "sfno", "params": {"n_modes": [6, 6]}}}, "global equiangular latitude grid"),
    ({"model": {"name": "fno", "params": {"n_modes": [40, 40]}}}, "too large"),
    ({"model": {"name": "unet", "params": {}}}, "registered models"),
    ({"loss": {"name": "mse", "variable_weights": {"pressure": 2.0}}}, "unknown name"),
    ({"data": {"dataset": "placeholder", "output_variables": ["pressure"]}},
     r"data.output_variables: \['pressure'\] are not among"),
    ({"data": {"dataset": "placeholder", "lead_strides": [1, 2]}}, "need a lead-conditioned model; model .fno. is not"),
])
def test_model_data_mismatch_fails_before_training(fluid_entry, tmp_path, changes, message):
    raw = {**_experiment(fluid_entry), **changes}
    raw["data"] = {**_experiment(fluid_entry)["data"], **{k: v for k, v in changes.get("data", {}).items()
                                                          if k != "dataset"}}
    with pytest.raises(EarthsimError, match=message):
        train(from_mapping(raw), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_training_lowers_the_loss_and_exports_a_loadable_model(fluid_entry, tmp_path):
    raw = _experiment(fluid_entry, epochs=4, **{"rollout.max_steps": 2, "rollout.increase_every": 2})
    raw["model"]["params"]["residual"] = True
    cfg = from_mapping(raw)
    summary = train(cfg, tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run", "train")
    assert {"loss", "lr", "samples_per_s", "peak_memory_mb"} <= set(records[0])
    assert [r["unroll_steps"] for r in records][0] == 1 and records[-1]["unroll_steps"] == 2
    validation = read_metrics(tmp_path / "run", "validation")
    assert len(validation) == 4 and validation[-1]["loss"] < 0.5 * validation[0]["loss"]
    assert any(k.startswith("rmse_vorticity_lead") for k in validation[-1])
    assert (tmp_path / "run" / "tensorboard").is_dir()
    assert len(list((tmp_path / "run" / "checkpoints").iterdir())) == 2  # keep: 2

    model, record = load_exported(summary["export"])
    assert model.spec.inputs == ("vorticity",) and model.residual is True and record.step == summary["steps"]
    assert record.dataset == "waves" and record.lead_strides == (1,) and model.spec.time_step == pytest.approx(0.1)
    x = torch.zeros(2, 1, 1, 16, 16)
    assert model(x).shape == (2, 1, 1, 16, 16)


def test_lr_schedule_warms_up_then_decays(fluid_entry, tmp_path):
    cfg = from_mapping(_experiment(fluid_entry, epochs=2))
    train(cfg, tmp_path / "run", progress=False)
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run", "train")]
    assert lrs[:3] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])  # linear warm-up over 2 steps to the peak
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))  # then cosine decay
    assert 0.01 * 0.01 < lrs[-1] < 0.001  # towards min_lr_ratio x peak


def test_existing_run_needs_resume(fluid_entry, tmp_path):
    cfg = from_mapping(_experiment(fluid_entry, epochs=1))
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(EarthsimError, match="--resume"):
        train(cfg, tmp_path / "run", progress=False)
    changed = from_mapping(_experiment(fluid_entry, epochs=1, **{"optimizer.lr": 0.5}))
    with pytest.raises(EarthsimError, match=r"different setup; changed: optimizer"):
        train(changed, tmp_path / "run", resume=True, progress=False)


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "EARTHSIM_STORES": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}


def test_resume_after_sigkill_continues_bitwise(fluid_entry, tmp_path):
    experiment = _write_experiment(tmp_path, _experiment(fluid_entry, epochs=12))
    command = [sys.executable, "-m", "earthsim", "train", str(experiment)]
    env = _env(tmp_path)
    subprocess.run(command + ["--run-dir", str(tmp_path / "whole")], env=env, check=True, timeout=600,
                   capture_output=True)

    run = tmp_path / "killed"
    process = subprocess.Popen(command + ["--run-dir", str(run)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    target = run / "checkpoints" / "step-00000006"
    deadline = time.time() + 300
    while not target.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "model.pt").exists()

    subprocess.run(command + ["--run-dir", str(run), "--resume"], env=env, check=True, timeout=600,
                   capture_output=True)
    whole, resumed = _losses(tmp_path / "whole"), _losses(run)
    assert sorted(whole) == sorted(resumed) == list(range(1, max(whole) + 1))
    assert all(whole[s] == resumed[s] for s in whole), "losses after resume differ from the uninterrupted run"


@pytest.mark.distributed
def test_two_ranks_match_one_process_on_the_same_global_batch(fluid_entry, tmp_path):
    env = _env(tmp_path)
    single = _write_experiment(tmp_path, _experiment(fluid_entry, epochs=1), "single.yaml")
    double = _write_experiment(tmp_path, _experiment(fluid_entry, epochs=1, **{"data.batch_size": 2}),
                               "double.yaml")
    subprocess.run([sys.executable, "-m", "earthsim", "train", str(single), "--run-dir", str(tmp_path / "one")],
                   env=env, check=True, timeout=600, capture_output=True)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "earthsim", "train", str(double), "--run-dir", str(tmp_path / "two")],
        env=env, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) >= 5
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), f"step {step}: {one[step]} vs {two[step]}"


def test_shipped_experiments_parse_and_their_model_configs_build():
    from earthsim import config as config_lib
    from earthsim.catalog import BUILTIN_CATALOGS
    from earthsim.models import MODELS

    names = sorted(p.stem for p in (BUILTIN_CATALOGS / "experiments").glob("*.yaml"))
    assert {"kolmogorov-fno", "predformer-mmnist", "convs5-mmnist-long", "predformer-era5-uk"} <= set(names)
    for name in names:
        cfg = load_experiment(name, ["optimizer.lr=3e-4"])
        assert cfg.optimizer.lr == 3e-4 and cfg.model.name in MODELS, name
        config_lib.build(MODELS[cfg.model.name].config_cls, cfg.model.params, name)  # unknown keys are refused


def test_metrics_lines_are_json(fluid_entry, tmp_path):
    train(from_mapping(_experiment(fluid_entry, epochs=1)), tmp_path / "run", progress=False)
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        assert isinstance(json.loads(line)["step"], int)


def test_gradient_accumulation_equals_the_larger_batch(fluid_entry, tmp_path):
    """Two micro-batches of 2 accumulate to the same update as one batch of 4 (same windows, same order)."""
    whole = from_mapping(_experiment(fluid_entry, epochs=1, max_steps=4))
    split = from_mapping(_experiment(fluid_entry, epochs=1, max_steps=4, **{
        "data.batch_size": 2, "optimizer.grad_accumulation": 2}))
    train(whole, tmp_path / "whole", progress=False)
    train(split, tmp_path / "split", progress=False)
    a, b = _losses(tmp_path / "whole"), _losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5)


def test_a_recurrent_family_trains_validates_and_forecasts_through_its_carried_state(fluid_entry, tmp_path,
                                                                                     monkeypatch):
    """ConvLSTM trains teacher-forced (its own training step); validation and forecasts roll it out through
    init_state and step, one call per frame."""
    from earthsim.forecast import run_forecast
    from earthsim.models.convlstm import ConvLSTM

    calls = {"init_state": 0, "step": 0, "training_loss": 0}
    for method in calls:
        original = getattr(ConvLSTM, method)

        def counted(self, *args, _original=original, _method=method, **kwargs):
            calls[_method] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ConvLSTM, method, counted)
    raw = _experiment(fluid_entry, epochs=1, **{"rollout.max_steps": 2, "rollout.start_steps": 2})
    raw["data"]["t_in"] = 2
    raw["model"] = {"name": "convlstm", "params": {"hidden": [8], "kernel_size": 3, "patch_size": 2}}
    summary = train(from_mapping(raw), tmp_path / "run", progress=False)
    assert calls["training_loss"] == summary["steps"] + 1  # one more: the first batch, checked before any output
    validation = read_metrics(tmp_path / "run", "validation")
    assert calls["step"] == 2 * calls["init_state"] > 0  # validation: 2 rollout steps per batch
    assert validation[-1]["loss"] > 0 and "rmse_vorticity_lead0.2" in validation[-1]
    before = dict(calls)
    run_forecast(tmp_path / "run", str(fluid_entry), "test", steps=3, out=tmp_path / "f.zarr", batch_size=64,
                 progress=False)
    assert calls["init_state"] - before["init_state"] == 1 and calls["step"] - before["step"] == 3


def test_validation_every_k_samples_and_a_target_stop_the_run_where_it_is_first_met(fluid_entry, tmp_path):
    """validation.every_samples replaces the epoch-end validations (the last step is validated too); with a target
    the run stops at the first validation at or below it, the same step as an unstopped run first gets there, and
    the summary says when (samples, step, training seconds with validation kept out)."""
    raw = _experiment(fluid_entry, **{"validation.every_samples": 8})  # batch 4: every 2 steps; 3 epochs of 11 steps
    free = train(from_mapping(raw), tmp_path / "free", progress=False)
    records = read_metrics(tmp_path / "free", "validation")
    assert [r["step"] for r in records] == [*range(2, 33, 2), 33]
    assert all(r["samples"] == 4 * r["step"] for r in records) and free["samples"] == 4 * free["steps"] == 132
    assert free["stopped"] == "schedule" and "target" not in free
    assert 0 < records[0]["train_seconds"] < records[-1]["train_seconds"] <= free["train_seconds"]
    assert free["validation_seconds"] > 0

    target = records[4]["loss"]
    first = next(r for r in records if r["loss"] <= target)
    stopped = train(from_mapping({**raw, "validation": {**raw["validation"], "every_samples": 8,
                                                         "target_metric": "loss", "target": target}}),
                    tmp_path / "stopped", progress=False)
    assert stopped["stopped"] == "target" and stopped["steps"] == first["step"] < 33
    reached = stopped["target"]
    assert reached["reached"] and reached["metric"] == "loss" and reached["value"] == target
    assert reached["step"] == first["step"] and reached["samples"] == first["samples"]
    assert reached["best"] == pytest.approx(first["loss"]) and stopped["validation"]["loss"] == pytest.approx(
        first["loss"])
    assert 0 < reached["train_seconds"] <= stopped["train_seconds"]
    assert load_exported(stopped["export"])[1].step == first["step"]


def test_max_seconds_stops_the_run_and_an_unmet_target_reports_its_best(fluid_entry, tmp_path):
    raw = _experiment(fluid_entry, max_seconds=1e-9, **{"validation.target_metric": "loss", "validation.target": 0.0})
    summary = train(from_mapping(raw), tmp_path / "run", progress=False)
    assert summary["steps"] == 1 and summary["stopped"] == "max_seconds"  # the step that ended past the budget
    assert [r["step"] for r in read_metrics(tmp_path / "run", "validation")] == [1]  # its weights are validated
    assert summary["target"] == {"metric": "loss", "value": 0.0, "reached": False,
                                 "best": summary["validation"]["loss"]}
    with pytest.raises(EarthsimError, match=r"'rmse' is not among the validation results \['loss', 'rmse_vort"):
        train(from_mapping(_experiment(fluid_entry, max_seconds=1e-9, **{"validation.target_metric": "rmse",
                                                                         "validation.target": 1.0})),
              tmp_path / "other", progress=False)
    with pytest.raises(EarthsimError, match="target_metric and target together"):
        from_mapping(_experiment(fluid_entry, **{"validation.target": 1.0}))
    with pytest.raises(EarthsimError, match="max_seconds"):
        from_mapping(_experiment(fluid_entry, max_seconds=0))


def test_validation_runs_the_model_in_eval_mode_and_training_resumes_in_train_mode(fluid_entry, tmp_path):
    """Dropout and drop-path must be off while validating (the scores would be noisy and wrong otherwise)."""
    from earthsim.train.trainer import Trainer

    trainer = Trainer(from_mapping(_experiment(fluid_entry, epochs=1, max_steps=2)), tmp_path / "run", progress=False)
    modes = []
    handle = trainer.model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    trainer.validate()
    assert modes and not any(modes) and trainer.model.training
    modes.clear()
    trainer.fit()
    handle.remove()
    assert True in modes and False in modes  # trained in train mode, validated in eval mode
