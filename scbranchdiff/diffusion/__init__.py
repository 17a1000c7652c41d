"""Pure-torch diffusion maths: the VP SDE and the reverse-time samplers."""

from ._sde import VPSDE

__all__ = ["VPSDE"]
