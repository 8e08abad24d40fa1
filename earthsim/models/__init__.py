"""Model families behind one contract (see :mod:`earthsim.models.base`), built by name from typed configs.

``build_model("fno", {"n_modes": [12, 12]}, channels=2, height=64, width=64)`` builds a model;
``MODELS`` lists the registered names; :func:`parallelize` shards a model with FSDP2.
"""

from earthsim.models.base import (
    DataShape,
    EarthsimModel,
    MODELS,
    RecurrentModel,
    build_from_spec,
    build_model,
    model_spec,
    register_model,
)
from earthsim.models import fno  # noqa: F401  (registers fno, tfno, sfno)
from earthsim.models.fno import FNOConfig, SFNOConfig, TFNOConfig
from earthsim.models.parallelize import default_mesh, parallelize
from earthsim.models.rollout import rollout

__all__ = [
    "DataShape", "EarthsimModel", "MODELS", "RecurrentModel", "build_from_spec", "build_model",
    "model_spec", "register_model", "FNOConfig", "TFNOConfig", "SFNOConfig", "default_mesh", "parallelize", "rollout",
]
