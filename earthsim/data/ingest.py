"""Ingest netCDF and GRIB files into a Zarr v3 store in earthsim's conventions, checked against a catalog entry.

    >>> from earthsim import catalog
    >>> from earthsim.data.ingest import ingest, ingest_entry
    >>> ingest_entry(catalog.get_entry("era5-uk-t2m"))                 # the entry's raw files into its store
    >>> ingest(["a.nc", "b.nc"], "ab.zarr", expect=catalog.get_entry("era5-uk-t2m"))
    >>> ingest_inputs(["a.nc", "b.nc"], "ab.zarr", expect="era5-uk-t2m")  # the command line's way in

Inputs are opened lazily as dask arrays in blocks of time steps, so files larger than memory stream
through: the only full pass before writing computes one all-NaN flag per field for validation. The
store is written chunked by time (a block of steps per chunk, each chunk holding the full spatial
field and every member and level) one block of time steps per region through
:func:`earthsim.data.store.write_by_regions`, on the active dask cluster if there is one: nothing
appears under the output name before every region is written, and an ingest killed part-way
resumes from ``OUT.partial`` when run again with the same inputs.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import mmap
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import dask
import numpy as np
import pandas as pd
import xarray as xr

from earthsim.catalog import DatasetEntry
from earthsim.data.grid import GRID_TOLERANCE_DEG
from earthsim.data.conventions import (
    CONVENTIONS, LATITUDE_DIM, LEVEL_DIM, LONGITUDE_DIM, MEMBER_DIM, RECORD_DIMS,
    TIME_DIM, X_DIM, Y_DIM, record_dim, to_conventions,
)
from earthsim.data.store import PROVENANCE_ATTR, provenance, write_by_regions
from earthsim.errors import CatalogError, EarthsimError, ValidationError, quiet_loggers, reason

TIME_CHUNK_BYTES = 2**20  # target size of one stored chunk (float32), a block of whole time steps
LISTED = 10  # times (or fields) listed by name per difference before summarising the rest
_GRIB_SUFFIXES = (".grib", ".grb", ".grib1", ".grib2", ".grb1", ".grb2")


def ingest_entry(entry: DatasetEntry, progress: bool = True, overwrite: bool = False,
                 accept_damaged: bool = False, time_chunk: int | None = None) -> Path:
    """Ingest a catalog entry's raw files (``source.ingest``) into its store, validated against the entry."""
    if entry.source is None or not entry.source.ingest:
        raise CatalogError(f"dataset {entry.name!r} ({entry.path}) has no 'source: ingest:' files to ingest")
    return ingest(list(entry.source.ingest), entry.store, expect=entry, progress=progress, overwrite=overwrite,
                  accept_damaged=accept_damaged, time_chunk=time_chunk)


def ingest_inputs(inputs: Sequence[str], out: str | None = None, expect: str | None = None, **options) -> Path:
    """What ``earthsim ingest`` and the ingest pipeline job run: one catalog entry (a name or a YAML file) and no
    ``out`` ingests the entry's files into its store; files go to ``out``, checked against the entry ``expect``
    if named. ``options``: those of :func:`ingest` (progress, overwrite, time_chunk, accept_damaged)."""
    from earthsim import catalog

    single = inputs[0] if len(inputs) == 1 else None
    if out is None:
        if single is not None and (single in catalog.names() or single.endswith((".yaml", ".yml"))):
            if expect is not None:
                raise EarthsimError(f"--expect applies to input files; {single!r} is a catalog entry, checked "
                                    "against itself")
            return ingest_entry(catalog.get_entry(single), **options)
        raise EarthsimError(f"input files need --out STORE (or name one catalog entry alone); got "
                            f"{[str(i) for i in inputs][:3]}")
    return ingest(inputs, out, catalog.get_entry(expect) if expect else None, **options)


