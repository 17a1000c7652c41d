"""Latent backends: where the diffusion runs (scVI by default, PCA, or a given embedding)."""

from ._base import DecodedCells, LatentBackend
from ._pca import ObsmLatent, PCALatent
from ._scvi import SCVILatent

BACKENDS = {"scvi": SCVILatent, "pca": PCALatent, "obsm": ObsmLatent}

__all__ = ["BACKENDS", "DecodedCells", "LatentBackend", "ObsmLatent", "PCALatent", "SCVILatent"]
