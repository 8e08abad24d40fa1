"""Sharded training checkpoints with torch.distributed.checkpoint (the model export is earthsim.models.export).

A checkpoint directory ``step-00000100`` holds the model and optimiser shards written by every
rank (DCP), plus one small ``trainer-rank{r}.pt`` per rank with the step, scheduler, RNG states and
loader position. It is written under ``step-00000100.tmp`` and renamed when every rank is done,
so a killed run never leaves a checkpoint that looks complete; only the last ``keep`` are kept.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from earthsim.errors import EarthsimError

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
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp)
        torch.save({"step": step, "scheduler": scheduler.state_dict(), "rng": rng_state(), "loader": loader_state},
                   tmp / f"trainer-rank{_rank()}.pt")
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
        dcp.load(state, checkpoint_id=path)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        own = path / f"trainer-rank{_rank()}.pt"
        trainer = torch.load(own if own.exists() else path / "trainer-rank0.pt", weights_only=True)
        scheduler.load_state_dict(trainer["scheduler"])
        if own.exists():  # same world size: continue each rank's random stream exactly
            set_rng_state(trainer["rng"])
        return {"step": trainer["step"], "loader": trainer["loader"]}