def ingest(
    files: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    expect: DatasetEntry | None = None,
    progress: bool = True,
    overwrite: bool = False,
    *,
    longitude_convention: str | None = None,
    time_chunk: int | None = None,
    accept_damaged: bool = False,
) -> Path:
    """Convert ``files`` (netCDF or GRIB, concatenated along time in the order given) into a Zarr v3 store.

    ``expect``: a catalog entry the data must match (:func:`validate_against_entry`); its grid's
    longitude convention is used unless ``longitude_convention`` is given (default ``[-180, 180)``),
    and its ``group`` names the Zarr group written. ``time_chunk``: time steps per stored chunk
    (default: as many as fit in about 1 MiB). A GRIB file with damaged messages is refused, naming
    how many, unless ``accept_damaged``: then what can be read is ingested and the loss is recorded
    in the store's provenance. Raises EarthsimError for missing, unreadable or damaged inputs and
    ValidationError for data that does not match ``expect``; no store is left behind.
    """
    files = [str(f) for f in files]
    if not files:
        raise EarthsimError("ingest needs at least one input file")
    if time_chunk is not None and time_chunk < 1:
        raise EarthsimError(f"time_chunk must be a positive number of time steps, got {time_chunk}")
    if Path(out).exists() and not overwrite:
        raise EarthsimError(f"{out} already exists; remove it or pass overwrite")
    if longitude_convention is None:
        longitude_convention = expect.grid.longitude_convention if expect is not None else "[-180, 180)"
    damaged = {}
    for path in files:
        if Path(path).is_file() and _engine(path) == "cfgrib":
            damage = grib_damage(path)
            if damage and not accept_damaged:
                raise EarthsimError(_damage_message(path, damage))
            if damage:
                damaged[str(Path(path).resolve())] = {"unreadable_messages": damage.damaged, "messages": damage.total,
                                                      "stray_bytes": damage.stray_bytes}
    with quiet_loggers("cfgrib"):  # cfgrib logs each damaged message with a traceback; grib_damage reports it
        ds = open_inputs(files, longitude_convention, time_chunk)
        return _write(ds, files, out, expect, progress, overwrite, longitude_convention, time_chunk, damaged)


def _write(ds: xr.Dataset, files: list[str], out, expect: DatasetEntry | None, progress: bool, overwrite: bool,
           longitude_convention: str, time_chunk: int | None, damaged: dict) -> Path:
    """Validate the opened inputs and write them (see :func:`ingest`)."""
    where = ", ".join(files)
    with _read_errors(where, out):
        if expect is not None:
            validate_against_entry(ds, expect, where, progress=progress)
        else:
            problems = _time_order_problems(ds) or _time_gap_problems(ds)
            if problems:
                raise ValidationError(f"{where}: " + "; ".join(problems))
        record = record_dim(ds)
        steps = time_chunk or default_time_chunk(ds)
        chunks = {dim: -1 for dim in ds.dims}
        if record is not None:
            chunks[record] = min(steps, ds.sizes[record])
        ds = ds.chunk(chunks)
        encoding = {
            name: {"chunks": tuple(chunks[d] if chunks[d] > 0 else ds.sizes[d] for d in var.dims)}
            for name, var in ds.data_vars.items()
        }
        ds.attrs[PROVENANCE_ATTR] = provenance(
            "earthsim.data.ingest", [str(Path(f).resolve()) for f in files],
            {
                "entry": expect.name if expect is not None else None,
                "entry_path": expect.path if expect is not None else None,
                "conventions": CONVENTIONS,
                "longitude_convention": longitude_convention,
                "time_chunk": chunks.get(record) if record is not None else None,
                **({"damaged_inputs_accepted": damaged} if damaged else {}),
            },
        )
        group = expect.group if expect is not None and expect.group else ""
        partial = write_by_regions(ds, out, ds.attrs[PROVENANCE_ATTR], along=record, step=chunks.get(record, 1),
                                   group=group, encoding=encoding, progress=progress, overwrite=overwrite,
                                   what="ingest")
        return partial.finish()


