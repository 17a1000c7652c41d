"""Checks on the AnnData handed to the metrics: genes, labels, layers and the kind of values.

Every check raises before anything is computed, so a failed call leaves the inputs untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

_N_NAMES_SHOWN = 10


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(repr(str(n)) for n in list(names)[:_N_NAMES_SHOWN])
    more = len(names) - _N_NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def expression_matrix(
    adata: AnnData, layer: str | None, *, name: str
) -> np.ndarray | sparse.spmatrix:
    """Return ``adata.X`` or ``adata.layers[layer]``, with a KeyError naming the missing layer."""
    if layer is None:
        if adata.X is None:
            raise ValueError(f"`{name}.X` is empty; pass `layer=` naming the expression to use.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"`layer={layer!r}` is not in `{name}.layers` (found: {list(adata.layers.keys())})."
        )
    return adata.layers[layer]


def gene_order(reference_genes: pd.Index, other_genes: pd.Index, *, name: str) -> np.ndarray:
    """Positions in ``other_genes`` of each reference gene, so the other set reads in real order.

    Raises
    ------
    ValueError
        If either side has duplicated gene names, or the two gene sets differ (the message names
        the genes missing on each side).
    """
    for genes, side in ((reference_genes, "the real cells"), (other_genes, name)):
        if not genes.is_unique:
            dup = genes[genes.duplicated()].unique()
            raise ValueError(
                f"Gene names of {side} are not unique ({_name_list(dup)}); "
                "call `.var_names_make_unique()` first."
            )
    missing = reference_genes.difference(other_genes, sort=False)
    extra = other_genes.difference(reference_genes, sort=False)
    if len(missing) or len(extra):
        parts = []
        if len(missing):
            parts.append(
                f"{len(missing)} real genes are missing from {name}: {_name_list(missing)}"
            )
        if len(extra):
            parts.append(
                f"{len(extra)} genes of {name} are not among the real genes: {_name_list(extra)}"
            )
        raise ValueError(
            "The real and the compared cells must have the same genes (matched by var_names); "
            + "; ".join(parts)
            + "."
        )
    return other_genes.get_indexer(reference_genes)


def cell_type_labels(adata: AnnData, labels_key: str, *, name: str) -> np.ndarray:
    """Cell-type names as strings (missing labels become ``None``), compared by name across sets."""
    if labels_key not in adata.obs:
        raise KeyError(
            f"`labels_key={labels_key!r}` is not a column of `{name}.obs` "
            f"(found: {list(adata.obs.columns)})."
        )
    column = adata.obs[labels_key]
    values = column.astype(object).to_numpy()
    return np.array([None if pd.isna(v) else str(v) for v in values], dtype=object)


def label_order(adata: AnnData, labels_key: str, labels: np.ndarray) -> list[str]:
    """Types in the order of the real categories when categorical, else sorted by name."""
    present = {lab for lab in labels if lab is not None}
    column = adata.obs[labels_key]
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [str(c) for c in column.cat.categories if str(c) in present]
    return sorted(present)


def shared_cell_types(
    real_types: Sequence[str], other_types: Sequence[str], *, name: str
) -> list[str]:
    """Types on both sides, in real order; warn about one-sided types, raise if none is shared."""
    other = set(other_types)
    shared = [t for t in real_types if t in other]
    only_real = [t for t in real_types if t not in other]
    only_other = sorted(other.difference(real_types))
    if not shared:
        raise ValueError(
            f"No cell type is shared between the real cells ({_name_list(list(real_types))}) and "
            f"{name} ({_name_list(only_other)}); labels are compared by name."
        )
    if only_real or only_other:
        parts = []
        if only_real:
            parts.append(f"only in the real cells: {_name_list(only_real)}")
        if only_other:
            parts.append(f"only in {name}: {_name_list(only_other)}")
        warnings.warn(
            "Cell types present on one side only are ignored (" + "; ".join(parts) + ").",
            UserWarning,
            stacklevel=3,
        )
    return shared


def looks_like_counts(x: np.ndarray | sparse.spmatrix) -> bool:
    """True when every stored value is a non-negative integer (raw UMI-like counts)."""
    values = x.data if sparse.issparse(x) else np.asarray(x)
    if values.size == 0:
        return True
    return bool(np.all(values >= 0) and np.all(np.mod(values, 1) == 0))


def has_negative_values(x: np.ndarray | sparse.spmatrix) -> bool:
    values = x.data if sparse.issparse(x) else np.asarray(x)
    return bool(values.size and values.min() < 0)
