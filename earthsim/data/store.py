"""Zarr v3 stores: atomic writes, provenance and completion records, chunk checks and lazy opening by path or URL.

Every store earthsim writes goes to a temporary name beside its final one and is renamed only
when complete, so an interrupted or failed write never leaves a partial store under the final
name; a temporary left by a killed run is removed by the next write of the same target. Stores
record who made them, from what and how in the ``provenance`` attribute, and, as the last write
before the rename, that they are complete (:data:`COMPLETE_ATTR`). Every chunk is written, even one
that equals the fill value, so that a missing chunk file always means damage (:func:`chunk_status`).

Long writes go region by region through :class:`PartialStore`: the whole store is laid out first
from a template under ``OUT.partial``, each region is written and then flagged done, and a run
started again on the same request writes only the regions not yet flagged, so a killed job resumes
where it stopped; regions may be written by different processes (dask workers) at once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import json
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

from earthsim import __version__
from earthsim.data.cluster import compute
from earthsim.errors import EarthsimError

PROVENANCE_ATTR = "provenance"
COMPLETE_ATTR = "earthsim_complete"  # set in the root group's attributes once every array is written
_TEMPORARY = re.compile(r"\.tmp-(\d+)-[0-9a-f]+$")


def provenance(producer: str, inputs: list[str] | None = None, config: Mapping[str, Any] | None = None) -> dict:
    """The provenance record stored in a store's attributes (JSON-serialisable)."""
    return {
        "producer": producer,
        "earthsim_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [str(i) for i in (inputs or [])],
        "config": _jsonable(dict(config or {})),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    On any exception (or KeyboardInterrupt) the temporary output is removed and ``final`` is left
    as it was. A folder that cannot be written is refused before anything is done, naming it, and
    an error writing into the temporary names ``final``. Temporaries of ``final`` whose process has
    died (a run killed part-way) are removed first, with a line saying so.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise EarthsimError(f"{final} already exists; remove it or pass overwrite")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EarthsimError(f"{final}: cannot create its folder {final.parent}: {error.strerror}") from None
    if not os.access(final.parent, os.W_OK | os.X_OK):
        raise EarthsimError(f"{final}: its folder {final.parent} is not writable")
    remove_stale_temporaries(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not tmp.exists():
            raise EarthsimError(f"nothing was written for {final}")
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    except OSError as error:
        _remove(tmp)
        if str(error.filename or "").startswith(str(tmp)) or str(error.filename or "") == str(final):
            raise EarthsimError(f"{final}: writing failed: {error.strerror or error}") from None
        raise
    except BaseException:
        _remove(tmp)
        raise


def remove_stale_temporaries(final: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``final`` left by processes that no longer run; return them. One whose process
    still runs (another run writing the same target, or a process that now holds that number) is kept and named."""
    final = Path(final)
    removed = []
    for candidate in final.parent.glob(f"{final.name}.tmp-*"):
        match = _TEMPORARY.search(candidate.name)
        if match is None:
            continue
        if _alive(int(match.group(1))):
            if int(match.group(1)) != os.getpid():
                print(f"kept {candidate}: process {match.group(1)} is still running (another write of {final}?); "
                      "remove it yourself if no such run is", file=sys.stderr)
            continue
        _remove(candidate)
        removed.append(candidate)
        print(f"removed {candidate}, left by an interrupted run (process {match.group(1)})", file=sys.stderr)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_zarr(
    groups: xr.Dataset | Mapping[str, xr.Dataset],
    path: str | os.PathLike,
    *,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write one Dataset (or several, one per Zarr group) to a Zarr v3 store, atomically.

    Dask-backed datasets are computed chunk by chunk with dask's progress bar.
    """
    if isinstance(groups, xr.Dataset):
        groups = {"": groups}
    with atomic_output(path, overwrite=overwrite) as tmp:
        for group, ds in groups.items():
            ds = without_storage_encoding(ds)
            enc = {k: v for k, v in (encoding or {}).items() if k in ds.variables}
            delayed = ds.to_zarr(
                tmp, group=group or None, mode="a" if tmp.exists() else "w-", zarr_format=3,
                encoding=enc or None, consolidated=False, compute=False, write_empty_chunks=True,
            )
            compute(delayed, progress=progress)
        mark_complete(tmp)
    return Path(path)


PARTIAL_SUFFIX = ".partial"
INPUTS_ATTR = "input_versions"  # in the provenance of a store written by regions: its inputs' versions


def input_versions(inputs: list[str]) -> list:
    """What identifies the current version of each input, so that a resume never mixes regions made from two:
    a file's size and modification time; a store's completion record and provenance time (local paths; a URL
    or a missing path: None)."""
    versions = []
    for name in inputs:
        path = Path(name)
        if is_url(name) or not path.exists():
            versions.append(None)
        elif path.is_file():
            versions.append([path.stat().st_size, path.stat().st_mtime_ns])
        else:
            try:
                attrs = zarr.open_group(str(path), mode="r").attrs
                versions.append([attrs.get(COMPLETE_ATTR), (attrs.get(PROVENANCE_ATTR) or {}).get("created")])
            except Exception:  # a folder that is not a store: its modification time
                versions.append([path.stat().st_mtime_ns])
    return versions


class PartialStore:
    """A store being written region by region at ``OUT.partial``: laid out from ``templates`` or reopened to resume.

    ``templates``: one Dataset, or one per Zarr group (lazy arrays: only metadata and coordinates
    are written up front), with ``encoding`` per group. ``regions``: how many regions the writer
    will write (:func:`write_region`); each has one flag in the array ``done`` (dim ``done_dim``,
    one chunk per flag, NaN until written), holding the number its writer reported. ``record`` is
    the provenance record; its ``config`` (the request) must equal the partial store's for a resume,
    unless ``overwrite``, which starts a partial store of another request afresh. An existing ``OUT``
    is refused unless ``overwrite``; with ``keep``, one that is complete, of the same request and made
    from inputs unchanged since is :attr:`kept` as it is (nothing pending: a batch run started again).
    """

    def __init__(self, out: str | os.PathLike, templates: xr.Dataset | Mapping[str, xr.Dataset], regions: int,
                 record: dict, *, encoding: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
                 overwrite: bool = False, keep: bool = False, done: str = "done_regions", done_dim: str = "region",
                 what: str = "write"):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + PARTIAL_SUFFIX)
        self.regions, self.done, self.what = regions, done, what
        self.kept = False
        if self.out.exists() and keep:
            differences = (request_differences(_stored_request(self.out), _wanted_request(record))
                           if is_complete(self.out) else ["not complete"])
            if not differences:
                self.kept = self.complete = True
                return
            if not overwrite:
                raise EarthsimError(f"{self.out} holds a {self.what} of another request or of changed inputs "
                                    f"(differing: {', '.join(differences)}); remove it or pass overwrite")
        if self.out.exists() and not overwrite:
            raise EarthsimError(f"{self.out} already exists; remove it or pass overwrite")
        if self.partial.exists() and not self._resumable(record, overwrite):
            shutil.rmtree(self.partial)
        if not self.partial.exists():
            groups = {"": templates} if isinstance(templates, xr.Dataset) else dict(templates)
            self._create(groups, dict(encoding or {}), record, done_dim)
        # Flags are dropped only once every region is written: a partial store without them was
        # killed between dropping them and the rename, and only the rename is left to do.
        self.complete = not (self.partial / done).exists()
        self._flags = None if self.complete else zarr.open_array(store=str(self.partial), path=done, mode="r+")

    def _create(self, groups: dict[str, xr.Dataset], encoding: dict, record: dict, done_dim: str) -> None:
        with atomic_output(self.partial) as tmp:  # every chunk written, even a coordinate equal to the fill value
            for group, template in groups.items():
                template = without_storage_encoding(template)  # coordinates taken from a Zarr v2 store
                if not group:
                    template.attrs[PROVENANCE_ATTR] = {**record, INPUTS_ATTR: input_versions(record.get("inputs") or [])}
                    template[self.done] = xr.Variable(
                        done_dim, da.full(self.regions, np.nan, chunks=1, dtype=np.float64),
                        {"long_name": "resume state: NaN until the region is written, then the value its writer "
                                      "reported"})
                enc = {name: {"chunks": var.data.chunksize, **encoding.get(group, {}).get(name, {})}
                       for name, var in template.data_vars.items() if hasattr(var.data, "chunksize")}
                template.to_zarr(tmp, group=group or None, mode="a" if tmp.exists() else "w-", zarr_format=3,
                                 consolidated=False, compute=False, encoding=enc, write_empty_chunks=True)
            if "" not in groups:
                xr.Dataset({self.done: xr.Variable(done_dim, da.full(self.regions, np.nan, chunks=1))}).to_zarr(
                    tmp, mode="a", zarr_format=3, consolidated=False, compute=False, write_empty_chunks=True)
                zarr.open_group(str(tmp), mode="r+").attrs[PROVENANCE_ATTR] = _jsonable(
                    {**record, INPUTS_ATTR: input_versions(record.get("inputs") or [])})

    def _resumable(self, record: dict, overwrite: bool) -> bool:
        """Whether the partial store is of this request; if not, an error unless ``overwrite``."""
        try:
            stored = _stored_request(self.partial)
        except Exception:  # laid out only in part (killed while creating it): start afresh
            return False
        if (self.partial / self.done).exists() and \
                zarr.open_array(store=str(self.partial), path=self.done, mode="r").dtype != np.float64:
            return False  # flags of an older layout (int8, 0 = not written): start afresh rather than misread them
        wanted = _wanted_request(record)
        if stored == wanted or overwrite:
            return stored == wanted
        raise EarthsimError(
            f"{self.partial} holds an interrupted {self.what} of another request (differing: "
            f"{', '.join(request_differences(stored, wanted))}); "
            "run again with the same arguments to resume it, or remove it (or pass overwrite) to start afresh")

    def flags(self) -> np.ndarray:
        """Each region's flag: NaN until written, then the value its writer reported. A store found
        :attr:`complete` (killed between dropping its flags and the rename) has none left: check ``complete``
        before reading reported values."""
        if self.complete:
            raise EarthsimError(f"{self.partial} is complete; its region flags were dropped")
        return self._flags[:]

    def pending(self) -> list[int]:
        """Indices of the regions not yet written."""
        return [] if self.complete else [int(i) for i in np.flatnonzero(np.isnan(self.flags()))]

    def mark(self, index: int, value: float = 1.0) -> None:
        """Flag region ``index`` written, with ``value`` (never NaN)."""
        mark_region(self.partial, index, value, self.done)

    def finish(self, attrs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
        """Set ``attrs`` ({group: attributes}), drop the flags and rename the complete store to its final name."""
        if self.kept:
            return self.out
        missing = self.pending()
        if missing:
            raise EarthsimError(f"{self.partial}: regions {missing[:10]} are not written; cannot finish")
        if not self.complete:
            for group, values in (attrs or {}).items():
                zarr.open_group(str(self.partial), path=group or None, mode="r+").attrs.update(_jsonable(values))
            mark_complete(self.partial)  # before the flags go: a run killed in between still finds every flag set
            shutil.rmtree(self.partial / self.done)
        if self.out.exists():
            _remove(self.out)
        os.replace(self.partial, self.out)
        return self.out


def _stored_request(path: Path) -> dict:
    """The request a store (or partial store) at ``path`` was made for: its inputs, their versions then, its config."""
    stored = zarr.open_group(str(path), mode="r").attrs.get(PROVENANCE_ATTR, {})
    return {"inputs": stored.get("inputs"), "input_versions": stored.get(INPUTS_ATTR), **(stored.get("config") or {})}


def _wanted_request(record: dict) -> dict:
    """The request of provenance ``record`` made now, in the form :func:`_stored_request` reads back."""
    return json.loads(json.dumps(_jsonable({"inputs": record.get("inputs"),
                                            "input_versions": input_versions(record.get("inputs") or []),
                                            **record["config"]})))


def mark_region(partial: str | os.PathLike, index: int, value: float = 1.0, done: str = "done_regions") -> None:
    """Flag region ``index`` of the partial store written, holding ``value``."""
    value = float(value)
    if not np.isfinite(value):
        raise EarthsimError(f"{partial}: region {index} reported {value}; a written region's value must be finite")
    zarr.open_array(store=str(partial), path=done, mode="r+")[index] = value


def write_region(partial: str | os.PathLike, index: int, parts: Mapping[str, xr.Dataset],
                 region: Mapping[str, slice], value: float = 1.0) -> int:
    """Write ``parts`` ({group: Dataset of the region's values}) into ``region`` of the partial store, then flag
    region ``index`` done with ``value``; returns ``index``. Safe in another process (a dask worker)."""
    for group, part in parts.items():
        part.drop_vars(list(part.coords)).to_zarr(  # coordinates were written with the template
            str(partial), group=group or None, region=dict(region) or None, mode=None if region else "r+",
            zarr_format=3, consolidated=False, write_empty_chunks=True)
    mark_region(partial, index, value)
    return index


def write_regions(template: xr.Dataset, out: str | os.PathLike, record: dict,
                  regions: Sequence[tuple[Sequence[str], Mapping[str, slice]]], *, group: str = "",
                  encoding: Mapping[str, Mapping[str, Any]] | None = None, reports: Sequence[Any] | None = None,
                  progress: bool = True, overwrite: bool = False, what: str = "write") -> PartialStore:
    """Lay out the lazy ``template`` at ``OUT.partial`` and write each region — some of its variables, over a
    selection (``{}``: whole) that must cover whole chunks — as its own task, on the active dask cluster if
    there is one; returns the :class:`PartialStore` for the caller to check and ``finish``.

    A run started again with the same ``record`` (provenance: inputs and config) writes only the
    regions not yet written. ``reports[i]``, a lazy number computed with region ``i`` (e.g. a count of
    NaN), becomes its flag (:meth:`PartialStore.flags`; 1 when not given).
    """
    partial = PartialStore(out, {group: template}, len(regions), record, encoding={group: dict(encoding or {})},
                           overwrite=overwrite, what=what)
    tasks = [dask.delayed(write_region)(partial.partial, i, {group: template[list(regions[i][0])].isel(regions[i][1])},
                                        regions[i][1], 1.0 if reports is None else reports[i])
             for i in partial.pending()]
    if tasks:
        compute(*tasks, progress=progress)
    return partial


def write_by_regions(ds: xr.Dataset, out: str | os.PathLike, record: dict, *, along: str | None, step: int,
                     group: str = "", encoding: Mapping[str, Mapping[str, Any]] | None = None,
                     report: Callable[[xr.Dataset], Any] | None = None, progress: bool = True,
                     overwrite: bool = False, what: str = "write") -> PartialStore:
    """:func:`write_regions` of the lazy ``ds`` in blocks of ``step`` entries along ``along`` (the variables without
    that dim, or all of them when ``along`` is None, in one more region); ``report(part)`` is each region's
    report."""
    if along and step < 1:
        raise EarthsimError(f"{out}: regions need at least one entry along {along!r}, got {step}")
    misaligned = sorted(name for name, values in (encoding or {}).items()
                        if along in ds[name].dims and values.get("chunks", (step,))[ds[name].dims.index(along)] != step)
    if misaligned:  # two regions in one chunk, written by two processes, would corrupt it
        raise EarthsimError(f"{out}: variables {misaligned} are chunked along {along!r} otherwise than the regions "
                            f"of {step}")
    size = ds.sizes[along] if along else 0
    whole = [name for name, var in ds.data_vars.items() if along not in var.dims]
    along_variables = [name for name in ds.data_vars if name not in whole]
    regions = [(along_variables, {along: slice(start, min(start + step, size))}) for start in range(0, size, step)]
    regions += [(whole, {})] if whole else []
    template = ds.chunk({along: step}) if along else ds
    reports = None if report is None else [report(template[variables].isel(selection))
                                           for variables, selection in regions]
    return write_regions(template, out, record, regions, group=group, encoding=encoding, reports=reports,
                         progress=progress, overwrite=overwrite, what=what)


def request_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key: value there, value now`` for every key whose value differs between a stored request and the one
    made now (a key missing on one side reads None)."""
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    return [f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} now" for k in keys]


def without_storage_encoding(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without the storage encoding its variables carry from the store they were read from (a Zarr v2
    store's numcodecs compressor, its chunks), which a Zarr v3 write cannot take; CF encodings stay."""
    kept = ("units", "calendar", "dtype", "_FillValue")
    ds = ds.copy()
    for variable in ds.variables.values():
        variable.encoding = {k: v for k, v in variable.encoding.items() if k in kept}
    return ds


def mark_complete(path: str | os.PathLike) -> None:
    """Record in the store's root attributes that every array is written: the last write before the rename."""
    root = zarr.open_group(str(path), mode="r+")
    root.attrs[COMPLETE_ATTR] = f"every array written (earthsim {__version__})"


def is_complete(path: str | os.PathLike) -> bool:
    """Whether the store records that it was written whole."""
    try:
        return COMPLETE_ATTR in zarr.open_group(str(path), mode="r").attrs
    except Exception:  # not a store, or an unreadable one: not complete
        return False


def open_zarr(path: str | os.PathLike, group: str | None = None, dask: bool = True) -> xr.Dataset:
    """Open a Zarr store lazily from a local path or an fsspec URL: dask-backed, or (``dask=False``) as lazily
    indexed arrays that read just the region selected, into one array, when their values are asked for.

    Data variables come in name order: Zarr lists an unconsolidated store's arrays in the order its directory
    listing and concurrent metadata reads return them, which differs between file systems and runs, and scorecards
    and reports must not."""
    if not is_url(path) and not Path(path).exists():
        raise EarthsimError(f"no Zarr store at {path}")
    try:
        ds = xr.open_zarr(str(path), group=group, consolidated=False, chunks={} if dask else None)
        return ds[sorted(ds.data_vars)].assign_coords(ds.coords)  # coordinates no data variable uses stay too
    except Exception as error:  # zarr and xarray raise many types for what is not a readable store
        where = f"{path}" + (f" (group {group!r})" if group else "")
        raise EarthsimError(f"{where}: not a readable Zarr store ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class ChunkStatus:
    """The chunks of one array: how many its shape and chunking make, and which are absent from the store."""

    array: str
    expected: int
    missing: tuple[tuple[int, ...], ...]  # chunk grid coordinates

    @property
    def present(self) -> int:
        return self.expected - len(self.missing)


def stored_chunks(array) -> tuple[int, ...]:
    """The shape of the objects an array's data is stored in, one file (or key) each: its shards when it is a
    sharded Zarr v3 array (the inner chunks live inside them), else its chunks."""
    return tuple(getattr(array, "shards", None) or array.chunks)


def stored_chunk_grid(array) -> list[tuple[int, ...]]:
    """The grid coordinates of every stored object of an array (:func:`stored_chunks`), in C order."""
    if not array.shape:
        return [()]
    grid = [range(-(-size // chunk)) for size, chunk in zip(array.shape, stored_chunks(array))]
    return list(itertools.product(*grid))


def stored_chunk_region(array, coords: tuple[int, ...]) -> tuple[slice, ...]:
    """The region of the array that the stored object at grid coordinates ``coords`` holds."""
    return tuple(slice(c * chunk, min((c + 1) * chunk, size))
                 for c, chunk, size in zip(coords, stored_chunks(array), array.shape))


def array_dims(array) -> tuple[str, ...]:
    """An array's dimension names: Zarr v3's ``dimension_names``, or Zarr v2's ``_ARRAY_DIMENSIONS`` attribute
    (where xarray keeps them); empty when it has none."""
    names = getattr(array.metadata, "dimension_names", None)
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(str(n) for n in names or ())


#: Files of a node's metadata, never chunks: Zarr v3's ``zarr.json`` and Zarr v2's dotfiles.
METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})


def _is_chunk_key(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name not in METADATA_FILES and not name.startswith(".")


def chunk_status(path: str | os.PathLike, group: str | None = None,
                 names: list[str] | None = None) -> dict[str, ChunkStatus]:
    """Every stored chunk (shard, for a sharded array) of the store's arrays (or of ``names``), present or missing;
    local stores by listing their files, URLs through zarr's store listing. Zarr v2 and v3."""
    root = zarr.open_group(str(path), mode="r", path=group or "")
    out = {}
    for name, array in root.arrays():
        if names is not None and name not in names:
            continue
        coords = stored_chunk_grid(array)
        present = _chunk_keys(path, group, name, array)
        missing = tuple(c for c in coords if array.metadata.encode_chunk_key(c) not in present)
        out[name] = ChunkStatus(name, len(coords), missing)
    return out


def _chunk_keys(path, group: str | None, name: str, array) -> set[str]:
    """The chunk keys (relative to the array) present in the store: every key below it but its metadata."""
    prefix = "/".join(p for p in (group, name) if p)
    if not is_url(path):
        folder = Path(path) / prefix
        return {f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file() and _is_chunk_key(f.name)}
    store = array.store
    from zarr.core.sync import sync

    async def listing():
        return {key[len(prefix) + 1:] async for key in store.list_prefix(prefix + "/") if _is_chunk_key(key)}

    return sync(listing())
