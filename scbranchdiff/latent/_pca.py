"""PCA of log-normalised expression as the latent backend, and a given obsm embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData
from sklearn.decomposition import PCA

from ._base import DecodedCells, LatentBackend, per_type_rngs
from ._residual import PCAResidual
from ._scvi import counts_matrix


class PCALatent(LatentBackend):
    """Principal components of (already log-normalised) expression.

    Generated cells are decoded with the inverse PCA transform: `X` holds decoded
    log-normalised expression (no counts). Use this backend for data without counts.

    Parameters
    ----------
    n_latent
        Number of principal components.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> import numpy as np
    >>> import scanpy as sc
    >>> sc.pp.normalize_total(real, target_sum=1e4)
    >>> sc.pp.log1p(real)
    >>> backend = sbd.latent.PCALatent(n_latent=5)
    >>> backend.fit(real, np.asarray(real.obs["cell_type"]))
    >>> z = backend.encode(real)
    >>> decoded = backend.decode(z, np.asarray(real.obs["cell_type"]), np.random.default_rng(0))
    >>> z.shape, decoded.X.shape
    ((240, 5), (240, 300))

    In a model: ``BranchedDiffusion(adata, latent="pca", n_latent=10)``.
    """

    kind = "pca"

    def __init__(self, n_latent: int = 30) -> None:
        self._n_latent = int(n_latent)
        self.layer: str | None = None
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        # per added cell type: its residual components (see add_cell_types)
        self.residuals: dict[str, PCAResidual] = {}

    @property
    def n_latent(self) -> int:
        return self._n_latent

    @property
    def is_fitted(self) -> bool:
        return self.components_ is not None

    def fit(
        self, adata: AnnData, labels: np.ndarray, *, layer: str | None = None, seed: int = 0, **_: Any
    ) -> None:
        self.layer = layer
        n_comps = min(self._n_latent, adata.n_obs - 1, adata.n_vars)
        pca = PCA(n_components=n_comps, random_state=seed, svd_solver="auto")
        pca.fit(_dense(counts_matrix(adata, layer)))
        self._n_latent = n_comps
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.residuals = {}

    def encode(self, adata: AnnData, batch_size: int | None = None) -> np.ndarray:
        x = _dense(counts_matrix(adata, self.layer))
        return ((x - self.mean_) @ self.components_.T).astype(np.float32)

    def decode(self, latent: np.ndarray, cell_types: np.ndarray, rng: np.random.Generator) -> DecodedCells:
        """Inverse PCA, one cell type at a time; types with a residual also get drawn residuals.

        A type's rows do not depend on which other types are decoded with them: each type is
        transformed on its own (a matrix product's rounding depends on its shape), and a
        residual type draws its codes from a generator of its own (`per_type_rngs`).
        """
        if cell_types is None:  # no types: the plain inverse transform
            return DecodedCells(X=(latent @ self.components_ + self.mean_).astype(np.float32))
        x = np.empty((len(latent), len(self.mean_)), dtype=np.float32)
        cell_types = np.asarray(cell_types).astype(str)
        for cell_type, type_rng in per_type_rngs(cell_types, rng).items():
            rows = np.nonzero(cell_types == cell_type)[0]
            x[rows] = latent[rows] @ self.components_ + self.mean_
            if cell_type in self.residuals:
                x[rows] = self.residuals[cell_type].decode(x[rows], type_rng)
        return DecodedCells(X=x)

    def add_cell_types(
        self, adata: AnnData, labels: np.ndarray, layer: str | None, *, n_residual: int | None = None,
        seed: int = 0,
    ) -> None:
        """Unless `n_residual` is None: fit each new type's `PCAResidual` (0: its offset only)."""
        if n_residual is None:
            return
        x = _dense(counts_matrix(adata, self.layer))
        z = self.encode(adata)
        residuals = {}
        for cell_type in [str(c) for c in np.unique(labels)]:
            rows = np.asarray(labels) == cell_type
            residuals[cell_type] = PCAResidual.fit(
                x[rows], z[rows], self.mean_, self.components_, n_dims=n_residual, seed=seed
            )
        self.residuals.update(residuals)

    def config(self) -> dict:
        config: dict[str, Any] = {"n_latent": self._n_latent, "layer": self.layer}
        if self.residuals:
            config["residual_types"] = list(self.residuals)
        return config

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean_, "components": self.components_}
        for i, residual in enumerate(self.residuals.values()):
            out.update({f"residual.{i}.{k}": v for k, v in residual.tensors().items()})
        return out

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, np.ndarray], adata: AnnData | None = None) -> PCALatent:
        backend = cls(config["n_latent"])
        backend.layer = config["layer"]
        backend.mean_, backend.components_ = tensors["mean"], tensors["components"]
        for i, cell_type in enumerate(config.get("residual_types", [])):
            backend.residuals[cell_type] = PCAResidual(
                **{k: tensors[f"residual.{i}.{k}"] for k in ("offset", "components", "std")}
            )
        return backend