def open_inputs(
    files: Sequence[str | os.PathLike], longitude_convention: str = "[-180, 180)", time_chunk: int | None = None
) -> xr.Dataset:
    """Open each file lazily (dask, blocks of ``time_chunk`` steps), convert it and concatenate along time."""
    files = [str(f) for f in files]
    parts = [_to_conventions_named(open_input(f, time_chunk), f, longitude_convention) for f in files]
    if len(parts) == 1:
        return parts[0]
    dims = {record_dim(p) for p in parts}
    if len(dims) != 1 or None in dims:
        raise EarthsimError(
            f"cannot concatenate {files}: each file needs the same time (or month) dim; "
            f"found {[record_dim(p) for p in parts]}"
        )
    dim = dims.pop()
    first = parts[0]
    for path, part in zip(files[1:], parts[1:]):
        if set(part.data_vars) != set(first.data_vars):
            raise EarthsimError(
                f"cannot concatenate: {files[0]} has variables {sorted(first.data_vars)}, "
                f"{path} has {sorted(part.data_vars)}"
            )
        for name in set(first.dims) - {dim}:
            if name in first.indexes and not first.indexes[name].equals(part.indexes.get(name, pd.Index([]))):
                raise EarthsimError(
                    f"cannot concatenate: {name} differs between {files[0]} ({_span(first[name].values)}) "
                    f"and {path} ({_span(part[name].values) if name in part.dims else 'absent'})"
                )
    return xr.concat(
        parts, dim=dim, data_vars="minimal", coords="minimal", compat="override", join="exact",
        combine_attrs="drop_conflicts",
    )


def _to_conventions_named(ds: xr.Dataset, path: str, longitude_convention: str) -> xr.Dataset:
    """:func:`to_conventions`, with the file named in any error."""
    try:
        return to_conventions(ds, longitude_convention)
    except EarthsimError as error:
        raise type(error)(f"{path}: {error}") from error


def open_input(path: str | os.PathLike, time_chunk: int | None = None) -> xr.Dataset:
    """Open one netCDF or GRIB file lazily as dask arrays, a block of time steps per chunk.

    GRIB goes through cfgrib with ``indexpath=""`` so no ``.idx`` file is written beside the input.
    """
    path = str(path)
    if not Path(path).is_file():
        raise EarthsimError(f"input file {path} does not exist" if not Path(path).exists() else f"{path} is not a file")
    engine = _engine(path)
    if engine != "cfgrib":
        _refuse_truncated_netcdf(path)
    kwargs = {"backend_kwargs": {"indexpath": ""}} if engine == "cfgrib" else {}
    try:
        # cache=False and no chunks: variables stay lazily indexed, so chunking below reads block by block.
        ds = xr.open_dataset(path, engine=engine, chunks=None, cache=False, **kwargs)
    except Exception as error:  # the engines raise many types (OSError, ValueError, KeyError, EcCodesError)
        kind = "GRIB" if engine == "cfgrib" else "netCDF"
        raise EarthsimError(f"{path}: cannot read as {kind}: {type(error).__name__}: {error}") from error
    record = next((d for d in (TIME_DIM, "valid_time", *RECORD_DIMS) if d in ds.dims), None)
    chunks = {dim: -1 for dim in ds.dims}
    if record is not None:
        chunks[record] = min(time_chunk or default_time_chunk(ds, record, itemsize=None), ds.sizes[record])
    return ds.chunk(chunks)


_NC_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}  # classic netCDF nc_type -> bytes
_NC_DIMENSION, _NC_VARIABLE, _NC_ATTRIBUTE = 0x0A, 0x0B, 0x0C


class _Header:
    """A reader of a classic netCDF header (CDF-1, CDF-2 64-bit offsets, CDF-5 64-bit data)."""

    def __init__(self, data: bytes, version: int):
        self.data, self.offset = data, 4
        self.count = 8 if version == 5 else 4  # NON_NEG sizes (element counts, dim lengths, vsize)
        self.position = 4 if version == 1 else 8  # OFFSET (a variable's begin)

    def number(self, size: int) -> int:
        end = self.offset + size
        if end > len(self.data):
            raise EOFError(end)
        value = int.from_bytes(self.data[self.offset:end], "big")
        self.offset = end
        return value

    def skip(self, size: int) -> None:
        self.offset += size + (-size % 4)  # padded to 4 bytes
        if self.offset > len(self.data):
            raise EOFError(self.offset)

    def name(self) -> None:
        self.skip(self.number(self.count))

    def attributes(self) -> None:
        tag, count = self.number(4), self.number(self.count)
        if tag not in (0, _NC_ATTRIBUTE):
            raise ValueError(f"attribute list tag {tag}")
        for _ in range(count):
            self.name()
            kind = self.number(4)
            if kind not in _NC_TYPE_SIZES:
                raise ValueError(f"attribute type {kind}")
            self.skip(self.number(self.count) * _NC_TYPE_SIZES[kind])


