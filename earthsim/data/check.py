"""``earthsim check STORE``: is a Zarr store whole, readable and in earthsim's conventions?

For the store (Zarr v3, or v2 as other tools write it): every metadata file valid JSON (else one
line naming the file), no orphan folders (chunk files whose array has lost its ``zarr.json`` or
``.zarray``, which no reader sees), and its completion record (:data:`earthsim.data.store.COMPLETE_ATTR`).
For every group: every dim with its coordinate array. For every array in it: the dims against the
conventions (docs/architecture.md), the ``units`` of each data variable, ``latitude`` increasing,
data variables with a time dim float32, every stored chunk (shard, when sharded) present
(:func:`chunk_status`) and decodable, and the non-finite values (NaN, ±inf) of each array
(counted, not a problem in themselves: a climatology holds NaN where its data had no sample; the
loader and the scorer refuse them where they would reach a sample or a score). Reading is chunk by
chunk, so memory stays at one stored chunk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from earthsim.data.conventions import (LATITUDE_DIM, LEAD_DIM, LEVEL_DIM, LONGITUDE_DIM, MEMBER_DIM, RECORD_DIMS,
                                       TIME_DIM, TRAJECTORY_DIM, X_DIM, Y_DIM)
from earthsim.data.store import (COMPLETE_ATTR, METADATA_FILES, array_dims, chunk_status, is_url, stored_chunk_grid,
                                 stored_chunk_region)
from earthsim.errors import EarthsimError, reason

#: Dims of the stores earthsim writes: data (weather, fluids), forecasts, statistics and climatologies.
KNOWN_DIMS = {TIME_DIM, *RECORD_DIMS, LEAD_DIM, MEMBER_DIM, LEVEL_DIM, LATITUDE_DIM, LONGITUDE_DIM, TRAJECTORY_DIM,
              Y_DIM, X_DIM, "statistic", "hour", "dayofyear"}
GRIDS = ({LATITUDE_DIM, LONGITUDE_DIM}, {Y_DIM, X_DIM})
_NODE_FILES = ("zarr.json", ".zarray", ".zgroup")  # a folder holding one of these is a Zarr node
SHOWN = 5  # chunks (or folders) listed by name per problem


@dataclass
class VariableReport:
    """What was found for one array of one group."""

    name: str
    dims: tuple[str, ...]
    chunks_expected: int
    chunks_missing: list[tuple[int, ...]] = field(default_factory=list)
    chunks_unreadable: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    nonfinite: int = 0  # NaN and ±inf values
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
                 "| array | dims | chunks present | unreadable | non-finite values |", "|---|---|---|---|---|"]
        for report in self.variables.values():
            present = report.chunks_expected - len(report.chunks_missing)
            lines.append(f"| {report.name} | {', '.join(report.dims)} | {present} of {report.chunks_expected} | "
                         f"{len(report.chunks_unreadable)} | {report.nonfinite} of {report.size} |")
        lines.append("")
        lines += [f"problem: {p}" for p in self.problems] or ["whole, readable and in the conventions"]
        return "\n".join(lines)


def check_store(path: str | os.PathLike) -> StoreReport:
    """Check every group and array of the store at ``path`` (see the module docstring)."""
    path = str(path)
    problems: list[str] = []
    if not is_url(path):
        if not Path(path).exists():
            raise EarthsimError(f"no Zarr store at {path}")
        problems += _layout_problems(Path(path))
    try:
        root = zarr.open_group(path, mode="r")
    except Exception as error:  # zarr raises many types for what is not a readable store
        raise EarthsimError(f"{path}: not a readable Zarr store ({reason(error)})") from None
    complete = COMPLETE_ATTR in root.attrs
    if not complete:
        problems.append(f"{path}: no completion record ({COMPLETE_ATTR!r} attribute): the store was not written whole "
                        "by earthsim (an interrupted write, a copy, or another producer)")
    variables: dict[str, VariableReport] = {}
    for group_path, group in _groups(root, path):
        where = f"{path}/{group_path}" if group_path else path
        try:
            statuses = chunk_status(path, group_path or None)
            arrays = dict(sorted(group.arrays(), key=lambda item: item[0]))  # not directory order
        except Exception as error:  # metadata zarr cannot make sense of (valid JSON, invalid Zarr)
            raise EarthsimError(f"{where}: the metadata of its arrays cannot be read ({reason(error)})") from None
        problems += _coordinate_problems(where, group_path, arrays)
        for name, array in arrays.items():
            label = f"{group_path}/{name}" if group_path else name
            variables[label] = _check_array(label, array, statuses[name], problems, _is_data_variable(name, arrays))
    if not variables:
        problems.append(f"{path}: no arrays")
    return StoreReport(path, complete, variables, problems)


def _layout_problems(root: Path) -> list[str]:
    """Raise for metadata that is not JSON (naming the file); list the orphan folders of a local store: folders
    below a group that hold files but are neither a Zarr node nor inside one's array."""
    nodes: dict[Path, str] = {}  # folder -> "array" or "group"
    files: list[Path] = []
    for folder, _, names in os.walk(root):
        folder = Path(folder)
        for name in names:
            file = folder / name
            if name not in METADATA_FILES:
                files.append(file)
                continue
            try:
                document = json.loads(file.read_bytes())
            except (OSError, ValueError) as error:  # ValueError: invalid JSON or UTF-8
                raise EarthsimError(f"{file}: Zarr metadata that cannot be read as JSON ({reason(error)})") from None
            if name == "zarr.json":
                nodes[folder] = "array" if isinstance(document, dict) and document.get("node_type") == "array" \
                    else "group"
            elif name in (".zarray", ".zgroup"):
                nodes[folder] = "array" if name == ".zarray" else nodes.get(folder, "group")
    if root not in nodes:
        return []  # not a store: opening it says so
    orphans: dict[Path, int] = {}
    for file in files:
        folder, top = file.parent, None
        while folder not in nodes:  # climb to the node the file lies in, remembering the folder just below it
            top, folder = folder, folder.parent
        if nodes[folder] == "group" and top is not None:
            orphans[top] = orphans.get(top, 0) + 1
    return [f"{folder}: {count} file(s) in a folder with no zarr.json or .zarray (an array or group whose metadata "
            "is lost, or stray data): no reader sees them" for folder, count in sorted(orphans.items())]


