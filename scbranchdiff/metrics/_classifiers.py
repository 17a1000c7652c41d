"""Classifier-based metrics: the two-sample AUC (real vs generated) and label transfer accuracy."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.base import ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from .._checks import cell_type_labels, label_order, shared_cell_types
from ._representation import fit_expression_pca

#: Fewest cells per side for which a two-sample AUC is computed (NaN below, with a warning).
C2ST_MIN_CELLS = 10


def _two_sample_classifier(classifier: str | ClassifierMixin, n_neighbors: int) -> Pipeline:
    if classifier == "knn":
        # exact tree search: single-threaded, so it stays fast when BLAS/OpenMP threads contend
        model = KNeighborsClassifier(n_neighbors=n_neighbors, algorithm="ball_tree")
    elif classifier == "svm":
        model = SVC(kernel="rbf")
    elif classifier == "logistic":
        model = LogisticRegression(max_iter=1000)
    elif isinstance(classifier, str):
        raise ValueError(
            "`classifier` must be 'knn', 'svm', 'logistic' or a scikit-learn classifier, "
            f"got {classifier!r}."
        )
    else:
        model = clone(classifier)
    return make_pipeline(StandardScaler(), model)


def _paired_folds(
    n_x: int, n_y: int, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds over ``vstack([x, y])`` holding out the same seeded share of each set.

    Both sets get the same fold assignment by position, so a cell of ``x`` and a copy of it at
    the same position of ``y`` are held out together: an identical pair of sets scores 0.5, not
    below it. (Copies at other positions still pull the AUC below 0.5, a sign of memorisation.)
    """
    folds_x = KFold(n_splits, shuffle=True, random_state=seed).split(np.arange(n_x))
    folds_y = KFold(n_splits, shuffle=True, random_state=seed).split(np.arange(n_y))
    return [
        (np.r_[train_x, n_x + train_y], np.r_[test_x, n_x + test_y])
        for (train_x, test_x), (train_y, test_y) in zip(folds_x, folds_y, strict=True)
    ]


