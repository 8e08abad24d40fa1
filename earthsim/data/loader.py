"""DataLoaders over window datasets: disjoint shards per rank, worker processes that never fork dask.

Worker processes start through ``forkserver`` (``spawn`` where there is none), never ``fork``: a
parent that has run dask's threaded scheduler (or any thread pool) and then forks can hang its
children on a lock held by a thread that did not survive the fork, and tensorstore aborts a forked
child outright once the parent has read through it.
"""

from __future__ import annotations

import multiprocessing
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from earthsim.errors import EarthsimError


class ShardSampler(Sampler[int]):
    """The indices of one rank: a permutation shared by all ranks (seeded by seed and epoch), dealt
    round-robin, so the shards of ``world_size`` ranks are disjoint and together cover the dataset.

    With ``drop_last`` the permutation is cut to a multiple of ``world_size`` so that every rank
    gets the same number of samples (what synchronous multi-rank training needs); without it the
    shards differ in length by at most one. ``start`` skips that many of this rank's first indices
    (to resume an epoch part-way). Call ``set_epoch`` before each epoch to reshuffle.
    """

    def __init__(
        self, size: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0,
        drop_last: bool = False, epoch: int = 0, start: int = 0,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise EarthsimError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
        if start < 0:
            raise EarthsimError(f"start must be ≥ 0, got {start}")
        self.size, self.rank, self.world_size = size, rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch, self.start = epoch, start

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.drop_last:
            order = order[: self.size - self.size % self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        full = self.size - self.size % self.world_size if self.drop_last else self.size
        shard = full // self.world_size + (1 if self.rank < full % self.world_size else 0)
        return max(shard - self.start, 0)


def _rows_of_one_buffer(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The buffer whose rows 0, 1, … are exactly ``tensors`` (as ``WindowDataset.__getitems__`` makes them), else None."""
    base = tensors[0]._base
    if base is None or base.shape[0] != len(tensors) or not base.is_contiguous():
        return None
    for row, tensor in enumerate(tensors):
        if tensor._base is not base or tensor.storage_offset() != row * tensor.numel() or tensor.shape != base.shape[1:]:
            return None
    return base


def collate_windows(samples: list[dict]) -> dict:
    """Stack samples into a batch; ``static`` is the same for every sample and stays ``[C_s, H, W]``.

    Samples that are already the rows of one batch buffer are passed on as that buffer, uncopied.
    """
    batch = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        if key == "static":
            batch[key] = values[0].clone()
        else:
            buffer = _rows_of_one_buffer(values) if isinstance(values[0], torch.Tensor) else None
            batch[key] = buffer if buffer is not None else default_collate(values)
    return batch


def worker_context() -> str:
    """``forkserver`` where the platform has it, else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over rank ``rank``'s shard of ``dataset``, starting at epoch 0.

    Batches follow the sample contract (``x`` ``[B, T_in, C, H, W]``, ``y``, ``lead_time`` ``[B]``,
    ``static`` ``[C_s, H, W]``). The same seed, epoch and world size give the same batches whatever
    ``num_workers``. Workers are persistent and memory is pinned when CUDA is available. Choose the
    epoch (and resume part-way) with :func:`set_epoch`. A :class:`~earthsim.data.sources.SourceWindows`
    dataset is batched one source per batch (:class:`~earthsim.data.sources.SourceBatchSampler`).
    """
    from earthsim.data.sources import SourceBatchSampler, SourceWindows

    if batch_size < 1:
        raise EarthsimError(f"batch_size must be ≥ 1, got {batch_size}")
    if num_workers < 0:
        raise EarthsimError(f"num_workers must be ≥ 0, got {num_workers}")
    workers = {}
    if num_workers > 0:
        workers = dict(multiprocessing_context=worker_context(), persistent_workers=True, prefetch_factor=2)
    common = dict(num_workers=num_workers, collate_fn=collate_windows, pin_memory=torch.cuda.is_available(), **workers)
    if isinstance(dataset, SourceWindows):  # batches of one source each (always whole batches)
        sampler = SourceBatchSampler([len(s) for s in dataset.sources], batch_size, rank=rank, world_size=world_size,
                                     shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    sampler = ShardSampler(
        len(dataset), rank=rank, world_size=world_size, shuffle=shuffle, seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)


def set_epoch(loader: DataLoader, epoch: int, start: int = 0) -> None:
    """Choose the epoch of a loader made by :func:`make_loader` and skip this rank's first ``start`` samples."""
    sampler = loader.batch_sampler if hasattr(loader.batch_sampler, "set_epoch") else loader.sampler
    sampler.set_epoch(epoch, start=start)
