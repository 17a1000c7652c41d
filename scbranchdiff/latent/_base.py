"""The latent backend interface: what the diffusion stage needs from an autoencoder."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._checks import align_genes, check_expression


def per_type_rngs(cell_types: np.ndarray, rng: np.random.Generator) -> dict[str, np.random.Generator]:
    """One generator per cell type, made from one draw of `rng` and the type's name.

    Backends decode each type with its own generator, so a type's decoded cells do not depend
    on which other types (or how many of their cells) are decoded in the same call.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.latent import per_type_rngs
    >>> a = per_type_rngs(np.array(["B", "T", "B"]), np.random.default_rng(0))
    >>> b = per_type_rngs(np.array(["NK", "B"]), np.random.default_rng(0))
    >>> list(a), a["B"].random() == b["B"].random()
    (['B', 'T'], True)
    """
    import hashlib

    base = int(rng.integers(0, 2**63 - 1))
    names = dict.fromkeys(str(c) for c in np.asarray(cell_types).ravel())
    return {
        name: np.random.default_rng([base, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")])
        for name in names
    }


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

    The model uses a backend only through this interface: `needs_fit` / `fit` (one signature
    for every backend), `check_compatible` for new cells, `encode`, `decode`,
    `add_cell_types` (after continual learning; default: nothing to record) and the
    plain-value `state` (`config` + `tensors`) that `from_state` restores.

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

    @property
    def needs_fit(self) -> bool:
        """Whether `train` must call `fit` before encoding (a given, fitted model: no)."""
        return not self.is_fitted

    def fit(  # noqa: B027 - a backend that is given fitted has nothing to fit
        self,
        adata: AnnData,
        labels: np.ndarray,
        *,
        layer: str | None = None,
        batch_key: str | None = None,
        seed: int = 0,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: Any = "auto",
        **train_kwargs: Any,
    ) -> None:
        """Fit the backend on the registered cells.

        Parameters
        ----------
        adata
            The registered cells.
        labels
            Cell type of every cell.
        layer, batch_key
            The registered expression layer and batch column.
        seed
            Seed of every random number drawn.
        max_epochs, accelerator, devices, **train_kwargs
            Training settings of backends that train (ignored by the others).
        """

    def check_compatible(
        self, adata: AnnData, *, var_names: Sequence[str], layer: str | None, argument: str = "adata"
    ) -> AnnData:
        """`adata` ready to :meth:`encode`: the model's genes in its order, the layer present.

        A reordered copy when only the gene order differs (with a warning); raises naming
        `argument` otherwise.
        """
        aligned = align_genes(adata, var_names, argument=argument)
        if layer is not None and layer not in aligned.layers:
            raise KeyError(
                f"The model reads layer {layer!r}, which {argument} lacks "
                f"(layers: {list(aligned.layers)})."
            )
        return aligned

    def check_values(self, adata: AnnData, layer: str | None, needed_by: str) -> None:
        """Raise unless the cells' values are what :meth:`encode` needs (finite expression)."""
        check_expression(adata, layer, needed_by)

    def add_cell_types(  # noqa: B027 - a backend with nothing to record keeps this
        self, adata: AnnData, labels: np.ndarray, layer: str | None, *, n_residual: int | None = None,
        seed: int = 0,
    ) -> None:
        """Record what decoding new cell types needs (default: nothing).

        Parameters
        ----------
        adata, labels, layer
            The new types' cells, their types and the registered layer.
        n_residual
            Each new type's residual: None, none; 0, an offset (a per-type correction of the
            decoder, no codes); k > 0, residual codes of k dimensions with decoder weights of
            their own. Backends that decode fit it on the type's cells; the latent model itself
            stays frozen and old types never use it.
        seed
            Seed of every random number drawn.
        """

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

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Plain values to save: (`config`, `tensors`), restored by :meth:`from_state`."""
        return self.config(), self.tensors()

    @classmethod
    @abstractmethod
    def from_state(
        cls, config: dict, tensors: dict[str, np.ndarray], adata: AnnData | None = None
    ) -> LatentBackend:
        """Rebuild a saved backend; `adata` supplies what is not saved (genes, batch column)."""
