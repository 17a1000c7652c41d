"""Lightning pieces of the diffusion stage: the training plan, the latent data module,
checkpoints, and the one function that fits a plan."""

from ._checkpoint import EpochCheckpoint, checkpoint_callbacks
from ._data import LatentDataModule, stratified_split
from ._fit import epochs_for_steps, fit_plan
from ._plan import DiffusionTrainingPlan

__all__ = [
    "DiffusionTrainingPlan",
    "EpochCheckpoint",
    "LatentDataModule",
    "checkpoint_callbacks",
    "epochs_for_steps",
    "fit_plan",
    "stratified_split",
]
