"""The peers' protocol: the evaluation of CFGen (ICLR 2025), reused by later generators of cells.

Held-out real cells define the space: 2,000 highly variable genes (``seurat_v3`` on counts),
counts normalised to 1e4 per cell and ``log1p``, a 30-component PCA of those genes. Generated cells
are normalised the same way (on all genes), cut to the same genes and projected with the real
gene means subtracted. Per cell type: exact W2 and an RBF-MMD with kernels summed over five fixed
bandwidths; over all types: a 5-nearest-neighbour classifier trained on the real cells, applied to
the generated ones (macro-F1). Numbers are comparable with the peers' published tables only when
the data, split and cell numbers are theirs too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.metrics import f1_score, pairwise_distances
from sklearn.neighbors import KNeighborsClassifier

from .._checks import (
    cell_type_labels,
    check_positive_int,
    expression_matrix,
    gene_indexer,
    has_negative_values,
    label_order,
    looks_like_counts,
    shared_cell_types,
)
from ._classifiers import C2ST_MIN_CELLS, c2st_auc
from ._distances import _pair, wasserstein2
from ._representation import log_normalise

#: RBF bandwidths of the peers' MMD (fixed, in the units of the PCs), kernels summed.
PEER_MMD_SIGMAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
#: Columns of :func:`peer_protocol`'s table.
PEER_METRICS: tuple[str, ...] = ("w2", "mmd", "knn_f1", "c2st_auc")


def peer_mmd(x: np.ndarray, y: np.ndarray, sigmas: Sequence[float] = PEER_MMD_SIGMAS) -> float:
    """The peers' RBF-MMD: biased squared MMD with RBF kernels summed over fixed bandwidths.

    As in CFGen's evaluation: both sets are cut to their first ``m = min(len(x), len(y))`` rows
    (so the order of the cells matters when the sizes differ), the kernel is
    ``sum_s exp(-|a - b|^2 / (2 s^2))`` and the estimate is the V-statistic
    ``mean K(x, x') + mean K(y, y') - 2 mean K(x, y)`` (diagonals included). With five kernels it
    lies between 0 and 10. Unlike :func:`~scbranchdiff.metrics.mmd_rbf`, the bandwidths do not
    follow the data's scale.

    Parameters
    ----------
    x, y
        Points (cells x features), e.g. real and generated cells' PCs.
    sigmas
        Kernel bandwidths (default ``PEER_MMD_SIGMAS`` = 0.01, 0.1, 1, 10, 100).

    Returns
    -------
    float
        The squared MMD.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.metrics import peer_mmd
    >>> round(peer_mmd(np.zeros((1, 1)), np.ones((1, 1))), 3)  # 10 - 2 * sum_s exp(-1 / (2 s^2))
    4.797
    """
    x, y = _pair(x, y)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.ndim != 1 or sigmas.size == 0 or np.any(sigmas <= 0):
        raise ValueError(f"`sigmas` must be positive numbers, got {sigmas!r}.")
    m = min(len(x), len(y))
    x, y = x[:m], y[:m]

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        squared = pairwise_distances(a, b, metric="sqeuclidean")
        return float(sum(np.exp(-squared / (2.0 * s**2)).mean() for s in sigmas))

    return mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y)


def peer_protocol(
    adata_real: AnnData,
    adata_generated: AnnData,
    labels_key: str,
    *,
    layer: str | None = None,
    generated_layer: str | None = None,
    generated_log_normalised: bool = False,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    target_sum: float = 1e4,
    min_cells: int = 20,
    n_neighbors: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Score generated cells with the peers' protocol (CFGen's evaluation) per cell type.

    1. Real held-out cells (raw counts): ``n_top_genes`` highly variable genes with scanpy's
       ``seurat_v3`` flavour on the counts (all genes when there are not more); counts
       normalised to ``target_sum`` per cell over all genes, ``log1p``; a PCA with ``n_pcs``
       components of the highly variable genes, zero-centred, fitted on these real cells only.
    2. Generated cells: normalised the same way over all genes (unless
       `generated_log_normalised`), cut to the same genes, the real gene means subtracted,
       projected on the real components.
    3. Per cell type with at least `min_cells` real and 2 generated cells, on the PCs:

       - ``w2``: exact 2-Wasserstein distance (POT ``emd2``, squared Euclidean cost, square
         root), all cells of both sides (:func:`wasserstein2`);
       - ``mmd``: :func:`peer_mmd` (kernels summed over 0.01, 0.1, 1, 10 and 100, the first
         ``min(n_real, n_generated)`` cells of each side in their order in the AnnData);
       - ``knn_f1``: F1 of the type for a ``n_neighbors``-nearest-neighbour classifier trained
         on all real cells (all types) and applied to the generated cells of the scored types;
         the overall row holds the macro-F1, the mean of these;
       - ``c2st_auc``: our two-sample AUC in the same PCs (:func:`c2st_auc`; needs 10 cells per
         side), beside the protocol (not part of it).

    Parameters
    ----------
    adata_real
        Held-out real cells with raw counts (in ``.X`` or `layer`) and ``obs[labels_key]``.
    adata_generated
        Generated cells with the same genes (matched by name) and ``obs[labels_key]``.
    labels_key
        Cell-type column of ``obs`` on both sides (compared by name).
    layer
        Layer of `adata_real` with the counts (None: ``.X``).
    generated_layer
        Layer of `adata_generated` to read (None: ``.X``).
    generated_log_normalised
        The generated values are already normalised to `target_sum` and ``log1p``-transformed
        (generators that output that space, as scDiffusion does); else they are counts or
        expected counts and are normalised here.
    n_top_genes, n_pcs, target_sum
        The protocol's 2,000 genes, 30 components and 1e4 counts per cell.
    min_cells
        Fewest real cells of a type for it to be scored (the protocol: 20).
    n_neighbors
        Neighbours of the label classifier (the protocol: 5).
    seed
        Seed of the PCA solver's start vector and of the two-sample AUC's folds.

    Returns
    -------
    pandas.DataFrame
        One row per scored type (real categories' order): ``n_real``, ``n_generated``, ``w2``,
        ``mmd``, ``knn_f1``, ``c2st_auc``; a last row ``"overall"`` with the mean over types
        (the protocol's summary; ``knn_f1`` there is the macro-F1) and the summed cell numbers.
        ``df.attrs`` records the settings and the number of genes used.

    Raises
    ------
    KeyError
        ``labels_key`` or a layer missing.
    ValueError
        Genes differ, the real values are not counts, no type has `min_cells` real cells and
        2 generated cells, or generated counts are negative.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=80, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> table = sbd.metrics.peer_protocol(real, other, "cell_type", layer="counts", generated_layer="counts")
    >>> list(table.columns)
    ['n_real', 'n_generated', 'w2', 'mmd', 'knn_f1', 'c2st_auc']
    """
    import scanpy as sc

    for name, value in (
        ("n_top_genes", n_top_genes),
        ("n_pcs", n_pcs),
        ("min_cells", min_cells),
        ("n_neighbors", n_neighbors),
    ):
        check_positive_int(name, value)
    if not target_sum > 0:
        raise ValueError(f"`target_sum` must be positive, got {target_sum!r}.")
    real_labels = cell_type_labels(adata_real, labels_key, name="adata_real")
    generated_labels = cell_type_labels(adata_generated, labels_key, name="adata_generated")
    order = gene_indexer(
        adata_real.var_names,
        adata_generated.var_names,
        argument="adata_generated",
        reference_name="the real cells",
    )
    counts = expression_matrix(adata_real, layer, name="adata_real", required=True)
    if not looks_like_counts(counts):
        raise ValueError(
            "The protocol needs raw counts of the real cells (seurat_v3 genes): pass `layer`."
        )
    generated = expression_matrix(
        adata_generated, generated_layer, name="adata_generated", required=True
    )
    if order is not None:
        generated = generated[:, order]
    if has_negative_values(generated) and not generated_log_normalised:
        raise ValueError(
            "Generated values are negative: pass counts, or `generated_log_normalised=True`."
        )

    real_counts = sparse.csr_matrix(counts, dtype=np.float32)
    genes = np.arange(adata_real.n_vars)
    if adata_real.n_vars > n_top_genes:
        hvg = sc.pp.highly_variable_genes(
            AnnData(real_counts), flavor="seurat_v3", n_top_genes=n_top_genes, inplace=False
        )
        genes = np.flatnonzero(hvg["highly_variable"].to_numpy())
    real_log = _to_dense(log_normalise(real_counts, target_sum=target_sum)[:, genes])
    if generated_log_normalised:
        generated_log = _to_dense(generated)[:, genes].astype(np.float64)
    else:
        generated_log = _to_dense(
            log_normalise(sparse.csr_matrix(generated), target_sum=target_sum)[:, genes]
        )
    n_components = min(n_pcs, real_log.shape[0] - 1, real_log.shape[1] - 1)
    if n_components < 1:
        raise ValueError("Too few real cells or genes for a PCA.")
    pca = PCA(n_components=n_components, svd_solver="arpack", random_state=seed).fit(real_log)
    real_pcs, generated_pcs = pca.transform(real_log), pca.transform(generated_log)

    candidates = shared_cell_types(
        label_order(adata_real, labels_key, real_labels),
        sorted({t for t in generated_labels if t is not None}),
        name="adata_generated",
    )
    n_real = {t: int((real_labels == t).sum()) for t in candidates}
    n_generated = {t: int((generated_labels == t).sum()) for t in candidates}
    cell_types = [t for t in candidates if n_real[t] >= min_cells and n_generated[t] >= 2]
    if not cell_types:
        raise ValueError(
            f"No cell type has {min_cells} real and 2 generated cells (real: {n_real}, "
            f"generated: {n_generated})."
        )
    known = np.array([lab is not None for lab in real_labels])
    classifier = KNeighborsClassifier(n_neighbors=min(n_neighbors, int(known.sum())))
    classifier.fit(real_pcs[known], real_labels[known].astype(str))
    scored = np.isin(generated_labels.astype(str), cell_types)
    predicted = classifier.predict(generated_pcs[scored])
    f1 = f1_score(
        generated_labels[scored].astype(str),
        predicted,
        labels=cell_types,
        average=None,
        zero_division=0.0,
    )

    rows = {}
    for cell_type, type_f1 in zip(cell_types, f1, strict=True):
        x, y = real_pcs[real_labels == cell_type], generated_pcs[generated_labels == cell_type]
        auc = c2st_auc(x, y, seed=seed) if min(len(x), len(y)) >= C2ST_MIN_CELLS else np.nan
        rows[cell_type] = {
            "n_real": len(x),
            "n_generated": len(y),
            "w2": wasserstein2(x, y),
            "mmd": peer_mmd(x, y),
            "knn_f1": float(type_f1),
            "c2st_auc": auc,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    overall = table.mean(axis=0, skipna=True)
    overall[["n_real", "n_generated"]] = table[["n_real", "n_generated"]].sum()
    table.loc["overall"] = overall
    table[["n_real", "n_generated"]] = table[["n_real", "n_generated"]].astype(int)
    table.index.name = labels_key
    table.attrs.update(
        n_genes=len(genes),
        n_pcs=int(pca.n_components_),
        target_sum=target_sum,
        mmd_sigmas=PEER_MMD_SIGMAS,
        n_neighbors=n_neighbors,
        min_cells=min_cells,
    )
    return table


def _to_dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float64)
