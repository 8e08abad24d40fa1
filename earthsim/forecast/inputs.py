"""Initial conditions of a forecast: which initial times a split offers and the input frames before them.

An initial time is the valid time of the last input frame. A forecast of ``steps`` frames ``lead``
store frames apart from initial frame ``f`` reads the ``t_in`` frames ``f - (t_in - 1)·stride … f``
and predicts ``f + lead … f + steps·lead``; every initial time chosen must have all of those
frames inside the split, so that each lead can be scored against the truth. Each sequence of the
split (fluid trajectory, weather ensemble member) offers the same initial times.

The split, layout, channel order, sequences, valid start frames and reads are those of
:class:`earthsim.data.windows.WindowDataset` (a window of ``t_in`` inputs and ``steps`` targets is
exactly one forecast), which also checks the store against its entry. Input frames are read block by
block: one read per variable and sequence covering the block's consecutive initial times, instead of
one per initial time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from earthsim import catalog
from earthsim.catalog import DatasetEntry
from earthsim.data.conventions import TIME_DIM
from earthsim.data.windows import SplitTooShortError, WindowDataset
from earthsim.errors import ValidationError



@dataclass(frozen=True)
class Block:
    """One unit of work, a rectangular region of the forecast store: consecutive initial times
    ``inits`` (positions along its ``time`` axis) of the sequences ``sequences`` (one slice of
    positions per sequence dim). Its samples run sequence-major, then by initial time."""

    index: int
    sequences: tuple[slice, ...]
    inits: slice

    @property
    def size(self) -> int:
        """Number of (sequence, initial time) samples in the block."""
        return math.prod(s.stop - s.start for s in self.sequences) * (self.inits.stop - self.inits.start)


def resolve_entry(dataset: str | DatasetEntry) -> DatasetEntry:
    """The catalog entry of ``dataset`` (a name or a YAML path), its store checked to exist."""
    entry = dataset if isinstance(dataset, DatasetEntry) else catalog.get_entry(dataset)
    entry.require_store()
    return entry


class InitialConditions:
    """The initial times of ``split`` with ``steps`` frames of truth after them, and their input frames.

    ``variables`` default to the entry's; ``lead_stride`` (store frames between forecast frames)
    defaults to ``stride``; ``derived`` names fields computed from coordinates (read as channels or
    static fields, as the model was trained). Raises ValidationError naming the split, its frame count and
    what ``steps`` needs when the split is too short, and naming an explicit initial time that is
    not one of the split's valid ones.
    """

    def __init__(self, entry: DatasetEntry, split: str, steps: int, t_in: int = 1, stride: int = 1,
                 variables: list[str] | None = None, inits: list | None = None, lead_stride: int | None = None,
                 derived: tuple[str, ...] = ()):
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
            raise ValidationError(f"steps must be an integer ≥ 1, got {steps!r}")
        self.entry, self.split, self.steps, self.t_in, self.stride = entry, split, int(steps), int(t_in), int(stride)
        self.lead_stride = self.stride if lead_stride is None else int(lead_stride)
        try:
            self.windows = WindowDataset(entry, split, t_in=self.t_in, t_out=self.steps, stride=self.stride,
                                         variables=variables, normalise=False, lead_strides=(self.lead_stride,),
                                         derived=derived)
        except SplitTooShortError as error:  # the same check, said in a forecast's terms
            fit = max(0, (error.frames - 1 - (self.t_in - 1) * self.stride) // self.lead_stride)
            raise ValidationError(
                f"dataset {entry.name!r}, split {split!r}: {error.frames} frames per sequence, but a forecast of "
                f"steps={steps} {self.lead_stride} frame(s) apart from t_in={t_in} input frames {stride} frame(s) "
                f"apart needs {error.needed}; at most {fit} steps fit") from None
        self.ds = self.windows.dataset  # coordinates and attributes for the forecast store
        self.variables = list(self.windows.variables)
        self.levels = self.windows.levels
        self.channels = list(self.windows.channels)
        self.sequence_dims = self.windows.sequence_dims
        sequences = self.windows.sequences
        self._sequence_number = {sequence: k for k, sequence in enumerate(sequences)}
        # Positions in the store along each sequence dim, in the window dataset's order.
        self.sequence_positions = [sorted({seq[k] for seq in sequences}) for k in range(len(self.sequence_dims))]
        self.init_frames = self._choose(self.windows.starts + (self.t_in - 1) * self.stride, inits)

    def _choose(self, valid: np.ndarray, inits: list | None) -> np.ndarray:
        """Store frame positions of the initial times: all valid ones, or those named in ``inits``."""
        if inits is None:
            return valid
        times = self.ds[TIME_DIM].values
        chosen = []
        for value in inits:
            if np.issubdtype(times.dtype, np.datetime64):
                try:
                    wanted = np.datetime64(pd.Timestamp(value), "ns")
                except (ValueError, TypeError) as error:
                    raise ValidationError(f"initial time {value!r} is not a date and time: {error}") from error
                matches = np.flatnonzero(times == wanted)
            else:
                try:
                    wanted = float(value)
                except (ValueError, TypeError) as error:
                    raise ValidationError(f"initial time {value!r} is not a number (dataset {self.entry.name!r} "
                                          f"has {self.entry.time.units} times)") from error
                matches = np.flatnonzero(np.isclose(times.astype(np.float64), wanted, rtol=1e-9, atol=1e-9))
            frame = matches[0] if matches.size else None
            if frame is None or frame not in valid:
                first, last = (times[valid[0]], times[valid[-1]]) if valid.size else (None, None)
                raise ValidationError(
                    f"initial time {value!r} is not a valid initial time of dataset {self.entry.name!r}, split "
                    f"{self.split!r} for {self.steps} steps with t_in={self.t_in}, stride {self.stride}: valid ones "
                    f"run from {first} to {last} every {self.stride} frame(s)")
            chosen.append(int(frame))
        if len(set(chosen)) != len(chosen):
            raise ValidationError(f"initial times {list(inits)} name the same time twice")
        return np.array(sorted(chosen))

    # -- the forecast grid --------------------------------------------------------------------

    @property
    def lead_time(self) -> float:
        """Time between forecast frames, in hours (weather) or solver units (fluids)."""
        return self.lead_stride * self.entry.time_step

    def sequence_coords(self) -> dict[str, xr.DataArray]:
        """Coordinates of the sequence dims (trajectory, member) of the split."""
        out = {}
        for dim, positions in zip(self.sequence_dims, self.sequence_positions):
            if dim in self.ds.coords:
                out[dim] = self.ds[dim].isel({dim: positions}).variable
            else:
                out[dim] = xr.Variable(dim, np.asarray(positions))
        return out

    def init_times(self) -> xr.Variable:
        """The ``time`` coordinate of the forecast: valid times of the initial frames."""
        time = self.ds[TIME_DIM].isel({TIME_DIM: self.init_frames}).variable.load()
        return xr.Variable(TIME_DIM, time.values, {**time.attrs, "long_name": "initialisation time "
                                                   "(valid time of the last input frame)"})

    def valid_times(self) -> np.ndarray:
        """Valid times ``[inits, steps]`` of every forecast frame (store time values)."""
        frames = self.init_frames[:, None] + self.lead_stride * np.arange(1, self.steps + 1)[None, :]
        return self.ds[TIME_DIM].values[frames]

    def blocks(self, size: int) -> list[Block]:
        """The work split into blocks of about ``size`` samples: runs of at most ``size`` consecutive initial
        times of one sequence, or, when a sequence has fewer initial times than that, whole sequences
        (along a single sequence dim) ``size // initial times`` at a time."""
        size, inits = max(1, int(size)), len(self.init_frames)
        counts = [len(p) for p in self.sequence_positions]
        if len(counts) == 1 and inits < size:
            per = size // inits
            return [Block(i, (slice(a, min(a + per, counts[0])),), slice(0, inits))
                    for i, a in enumerate(range(0, counts[0], per))]
        blocks = []
        for sequence in itertools.product(*(range(c) for c in counts)):
            for start in range(0, inits, size):
                blocks.append(Block(len(blocks), tuple(slice(i, i + 1) for i in sequence),
                                    slice(start, min(start + size, inits))))
        return blocks

    def samples(self, block: Block) -> list[tuple[tuple[int, ...], int]]:
        """(store positions along the sequence dims, store initial frame) of each sample of a block, in order."""
        positions = [p[s] for p, s in zip(self.sequence_positions, block.sequences)]
        return [(tuple(sequence), int(frame)) for sequence in itertools.product(*positions)
                for frame in self.init_frames[block.inits]]

    # -- reading -------------------------------------------------------------------------------

    def read(self, block: Block) -> np.ndarray:
        """Input frames ``[samples, t_in, C, H, W]`` (float32, physical units) of a block: the ``t_in`` frames
        ``stride`` apart that end at each initial frame; one read per variable and sequence."""
        return self._read(block, -self.stride * np.arange(self.t_in - 1, -1, -1))

    def read_targets(self, block: Block) -> np.ndarray:
        """The frames ``[samples, steps, C, H, W]`` at the valid times of the forecast (for the forcing channels
        a model reads from data while it rolls out)."""
        return self._read(block, self.lead_stride * np.arange(1, self.steps + 1))

    def _read(self, block: Block, offsets: np.ndarray) -> np.ndarray:
        """Frames at ``offsets`` (store frames) from each initial frame of a block; one read per variable and
        sequence covering them all."""
        inits = self.init_frames[block.inits]
        first, last = int(inits[0]) + int(offsets.min()), int(inits[-1]) + int(offsets.max())
        rows = (inits - first)[:, None] + offsets[None, :]
        positions = [p[s] for p, s in zip(self.sequence_positions, block.sequences)]
        out = np.empty((block.size // len(inits), len(inits), len(offsets), len(self.channels),
                        *self.entry.grid.shape), np.float32)
        for k, sequence in enumerate(itertools.product(*positions)):
            out[k] = self.windows.read_frames(self._sequence_number[tuple(sequence)], first, last - first + 1)[rows]
        return out.reshape(-1, *out.shape[2:])
