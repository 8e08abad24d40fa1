"""FSDP2 for every family: activation checkpointing, ``torch.compile`` and ``fully_shard`` per unit, then the root.

Each family names its FSDP units (:meth:`EarthsimModel.fsdp_units`); :func:`parallelize` applies the
experiment's :class:`ParallelismConfig` to each unit in the order torchtitan does (activation
checkpointing, then compile, then ``fully_shard``) and shards the whole model last. World size 1
runs the same code path. A :class:`~earthsim.models.base.RecurrentModel`'s ``init_state`` and
``step``, and a family's own ``training_loss``, are registered as forward methods, so that FSDP
gathers the parameters they use.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.distributed._composable import checkpoint
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import Shard

from earthsim.errors import EarthsimError
from earthsim.models.base import EarthsimModel, RecurrentModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CHOICES = ("auto", *DTYPES)  # auto: bfloat16 on a GPU that supports it, float32 otherwise


@dataclasses.dataclass
class ParallelismConfig:
    """How a model is sharded and run in training (the ``parallelism`` section of an experiment)."""

    param_dtype: str = dataclasses.field(default="auto", metadata={
        "help": "dtype parameters are gathered and computed in (FSDP2 mixed precision; bfloat16 runs the forward "
                "under autocast); units marked full_precision stay float32; auto: bfloat16 on a GPU that "
                "supports it, else float32", "choices": list(CHOICES)})
    reduce_dtype: str = dataclasses.field(default="float32", metadata={
        "help": "dtype of the gradient reduce-scatter", "choices": list(CHOICES)})
    reshard_after_forward: bool = dataclasses.field(default=True, metadata={
        "help": "free each unit's gathered parameters after its forward (less memory, one more all-gather)"})
    activation_checkpointing: bool = dataclasses.field(default=False, metadata={
        "help": "recompute each FSDP unit's activations in backward instead of keeping them"})
    compile: bool = dataclasses.field(default=False, metadata={"help": "torch.compile each FSDP unit"})

    def __post_init__(self):
        for name in ("param_dtype", "reduce_dtype"):
            if getattr(self, name) not in CHOICES:
                raise EarthsimError(f"parallelism.{name}: {getattr(self, name)!r} is not one of {list(CHOICES)}")

    def dtype(self, name: str, device: torch.device) -> torch.dtype:
        """``param_dtype`` or ``reduce_dtype`` on ``device``, ``auto`` resolved."""
        value = getattr(self, name)
        if value == "auto":
            value = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        return DTYPES[value]

    def policy(self, device: torch.device) -> MixedPrecisionPolicy:
        return MixedPrecisionPolicy(param_dtype=self.dtype("param_dtype", device),
                                    reduce_dtype=self.dtype("reduce_dtype", device))

    def autocast(self, device: torch.device):
        """The forward's autocast context: bfloat16 compute when parameters are gathered in bfloat16."""
        dtype = self.dtype("param_dtype", device)
        return nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)


def default_mesh() -> DeviceMesh:
    """A 1-D mesh over every rank of the initialised process group: "cuda" under NCCL, else "cpu" (gloo)."""
    if not dist.is_initialized():
        raise RuntimeError("default_mesh needs torch.distributed initialised (torchrun, or init_process_group)")
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return init_device_mesh(device, (dist.get_world_size(),))


def _full_precision(policy: MixedPrecisionPolicy) -> MixedPrecisionPolicy:
    """The policy for a unit whose parameters must stay float32 (complex views, FFTs)."""
    return dataclasses.replace(policy, param_dtype=torch.float32, reduce_dtype=torch.float32)


def parallelize(model: EarthsimModel, mesh: DeviceMesh, parallelism: ParallelismConfig | None = None
                ) -> EarthsimModel:
    """Shard ``model`` in place with FSDP2 over ``mesh`` as ``parallelism`` says, and return it.

    Units whose modules set ``full_precision = True`` (the spectral convolutions) keep float32
    parameters and reduction under any policy. The root keeps its inputs as given (physical fields
    are normalised in float32 before any cast) and is not resharded after forward (backward needs
    its parameters at once).
    """
    parallelism = parallelism or ParallelismConfig()
    policy = parallelism.policy(torch.device(mesh.device_type))
    world = mesh.size()
    placement = lambda parameter: Shard(shard_dim(tuple(parameter.shape), world))  # noqa: E731
    for unit in model.fsdp_units():
        modules = list(unit) if isinstance(unit, (list, tuple)) else [unit]
        for module in modules:
            if parallelism.activation_checkpointing:
                checkpoint(module)
            if parallelism.compile:
                module.compile(dynamic=False)  # training shapes are fixed; dynamic shapes trip tltorch's einsum
        keep_fp32 = any(getattr(sub, "full_precision", False) for m in modules for sub in m.modules())
        fully_shard(modules if len(modules) > 1 else modules[0], mesh=mesh,
                    reshard_after_forward=parallelism.reshard_after_forward,
                    mp_policy=_full_precision(policy) if keep_fp32 else policy, shard_placement_fn=placement)
    fully_shard(model, mesh=mesh, reshard_after_forward=False,
                mp_policy=dataclasses.replace(policy, cast_forward_inputs=False), shard_placement_fn=placement)
    for method in forward_methods(model):
        register_fsdp_forward_method(model, method)
    return model


def shard_dim(shape: tuple[int, ...], world: int) -> int:
    """The dim FSDP2 splits a parameter of ``shape`` along over ``world`` ranks: the first (FSDP2's default, which
    may split unevenly) unless it is shorter than the world; then the longest other dim that ``world`` divides
    (FSDP2 splits only dim 0 unevenly), so that no rank holds a whole large parameter: ClimaX's ``[1, L, D]``
    position embedding splits along L, or along D when the world does not divide L."""
    if not shape or shape[0] >= world:
        return 0
    even = [dim for dim in range(1, len(shape)) if shape[dim] % world == 0]
    return max(even, key=lambda dim: shape[dim]) if even else 0


def forward_methods(model: EarthsimModel) -> list[str]:
    """Methods besides ``forward`` that use the model's parameters: a recurrent model's ``init_state`` and
    ``step``, and a family's own ``training_loss``. FSDP2 must gather parameters around them too."""
    methods = ["init_state", "step"] if isinstance(model, RecurrentModel) else []
    if type(model).training_loss is not EarthsimModel.training_loss:
        methods.append("training_loss")
    return methods