def classic_netcdf_sizes(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(needed, actual)`` bytes of a classic netCDF file (magic ``CDF\\x01``, ``\\x02`` or ``\\x05``): ``needed``
    is where its header says the data of its last variable ends (a non-record variable at ``begin`` + its size, a
    record variable at ``begin + (numrecs - 1) * recsize`` + its size), so a file cut short has ``actual < needed``.
    None for any other file and for a file being streamed (numrecs unknown). Raises EarthsimError naming the file
    when the header itself is cut short or malformed."""
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if head not in (b"CDF\x01", b"CDF\x02", b"CDF\x05"):
            return None
        actual = os.fstat(f.fileno()).st_size
        header = _Header(head, head[3])
        size = 1 << 16
        while True:  # the header is small; read more until it parses or the file ends
            f.seek(0)
            header.data, header.offset = f.read(size), 4
            try:
                needed = _classic_needed(header)
                break
            except EOFError as error:  # its argument: the offset the header needed to read up to
                if error.args[0] > actual:
                    raise EarthsimError(f"{path}: truncated netCDF file: the file ({actual} bytes) ends inside its "
                                        "header") from None
                size = max(4 * size, error.args[0] + (1 << 16))
            except ValueError as error:
                raise EarthsimError(f"{path}: not a valid classic netCDF header ({error})") from None
    return None if needed is None else (needed, actual)


def _refuse_truncated_netcdf(path: str) -> None:
    """Refuse a classic netCDF file shorter than its header says, before any of its data is read."""
    try:
        sizes = classic_netcdf_sizes(path)
    except OSError as error:
        raise EarthsimError(f"{path}: cannot read: {error.strerror or error}") from None
    if sizes is not None and sizes[1] < sizes[0]:
        needed, actual = sizes
        raise EarthsimError(f"{path}: truncated netCDF file: its header says its data ends at byte {needed}, but the "
                            f"file has {actual} bytes ({needed - actual} missing); nothing is read from a file cut short")


def _classic_needed(header: _Header) -> int | None:
    numrecs = header.number(header.count)
    if numrecs == (1 << 8 * header.count) - 1:  # STREAMING: a file still being written
        return None
    tag, count = header.number(4), header.number(header.count)
    if tag not in (0, _NC_DIMENSION):
        raise ValueError(f"dimension list tag {tag}")
    lengths = []
    for _ in range(count):
        header.name()
        lengths.append(header.number(header.count))
    header.attributes()
    tag, count = header.number(4), header.number(header.count)
    if tag not in (0, _NC_VARIABLE):
        raise ValueError(f"variable list tag {tag}")
    variables = []  # (begin, bytes of one record or of the whole variable, is a record variable)
    for _ in range(count):
        header.name()
        dims = [header.number(header.count) for _ in range(header.number(header.count))]  # dim ids
        header.attributes()
        kind = header.number(4)
        header.number(header.count)  # vsize: the padded size, capped for large variables; recomputed below
        begin = header.number(header.position)
        if kind not in _NC_TYPE_SIZES or any(d >= len(lengths) for d in dims):
            raise ValueError(f"variable type {kind} or dimension ids {dims}")
        record = bool(dims) and lengths[dims[0]] == 0  # the unlimited dim has length 0 in the header
        size = _NC_TYPE_SIZES[kind] * int(np.prod([lengths[d] for d in dims[1 if record else 0:]], dtype=object))
        variables.append((begin, size, record))
    records = [size for _, size, record in variables if record]
    # one record holds every record variable, each padded to 4 bytes, but a lone record variable is not padded
    recsize = records[0] if len(records) == 1 else sum(size + (-size % 4) for size in records)
    ends = [begin + size if not record else (begin + (numrecs - 1) * recsize + size if numrecs else 0)
            for begin, size, record in variables]
    return max(ends, default=header.offset)


def _engine(path: str) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as error:
        raise EarthsimError(f"{path}: cannot read: {error}") from error
    if not head:
        raise EarthsimError(f"{path}: the file is empty (0 bytes); expected GRIB or netCDF")
    if head.startswith(b"GRIB") or Path(path).suffix.lower() in _GRIB_SUFFIXES:
        return "cfgrib"
    if head.startswith((b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF")):
        for module, engine in (("netCDF4", "netcdf4"), ("h5netcdf", "h5netcdf")):
            if importlib.util.find_spec(module) is not None:
                return engine
        raise EarthsimError(f"{path}: reading netCDF needs the netCDF4 or h5netcdf package")
    raise EarthsimError(f"{path}: neither GRIB nor netCDF (the file starts with {head!r})")


def default_time_chunk(ds: xr.Dataset, record: str | None = None, itemsize: int | None = 4) -> int:
    """Time steps per chunk so one chunk of the largest variable holds about TIME_CHUNK_BYTES.

    ``itemsize`` None uses each variable's own dtype (for raw inputs); 4 is float32 (stored data).
    """
    record = record or record_dim(ds)
    if record is None:
        return 1
    step_bytes = max(
        (int(np.prod([var.sizes[d] for d in var.dims if d != record])) * (itemsize or var.dtype.itemsize)
         for var in ds.data_vars.values() if record in var.dims),
        default=1,
    )
    return max(1, min(ds.sizes[record], TIME_CHUNK_BYTES // step_bytes))


#: Errors that can only be the output's: its file system is full, over quota, read-only or the file too large.
OUTPUT_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EFBIG", "EDQUOT", "EROFS")
                           if hasattr(errno, name))


@contextlib.contextmanager
def _read_errors(where: str, out: str | os.PathLike):
    """Errors raised while dask reads the inputs (after opening) become EarthsimErrors naming them; an error about
    the output (``out`` or its temporary by name, or a full, read-only or over-quota file system, which only
    writing meets, named or not) names the output instead."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        filename = str(getattr(error, "filename", "") or "")
        if filename.startswith(str(out)) or getattr(error, "errno", None) in OUTPUT_ERRNOS:
            raise EarthsimError(f"{out}: writing failed: {getattr(error, 'strerror', None) or error}") from None
        raise EarthsimError(f"{where}: reading failed: {reason(error)}") from error


class GribDamage(NamedTuple):
    """What :func:`grib_damage` found in a GRIB file."""

    damaged: int  # messages that do not end with 7777 where their stated length says
    total: int  # messages (damaged ones included)
    stray_bytes: int = 0  # non-zero bytes outside every message: garbage between or after messages

    def __bool__(self) -> bool:  # any damage at all
        return bool(self.damaged or self.stray_bytes)


def grib_damage(path: str | os.PathLike) -> GribDamage:
    """``(damaged, total, stray_bytes)`` of a GRIB file: each message begins with ``GRIB``, states its length
    (GRIB1: 3 bytes at offset 4; GRIB2: 8 bytes at offset 8) and ends with ``7777`` at that length; one that does
    not is damaged (cfgrib skips such messages, saying so only in a log line), and the bytes up to the next
    ``GRIB`` are counted as that message's. Bytes outside every message are padding when zero; each non-zero one
    is garbage (a concatenation gone wrong, a partial overwrite) that cfgrib skips silently: ``stray_bytes``."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return GribDamage(0, 0, 0)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            damaged = total = stray = 0
            done = 0  # end of the last message accounted for
            start = data.find(b"GRIB")
            while start != -1:
                stray += _nonzero(data, done, start)
                total += 1
                edition = data[start + 7] if start + 8 <= len(data) else 0
                if edition == 1:
                    length = int.from_bytes(data[start + 4:start + 7], "big")
                elif edition == 2:
                    length = int.from_bytes(data[start + 8:start + 16], "big")
                else:
                    length = 0
                end = start + length
                if length < 8 or end > len(data) or data[end - 4:end] != b"7777":
                    damaged += 1
                    start = data.find(b"GRIB", start + 4)
                    done = len(data) if start == -1 else start
                else:
                    done = end
                    start = data.find(b"GRIB", end)
            stray += _nonzero(data, done, len(data))
            return GribDamage(damaged, total, stray)


def _nonzero(data, start: int, stop: int, block: int = 1 << 24) -> int:
    """Non-zero bytes of ``data[start:stop]``, read a block at a time."""
    return sum(min(block, stop - i) - data[i:min(i + block, stop)].count(0) for i in range(start, stop, block))


def _damage_message(path: str, damage: GribDamage) -> str:
    parts = []
    if damage.damaged:
        parts.append(f"{damage.damaged} of {damage.total} GRIB messages cannot be read (damaged)")
    if damage.stray_bytes:
        parts.append(f"{damage.stray_bytes} non-zero byte(s) lie outside its {damage.total - damage.damaged} valid GRIB "
                     "message(s) (garbage between or after messages)")
    return (f"{path}: {' and '.join(parts)}; nothing is ingested from a damaged file unless you pass --accept-damaged, "
            "which ingests what can be read and records the loss in the store's provenance")


def validate_against_entry(ds: xr.Dataset, entry: DatasetEntry, where: str, progress: bool = False) -> None:
    """Check ``ds`` (in the conventions) against what ``entry`` declares; raise one ValidationError listing
    every difference: variables, units, levels, members, times (range, step, duplicates, order), grid
    (values within GRID_TOLERANCE_DEG degrees, or sizes) and fields that are entirely NaN.

    The NaN check is the only pass over the data: dask reduces each field to one flag.
    """
    problems = (
        _variable_problems(ds, entry) + _level_problems(ds, entry) + _member_problems(ds, entry)
        + _time_problems(ds, entry) + _grid_problems(ds, entry) + _nan_problems(ds, progress)
    )
    if problems:
        raise ValidationError(
            f"{where}: {len(problems)} difference(s) from catalog entry {entry.name!r} ({entry.path}):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def _variable_problems(ds: xr.Dataset, entry: DatasetEntry) -> list[str]:
    expected = set(entry.variables) | set(entry.static)
    found = set(ds.data_vars)
    problems = [f"missing variable {name!r} (entry expects {sorted(expected)})" for name in sorted(expected - found)]
    problems += [f"extra variable {name!r} (entry expects {sorted(expected)})" for name in sorted(found - expected)]
    for name in sorted(found & set(entry.variables)):
        units = ds[name].attrs.get("units")
        want = entry.variables[name].units
        if units is None:
            problems.append(f"variable {name!r} has no units attribute; entry expects {want!r}")
        elif " ".join(str(units).split()) != " ".join(want.split()):
            problems.append(f"variable {name!r} has units {units!r}; entry expects {want!r}")
        if name not in entry.static and TIME_DIM not in ds[name].dims:
            problems.append(f"variable {name!r} has no time dim (dims {ds[name].dims}) and is not listed as static")
    return problems


def _level_problems(ds: xr.Dataset, entry: DatasetEntry) -> list[str]:
    if not entry.levels:
        if LEVEL_DIM in ds.dims:
            return [f"extra level dim with levels {_numbers(ds[LEVEL_DIM].values)} hPa; the entry lists no levels"]
        return []
    if LEVEL_DIM not in ds.dims:
        return [f"no level dim; entry expects levels {list(entry.levels)} hPa"]
    found = ds[LEVEL_DIM].values
    want = np.asarray(entry.levels, dtype=np.float64)
    problems = [f"missing level {_number(v)} hPa (found {_numbers(found)})"
                for v in want if not np.isclose(found, v).any()]
    problems += [f"extra level {_number(v)} hPa (entry expects {list(entry.levels)})"
                 for v in found if not np.isclose(want, v).any()]
    return problems


def _member_problems(ds: xr.Dataset, entry: DatasetEntry) -> list[str]:
    if not entry.members:
        if MEMBER_DIM in ds.dims:
            return [f"{ds.sizes[MEMBER_DIM]} ensemble members ({MEMBER_DIM} dim); the entry declares no members"]
        return []
    if MEMBER_DIM not in ds.dims:
        return [f"no ensemble member dim ({MEMBER_DIM}); entry expects {entry.members} members"]
    found = ds[MEMBER_DIM].values
    problems = []
    if found.size != entry.members:
        problems.append(f"member count {found.size} ({MEMBER_DIM} {_numbers(found)}); entry expects {entry.members}")
    if np.unique(found).size != found.size:
        problems.append(f"duplicated ensemble members in {MEMBER_DIM} {_numbers(found)}")
    return problems


def _time_problems(ds: xr.Dataset, entry: DatasetEntry) -> list[str]:
    if entry.time.start is None or entry.time.stop is None:
        return _time_order_problems(ds) or _time_gap_problems(ds)
    expected = entry.time.values().as_unit("ns")
    span = f"{_stamp(expected[0])} to {_stamp(expected[-1])} every {entry.time.step}"
    if TIME_DIM not in ds.dims:
        return [f"no time dim (dims {dict(ds.sizes)}); entry expects times {span}"]
    times = pd.DatetimeIndex(ds[TIME_DIM].values).as_unit("ns")
    problems = _time_order_problems(ds)
    missing = expected.difference(times)
    extra = times.unique().difference(expected)
    if len(missing):
        problems.append(f"missing {len(missing)} time(s) of the entry's {span}: {_stamps(missing)}")
    if len(extra):
        problems.append(f"extra {len(extra)} time(s) outside the entry's {span}: {_stamps(extra)}")
    return problems


def _time_order_problems(ds: xr.Dataset) -> list[str]:
    """Duplicated and decreasing times (inputs are concatenated in the order given)."""
    if TIME_DIM not in ds.dims:
        return []
    times = pd.Index(ds[TIME_DIM].values)
    problems = []
    duplicated = times[times.duplicated()].unique()
    if len(duplicated):
        problems.append(f"duplicated time(s): {_stamps(duplicated)}")
    values = times.values
    back = np.flatnonzero(values[1:] < values[:-1])
    if len(back):
        pairs = [f"{_label(times[i + 1])} after {_label(times[i])}" for i in back[:LISTED]]
        more = f" and {len(back) - LISTED} more" if len(back) > LISTED else ""
        problems.append(f"time is not increasing (non-monotonic) at {len(back)} place(s): {', '.join(pairs)}{more}")
    return problems


def _time_gap_problems(ds: xr.Dataset) -> list[str]:
    """Irregular time steps (a gap where files, or fields, are missing): every step must be the usual one, or, for
    datetimes, the same number of calendar months (monthly or yearly data) at the same day and time of day."""
    if TIME_DIM not in ds.dims or ds.sizes[TIME_DIM] < 3:
        return []
    values = ds[TIME_DIM].values
    steps = np.diff(values)
    if np.issubdtype(steps.dtype, np.floating):  # solver times: 0.1 * n differ from 0.1 in the last bits
        steps = steps[0] * np.round(steps / steps[0], 6) if steps[0] != 0 else steps
    if np.all(steps == steps[0]):
        return []
    if np.issubdtype(values.dtype, np.datetime64):
        times = pd.DatetimeIndex(values)
        months = np.diff(times.year * 12 + times.month)
        offsets = times - times.normalize()
        if (times.day == times.day[0]).all() and (offsets == offsets[0]).all() and months[0] > 0 \
                and np.all(months == months[0]):
            return []
    kinds, counts = np.unique(steps, return_counts=True)
    usual = kinds[np.argmax(counts)]  # the most common step (the smallest of equally common ones)
    odd = np.flatnonzero(steps != usual)
    pairs = [f"{_label(values[i])} to {_label(values[i + 1])} ({_step(steps[i])})" for i in odd[:LISTED]]
    more = f" and {len(odd) - LISTED} more" if len(odd) > LISTED else ""
    return [f"time steps are irregular: every {_step(usual)} but at {len(odd)} place(s), a gap or an uneven step: "
            f"{', '.join(pairs)}{more}; ingest each regular run of files separately"]


def _step(step) -> str:
    """A time step as hours (``6h``), anything else as a number (solver time units)."""
    if isinstance(step, np.timedelta64):
        hours = pd.Timedelta(step) / pd.Timedelta("1h")
        return f"{hours:g}h" if float(hours).is_integer() else str(pd.Timedelta(step))
    return _number(step)


def _grid_problems(ds: xr.Dataset, entry: DatasetEntry) -> list[str]:
    grid = entry.grid
    if grid.latitude is None:
        return [f"{name} has size {ds.sizes.get(name)}; entry expects {want}"
                for name, want in ((Y_DIM, grid.y), (X_DIM, grid.x)) if ds.sizes.get(name) != want]
    problems = []
    for name, axis in ((LATITUDE_DIM, grid.latitude), (LONGITUDE_DIM, grid.longitude)):
        want = f"{axis.size} points from {axis.start:g} to {axis.stop:g}"
        if name not in ds.dims:
            problems.append(f"no {name} dim; entry expects {want}")
            continue
        found = ds[name].values
        if found.size != axis.size:
            problems.append(f"{name} grid mismatch: {found.size} points {_span(found)}; entry expects {want}")
            continue
        error = np.abs(found - axis.values())
        if error.max() > GRID_TOLERANCE_DEG:
            i = int(np.argmax(error))
            problems.append(
                f"{name} grid mismatch: values {_span(found)} differ from the entry's {want} by up to "
                f"{error.max():g} degrees (index {i}: {found[i]:g}, expected {axis.values()[i]:g})"
            )
    return problems


def _nan_problems(ds: xr.Dataset, progress: bool) -> list[str]:
    spatial = [d for d in (LATITUDE_DIM, LONGITUDE_DIM, Y_DIM, X_DIM) if d in ds.dims]
    names = [name for name, var in ds.data_vars.items() if spatial and set(spatial) <= set(var.dims)]
    flags = [ds[name].isnull().all(dim=spatial) for name in names]
    if progress and flags:
        from dask.diagnostics import ProgressBar

        with ProgressBar(dt=0.5):
            flags = dask.compute(*flags)
    else:
        flags = dask.compute(*flags)
    problems = []
    for name, flag in zip(names, flags):
        hits = np.argwhere(np.asarray(flag.values))
        labels = []
        for index in hits[:LISTED]:
            parts = [f"{dim} {_label(flag[dim].values[i]) if dim in flag.coords else i}"
                     for dim, i in zip(flag.dims, index)]
            labels.append(", ".join(parts) or "everywhere")
        if len(hits):
            more = f" and {len(hits) - LISTED} more" if len(hits) > LISTED else ""
            problems.append(f"variable {name!r} is all NaN at {len(hits)} field(s): {'; '.join(labels)}{more}")
    return problems


def _label(value) -> str:
    """A time as YYYY-MM-DDTHH:MM, anything else as a number (solver time units, members, levels)."""
    if isinstance(value, (np.datetime64, pd.Timestamp)):
        return _stamp(value)
    return _number(value)


def _stamp(t) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M")


def _stamps(times: pd.Index) -> str:
    shown = ", ".join(_label(t) for t in times[:LISTED])
    return shown + (f" and {len(times) - LISTED} more" if len(times) > LISTED else "")


def _number(v) -> str:
    return f"{float(v):g}" if np.issubdtype(np.asarray(v).dtype, np.number) else str(v)


def _numbers(values) -> str:
    return "[" + ", ".join(_number(v) for v in np.asarray(values)) + "]"


def _span(values: np.ndarray) -> str:
    values = np.asarray(values)
    if values.size == 0:
        return "(empty)"
    return f"from {_number(values[0])} to {_number(values[-1])}"