class ObsmLatent(LatentBackend):
    """A precomputed embedding in `adata.obsm[key]`; generation returns latents only.

    Parameters
    ----------
    key
        The obsm key.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> import numpy as np
    >>> real.obsm["X_embedding"] = np.random.default_rng(0).normal(size=(real.n_obs, 4))
    >>> backend = sbd.latent.ObsmLatent("X_embedding")
    >>> backend.fit(real, np.asarray(real.obs["cell_type"]))
    >>> backend.encode(real).shape, backend.can_decode
    ((240, 4), False)

    In a model: ``BranchedDiffusion(adata, latent="X_embedding")``.
    """

    kind = "obsm"

    def __init__(self, key: str, n_latent: int | None = None) -> None:
        self.key = key
        self._n_latent = n_latent

    @property
    def n_latent(self) -> int:
        if self._n_latent is None:
            raise RuntimeError("The embedding has not been read yet.")
        return self._n_latent

    @property
    def can_decode(self) -> bool:
        return False

    @property
    def needs_fit(self) -> bool:
        # the embedding is read anew from the registered AnnData at every training
        return True

    def fit(self, adata: AnnData, labels: np.ndarray, **_: Any) -> None:
        self._n_latent = self.encode(adata).shape[1]

    def check_compatible(
        self, adata: AnnData, *, var_names: Sequence[str], layer: str | None, argument: str = "adata"
    ) -> AnnData:
        """`adata` with the embedding of the right width (genes are not used)."""
        if self.key not in adata.obsm:
            raise KeyError(
                f"The model's latent is adata.obsm[{self.key!r}], which {argument} lacks "
                f"(obsm keys: {list(adata.obsm)})."
            )
        width = np.shape(adata.obsm[self.key])[1]
        if width != self.n_latent:
            raise ValueError(
                f"{argument}.obsm[{self.key!r}] has {width} dimensions; the model's latent has "
                f"{self.n_latent}."
            )
        return adata

    def check_values(self, adata: AnnData, layer: str | None, needed_by: str) -> None:
        """Raise unless the embedding is present and finite (expression is not used)."""
        if not np.isfinite(self.encode(adata)).all():
            raise ValueError(f"adata.obsm[{self.key!r}] has NaN or infinite values; {needed_by} needs finite ones.")

    def encode(self, adata: AnnData, batch_size: int | None = None) -> np.ndarray:
        if self.key not in adata.obsm:
            raise KeyError(
                f"`latent={self.key!r}` is not a key of adata.obsm (keys: {list(adata.obsm)})."
            )
        return np.asarray(adata.obsm[self.key], dtype=np.float32)

    def decode(self, latent: np.ndarray, cell_types: np.ndarray, rng: np.random.Generator) -> DecodedCells:
        return DecodedCells(X=None)

    def config(self) -> dict:
        return {"key": self.key, "n_latent": self._n_latent}

    def tensors(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, np.ndarray], adata: AnnData | None = None) -> ObsmLatent:
        return cls(config["key"], config["n_latent"])


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