def c2st_auc(
    x: np.ndarray,
    y: np.ndarray,
    *,
    classifier: str | ClassifierMixin = "knn",
    n_neighbors: int = 15,
    n_folds: int = 5,
    min_cells: int = C2ST_MIN_CELLS,
    seed: int = 0,
) -> float:
    """Classifier two-sample test: cross-validated ROC AUC of telling ``y`` from ``x``.

    0.5 means the two sets cannot be told apart; 1.0 means they are fully separable. The default
    k-nearest-neighbour classifier on standardised coordinates sees local density, so unlike W2
    and MMD it penalises a generator that collapses towards the type mean.

    Parameters
    ----------
    x
        Real cells (cells x features), e.g. principal components or a latent.
    y
        Generated cells, same features.
    classifier
        ``"knn"`` (default, k = ``n_neighbors``; the ``auc_latent`` of the benchmarks page),
        ``"svm"`` (RBF support vector machine: more powerful, noisier at few cells),
        ``"logistic"`` (sees only mean shifts), or any scikit-learn classifier with
        ``predict_proba`` or ``decision_function`` (cloned). Features are standardised first.
    n_neighbors
        k of the kNN classifier; reduced to a quarter of the training fold for small sets so the
        vote stays local.
    n_folds
        Cross-validation folds, each holding out the same share of both sets (assigned by
        position with ``seed``, so ``c2st_auc(x, x)`` is 0.5); the AUC is the mean over folds.
    min_cells
        Fewest cells per side; below it NaN is returned with a warning.
    seed
        Seed of the fold assignment.

    Returns
    -------
    float
        Mean held-out ROC AUC (generated = positive class), or NaN with too few cells. Values
        clearly below 0.5 mean ``y`` contains copies of cells of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    >>> from scbranchdiff.metrics import c2st_auc
    >>> bool(c2st_auc(x, y) < 0.6)  # same distribution: near 0.5
    True
    >>> bool(c2st_auc(x, y + 2.0) > 0.95)  # shifted: told apart
    True
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            "`x` and `y` must be 2-d with the same number of features, "
            f"got {x.shape} and {y.shape}."
        )
    if min(len(x), len(y)) < max(min_cells, 2):
        warnings.warn(
            f"Two-sample AUC needs at least {min_cells} cells per side, got {len(x)} and {len(y)}; "
            "returning NaN.",
            UserWarning,
            stacklevel=2,
        )
        return float("nan")
    features = np.vstack([x, y])
    is_generated = np.r_[np.zeros(len(x), dtype=int), np.ones(len(y), dtype=int)]
    n_splits = min(n_folds, len(x), len(y))
    smallest_train_fold = len(features) - int(np.ceil(len(features) / n_splits))
    model = _two_sample_classifier(classifier, max(1, min(n_neighbors, smallest_train_fold // 4)))
    folds = _paired_folds(len(x), len(y), n_splits, seed)
    return float(cross_val_score(model, features, is_generated, cv=folds, scoring="roc_auc").mean())


def fit_label_classifier(
    pcs: np.ndarray, labels: Sequence[str] | np.ndarray, *, seed: int = 0
) -> Pipeline:
    """Fit the cell-type classifier of the label metrics: logistic regression on standardised PCs.

    Parameters
    ----------
    pcs
        Principal components of real cells (see :func:`fit_expression_pca`).
    labels
        Their cell types.
    seed
        Random state of the solver.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``StandardScaler`` followed by ``LogisticRegression``; call ``.predict(pcs)``.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> space = sbd.metrics.fit_expression_pca(real, n_pcs=10)
    >>> classifier = sbd.metrics.fit_label_classifier(space.transform(real), real.obs["cell_type"])
    >>> bool(classifier.score(space.transform(other), other.obs["cell_type"]) > 0.8)
    True
    """
    labels = np.asarray(labels, dtype=object)
    if len(np.unique(labels)) < 2:
        raise ValueError("A label classifier needs real cells of at least 2 cell types.")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return model.fit(np.asarray(pcs), labels.astype(str))


def per_type_accuracy(
    predicted: np.ndarray, labels: np.ndarray, cell_types: Sequence[str]
) -> pd.Series:
    """Fraction of cells of each type whose predicted type is their own (NaN for absent types)."""
    predicted, labels = np.asarray(predicted, dtype=object), np.asarray(labels, dtype=object)
    accuracy = {
        t: float(np.mean(predicted[labels == t] == t)) if np.any(labels == t) else float("nan")
        for t in cell_types
    }
    return pd.Series(accuracy, name="label_accuracy", dtype=float)


def label_transfer_accuracy(
    adata_train_real: AnnData,
    adata_query: AnnData,
    labels_key: str,
    *,
    n_pcs: int = 30,
    layer: str | None = None,
    is_counts: bool | None = None,
    seed: int = 0,
) -> pd.Series:
    """How often query cells are assigned their own type by a classifier trained on real cells.

    The classifier is a logistic regression on the ``n_pcs``-component PCA of log-normalised
    ``adata_train_real`` (the representation of :func:`fit_expression_pca`); query cells are
    projected into that PCA with the real gene means subtracted. Call it once with held-out real
    cells and once with generated cells and compare: a generator is good when its cells are
    recognised about as often as held-out real ones.

    Parameters
    ----------
    adata_train_real
        Real training cells (counts or log-normalised) with ``obs[labels_key]``.
    adata_query
        Cells to classify (held-out real or generated); same genes, any order.
    labels_key
        Column of ``obs`` with the cell type, in both AnnData; types are compared by name.
    n_pcs
        Number of principal components.
    layer
        Layer to read from both AnnData instead of ``.X``.
    is_counts
        Whether values are raw counts; None detects it from the training cells.
    seed
        Seed of the PCA and the classifier.

    Returns
    -------
    pandas.Series
        Index: the query's cell types that also occur in training (types seen on one side only
        are dropped with a warning); values: fraction of that type's query cells predicted as it.
        Cell counts per type are ``adata_query.obs[labels_key].value_counts()``.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    >>> real, other = adata[::2].copy(), adata[1::2].copy()  # two halves of the same cells
    >>> accuracy = sbd.metrics.label_transfer_accuracy(real, other, "cell_type")
    >>> bool(accuracy["T_CD4"] > 0.8)
    True
    """
    train_labels = cell_type_labels(adata_train_real, labels_key, name="adata_train_real")
    query_labels = cell_type_labels(adata_query, labels_key, name="adata_query")
    types = shared_cell_types(
        label_order(adata_train_real, labels_key, train_labels),
        sorted({t for t in query_labels if t is not None}),
        name="adata_query",
    )
    labelled = train_labels != None  # noqa: E711  (elementwise on an object array)
    train = adata_train_real[labelled]
    space = fit_expression_pca(train, n_pcs=n_pcs, layer=layer, is_counts=is_counts, seed=seed)
    train_pcs = space.transform(train, name="adata_train_real")
    classifier = fit_label_classifier(train_pcs, train_labels[labelled], seed=seed)
    predicted = classifier.predict(space.transform(adata_query, name="adata_query"))
    return per_type_accuracy(predicted, query_labels, types)
