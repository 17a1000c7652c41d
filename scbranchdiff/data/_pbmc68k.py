"""The bundled PBMC demo dataset: scanpy's ``pbmc68k_reduced`` with integer counts."""

from __future__ import annotations

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

# scanpy normalised each cell to this total before log1p (sc.pp.normalize_per_cell default).
_TARGET_SUM = 1e4
# raw.X is stored with 3 decimals; the recovered counts of scanpy 1.11 are within 0.09 of an
# integer. A larger gap means the shipped file changed and rounding would invent counts.
_MAX_ROUNDING_ERROR = 0.25


def pbmc68k() -> AnnData:
    """Load scanpy's bundled ``pbmc68k_reduced`` with raw counts in ``layers["counts"]``.

    700 PBMCs (a subsample of the 10x Genomics 68k PBMC dataset) over 765 genes, annotated
    with ten coarse cell types (``bulk_labels``) and eleven Louvain clusters (``louvain``).
    The file ships inside scanpy, so nothing is downloaded.

    scanpy ships no counts for this dataset, only ``raw.X = log1p(counts / n_counts * 1e4)``
    rounded to 3 decimals. The counts are recovered as
    ``round(expm1(raw.X) * n_counts / 1e4)``; the rounding error is checked (below 0.25, in
    practice below 0.09) so that the recovery is exact. If the installed scanpy ships a
    ``"counts"`` layer, that layer is used instead.

    Returns
    -------
    AnnData
        700 cells x 765 genes with

        - ``X``: log-normalised expression (``raw.X`` as shipped: ``log1p`` of counts per 10k),
        - ``layers["counts"]``: integer counts, CSR ``float32`` (integer values),
        - ``layers["scaled"]``: the z-scored ``X`` scanpy ships (what ``obsm["X_pca"]`` was
          computed from),
        - ``obs["bulk_labels"]``, ``obs["louvain"]``: categorical cell-type labels, plus
          scanpy's other QC columns,
        - ``obsm["X_pca"]``, ``obsm["X_umap"]`` and scanpy's ``uns`` colours.

        ``raw`` is dropped (``X`` now holds it). ``obs["n_counts"]`` is scanpy's library size
        over all genes before gene filtering, so it is larger than the row sums of
        ``layers["counts"]`` (which cover the 765 genes only).

    Raises
    ------
    RuntimeError
        If the installed scanpy's file does not yield integer counts.

    Examples
    --------
    >>> from scbranchdiff.data import pbmc68k
    >>> adata = pbmc68k()
    >>> adata.layers["counts"].sum(axis=1).min() > 0
    True
    """
    shipped = sc.datasets.pbmc68k_reduced()
    if shipped.raw is None or list(shipped.raw.var_names) != list(shipped.var_names):
        raise RuntimeError(
            "scanpy's pbmc68k_reduced no longer has a raw matrix over the same 765 genes; "
            "cannot recover counts."
        )
    log_normalised = sp.csr_matrix(shipped.raw.X, dtype=np.float32)
    if "counts" in shipped.layers:
        counts = sp.csr_matrix(shipped.layers["counts"], dtype=np.float32)
    else:
        counts = _counts_from_log_normalised(
            log_normalised, np.asarray(shipped.obs["n_counts"], dtype=np.float64)
        )
    _check_counts(counts)

    adata = AnnData(
        X=log_normalised,
        obs=shipped.obs.copy(),
        var=shipped.var.copy(),
        uns=dict(shipped.uns),
        obsm={key: np.asarray(value) for key, value in shipped.obsm.items()},
        varm={key: np.asarray(value) for key, value in shipped.varm.items()},
        obsp={key: value.copy() for key, value in shipped.obsp.items()},
        layers={"counts": counts, "scaled": np.asarray(shipped.X, dtype=np.float32)},
    )
    return adata


def _counts_from_log_normalised(
    log_normalised: sp.csr_matrix, n_counts: np.ndarray
) -> sp.csr_matrix:
    """Invert ``log1p(counts / n_counts * 1e4)`` and round to integers, checking the error."""
    values = log_normalised.tocsr(copy=True).astype(np.float64)
    row_of_entry = np.repeat(np.arange(values.shape[0]), np.diff(values.indptr))
    values.data = np.expm1(values.data) * n_counts[row_of_entry] / _TARGET_SUM
    rounded = np.rint(values.data)
    error = float(np.max(np.abs(values.data - rounded), initial=0.0))
    if error >= _MAX_ROUNDING_ERROR:
        raise RuntimeError(
            f"recovering counts from pbmc68k_reduced's raw.X left a rounding error of {error:.3f} "
            f"(expected < {_MAX_ROUNDING_ERROR}); the shipped file is not what this loader expects."
        )
    values.data = rounded
    values.eliminate_zeros()
    return values.astype(np.float32)


def _check_counts(counts: sp.csr_matrix) -> None:
    """Counts must be non-negative integers and every cell must have some."""
    data = counts.data
    if np.any(data < 0) or np.any(data != np.rint(data)):
        raise RuntimeError("pbmc68k counts are not non-negative integers.")
    if np.any(np.asarray(counts.sum(axis=1)).ravel() == 0):
        raise RuntimeError("pbmc68k has cells without counts over its 765 genes.")
