"""Gene-level agreement of generated and real cells: per-gene means, variances and top markers.

All inputs are log-normalised expression (cells x genes) with genes in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse, stats
from sklearn.utils.sparsefuncs import mean_variance_axis

#: Number of top marker genes per cell type compared by :func:`marker_overlap`.
N_MARKERS = 20


def gene_moments(x: np.ndarray | sparse.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance (ddof = 0) of a dense or sparse cells x genes matrix."""
    if sparse.issparse(x):
        mean, var = mean_variance_axis(sparse.csr_matrix(x, dtype=np.float64), axis=0)
        return np.asarray(mean), np.asarray(var)
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=0), x.var(axis=0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(stats.pearsonr(a, b).statistic)


def mean_var_correlation(
    x_real: np.ndarray | sparse.spmatrix, x_generated: np.ndarray | sparse.spmatrix
) -> tuple[float, float]:
    """Pearson correlation across genes of per-gene means, and of per-gene variances.

    Parameters
    ----------
    x_real, x_generated
        Log-normalised expression (cells x genes, same gene order).

    Returns
    -------
    tuple of float
        ``(mean_corr, var_corr)``; NaN when a side is constant across genes.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> mean_corr, var_corr = sbd.metrics.mean_var_correlation(real.X, other.X)
    >>> bool(mean_corr > 0.9)
    True
    """
    if x_real.shape[1] != x_generated.shape[1]:
        raise ValueError(
            "`x_real` and `x_generated` must have the same genes, "
            f"got {x_real.shape[1]} and {x_generated.shape[1]} columns."
        )
    mean_real, var_real = gene_moments(x_real)
    mean_generated, var_generated = gene_moments(x_generated)
    return _pearson(mean_real, mean_generated), _pearson(var_real, var_generated)


def marker_genes(
    x: np.ndarray | sparse.spmatrix,
    labels: Sequence[str] | np.ndarray,
    *,
    n_markers: int = N_MARKERS,
    cell_types: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Top up-regulated genes of each type against all other cells, by Welch t-test.

    The ranking of ``sc.tl.rank_genes_groups(method="t-test")``, computed from per-gene moments
    so that sparse matrices are never densified.

    Parameters
    ----------
    x
        Log-normalised expression (cells x genes).
    labels
        Cell type of each cell.
    n_markers
        Number of genes per type.
    cell_types
        Types to rank (default: every type present).

    Returns
    -------
    dict
        Type -> column indices of its ``n_markers`` genes with the largest t statistic. Types with
        fewer than 2 cells inside or outside get an empty array.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> markers = sbd.metrics.marker_genes(real.X, real.obs["cell_type"], n_markers=5)
    >>> len(markers["B_naive"])
    5
    """
    labels = np.asarray(labels, dtype=object)
    if cell_types is None:
        cell_types = sorted({t for t in labels if t is not None})
    markers = {}
    for cell_type in cell_types:
        inside = labels == cell_type
        n_in, n_out = int(inside.sum()), int((~inside).sum())
        if n_in < 2 or n_out < 2:
            markers[cell_type] = np.array([], dtype=int)
            continue
        mean_in, var_in = gene_moments(x[inside])
        mean_out, var_out = gene_moments(x[~inside])
        with np.errstate(divide="ignore", invalid="ignore"):
            t_statistic = stats.ttest_ind_from_stats(
                mean_in,
                np.sqrt(var_in * n_in / (n_in - 1)),
                n_in,
                mean_out,
                np.sqrt(var_out * n_out / (n_out - 1)),
                n_out,
                equal_var=False,
            ).statistic
        t_statistic = np.nan_to_num(t_statistic, nan=-np.inf)
        markers[cell_type] = np.argsort(-t_statistic, kind="stable")[:n_markers]
    return markers


def marker_overlap(
    x_real: np.ndarray | sparse.spmatrix,
    labels_real: Sequence[str] | np.ndarray,
    x_generated: np.ndarray | sparse.spmatrix,
    labels_generated: Sequence[str] | np.ndarray,
    *,
    n_markers: int = N_MARKERS,
    cell_types: Sequence[str] | None = None,
) -> pd.Series:
    """Marker-gene recovery: share of each type's top real markers that are top generated markers.

    Markers are ranked within each set separately (each type against the other types of the same
    set) by :func:`marker_genes`, so both sets need several types with matched proportions.

    Parameters
    ----------
    x_real, x_generated
        Log-normalised expression (cells x genes, same gene order).
    labels_real, labels_generated
        Cell types of the rows.
    n_markers
        Number of top genes compared per type.
    cell_types
        Types to report (default: types present in both sets).

    Returns
    -------
    pandas.Series
        Type -> ``|top_real & top_generated| / n_markers`` in [0, 1]; NaN where a type cannot be
        ranked (fewer than 2 cells inside or outside it on either side).

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> overlap = sbd.metrics.marker_overlap(
    ...     real.X, real.obs["cell_type"], other.X, other.obs["cell_type"], n_markers=10
    ... )
    >>> bool(overlap.between(0, 1).all())
    True
    """
    if x_real.shape[1] != x_generated.shape[1]:
        raise ValueError(
            "`x_real` and `x_generated` must have the same genes, "
            f"got {x_real.shape[1]} and {x_generated.shape[1]} columns."
        )
    if cell_types is None:
        cell_types = sorted(
            {t for t in labels_real if t is not None}
            & {t for t in labels_generated if t is not None}
        )
    real = marker_genes(x_real, labels_real, n_markers=n_markers, cell_types=cell_types)
    generated = marker_genes(
        x_generated, labels_generated, n_markers=n_markers, cell_types=cell_types
    )
    overlap = {
        t: len(np.intersect1d(real[t], generated[t])) / len(real[t])
        if len(real[t]) and len(generated[t])
        else float("nan")
        for t in cell_types
    }
    return pd.Series(overlap, name="marker_overlap", dtype=float)
