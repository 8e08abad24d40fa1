"""Model families behind one contract (:mod:`earthsim.models.base`), built by name from a typed config and a
:class:`DataSpec`.

    >>> from earthsim.models import MODELS, build_model
    >>> model = build_model("fno", {"n_modes": [12, 12]}, spec)

``MODELS`` lists the registered names; :func:`parallelize` shards a model with FSDP2;
:func:`rollout` rolls it out; :func:`export_model` / :func:`load_exported` write and read the one
exported-model file. Every family module is imported here so that it registers; the third-party
packages a family needs beyond torch are imported when that family is built.
"""

from earthsim.models.base import MODELS, Batch, EarthsimModel, RecurrentModel, build_model, register_model
from earthsim.models.spec import DataSpec, Statistics
from earthsim.models import climax, convlstm, convs5, fno, predformer, sfno, spacetime_fno, tsm  # noqa: F401  (register every family)
from earthsim.models.export import EXPORT_NAME, ExportRecord, export_model, load_exported
from earthsim.models.parallelism import ParallelismConfig, default_mesh, parallelize
from earthsim.models.rollout import complete_frames, direct, rollout

__all__ = [
    "MODELS", "Batch", "DataSpec", "EXPORT_NAME", "EarthsimModel", "ExportRecord", "ParallelismConfig",
    "RecurrentModel", "Statistics", "build_model", "complete_frames", "default_mesh", "direct", "export_model",
    "load_exported", "parallelize", "register_model", "rollout",
]
