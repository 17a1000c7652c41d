"""Pure-torch diffusion maths: the VP SDE, the reverse-time samplers and tree integration."""

from ._samplers import denoise, euler_maruyama, probability_flow_heun, time_grid
from ._sde import VPSDE
from ._tree import SAMPLERS, TreeSampler

__all__ = [
    "SAMPLERS",
    "TreeSampler",
    "VPSDE",
    "denoise",
    "euler_maruyama",
    "probability_flow_heun",
    "time_grid",
]
