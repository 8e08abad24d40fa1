"""``earthsim check STORE``: is a Zarr store whole, readable and in earthsim's conventions?

For every group of the store and every array in it: the dims against the conventions
(docs/architecture.md), the ``units`` of each data variable, every chunk present (:func:`chunk_status`)
and decodable, and the NaN values of each array (counted, not a problem in themselves: a climatology
holds NaN where its data had no sample; the loader and the scorer refuse NaN where it would reach a
sample or a score); for the store, its completion record (:data:`earthsim.data.store.COMPLETE_ATTR`).
Reading is chunk by chunk, so memory stays at one chunk.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from earthsim.data.conventions import (LATITUDE_DIM, LEAD_DIM, LEVEL_DIM, LONGITUDE_DIM, MEMBER_DIM, RECORD_DIMS,
                                       TIME_DIM, TRAJECTORY_DIM, X_DIM, Y_DIM)
from earthsim.data.store import COMPLETE_ATTR, chunk_status, is_url
from earthsim.errors import EarthsimError

#: Dims of the stores earthsim writes: data (weather, fluids), forecasts, statistics and climatologies.
KNOWN_DIMS = {TIME_DIM, *RECORD_DIMS, LEAD_DIM, MEMBER_DIM, LEVEL_DIM, LATITUDE_DIM, LONGITUDE_DIM, TRAJECTORY_DIM,
              Y_DIM, X_DIM, "statistic", "hour", "dayofyear"}
GRIDS = ({LATITUDE_DIM, LONGITUDE_DIM}, {Y_DIM, X_DIM})


@dataclass
class VariableReport:
    """What was found for one array of one group."""

    name: str
    dims: tuple[str, ...]
    chunks_expected: int
    chunks_missing: list[tuple[int, ...]] = field(default_factory=list)
    chunks_unreadable: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    nan: int = 0
    size: int = 0


@dataclass
class StoreReport:
    """A store's check: its problems (empty when whole) and what was found per array."""

    path: str
    complete: bool
    variables: dict[str, VariableReport]
    problems: list[str]

    def table(self) -> str:
        lines = [f"store {self.path}: completion record {'present' if self.complete else 'ABSENT'}", "",
                 "| array | dims | chunks present | unreadable | NaN values |", "|---|---|---|---|---|"]
        for report in self.variables.values():
            present = report.chunks_expected - len(report.chunks_missing)
            lines.append(f"| {report.name} | {', '.join(report.dims)} | {present} of {report.chunks_expected} | "
                         f"{len(report.chunks_unreadable)} | {report.nan} of {report.size} |")
        lines.append("")
        lines += [f"problem: {p}" for p in self.problems] or ["whole, readable and in the conventions"]
        return "\n".join(lines)


def check_store(path: str | os.PathLike) -> StoreReport:
    """Check every group and array of the store at ``path`` (see the module docstring)."""
    path = str(path)
    if not is_url(path) and not Path(path).exists():
        raise EarthsimError(f"no Zarr store at {path}")
    try:
        root = zarr.open_group(path, mode="r")
    except Exception as error:  # zarr raises many types for what is not a readable store
        raise EarthsimError(f"{path}: not a readable Zarr store ({type(error).__name__}: {error})") from None
    problems: list[str] = []
    complete = COMPLETE_ATTR in root.attrs
    if not complete:
        problems.append(f"{path}: no completion record ({COMPLETE_ATTR!r} attribute): the store was not written whole "
                        "by earthsim (an interrupted write, a copy, or another producer)")
    variables: dict[str, VariableReport] = {}
    for group_path, group in _groups(root):
        statuses = chunk_status(path, group_path or None)
        for name, array in group.arrays():
            label = f"{group_path}/{name}" if group_path else name
            variables[label] = _check_array(label, array, statuses[name], problems)
    if not variables:
        problems.append(f"{path}: no arrays")
    return StoreReport(path, complete, variables, problems)


def _groups(root):
    """``(path, group)`` for the root and every group below it."""
    yield "", root
    for name, group in root.groups():
        for path, inner in _groups(group):
            yield (f"{name}/{path}" if path else name), inner


def _check_array(label: str, array, status, problems: list[str]) -> VariableReport:
    dims = tuple(array.metadata.dimension_names or ())
    report = VariableReport(label, dims, status.expected, list(status.missing))
    is_coordinate = len(dims) == 1 and dims[0] == label.rsplit("/", 1)[-1]
    if not dims:
        problems.append(f"{label}: no dimension names")
    unknown = [d for d in dims if d not in KNOWN_DIMS]
    if unknown:
        problems.append(f"{label}: dims {list(unknown)} are not in earthsim's conventions (known: {sorted(KNOWN_DIMS)})")
    if not is_coordinate and dims and not set(dims) <= {"statistic", LEVEL_DIM}:
        if not any(grid <= set(dims) for grid in GRIDS):
            problems.append(f"{label}: dims {list(dims)} hold neither (latitude, longitude) nor (y, x)")
        if "units" not in array.attrs:
            problems.append(f"{label}: no units attribute")
    if status.missing:
        shown = ", ".join(str(c) for c in status.missing[:5])
        problems.append(f"{label}: {len(status.missing)} of {status.expected} chunks missing (chunk coordinates "
                        f"{shown}{' ...' if len(status.missing) > 5 else ''})")
    missing = set(status.missing)
    grid = [range(-(-size // chunk)) for size, chunk in zip(array.shape, array.chunks)]
    for coords in (itertools.product(*grid) if array.shape else [()]):
        if coords in missing:
            continue
        region = tuple(slice(c * chunk, min((c + 1) * chunk, size))
                       for c, chunk, size in zip(coords, array.chunks, array.shape))
        try:
            values = array[region]
        except Exception as error:  # codecs raise many types for damaged bytes
            report.chunks_unreadable.append((coords, f"{type(error).__name__}: {error}"))
            continue
        if np.issubdtype(values.dtype, np.floating):
            report.nan += int(np.isnan(values).sum())
        report.size += int(np.size(values))
    if report.chunks_unreadable:
        coords, reason = report.chunks_unreadable[0]
        problems.append(f"{label}: {len(report.chunks_unreadable)} chunk(s) cannot be decoded (first: chunk {coords}: "
                        f"{reason.splitlines()[0][:200]})")
    return report
