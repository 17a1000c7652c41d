"""The latent backend named by the model's `latent=` argument."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from .._checks import check_counts, check_expression, check_in_memory
from ._base import LatentBackend
from ._pca import ObsmLatent, PCALatent
from ._scvi import SCVILatent

BACKENDS: dict[str, type[LatentBackend]] = {"scvi": SCVILatent, "pca": PCALatent, "obsm": ObsmLatent}


def make_backend(
    latent: str | Any,
    adata: AnnData,
    *,
    layer: str | None = None,
    n_latent: int = 10,
    scvi_kwargs: dict | None = None,
) -> LatentBackend:
    """The backend for `latent`, checked against the registered `adata`.

    Parameters
    ----------
    latent
        "scvi" (an SCVI trained on the counts), "pca" (PCA of log-normalised values), the name
        of an ``adata.obsm`` key, an already trained :class:`scvi.model.SCVI` or a
        :class:`LatentBackend` (returned as is).
    adata
        The registered AnnData (its expression is checked for what the backend needs).
    layer
        The registered layer (None: ``X``).
    n_latent
        Latent dimension of "scvi" and "pca".
    scvi_kwargs
        Other arguments of :class:`scvi.model.SCVI` for "scvi".

    Returns
    -------
    An unfitted (or given fitted) backend.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata = sbd.data.pbmc68k()
    >>> sbd.latent.make_backend("scvi", adata, layer="counts", n_latent=8).kind
    'scvi'
    >>> sbd.latent.make_backend("X_pca", adata).kind  # an obsm key
    'obsm'
    """
    if isinstance(latent, LatentBackend):
        return latent
    if not isinstance(latent, str):
        return SCVILatent(model=latent)
    if latent in ("scvi", "pca"):
        check_in_memory(adata, f"latent={latent!r}")
    if latent == "scvi":
        check_counts(adata, layer, "latent='scvi'")
        return SCVILatent(n_latent=n_latent, scvi_kwargs=scvi_kwargs)
    if latent == "pca":
        check_expression(adata, layer, "latent='pca'")
        return PCALatent(n_latent=n_latent)
    if latent in adata.obsm:
        return ObsmLatent(latent)
    raise ValueError(
        f"`latent` must be 'scvi', 'pca', a trained scvi.model.SCVI or a key of adata.obsm "
        f"(keys: {list(adata.obsm)}), got {latent!r}."
    )
