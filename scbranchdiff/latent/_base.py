"""The latent backend interface: what the diffusion stage needs from an autoencoder."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from anndata import AnnData


@dataclass
class DecodedCells:
    """Cells decoded from latents.

    Attributes
    ----------
    X
        The matrix a user analyses: sampled integer counts (scVI), decoded log-normalised
        expression (PCA), or None when the backend cannot decode (a given obsm embedding).
    layers
        Extra matrices, e.g. "expected" (decoded mean expression).
    obs
        Per-cell values drawn while decoding (e.g. the library size used).

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.latent import DecodedCells
    >>> cells = DecodedCells(X=np.ones((2, 3)), layers={"expected": np.ones((2, 3))})
    >>> cells.X.shape, list(cells.layers)
    ((2, 3), ['expected'])
    """

    X: np.ndarray | sp.spmatrix | None
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    obs: dict[str, np.ndarray] = field(default_factory=dict)


class LatentBackend(ABC):
    """An encoder/decoder between cells and the latent space where diffusion runs.

    Subclasses implement `fit`, `encode`, `decode` and the plain-value state used by
    `BranchedDiffusion.save` (`config` + `tensors`, restored by `from_state`).

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> import numpy as np
    >>> backend = sbd.latent.PCALatent(n_latent=5)  # a LatentBackend
    >>> backend.fit(real, np.asarray(real.obs["cell_type"]))
    >>> backend.encode(other).shape
    (240, 5)
    """

    #: short name recorded in saved models
    kind: str = ""

    @property
    @abstractmethod
    def n_latent(self) -> int:
        """Dimension of the latent space."""

    @property
    def is_fitted(self) -> bool:
        """Whether `fit` has run (or the backend was given fitted)."""
        return True

    @property
    def can_decode(self) -> bool:
        """Whether `decode` returns gene expression."""
        return True

    def fit(self, adata: AnnData, labels: np.ndarray, **kwargs) -> None:  # noqa: B027
        """Fit the backend on the registered cells (no-op for fitted backends)."""

    @abstractmethod
    def encode(self, adata: AnnData, batch_size: int | None = None) -> np.ndarray:
        """Latent coordinates of every cell of `adata` (n_obs x n_latent)."""

    @abstractmethod
    def decode(
        self, latent: np.ndarray, cell_types: np.ndarray, rng: np.random.Generator
    ) -> DecodedCells:
        """Cells from latents; `cell_types` are the category names of each row."""

    @abstractmethod
    def config(self) -> dict:
        """JSON-serialisable settings."""

    @abstractmethod
    def tensors(self) -> dict[str, np.ndarray]:
        """Arrays to save (numeric only: they go into a safetensors file)."""
