"""Pure-torch diffusion maths: the VP SDE, the loss, the noise streams, samplers and tree integration."""

from ._loss import NoisePredictionLoss
from ._noise import NoiseStreams
from ._samplers import (
    ancestral,
    denoise,
    dpm_solver_2m,
    euler_maruyama,
    probability_flow_heun,
    time_grid,
)
from ._sde import VPSDE
from ._transport import noised_gaussian_map
from ._tree import SAMPLERS, BranchState, TreeSampler

__all__ = [
    "SAMPLERS",
    "BranchState",
    "NoisePredictionLoss",
    "NoiseStreams",
    "TreeSampler",
    "VPSDE",
    "ancestral",
    "denoise",
    "dpm_solver_2m",
    "euler_maruyama",
    "noised_gaussian_map",
    "probability_flow_heun",
    "time_grid",
]
