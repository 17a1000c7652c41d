"""Latent backends: where the diffusion runs (scVI by default, PCA, or a given embedding)."""

from ._base import DecodedCells, LatentBackend
from ._factory import BACKENDS, make_backend
from ._pca import ObsmLatent, PCALatent
from ._scvi import SCVILatent

__all__ = [
    "BACKENDS",
    "DecodedCells",
    "LatentBackend",
    "ObsmLatent",
    "PCALatent",
    "SCVILatent",
    "make_backend",
]
