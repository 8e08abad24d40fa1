"""Forecast stores: the WeatherBench 2 layout, written block by block and resumable.

Layout (docs/architecture.md, "Data conventions"): every variable keeps the data's name, units and float32, with dims
``[sequence dims,] time, prediction_timedelta, [realization,] [level,] <grid>``: ``time`` is the
initialisation (the valid time of the last input frame, datetime64 for weather, solver time for
fluids), ``prediction_timedelta`` the lead (timedelta64 for weather; float with a ``units``
attribute for fluids), ``realization`` the ensemble member (forecast ensembles, or a weather
dataset's own members), and the sequence dims (a fluid's ``trajectory``) come first.

Resume (:class:`earthsim.data.store.PartialStore`): the store is made up front under ``OUT.partial``
(its provenance records the request: checkpoint, dataset, split, steps, initial times, members,
seed, block size), with a ``done_blocks`` array of one flag per block of initial times, each flag
its own chunk. A block's forecast is written into its region, then its flag is set; a run started
again on the same request computes only the blocks whose flag is unset, and a different request is
refused rather than mixed in. When every block is done the flags are dropped and ``OUT.partial``
is renamed to ``OUT``, so nothing ever appears under the final name before it is complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from tqdm.auto import tqdm

from earthsim.data.store import PartialStore, provenance
from earthsim.data.conventions import LEAD_DIM, LEVEL_DIM, MEMBER_DIM, TIME_DIM
from earthsim.errors import EarthsimError
from earthsim.forecast.inputs import Block, InitialConditions

DONE = "done_blocks"


def forecast_template(ic: InitialConditions, members: int | None, block: Block, attrs: dict[str, Any],
                      variables: list[str] | None = None) -> xr.Dataset:
    """The forecast store's empty Dataset (lazy zeros) for ``ic``'s initial times and leads, chunked as ``block``,
    holding ``variables`` (default: all of ``ic``'s).

    ``members`` adds a ``realization`` dim of that size (forecast ensembles); a dataset with its
    own ``realization`` dim keeps it instead, and then ``members`` must be None.
    """
    sequence_coords = ic.sequence_coords()
    if MEMBER_DIM in sequence_coords and members is not None:
        raise EarthsimError(f"dataset {ic.entry.name!r} already has ensemble members (dim {MEMBER_DIM!r}); "
                            "a perturbed ensemble of it is not supported: use members=1")
    time = ic.init_times()
    lead = ic.lead_time * np.arange(1, ic.steps + 1)
    if np.issubdtype(time.dtype, np.datetime64):
        lead_values = pd.to_timedelta(lead, unit="h").values
        lead_attrs = {"long_name": "lead time (valid time - initialisation time)"}
    else:
        lead_values = lead
        lead_attrs = {"units": ic.entry.time.units, "long_name": "lead time (valid time - initialisation time)"}
    coords: dict[str, Any] = {**sequence_coords, TIME_DIM: time,
                              LEAD_DIM: xr.Variable(LEAD_DIM, lead_values, lead_attrs)}
    if members is not None:
        coords[MEMBER_DIM] = xr.Variable(MEMBER_DIM, np.arange(members), {"long_name": "ensemble member"})
    if ic.levels:
        coords[LEVEL_DIM] = ic.ds[LEVEL_DIM].variable
    for dim in ic.entry.grid.dims:
        coords[dim] = ic.ds[dim].variable
    has_member = MEMBER_DIM in coords
    front = [d for d in ic.sequence_dims if d != MEMBER_DIM]
    sizes = {d: len(np.atleast_1d(coords[d].values)) for d in coords}
    data_vars = {}
    for name in (ic.variables if variables is None else variables):
        dims = (*front, TIME_DIM, LEAD_DIM, *((MEMBER_DIM,) if has_member else ()),
                *((LEVEL_DIM,) if name in ic.levels else ()), *ic.entry.grid.dims)
        block_chunks = {**{d: s.stop - s.start for d, s in zip(ic.sequence_dims, block.sequences)},
                        TIME_DIM: block.inits.stop - block.inits.start}
        chunks = tuple(block_chunks.get(d, sizes[d]) for d in dims)
        source = ic.ds[name].attrs
        known = ic.entry.variables[name]
        var_attrs = {"units": source.get("units", known.units), "long_name": source.get("long_name", known.long_name)}
        data_vars[name] = xr.Variable(dims, da.zeros(tuple(sizes[d] for d in dims), chunks=chunks, dtype=np.float32),
                                      var_attrs)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


class ForecastStore(PartialStore):
    """A forecast store being written at ``OUT.partial``, one region per block of initial times: created from
    ``template`` or reopened to resume (:class:`~earthsim.data.store.PartialStore`).

    ``record`` is the provenance record; its ``config`` (the request) must match the partial
    store's for a resume, unless ``overwrite``, which starts a partial store of another request afresh.
    """

    def __init__(self, out: str | os.PathLike, template: xr.Dataset, blocks: list[Block], ic: InitialConditions,
                 record: dict, overwrite: bool = False, keep: bool = False):
        self.blocks, self.ic = blocks, ic
        self.member_dim = MEMBER_DIM in template.dims
        self.dims = {name: template[name].dims for name in template.data_vars}
        super().__init__(out, template, len(blocks), record, overwrite=overwrite, keep=keep, done=DONE,
                         done_dim="block", what="forecast")
        self._arrays = {} if self.kept else {
            name: zarr.open_array(store=str(self.partial), path=name, mode="r+",
                                  config={"write_empty_chunks": True})  # a missing chunk means damage
            for name in self.dims}

    def pending_blocks(self) -> list[Block]:
        """Blocks not yet written."""
        return [self.blocks[i] for i in self.pending()]

    def write(self, block: Block, values: np.ndarray) -> None:
        """Write ``values`` ``[samples, steps, members, C, H, W]`` (physical units, samples in the block's
        order) into the block's region, then mark it done. ``members`` is 1 unless the store has a
        ``realization`` dim of forecast members."""
        counts = [s.stop - s.start for s in block.sequences]
        values = values.reshape(*counts, block.inits.stop - block.inits.start, *values.shape[1:])
        sequence_dims = tuple(self.ic.sequence_dims)
        model_members = self.member_dim and MEMBER_DIM not in sequence_dims
        region = {TIME_DIM: block.inits, **dict(zip(sequence_dims, block.sequences))}
        channel = 0
        for name in self.dims:
            count = len(self.ic.levels.get(name, [None]))
            part = values[..., channel:channel + count, :, :]
            channel += count
            if name not in self.ic.levels:
                part = part[..., 0, :, :]
            if not model_members:
                part = part[..., 0, :, :, :] if name in self.ic.levels else part[..., 0, :, :]
            dims = (*sequence_dims, TIME_DIM, LEAD_DIM, *((MEMBER_DIM,) if model_members else ()),
                    *((LEVEL_DIM,) if name in self.ic.levels else ()), *self.ic.entry.grid.dims)
            part = xr.DataArray(np.asarray(part, dtype=np.float32), dims=dims).transpose(*self.dims[name]).values
            # zarr directly: an xarray region write re-reads the store's metadata on every call
            self._arrays[name][tuple(region.get(d, slice(None)) for d in self.dims[name])] = part
        self.mark(block.index)


def write_forecast(ic: InitialConditions, out: str | os.PathLike, compute: Callable[[Block], np.ndarray], *,
                   producer: str, request: dict, attrs: dict, inputs: list[str], members: int | None = None,
                   block_size: int = 16, progress: bool = True, overwrite: bool = False, keep: bool = False,
                   description: str = "forecast", variables: list[str] | None = None) -> Path:
    """Compute every block not yet written with ``compute(block) -> [inits, steps, members, C, H, W]`` and
    write it, then rename ``OUT.partial`` to ``OUT``; the common driver of model runs and baselines. ``keep``: a
    complete ``OUT`` of the same request, made from inputs unchanged since, is kept as it is."""
    blocks = ic.blocks(block_size)
    template = forecast_template(ic, members, blocks[0], attrs, variables)
    record = provenance(producer, inputs, {**request, "block_size": int(block_size)})
    store = ForecastStore(out, template, blocks, ic, record, overwrite=overwrite, keep=keep)
    pending = store.pending_blocks()
    with tqdm(total=len(blocks), initial=len(blocks) - len(pending), unit="block", desc=description,
              disable=not progress) as bar:
        for block in pending:
            store.write(block, compute(block))
            bar.update(1)
    return store.finish()
