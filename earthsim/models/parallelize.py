"""FSDP2 for the model families: ``fully_shard`` each block a model names, then the root.

Each family decides its FSDP units through :meth:`EarthsimModel.blocks` (for the Fourier family: per
layer, the spectral convolution, then the rest of the layer); :func:`parallelize` applies
``fully_shard`` to them in order and then to the whole model, as torchtitan's ``parallelize``
functions do. World size 1 runs the same code path.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from earthsim.models.base import EarthsimModel


def default_mesh() -> DeviceMesh:
    """A 1-D mesh over every rank of the initialised process group: "cuda" under NCCL, else "cpu" (gloo)."""
    if not dist.is_initialized():
        raise RuntimeError("default_mesh needs torch.distributed initialised (torchrun, or init_process_group)")
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return init_device_mesh(device, (dist.get_world_size(),))


def _full_precision(policy: MixedPrecisionPolicy) -> MixedPrecisionPolicy:
    """The policy for a block whose parameters must stay float32 (complex views, FFTs)."""
    return dataclasses.replace(policy, param_dtype=torch.float32, reduce_dtype=torch.float32)


def parallelize(model: EarthsimModel, mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy | None = None,
                reshard_after_forward: bool = True) -> EarthsimModel:
    """Shard ``model`` in place with FSDP2 over ``mesh`` and return it.

    Blocks whose modules set ``full_precision = True`` (the spectral convolutions) keep float32
    parameters and gradient reduction under any ``mp_policy``. The root is not resharded after
    forward (its parameters are needed again at once by backward).
    """
    policy = mp_policy or MixedPrecisionPolicy()
    for block in model.blocks():
        modules = list(block) if isinstance(block, (list, tuple)) else [block]
        keep_fp32 = any(getattr(m, "full_precision", False) for m in modules)
        fully_shard(modules if len(modules) > 1 else modules[0], mesh=mesh,
                    reshard_after_forward=reshard_after_forward,
                    mp_policy=_full_precision(policy) if keep_fp32 else policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=False, mp_policy=policy)
    return model
