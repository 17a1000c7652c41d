"""The one module of input checks, used by the model, the metrics and the plots.

Every check runs before anything is computed or written and raises a ValueError / KeyError /
TypeError that names the argument, what was found and what is expected, so a failed call leaves
the user's AnnData and the model as they were.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import sparse

_N_NAMES_SHOWN = 10

# Types with fewer cells than this are trained but flagged: their branch is barely fitted.
MIN_CELLS_PER_TYPE = 3
# Rows checked at a time when scanning a dense matrix (bounded memory on large data).
_CHUNK_ROWS = 10_000


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(repr(str(n)) for n in list(names)[:_N_NAMES_SHOWN])
    more = len(names) - _N_NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


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


def labels_column(adata: AnnData, labels_key: str, *, name: str = "adata") -> pd.Series:
    """``adata.obs[labels_key]``, with a KeyError naming the key and the columns there are."""
    if labels_key not in adata.obs:
        raise KeyError(
            f"`labels_key={labels_key!r}` is not a column of `{name}.obs` "
            f"(columns: {list(adata.obs.columns)})."
        )
    return adata.obs[labels_key]


def require_obs_columns(adata: AnnData, columns: Sequence[str], *, name: str, made_by: str) -> None:
    """Raise a KeyError naming the columns of `columns` that ``adata.obs`` lacks."""
    missing = [c for c in columns if c not in adata.obs]
    if missing:
        raise KeyError(
            f"`{name}.obs` lacks the columns {missing} (found: {list(adata.obs.columns)}); "
            f"pass the output of {made_by}."
        )


def check_labels(adata: AnnData, labels_key: str) -> None:
    """Raise if `labels_key` is missing, has missing values or names no cell type at all."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    if not isinstance(labels_key, str):
        raise TypeError(f"`labels_key` must be the name of an obs column (str), got {labels_key!r}.")
    labels = labels_column(adata, labels_key)
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


def expression_matrix(
    adata: AnnData, layer: str | None, *, name: str = "adata", required: bool = False
) -> Any:
    """``adata.X`` or ``adata.layers[layer]``, with a KeyError naming a missing layer.

    With `required`, an empty ``X`` raises too.
    """
    if layer is None:
        if required and adata.X is None:
            raise ValueError(f"`{name}.X` is empty; pass `layer=` naming the expression to use.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"`layer={layer!r}` is not in {name}.layers (layers: {list(adata.layers)}).")
    return adata.layers[layer]


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
    adata: AnnData,
    layer: str | None,
    needed_by: str,
    counts: bool = False,
    *,
    report_silent_genes: bool = True,
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
    if counts and report_silent_genes and (gene_totals == 0).any():
        warnings.warn(
            f"{where} has {int((gene_totals == 0).sum())} genes with no counts; they are kept "
            "and generated as (nearly) silent.",
            UserWarning,
            stacklevel=3,
        )


def check_counts(
    adata: AnnData, layer: str | None, needed_by: str, *, report_silent_genes: bool = True
) -> None:
    """Raise unless the layer holds finite, non-negative integer counts in every cell."""
    check_expression(adata, layer, needed_by, counts=True, report_silent_genes=report_silent_genes)


def gene_indexer(
    reference: Sequence[str] | pd.Index,
    found: Sequence[str] | pd.Index,
    *,
    argument: str = "adata",
    reference_name: str = "the model",
) -> np.ndarray | None:
    """Positions in `found` of each `reference` gene (None when the order is already the same).

    Genes are matched by name. Raises a ValueError naming the duplicated genes, or the genes
    missing on each side when the two sets differ.
    """
    reference = pd.Index([str(g) for g in reference])
    found = pd.Index([str(g) for g in found])
    if found.equals(reference):
        return None
    for genes, side in ((reference, reference_name), (found, f"`{argument}`")):
        if not genes.is_unique:
            dup = genes[genes.duplicated()].unique()
            raise ValueError(
                f"Gene names of {side} are not unique ({_name_list(dup)}); "
                "call `.var_names_make_unique()` first."
            )
    missing = reference.difference(found, sort=False)
    extra = found.difference(reference, sort=False)
    if len(missing) or len(extra):
        raise ValueError(
            f"`{argument}` has other genes than {reference_name} ({len(found)} vs "
            f"{len(reference)} genes matched by var_names; missing {len(missing)}, unexpected "
            f"{len(extra)}): {len(missing)} missing, e.g. {[str(g) for g in missing[:10]]}; "
            f"{len(extra)} unexpected, e.g. {[str(g) for g in extra[:10]]}. Subset "
            f"`{argument}` to the genes of {reference_name} first."
        )
    return found.get_indexer(reference)


def align_genes(adata: AnnData, var_names: Sequence[str], argument: str = "adata") -> AnnData:
    """`adata` with its genes in the order of `var_names` (a reordered copy if only the order differs).

    Raises a ValueError naming missing and unexpected genes when the gene sets differ.
    """
    positions = gene_indexer(var_names, adata.var_names, argument=argument)
    if positions is None:
        return adata
    warnings.warn(
        f"`{argument}` has the model's genes in another order; using a copy reordered to the "
        "model's order (the given AnnData is not changed).",
        UserWarning,
        stacklevel=3,
    )
    return adata[:, positions].copy()


def check_positive_int(name: str, value: Any) -> int:
    """`value` as an int; a ValueError naming `name` unless it is a positive integer (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_non_negative_int(name: str, value: Any) -> int:
    """`value` as an int; a ValueError naming `name` unless it is an integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """`seed` as an int; a ValueError naming `name` unless it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {seed!r}.")
    return int(seed)


def check_training_arguments(
    max_epochs: int | None, batch_size: int, lr: float, ema_decay: float, seed: int
) -> None:
    """Raise, naming the argument, for a bad training setting (before any work is done)."""
    if max_epochs is not None:
        check_positive_int("max_epochs", max_epochs)
    check_positive_int("batch_size", batch_size)
    check_seed(seed)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"`lr` must be a positive finite number, got {lr!r}.")
    if isinstance(ema_decay, bool) or not isinstance(ema_decay, int | float) or not 0 <= ema_decay < 1:
        raise ValueError(f"`ema_decay` must lie in [0, 1), got {ema_decay!r}.")


def check_time(t: Any, name: str = "t") -> float:
    """`t` as a float; raises unless it is a number in (0, 1]."""
    if isinstance(t, bool) or not isinstance(t, int | float | np.integer | np.floating):
        raise TypeError(f"`{name}` must be a number in (0, 1], got {type(t).__name__}.")
    if not 0.0 < float(t) <= 1.0:
        raise ValueError(f"`{name}` must lie in (0, 1], got {t}.")
    return float(t)


def cell_type_labels(adata: AnnData, labels_key: str, *, name: str) -> np.ndarray:
    """Cell-type names as strings (missing labels become ``None``), compared by name across sets."""
    values = labels_column(adata, labels_key, name=name).astype(object).to_numpy()
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
