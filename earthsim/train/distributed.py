"""Process groups and device meshes: one code path for 1 process and for N ranks under torchrun.

Under torchrun the environment names rank and world size; a plain process starts a world of one
(with an in-process store), so FSDP2 and distributed checkpoints run the same way everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device
    mesh: DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(device: str = "auto") -> World:
    """Join (or start) the process group and build a 1-D DeviceMesh over all ranks.

    ``device``: "auto" (CUDA with NCCL when available, else CPU with gloo), "cpu" or "cuda".
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if device == "cuda" else "gloo"
    if not dist.is_initialized():
        if "RANK" in os.environ:  # launched by torchrun
            dist.init_process_group(backend=backend)
        else:  # a world of one, with an in-process store (no port, nothing left in the environment)
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    rank, size = dist.get_rank(), dist.get_world_size()
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        torch_device = torch.device("cuda", local)
    else:
        torch_device = torch.device("cpu")
    mesh = init_device_mesh(device, (size,), mesh_dim_names=("dp",))
    return World(rank=rank, size=size, device=torch_device, mesh=mesh)


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
