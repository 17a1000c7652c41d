"""The space every metric is computed in: log-normalised expression and a PCA of REAL cells.

The PCA is fitted on real cells only and other cells (generated, or held-out real ones) are
projected with the real gene means subtracted, so a generator cannot move the axes it is judged on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.preprocessing import normalize

from .._checks import expression_matrix, gene_indexer, has_negative_values, looks_like_counts

TARGET_SUM = 1e4


def log_normalise(x: np.ndarray | sparse.spmatrix, *, target_sum: float = TARGET_SUM):
    """Normalise each cell to ``target_sum`` total counts, then ``log1p``.

    A fixed target (not the per-dataset median that ``sc.pp.normalize_total`` defaults to) keeps
    real and generated cells on the same scale.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.metrics import log_normalise
    >>> counts = np.array([[1.0, 3.0], [10.0, 0.0]])
    >>> np.expm1(log_normalise(counts)).sum(axis=1)
    array([10000., 10000.])
    """
    scaled = normalize(x.astype(np.float64), norm="l1", axis=1) * target_sum
    return scaled.log1p() if sparse.issparse(scaled) else np.log1p(scaled)


@dataclass(frozen=True)
class ExpressionPCA:
    """Log-normalised expression space and a PCA fitted on real cells.

    Build it with :func:`fit_expression_pca`; call :meth:`transform` on any AnnData with the same
    genes (in any order) to get its principal components.

    Attributes
    ----------
    genes
        The real cells' ``var_names``; other data are reordered to this order.
    is_counts
        Whether inputs are raw counts (normalised to 1e4 per cell and log1p-transformed) or are
        already log-normalised (used as they are).
    is_counts_detected
        True when ``is_counts`` was decided from the real values, in which case every projected
        dataset must look the same way (a mix of counts and log-normalised values is an error).
    layer
        Layer read from every AnnData (None: ``.X``).
    pca
        The fitted :class:`sklearn.decomposition.PCA`.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> space = sbd.metrics.fit_expression_pca(real, n_pcs=10)  # an ExpressionPCA
    >>> space.transform(other).shape
    (240, 10)
    """

    genes: pd.Index
    is_counts: bool
    is_counts_detected: bool
    layer: str | None
    pca: PCA

    @property
    def n_pcs(self) -> int:
        return int(self.pca.n_components_)

    def log_expression(
        self, adata: AnnData, *, name: str = "adata"
    ) -> np.ndarray | sparse.spmatrix:
        """Log-normalised expression of ``adata`` with genes in the real order (cells x genes)."""
        order = gene_indexer(self.genes, adata.var_names, argument=name, reference_name="the real cells")
        x = expression_matrix(adata, self.layer, name=name, required=True)
        if order is not None and not np.array_equal(order, np.arange(len(order))):
            x = x[:, order]
        _check_value_kind(x, self.is_counts, self.is_counts_detected, name=name)
        return log_normalise(x) if self.is_counts else x.astype(np.float64)

    def project(self, log_x: np.ndarray | sparse.spmatrix) -> np.ndarray:
        """Principal components of log-normalised expression (real gene means subtracted)."""
        return self.pca.transform(log_x)

    def transform(self, adata: AnnData, *, name: str = "adata") -> np.ndarray:
        """Principal components of ``adata`` in the real cells' PCA (cells x n_pcs)."""
        return self.project(self.log_expression(adata, name=name))


def _check_value_kind(x, is_counts: bool, detected: bool, *, name: str) -> None:
    counts_like = looks_like_counts(x)
    if is_counts and has_negative_values(x):
        raise ValueError(
            f"`{name}` has negative values but is treated as counts; pass log-normalised or count "
            "data consistently (or set `is_counts=False`)."
        )
    if detected and counts_like != is_counts:
        found = "non-negative integers (counts)" if counts_like else "non-integer values"
        expected = (
            "counts, like the real cells" if is_counts else "log-normalised, like the real cells"
        )
        raise ValueError(
            f"`{name}` holds {found}, but the real cells were detected as {expected}. Pass "
            "`is_counts=True` (e.g. generated expected expression next to real counts) or "
            "`is_counts=False` to say how to read both, or normalise both the same way."
        )
    if not is_counts and has_negative_values(x):
        warnings.warn(
            f"`{name}` has negative values: it looks scaled rather than log-normalised. The PCA "
            "metrics still work, but gene means, variances and markers are on the scaled values.",
            UserWarning,
            stacklevel=4,
        )


def fit_expression_pca(
    adata_real: AnnData,
    *,
    n_pcs: int = 30,
    layer: str | None = None,
    is_counts: bool | None = None,
    seed: int = 0,
) -> ExpressionPCA:
    """Fit the metrics' representation on real cells: normalise-total + log1p + PCA.

    Parameters
    ----------
    adata_real
        Real cells (counts or log-normalised). Only these cells define the PCA.
    n_pcs
        Number of principal components (capped at ``min(n_cells - 1, n_genes)``).
    layer
        Layer to read instead of ``.X``; the same layer is read from every projected AnnData.
    is_counts
        Whether the values are raw counts. None: decide from the values (non-negative integers
        are counts), and require every projected dataset to look the same.
    seed
        Random state of the PCA solver.

    Returns
    -------
    ExpressionPCA
        Call ``.transform(adata)`` to project other cells with the real means subtracted.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> space = sbd.metrics.fit_expression_pca(real, n_pcs=10)
    >>> space.is_counts, space.transform(other).shape
    (True, (240, 10))
    """
    if n_pcs < 1:
        raise ValueError(f"`n_pcs` must be a positive integer, got {n_pcs!r}.")
    if adata_real.n_obs < 2:
        raise ValueError(
            f"The real cells must number at least 2 to fit a PCA, got {adata_real.n_obs}."
        )
    x = expression_matrix(adata_real, layer, name="adata_real", required=True)
    detected = is_counts is None
    if detected:
        is_counts = looks_like_counts(x)
    space_without_pca = ExpressionPCA(
        genes=pd.Index(adata_real.var_names).copy(),
        is_counts=bool(is_counts),
        is_counts_detected=detected,
        layer=layer,
        pca=PCA(),
    )
    log_x = space_without_pca.log_expression(adata_real, name="adata_real")
    solver = "arpack" if sparse.issparse(log_x) else "auto"
    # arpack needs strictly fewer components than either dimension
    n_components = min(n_pcs, adata_real.n_obs - 1, adata_real.n_vars - (solver == "arpack"))
    pca = PCA(n_components=n_components, svd_solver=solver, random_state=seed).fit(log_x)
    return ExpressionPCA(
        genes=space_without_pca.genes,
        is_counts=space_without_pca.is_counts,
        is_counts_detected=detected,
        layer=layer,
        pca=pca,
    )
