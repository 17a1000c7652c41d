"""Checks of user input that run before anything is written into the AnnData or the model.

Every check raises a ValueError / KeyError / TypeError that names the argument, what was found
and what is expected, so a failed call leaves the user's AnnData and the model as they were.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

# Types with fewer cells than this are trained but flagged: their branch is barely fitted.
MIN_CELLS_PER_TYPE = 3
# Rows checked at a time when scanning a dense matrix (bounded memory on large data).
_CHUNK_ROWS = 10_000


def check_anndata(adata: AnnData, argument: str = "adata") -> None:
    """Raise unless `adata` is an in-memory AnnData that may be written to (not a view).

    scvi-tools registers the setup in ``adata.obs``/``adata.uns``; on a view that would silently
    turn the view into a copy (or fail), and a backed file cannot take the write.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`{argument}` must be an AnnData, got {type(adata).__name__}.")
    if adata.is_view:
        raise ValueError(
            f"`{argument}` is a view of another AnnData (e.g. `adata[mask]`); setting it up would "
            f"write into it. Pass a copy: `{argument} = {argument}[mask].copy()`."
        )
    if adata.n_obs == 0:
        raise ValueError(f"`{argument}` has no cells (shape {adata.shape}); expected at least one.")


def check_in_memory(adata: AnnData, needed_by: str) -> None:
    """Raise for a backed AnnData when `needed_by` reads the whole expression matrix."""
    if adata.isbacked:
        raise ValueError(
            f"`adata` is backed by {str(adata.filename)!r}; {needed_by} reads the whole expression "
            "matrix. Load it first with `adata = adata.to_memory()` (or use a precomputed "
            "embedding: `latent=<obsm key>` works on backed AnnData)."
        )


