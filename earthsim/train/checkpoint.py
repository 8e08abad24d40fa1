"""Sharded training checkpoints with torch.distributed.checkpoint (the model export is earthsim.models.export).

A checkpoint directory ``step-00000100`` holds the model and optimiser shards written by every
rank (DCP), plus one small ``trainer-rank{r}.pt`` per rank with the step, scheduler, RNG states and
loader position. It is written under ``step-00000100.tmp`` and renamed when every rank is done,
so a killed run never leaves a checkpoint that looks complete; only the last ``keep`` are kept.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from earthsim.errors import EarthsimError, quiet_loggers, reason

STEP_DIR = re.compile(r"^step-(\d{8})$")


def rng_state() -> dict:
    """The RNG states this process draws from (torch, numpy, python, CUDA), in weights-only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: Globals a ``.metadata`` file of torch.distributed.checkpoint may name: DCP's metadata types and what they hold.
DCP_METADATA_GLOBALS = frozenset(
    {("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")}
    | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
       ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
       ("collections", "OrderedDict")}
    | {("torch", name) for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)})


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles only DCP's own metadata types: an altered ``.metadata`` file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in DCP_METADATA_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not a type a checkpoint's metadata holds")
        return super().find_class(module, name)


class SafeCheckpointReader(dcp.FileSystemReader):
    """torch.distributed.checkpoint's file reader with its metadata read through :class:`_MetadataUnpickler` instead
    of ``pickle.load``."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            try:
                metadata = _MetadataUnpickler(stream).load()
            except Exception as error:  # refused globals, or bytes that are no pickle at all
                self.refusal = EarthsimError(f"{path}: refused: {reason(error)}; a checkpoint's metadata holds "
                                             "torch.distributed.checkpoint's own types only, so this file was "
                                             "altered or damaged")
                raise self.refusal from None
        if not isinstance(metadata, Metadata):
            self.refusal = EarthsimError(f"{path}: refused: it holds a {type(metadata).__name__}, not checkpoint "
                                         "metadata")
            raise self.refusal
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, reading non-tensor entries with ``torch.load(weights_only=True)`` (DCP's own
    planner loads them with ``weights_only=False``, which would run code planted in a shard)."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def _dcp_reason(error: BaseException) -> str:
    """The root cause of the first failure DCP collected (it wraps each rank's exception), in one line."""
    failures = getattr(error, "failures", None)
    if failures:
        failure = next(iter(failures.values()))
        error = failure[0] if isinstance(failure, tuple) else failure
    while error.__cause__ is not None:  # the root cause
        error = error.__cause__
    # our own message whole; DCP may also re-raise it inside its own text ("global metadata read failed: ...")
    return str(error) if isinstance(error, EarthsimError) else reason(error, limit=600)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


class Checkpointer:
    """Saves and restores the full training state of one run directory."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory)
        self.keep = keep

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.iterdir() if STEP_DIR.match(p.name))

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler, loader_state: dict[str, Any]) -> Path:
        final = self.directory / f"step-{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        model_state, optim_state = get_state_dict(model, optimizer)
        try:
            with quiet_loggers(""):
                dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp)
            torch.save({"step": step, "scheduler": scheduler.state_dict(), "rng": rng_state(),
                        "loader": loader_state}, tmp / f"trainer-rank{_rank()}.pt")
        except (Exception, CheckpointException) as error:  # a full disk, a vanished folder
            shutil.rmtree(tmp, ignore_errors=True)
            raise EarthsimError(f"{final}: writing the checkpoint failed ({_dcp_reason(error)})") from None
        _barrier()
        if _rank() == 0:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.checkpoints()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return final

    def restore(self, path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler) -> dict[str, Any]:
        """Load model, optimiser, scheduler and RNG states; returns ``{"step", "loader"}``."""
        path = Path(path)
        if not (path / ".metadata").exists():
            raise EarthsimError(f"{path} is not a complete checkpoint (no .metadata)")
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        reader = SafeCheckpointReader(path)
        try:
            with quiet_loggers(""):  # DCP logs each failed read with its traceback on the root logger
                dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner())
        except (Exception, CheckpointException) as error:  # DCP's CheckpointException is a BaseException
            if getattr(reader, "refusal", None) is not None:  # the metadata refused: that, not DCP's retries, is why
                raise reader.refusal from None
            raise EarthsimError(f"{path}: the checkpoint cannot be read ({_dcp_reason(error)}); remove that "
                                "checkpoints/step-* folder to resume from the one before, or start afresh") from None
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        own = path / f"trainer-rank{_rank()}.pt"
        source = own if own.exists() else path / "trainer-rank0.pt"
        try:
            trainer = torch.load(source, weights_only=True)
        except Exception as error:  # a missing, damaged or altered file
            raise EarthsimError(f"{source}: cannot be read as a trainer state ({reason(error)})") from None
        scheduler.load_state_dict(trainer["scheduler"])
        if own.exists():  # same world size: continue each rank's random stream exactly
            set_rng_state(trainer["rng"])
        return {"step": trainer["step"], "loader": trainer["loader"]}
