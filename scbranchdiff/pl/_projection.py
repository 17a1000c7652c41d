"""One 2-D embedding defined by real cells only, onto which other cells are projected.

Real cells fix every step (log-normalisation kind, PCA with the real gene means, UMAP), so
generated or transmuted cells cannot move the axes they are looked at in: a generator that
misses a type shows up as cells far from it, not as a warped map.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from anndata import AnnData

from ..metrics import fit_expression_pca

BASES = ("umap", "pca")


@dataclass(frozen=True)
class RealEmbedding:
    """2-D coordinates of the real cells and of each projected AnnData."""

    real: np.ndarray
    others: tuple[np.ndarray, ...]
    basis: str
    axis_labels: tuple[str, str]


def embed_real_project_others(
    adata_real: AnnData,
    others: Sequence[AnnData],
    *,
    basis: str = "umap",
    layer: str | None = None,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    seed: int = 0,
) -> RealEmbedding:
    """Embed ``adata_real`` and project ``others`` into the same 2-D coordinates.

    Expression is log-normalised when it holds counts (decided on the real cells; the other
    AnnData must hold the same kind) and reduced by a PCA fitted on the real cells. With
    ``basis="umap"`` a UMAP is fitted on the real principal components and the others are
    mapped into it by umap-learn's ``transform`` (what :func:`scanpy.tl.ingest` does);
    ``"pca"`` shows the first two real principal components.

    ``layer`` is read from ``adata_real``; the others are read from ``.X``, where the model
    writes its sampled counts.
    """
    if basis not in BASES:
        raise ValueError(f"`basis` must be one of {BASES}, got {basis!r}.")
    space = fit_expression_pca(adata_real, n_pcs=n_pcs, layer=layer, seed=seed)
    real_pcs = space.transform(adata_real, name="adata_real")
    read_x = dataclasses.replace(space, layer=None)
    other_pcs = [read_x.transform(other, name="the projected cells") for other in others]
    if basis == "umap" and _umap_available():
        real, projected = _umap_fitted_on_real(
            real_pcs, other_pcs, n_neighbors=n_neighbors, seed=seed
        )
        return RealEmbedding(real, tuple(projected), "umap", ("UMAP1", "UMAP2"))
    if basis == "umap":
        warnings.warn(
            "umap-learn is not installed: showing the real cells' PCA instead of a UMAP.",
            UserWarning,
            stacklevel=3,
        )
    return RealEmbedding(
        real_pcs[:, :2], tuple(p[:, :2] for p in other_pcs), "pca", ("PC1", "PC2")
    )


def _umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def _umap_fitted_on_real(
    real_pcs: np.ndarray, other_pcs: list[np.ndarray], *, n_neighbors: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    # umap-learn directly: scanpy's ingest does the same transform, but rebuilds the neighbour
    # index through pynndescent internals that break across versions (pynndescent 0.7).
    from umap import UMAP

    reducer = UMAP(n_neighbors=min(n_neighbors, len(real_pcs) - 1), random_state=seed, n_jobs=1)
    real = reducer.fit_transform(real_pcs)
    projected = [reducer.transform(pcs) if len(pcs) else np.zeros((0, 2)) for pcs in other_pcs]
    return np.asarray(real), [np.asarray(p) for p in projected]
