"""`evaluate`: every generated-vs-real metric per cell type, beside a real-vs-real noise floor."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from sklearn.pipeline import Pipeline

from .._checks import cell_type_labels, gene_indexer, label_order, shared_cell_types
from ._classifiers import C2ST_MIN_CELLS, c2st_auc, fit_label_classifier, per_type_accuracy
from ._distances import MMD_BANDWIDTH_FACTORS, energy_distance, mmd_rbf, wasserstein2
from ._expression import N_MARKERS, marker_overlap, mean_var_correlation
from ._representation import ExpressionPCA, fit_expression_pca

#: Metric columns of :func:`evaluate`, headline first.
METRICS: tuple[str, ...] = (
    "c2st_auc",
    "c2st_auc_latent",
    "w2",
    "mmd",
    "energy",
    "label_accuracy",
    "mean_corr",
    "var_corr",
    "marker_overlap",
)
SPLIT_HALF_SUFFIX = "_split_half"
OVERALL = "overall"


@dataclass(frozen=True)
class _CellSet:
    """One side of a comparison, cells grouped by type in the same order as the other sides."""

    labels: np.ndarray
    log_x: np.ndarray | sparse.spmatrix
    pcs: np.ndarray
    latent: np.ndarray | None


@dataclass(frozen=True)
class _Draw:
    """Rows drawn: ``n_cells[t]`` reference, held-out and generated cells per type; fit cells."""

    n_cells: dict[str, int]
    fit: np.ndarray
    reference: np.ndarray
    held_out: np.ndarray
    generated: np.ndarray


def _draw_cells(
    real_labels: np.ndarray,
    generated_labels: np.ndarray,
    cell_types: list[str],
    max_cells_per_type: int,
    rng: np.random.Generator,
) -> _Draw:
    """Split each type's real cells into disjoint fit / reference / held-out parts.

    m = min(n_real // 3, n_generated, cap) cells per side; the fit part gets the remaining real
    cells of the type (at least m, at most the cap).
    """
    n_cells, fit, reference, held_out, generated = {}, [], [], [], []
    for cell_type in cell_types:
        real = rng.permutation(np.flatnonzero(real_labels == cell_type))
        fake = rng.permutation(np.flatnonzero(generated_labels == cell_type))
        m = min(len(real) // 3, len(fake), max_cells_per_type)
        n_cells[cell_type] = m
        reference.append(real[:m])
        held_out.append(real[m : 2 * m])
        fit.append(real[2 * m : 2 * m + max_cells_per_type])
        generated.append(fake[:m])
    return _Draw(n_cells, *(np.concatenate(rows) for rows in (fit, reference, held_out, generated)))


def _cell_set(
    adata: AnnData,
    rows: np.ndarray,
    labels: np.ndarray,
    space: ExpressionPCA,
    latent_key: str | None,
    *,
    name: str,
) -> _CellSet:
    cells = adata[rows]
    log_x = space.log_expression(cells, name=name)
    latent = None if latent_key is None else np.asarray(adata.obsm[latent_key])[rows]
    return _CellSet(labels=labels[rows], log_x=log_x, pcs=space.project(log_x), latent=latent)


def _compare(
    reference: _CellSet,
    other: _CellSet,
    cell_types: list[str],
    label_classifier: Pipeline | None,
    n_markers: int,
    c2st_classifier: str,
    seed: int,
) -> pd.DataFrame:
    """All metrics of ``other`` against ``reference``, one row per type."""
    rows = {}
    for cell_type in cell_types:
        ref, oth = reference.labels == cell_type, other.labels == cell_type
        row = dict.fromkeys(METRICS, float("nan"))
        if ref.sum() >= 2 and oth.sum() >= 2:
            if min(ref.sum(), oth.sum()) >= C2ST_MIN_CELLS:
                row["c2st_auc"] = c2st_auc(
                    reference.pcs[ref], other.pcs[oth], classifier=c2st_classifier, seed=seed
                )
                if reference.latent is not None:
                    row["c2st_auc_latent"] = c2st_auc(
                        reference.latent[ref],
                        other.latent[oth],
                        classifier=c2st_classifier,
                        seed=seed,
                    )
            row["w2"] = wasserstein2(reference.pcs[ref], other.pcs[oth])
            row["mmd"] = mmd_rbf(reference.pcs[ref], other.pcs[oth])
            row["energy"] = energy_distance(reference.pcs[ref], other.pcs[oth])
            row["mean_corr"], row["var_corr"] = mean_var_correlation(
                reference.log_x[ref], other.log_x[oth]
            )
        rows[cell_type] = row
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(METRICS))
    if label_classifier is not None:
        predicted = label_classifier.predict(other.pcs)
        table["label_accuracy"] = per_type_accuracy(predicted, other.labels, cell_types)
        table["marker_overlap"] = marker_overlap(
            reference.log_x,
            reference.labels,
            other.log_x,
            other.labels,
            n_markers=n_markers,
            cell_types=cell_types,
        )
    return table


def evaluate(
    adata_real: AnnData,
    adata_generated: AnnData,
    labels_key: str,
    *,
    n_pcs: int = 30,
    layer: str | None = None,
    latent_key: str | None = None,
    is_counts: bool | None = None,
    split_half: bool = True,
    max_cells_per_type: int = 500,
    n_markers: int = N_MARKERS,
    c2st_classifier: str = "knn",
    seed: int = 0,
) -> pd.DataFrame:
    """Score generated cells against real cells per cell type, beside a real-vs-real reference.

    How cells are compared: for each type the real cells are shuffled (``seed``) and split into
    three disjoint parts: a *reference* part and a *held-out* part of
    ``m = min(n_real // 3, n_generated, max_cells_per_type)`` cells each, and a *fit* part (the
    remaining real cells, at most ``max_cells_per_type``); ``m`` generated cells of the
    type are drawn too. The fit part alone fits the representation (normalise-total to 1e4 +
    log1p when the input is counts, then a PCA; every other set is projected with the fit cells'
    gene means subtracted) and the label classifier. Every metric then compares a set against
    the reference part: the generated cells (columns without suffix) and the held-out real cells
    (columns ending in ``"_split_half"``). Reference, held-out and generated cells are all
    outside the fit, so the held-out part goes through exactly what the generated cells go
    through and the split-half column is what a perfect generator (fresh real cells) would
    score: the noise floor at this number of cells. (Fitting the PCA on the compared real cells
    themselves makes real halves separable: their own noise is in the top PCs.)

    Parameters
    ----------
    adata_real
        Real cells, raw counts or log-normalised, with ``obs[labels_key]``.
    adata_generated
        Generated cells with the same genes (matched by ``var_names``, any order) and labels.
    labels_key
        Column of ``obs`` holding the cell type in both AnnData, compared by name. Types present
        on one side only are ignored with a warning; cells without a label are ignored.
    n_pcs
        Principal components of the representation (capped by the number of fit cells).
    layer
        Layer to read from both AnnData instead of ``.X``.
    latent_key
        A key of ``obsm`` present in both AnnData (e.g. ``"X_latent"``, the model's latent of the
        real and of the generated cells); adds the two-sample AUC in that latent.
    is_counts
        Whether the values are raw counts. None: detected from the values (non-negative integers
        are counts) and both sides must agree; set it when they differ (e.g. generated expected
        expression next to real counts).
    split_half
        Also report the real-vs-real reference columns.
    max_cells_per_type
        Cap on ``m``, the cells per type on each side (keeps W2 and the kNN fast); real cells
        beyond ``3 * max_cells_per_type`` of a type are not used.
    n_markers
        Top marker genes per type compared by ``marker_overlap``.
    c2st_classifier
        Classifier of the two-sample AUC: ``"knn"`` (default), ``"svm"`` or ``"logistic"``;
        see :func:`c2st_auc`.
    seed
        Seed of the cell draws, the PCA, the cross-validation folds and the classifiers.

    Returns
    -------
    pandas.DataFrame
        One row per shared cell type (in the real categories' order) and a last row
        ``"overall"`` holding the mean over types (NaN ignored); ``n_cells`` there is the sum.
        Columns: ``n_cells`` (cells per side), then each metric followed by its
        ``<metric>_split_half`` reference:

        - ``c2st_auc`` (headline): 5-fold cross-validated ROC AUC of a 15-nearest-neighbour
          classifier telling generated from reference cells on standardised PCs; 0.5 means
          indistinguishable, clearly below 0.5 that generated cells copy reference cells.
          Needs ``m >= 10`` (NaN below, with a warning).
        - ``c2st_auc_latent``: the same in ``obsm[latent_key]`` (only with ``latent_key``).
        - ``w2``: exact 2-Wasserstein distance (POT ``emd2``) on the PCs.
        - ``mmd``: squared RBF-MMD on the PCs, kernel bandwidths 0.5, 1 and 2 times the median
          pairwise distance of the reference cells of that type.
        - ``energy``: energy distance on the PCs.
        - ``label_accuracy``: fraction of the type's cells that a logistic regression trained
          on the fit cells (all types; as :func:`label_transfer_accuracy`) assigns to that type.
        - ``mean_corr``, ``var_corr``: Pearson correlation across genes of per-gene means and of
          per-gene variances of log-normalised expression.
        - ``marker_overlap``: share of the type's top ``n_markers`` reference markers (Welch
          t-test against the other types) that are also top markers among the compared cells.

        W2, MMD and energy are lower-is-better but also reward a generator collapsed towards the
        type mean (it can score below the split-half floor); read them with ``c2st_auc``, which
        penalises collapse. ``df.attrs`` records the settings used.

    Raises
    ------
    KeyError
        ``labels_key``, ``layer`` or ``latent_key`` missing on either side.
    ValueError
        Genes differ (the message names them), no cell type is shared, or the two sides hold
        different kinds of values (counts vs log-normalised) without ``is_counts``.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> scores = sbd.metrics.evaluate(real, other, "cell_type", layer="counts")
    >>> scores.loc["T_CD4", ["c2st_auc", "c2st_auc_split_half"]].between(0, 1).all()
    True

    For generated cells: ``sbd.metrics.evaluate(adata, model.generate(200), "bulk_labels",
    layer="counts")``.
    """
    if max_cells_per_type < 2:
        raise ValueError(f"`max_cells_per_type` must be at least 2, got {max_cells_per_type!r}.")
    real_labels = cell_type_labels(adata_real, labels_key, name="adata_real")
    generated_labels = cell_type_labels(adata_generated, labels_key, name="adata_generated")
    gene_indexer(
        adata_real.var_names,
        adata_generated.var_names,
        argument="adata_generated",
        reference_name="the real cells",
    )
    if latent_key is not None:
        _check_latent(adata_real, adata_generated, latent_key)
    cell_types = shared_cell_types(
        label_order(adata_real, labels_key, real_labels),
        sorted({t for t in generated_labels if t is not None}),
        name="adata_generated",
    )

    draw = _draw_cells(
        real_labels, generated_labels, cell_types, max_cells_per_type, np.random.default_rng(seed)
    )
    n_cells = draw.n_cells
    _warn_small_types(n_cells)
    if len(draw.reference) < 2:
        raise ValueError(
            f"Too few cells to evaluate: {n_cells} cells per type and side (each type needs at "
            "least 6 real cells, split in three, and 2 generated cells)."
        )

    fit_cells = adata_real[draw.fit]
    space = fit_expression_pca(fit_cells, n_pcs=n_pcs, layer=layer, is_counts=is_counts, seed=seed)
    fit_labels = real_labels[draw.fit]
    label_classifier = (
        fit_label_classifier(space.transform(fit_cells, name="adata_real"), fit_labels, seed=seed)
        if len(set(fit_labels)) >= 2
        else None
    )
    reference = _cell_set(
        adata_real, draw.reference, real_labels, space, latent_key, name="adata_real"
    )
    generated = _cell_set(
        adata_generated, draw.generated, generated_labels, space, latent_key, name="adata_generated"
    )

    tables = {
        "": _compare(
            reference, generated, cell_types, label_classifier, n_markers, c2st_classifier, seed
        )
    }
    if split_half:
        held_out = _cell_set(
            adata_real, draw.held_out, real_labels, space, latent_key, name="adata_real"
        )
        tables[SPLIT_HALF_SUFFIX] = _compare(
            reference, held_out, cell_types, label_classifier, n_markers, c2st_classifier, seed
        )

    metrics = [m for m in METRICS if latent_key is not None or m != "c2st_auc_latent"]
    columns = {"n_cells": pd.Series(n_cells, dtype=int)}
    for metric in metrics:
        for suffix, table in tables.items():
            columns[metric + suffix] = table[metric]
    result = pd.DataFrame(columns)
    overall = result.drop(columns="n_cells").mean(axis=0, skipna=True)
    overall["n_cells"] = result["n_cells"].sum()
    result.loc[OVERALL] = overall[result.columns]
    result["n_cells"] = result["n_cells"].astype(int)
    result.index.name = labels_key
    result.attrs.update(
        n_pcs=space.n_pcs,
        is_counts=space.is_counts,
        mmd_bandwidth_factors=MMD_BANDWIDTH_FACTORS,
        c2st_classifier=c2st_classifier,
        max_cells_per_type=max_cells_per_type,
        seed=seed,
    )
    return result


def _check_latent(adata_real: AnnData, adata_generated: AnnData, latent_key: str) -> None:
    for adata, name in ((adata_real, "adata_real"), (adata_generated, "adata_generated")):
        if latent_key not in adata.obsm:
            raise KeyError(
                f"`latent_key={latent_key!r}` is not in `{name}.obsm` "
                f"(found: {list(adata.obsm.keys())}); "
                "store the model's latent of both the real and the generated cells there."
            )
    dims = (np.shape(adata_real.obsm[latent_key])[1], np.shape(adata_generated.obsm[latent_key])[1])
    if dims[0] != dims[1]:
        raise ValueError(
            f"`obsm[{latent_key!r}]` has {dims[0]} dimensions in adata_real "
            f"but {dims[1]} in adata_generated."
        )


def _warn_small_types(n_cells: dict[str, int]) -> None:
    too_few = {t: m for t, m in n_cells.items() if m < C2ST_MIN_CELLS}
    if too_few:
        warnings.warn(
            f"Cell types with fewer than {C2ST_MIN_CELLS} cells per side get NaN two-sample AUC "
            f"(and NaN for every metric below 2 cells): {too_few}.",
            UserWarning,
            stacklevel=3,
        )