def check_labels(adata: AnnData, labels_key: str) -> None:
    """Raise if `labels_key` is missing, has missing values or names no cell type at all."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    if not isinstance(labels_key, str):
        raise TypeError(f"`labels_key` must be the name of an obs column (str), got {labels_key!r}.")
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
    if adata.n_obs == 0:
        raise ValueError("`adata` has no cells; expected at least one cell per cell type.")
    names = labels.astype(str)
    if isinstance(labels.dtype, pd.CategoricalDtype):
        categories = [str(c) for c in labels.cat.categories]
        if len(set(categories)) != len(categories):
            raise ValueError(
                f"adata.obs[{labels_key!r}] has categories that are equal as text "
                f"({categories}); cell types are matched by name, so they must differ."
            )
    elif names.nunique() != pd.Series(labels).nunique():
        raise ValueError(
            f"adata.obs[{labels_key!r}] has distinct values that are equal as text; cell types "
            "are matched by name, so they must differ."
        )


def warn_small_types(labels: np.ndarray, labels_key: str, min_cells: int = MIN_CELLS_PER_TYPE) -> list[str]:
    """Warn about cell types with fewer than `min_cells` cells (they are still trained)."""
    values, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    small = {str(v): int(n) for v, n in zip(values, counts, strict=True) if n < min_cells}
    if small:
        warnings.warn(
            f"Cell types in adata.obs[{labels_key!r}] with fewer than {min_cells} cells: {small}. "
            "They are trained, but their branches see almost no data: generated cells of these "
            "types follow their nearest relatives more than the types themselves.",
            UserWarning,
            stacklevel=3,
        )
    return sorted(small)


def expression_matrix(adata: AnnData, layer: str | None):
    """The registered matrix (a layer or X), checked to exist."""
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"`layer={layer!r}` is not in adata.layers (layers: {list(adata.layers)}).")
    return adata.X if layer is None else adata.layers[layer]


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def _row_chunks(x, n_rows: int):
    """Blocks of rows of a dense, sparse (CSR/CSC) or backed matrix, a bounded number at a time."""
    if sp.issparse(x) and not isinstance(x, sp.csr_matrix | sp.csr_array):
        x = x.tocsr()
    for start in range(0, n_rows, _CHUNK_ROWS):
        block = x[start : start + _CHUNK_ROWS]
        if sp.issparse(block):
            yield block
        else:
            yield np.asarray(block)


def check_expression(
    adata: AnnData, layer: str | None, needed_by: str, counts: bool = False
) -> None:
    """Raise unless the registered matrix is usable: numeric, finite, and counts when needed.

    With ``counts=True`` values must also be non-negative integers and every cell must have at
    least one count (a cell with none has no library size). Genes with no counts are allowed
    (they are learnt as silent) but reported in a warning. The scan goes in row blocks, so it
    works on backed and large matrices with bounded memory.
    """
    x = expression_matrix(adata, layer)
    where = _where(layer)
    if x is None:
        raise ValueError(f"{where} is empty; {needed_by} needs expression values.")
    dtype = np.dtype(getattr(x, "dtype", np.float64))
    if dtype.kind not in "biuf":
        raise TypeError(f"{where} has dtype {dtype}; {needed_by} needs a numeric matrix.")
    gene_totals = np.zeros(adata.n_vars)
    zero_cells = 0
    for block in _row_chunks(x, adata.n_obs):
        values = block.data if sp.issparse(block) else block
        if dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(
                f"{where} has NaN or infinite values; {needed_by} needs finite values "
                "(remove or fix those cells/genes first)."
            )
        if not counts:
            continue
        if (values < 0).any():
            raise ValueError(
                f"{where} has negative values (min {values.min():g}); {needed_by} needs raw "
                "counts (non-negative integers)."
            )
        if dtype.kind == "f" and not np.array_equal(values, np.round(values)):
            raise ValueError(
                f"{where} has non-integer values (log-normalised data?); {needed_by} needs raw "
                "counts: pass `layer=` with the counts, or use latent='pca' for normalised data."
            )
        row_totals = np.asarray(block.sum(axis=1)).ravel()
        zero_cells += int((row_totals == 0).sum())
        gene_totals += np.asarray(block.sum(axis=0), dtype=np.float64).ravel()
    if counts and zero_cells:
        raise ValueError(
            f"{where} has {zero_cells} cells with no counts at all; {needed_by} needs at least one "
            "count per cell (a library size). Remove them first, e.g. "
            "`sc.pp.filter_cells(adata, min_counts=1)`."
        )
    if counts and (gene_totals == 0).any():
        warnings.warn(
            f"{where} has {int((gene_totals == 0).sum())} genes with no counts; they are kept "
            "and generated as (nearly) silent.",
            UserWarning,
            stacklevel=3,
        )


def check_counts(adata: AnnData, layer: str | None, needed_by: str) -> None:
    """Raise unless the layer holds finite, non-negative integer counts in every cell."""
    check_expression(adata, layer, needed_by, counts=True)


def align_genes(adata: AnnData, var_names: Sequence[str], argument: str = "adata") -> AnnData:
    """`adata` with its genes in the order of `var_names` (a reordered copy if only the order differs).

    Raises a ValueError naming missing and unexpected genes when the gene sets differ.
    """
    expected = [str(v) for v in var_names]
    found = [str(v) for v in adata.var_names]
    if found == expected:
        return adata
    if len(set(found)) != len(found):
        raise ValueError(f"`{argument}.var_names` has duplicates; make them unique first.")
    if set(found) == set(expected):
        warnings.warn(
            f"`{argument}` has the model's genes in another order; using a copy reordered to the "
            "model's order (the given AnnData is not changed).",
            UserWarning,
            stacklevel=3,
        )
        return adata[:, expected].copy()
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    raise ValueError(
        f"`{argument}` has other genes than the model ({len(found)} vs {len(expected)} genes; "
        f"{len(missing)} missing, e.g. {missing[:10]}; {len(extra)} unexpected, e.g. {extra[:10]}). "
        f"Expected the model's genes: subset with `{argument}[:, model.adata.var_names]` if they "
        "are all present."
    )
