"""The scvi-tools model class and its default budgets."""

from ._continual import DEFAULT_CONTINUAL_STEPS
from ._generation import DEFAULT_N_STEPS, DEFAULT_SAMPLER
from ._model import BranchedDiffusion
from ._training import DEFAULT_TRAIN_STEPS

__all__ = [
    "DEFAULT_CONTINUAL_STEPS",
    "DEFAULT_N_STEPS",
    "DEFAULT_SAMPLER",
    "DEFAULT_TRAIN_STEPS",
    "BranchedDiffusion",
]
