"""Zarr v3 stores: atomic writes, provenance attributes and lazy opening by path or URL.

Every store earthsim writes goes to a temporary name beside its final one and is renamed only
when complete, so an interrupted or failed write never leaves a partial store under the final
name. Stores record who made them, from what and how in the ``provenance`` attribute.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import xarray as xr

from earthsim import __version__
from earthsim.errors import EarthsimError

PROVENANCE_ATTR = "provenance"


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
    as it was.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise EarthsimError(f"{final} already exists; remove it or pass overwrite")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not tmp.exists():
            raise EarthsimError(f"nothing was written for {final}")
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


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
            enc = {k: v for k, v in (encoding or {}).items() if k in ds.variables}
            delayed = ds.to_zarr(
                tmp, group=group or None, mode="a" if tmp.exists() else "w-", zarr_format=3,
                encoding=enc or None, consolidated=False, compute=False,
            )
            _compute(delayed, progress)
    return Path(path)


def _compute(delayed, progress: bool) -> None:
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(dt=0.5):
            delayed.compute()
    else:
        delayed.compute()


def open_zarr(path: str | os.PathLike, group: str | None = None, dask: bool = True) -> xr.Dataset:
    """Open a Zarr store lazily from a local path or an fsspec URL: dask-backed, or (``dask=False``) as lazily
    indexed arrays that read just the region selected, into one array, when their values are asked for."""
    if not is_url(path) and not Path(path).exists():
        raise EarthsimError(f"no Zarr store at {path}")
    return xr.open_zarr(str(path), group=group, consolidated=False, chunks={} if dask else None)
