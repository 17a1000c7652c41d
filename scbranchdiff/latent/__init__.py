"""Latent backends: where the diffusion runs (scVI by default, PCA, or a given embedding)."""

from ._base import DecodedCells, LatentBackend, per_type_rngs
from ._factory import BACKENDS, make_backend
from ._pca import ObsmLatent, PCALatent
from ._residual import CountOffset, CountResidual, PCAResidual
from ._scvi import SCVILatent

__all__ = [
    "BACKENDS",
    "CountOffset",
    "CountResidual",
    "DecodedCells",
    "LatentBackend",
    "ObsmLatent",
    "PCALatent",
    "PCAResidual",
    "SCVILatent",
    "make_backend",
    "per_type_rngs",
]
