"""Training on several sources at once: datasets with their own variables, statistics and physics, streamed
together, each batch from one source (ClimaX pretrains across climate models this way).

:class:`SourceWindows` puts the window datasets of the sources end to end and tags each sample with
its source; :class:`SourceBatchSampler` cuts each source's shuffled samples into batches, shuffles
the batches of all sources together and deals them to the ranks, so that every batch holds one
source's samples (their channels differ from source to source) and every source is seen in
proportion to its size. Like :class:`earthsim.data.loader.ShardSampler` it is seeded by seed and
epoch, gives disjoint shards, and resumes part-way.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from earthsim.data.windows import WindowDataset
from earthsim.errors import EarthsimError


class SourceWindows(Dataset):
    """The samples of several window datasets end to end; each sample carries ``source`` (its dataset's index)."""

    def __init__(self, sources: list[WindowDataset]):
        if not sources:
            raise EarthsimError("SourceWindows needs at least one source")
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """The source of sample ``index`` and the sample's index within it."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        source = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return source, int(index - self.offsets[source])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        source, local = self.locate(int(index))
        return {**self.sources[source][local], "source": torch.tensor(source)}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """One batch, all of one source (as :class:`SourceBatchSampler` makes them), read as that source reads."""
        located = [self.locate(int(i)) for i in indices]
        source = located[0][0]
        if any(s != source for s, _ in located):
            raise EarthsimError(f"a batch mixes sources {sorted({s for s, _ in located})}; batch with "
                                "SourceBatchSampler")
        samples = self.sources[source].__getitems__([local for _, local in located])
        tag = torch.tensor(source)
        return [{**sample, "source": tag} for sample in samples]


class SourceBatchSampler(Sampler[list[int]]):
    """Batches of one source each, for rank ``rank`` of ``world_size`` (see the module docstring).

    Each source's samples are permuted (seeded by seed, epoch and source) and cut into batches of
    ``batch_size`` (the remainder is dropped); all batches are permuted together (seeded by seed
    and epoch), cut to a multiple of ``world_size`` and dealt round-robin. ``set_epoch(epoch,
    start)`` reshuffles and skips the first ``start`` samples of this rank (``start // batch_size``
    batches), so a run resumes part-way as with ``ShardSampler``.
    """

    def __init__(self, sizes: list[int], batch_size: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0, start: int = 0):
        if world_size < 1 or not 0 <= rank < world_size:
            raise EarthsimError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
        self.sizes, self.batch_size = list(sizes), int(batch_size)
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        self.epoch, self.start = epoch, start
        self.offsets = np.cumsum([0] + self.sizes)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _batches(self) -> list[list[int]]:
        batches = []
        for source, size in enumerate(self.sizes):
            if self.shuffle:
                order = torch.randperm(size, generator=torch.Generator().manual_seed(
                    int(np.random.SeedSequence([self.seed, self.epoch, source]).generate_state(1)[0]))).tolist()
            else:
                order = list(range(size))
            offset = int(self.offsets[source])
            batches += [[offset + i for i in order[b:b + self.batch_size]]
                        for b in range(0, size - self.batch_size + 1, self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(
                len(batches), generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()]
        batches = batches[: len(batches) - len(batches) % self.world_size]
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.start // self.batch_size :])

    def __len__(self) -> int:
        total = sum(size // self.batch_size for size in self.sizes)
        return max(total // self.world_size - self.start // self.batch_size, 0)