def _groups(root, path: str):
    """``(path, group)`` for the root and every group below it."""
    yield "", root
    try:
        groups = sorted(root.groups(), key=lambda item: item[0])  # not directory order
    except Exception as error:  # metadata zarr cannot make sense of
        raise EarthsimError(f"{path}: the metadata of its groups cannot be read ({reason(error)})") from None
    for name, group in groups:
        for inner_path, inner in _groups(group, f"{path}/{name}"):
            yield (f"{name}/{inner_path}" if inner_path else name), inner


def _coordinate_problems(where: str, group_path: str, arrays: dict) -> list[str]:
    """Every dim of the group's arrays needs a 1-D coordinate array of its name (what xarray indexes by)."""
    users: dict[str, list[str]] = {}
    for name, array in arrays.items():
        for dim in array_dims(array):
            users.setdefault(dim, []).append(name)
    problems = []
    for dim, names in users.items():
        coordinate = arrays.get(dim)
        if coordinate is None or array_dims(coordinate) != (dim,):
            label = f"{group_path}/{dim}" if group_path else dim
            problems.append(f"{where}: dim {dim!r} has no coordinate array (expected a 1-D array {label!r}; "
                            f"used by {sorted(names)})")
    return problems


def _is_data_variable(name: str, arrays: dict) -> bool:
    """Neither a dim's coordinate nor a coordinate that another array names in its ``coordinates`` attribute."""
    if array_dims(arrays[name]) == (name,):
        return False
    for other in arrays.values():
        listed = other.attrs.get("coordinates")
        if isinstance(listed, str) and name in listed.split():
            return False
    return True


def _check_array(label: str, array, status, problems: list[str], is_data: bool = True) -> VariableReport:
    dims = array_dims(array)
    report = VariableReport(label, dims, status.expected, list(status.missing))
    name = label.rsplit("/", 1)[-1]
    if not dims:
        problems.append(f"{label}: no dimension names")
    unknown = [d for d in dims if d not in KNOWN_DIMS]
    if unknown:
        problems.append(f"{label}: dims {list(unknown)} are not in earthsim's conventions (known: {sorted(KNOWN_DIMS)})")
    if is_data and dims and not set(dims) <= {"statistic", LEVEL_DIM}:
        if not any(grid <= set(dims) for grid in GRIDS):
            problems.append(f"{label}: dims {list(dims)} hold neither (latitude, longitude) nor (y, x)")
        if "units" not in array.attrs:
            problems.append(f"{label}: no units attribute")
    if is_data and TIME_DIM in dims and array.dtype != np.float32:
        problems.append(f"{label}: dtype {array.dtype}; data variables with a {TIME_DIM} dim are float32 in "
                        "earthsim's conventions")
    if status.missing:
        shown = ", ".join(str(c) for c in status.missing[:SHOWN])
        problems.append(f"{label}: {len(status.missing)} of {status.expected} chunks missing (chunk coordinates "
                        f"{shown}{' ...' if len(status.missing) > SHOWN else ''})")
    missing = set(status.missing)
    latitude = None
    for coords in stored_chunk_grid(array):
        if coords in missing:
            continue
        region = stored_chunk_region(array, coords)
        try:
            values = array[region]
        except Exception as error:  # codecs raise many types for damaged bytes
            report.chunks_unreadable.append((coords, reason(error)))
            continue
        if np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.complexfloating):
            report.nonfinite += int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        report.size += int(np.size(values))
        if name == LATITUDE_DIM and dims == (LATITUDE_DIM,):
            latitude = values if latitude is None else np.concatenate([latitude, values])
    if report.chunks_unreadable:
        coords, why = report.chunks_unreadable[0]
        problems.append(f"{label}: {len(report.chunks_unreadable)} chunk(s) cannot be decoded (first: chunk {coords}: "
                        f"{why})")
    if latitude is not None and latitude.size > 1 and not report.chunks_unreadable and not missing:
        steps = np.diff(np.asarray(latitude, dtype=np.float64))
        if not np.all(steps > 0):
            i = int(np.flatnonzero(~(steps > 0))[0])
            problems.append(f"{label}: latitude is not increasing ({latitude[i]:g} then {latitude[i + 1]:g} at index "
                            f"{i}; from {latitude[0]:g} to {latitude[-1]:g}); earthsim's conventions want it increasing")
    return report
