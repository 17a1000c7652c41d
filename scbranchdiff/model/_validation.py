"""Checks of user input that run before anything is changed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def check_labels(adata: AnnData, labels_key: str) -> None:
    """Raise if `labels_key` is missing or has missing values."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    if labels_key not in adata.obs:
        raise KeyError(
            f"`labels_key={labels_key!r}` is not a column of adata.obs "
            f"(columns: {list(adata.obs.columns)})."
        )
    labels = adata.obs[labels_key]
    n_missing = int(pd.isna(labels).sum())
    if n_missing:
        raise ValueError(
            f"adata.obs[{labels_key!r}] has {n_missing} missing labels; every cell needs a cell "
            "type (drop or label those cells first)."
        )


def _values(x) -> np.ndarray:
    return x.data if sp.issparse(x) else np.asarray(x).ravel()


def check_counts(adata: AnnData, layer: str | None, needed_by: str) -> None:
    """Raise unless the layer holds finite, non-negative integer counts."""
    x = adata.X if layer is None else adata.layers[layer]
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if x is None:
        raise ValueError(f"{where} is empty; {needed_by} needs counts.")
    values = _values(x[: min(adata.n_obs, 2000)] if not sp.issparse(x) else x)
    if not np.isfinite(values).all():
        raise ValueError(f"{where} has NaN or infinite values; {needed_by} needs raw counts.")
    if (values < 0).any():
        raise ValueError(f"{where} has negative values; {needed_by} needs raw counts.")
    if not np.allclose(values, np.round(values)):
        raise ValueError(
            f"{where} has non-integer values (log-normalised data?); {needed_by} needs raw "
            "counts: pass `layer=` with the counts, or use latent='pca' for normalised data."
        )


