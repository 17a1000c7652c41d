"""The demo data: scanpy's PBMCs with counts, and the simulator with a known cell-type tree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from scbranchdiff.data import DEFAULT_TREE, pbmc68k, simulate_hierarchy


def assert_integer_counts(counts: sp.spmatrix) -> None:
    assert sp.issparse(counts) and counts.format == "csr"
    assert counts.dtype == np.float32
    assert np.all(counts.data >= 0)
    np.testing.assert_array_equal(counts.data, np.rint(counts.data))


def log_normalised_pca(adata: AnnData, n_comps: int = 30) -> np.ndarray:
    normalised = AnnData(adata.layers["counts"].copy())
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    sc.pp.pca(normalised, n_comps=n_comps, random_state=0)
    return normalised.obsm["X_pca"]


def siblings(tree: dict) -> dict[str, set[str]]:
    """Leaf -> leaves of the same finest group, for the two-level-dict-of-lists default tree."""
    groups = [set(leaves) for lineage in tree.values() for leaves in lineage.values()]
    return {leaf: group - {leaf} for group in groups for leaf in group}


@pytest.fixture(scope="module")
def simulated() -> tuple[AnnData, dict, np.ndarray]:
    adata, tree = simulate_hierarchy(seed=0)
    return adata, tree, log_normalised_pca(adata)


# pbmc68k


def test_pbmc68k_counts_are_integers_that_reproduce_the_log_normalised_x() -> None:
    adata = pbmc68k()
    counts = adata.layers["counts"]
    assert adata.shape == (700, 765)
    assert_integer_counts(counts)
    assert np.all(np.asarray(counts.sum(axis=1)).ravel() > 0)
    # X = log1p(counts / n_counts * 1e4), stored by scanpy with 3 decimals.
    n_counts = adata.obs["n_counts"].to_numpy()[:, None]
    relog = np.log1p(counts.toarray() / n_counts * 1e4)
    np.testing.assert_allclose(relog, adata.X.toarray(), atol=1e-3)
    # n_counts covers genes filtered out before scanpy shipped the 765.
    assert np.all(np.asarray(counts.sum(axis=1)).ravel() <= adata.obs["n_counts"].to_numpy())


def test_pbmc68k_keeps_cell_type_labels_and_embedding() -> None:
    adata = pbmc68k()
    for key in ["bulk_labels", "louvain"]:
        assert isinstance(adata.obs[key].dtype, pd.CategoricalDtype)
        assert adata.obs[key].notna().all()
    assert adata.obs["bulk_labels"].nunique() == 10
    assert adata.obsm["X_umap"].shape == (700, 2)
    assert adata.raw is None


# simulate_hierarchy


def test_simulated_counts_are_nonnegative_integers(simulated) -> None:
    adata, _, _ = simulated
    assert adata.shape == (8 * 200, 500)
    assert_integer_counts(adata.X)
    assert_integer_counts(adata.layers["counts"])
    assert (adata.X != adata.layers["counts"]).nnz == 0
    assert np.all(np.asarray(adata.X.sum(axis=1)).ravel() > 0)


def test_simulation_is_deterministic_for_a_seed() -> None:
    first, _ = simulate_hierarchy(n_cells_per_type=20, seed=7)
    again, _ = simulate_hierarchy(n_cells_per_type=20, seed=7)
    other, _ = simulate_hierarchy(n_cells_per_type=20, seed=8)
    assert (first.X != again.X).nnz == 0
    np.testing.assert_array_equal(first.obs["state"], again.obs["state"])
    assert (first.X != other.X).nnz > 0


def test_simulated_annotation_nests_from_coarse_to_fine(simulated) -> None:
    adata, tree, _ = simulated
    assert tree == DEFAULT_TREE and tree is not DEFAULT_TREE
    obs = adata.obs
    assert list(obs["level_1"].cat.categories) == list(tree)
    assert list(obs["level_2"].cat.categories) == [g for lin in tree.values() for g in lin]
    assert list(obs["cell_type"].cat.categories) == [
        leaf for lineage in tree.values() for leaves in lineage.values() for leaf in leaves
    ]
    # Each finer label sits in exactly one coarser group.
    assert (obs.groupby("cell_type", observed=True)["level_2"].nunique() == 1).all()
    assert (obs.groupby("level_2", observed=True)["level_1"].nunique() == 1).all()
    assert (obs["cell_type"].value_counts() == 200).all()


def test_sibling_types_are_closer_than_cousins(simulated) -> None:
    adata, tree, latent = simulated
    cell_types = list(adata.obs["cell_type"].cat.categories)
    labels = adata.obs["cell_type"].to_numpy()
    centroids = np.stack([latent[labels == c].mean(axis=0) for c in cell_types])
    distance = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    lineage = adata.obs.groupby("cell_type", observed=True)["level_1"].first()
    for i, cell_type in enumerate(cell_types):
        sibling = [cell_types.index(s) for s in siblings(tree)[cell_type]]
        cousin = [j for j, c in enumerate(cell_types) if lineage[c] == lineage[cell_type]]
        cousin = [j for j in cousin if j != i and j not in sibling]
        other_lineage = [j for j, c in enumerate(cell_types) if lineage[c] != lineage[cell_type]]
        assert distance[i, sibling].max() < distance[i, cousin].min()
        assert distance[i, cousin].max() < distance[i, other_lineage].min()


def test_simulated_types_are_separable_and_confused_only_with_siblings(simulated) -> None:
    adata, tree, latent = simulated
    labels = adata.obs["cell_type"].to_numpy()
    predicted = cross_val_predict(LogisticRegression(max_iter=1000), latent, labels, cv=5)
    for cell_type in adata.obs["cell_type"].cat.categories:
        accuracy = np.mean(predicted[labels == cell_type] == cell_type)
        assert accuracy >= 0.9, (cell_type, accuracy)
    wrong = predicted != labels
    sibling_sets = siblings(tree)
    confused_with_sibling = [p in sibling_sets[y] for y, p in zip(labels[wrong], predicted[wrong], strict=True)]
    assert np.mean(confused_with_sibling) >= 0.9


def test_state_is_recoverable_from_the_state_program_within_each_type(simulated) -> None:
    adata, _, _ = simulated
    state_genes = (adata.var["program"] == "state").to_numpy()
    assert state_genes.sum() > 0
    normalised = sc.pp.normalize_total(adata, target_sum=1e4, layer="counts", inplace=False)
    score = np.log1p(np.asarray(normalised["X"][:, state_genes].todense())).mean(axis=1)
    assert np.corrcoef(score, adata.obs["state"])[0, 1] > 0.8
    for _, cells in adata.obs.groupby("cell_type", observed=True).indices.items():
        assert np.corrcoef(score[cells], adata.obs["state"].to_numpy()[cells])[0, 1] > 0.8
    # The state is drawn independently of the type.
    assert adata.obs.groupby("cell_type", observed=True)["state"].mean().between(0.4, 0.6).all()


def test_without_state_program_no_gene_follows_the_state() -> None:
    adata, _ = simulate_hierarchy(n_cells_per_type=10, state_program=False)
    assert "state" not in set(adata.var["program"])
    assert adata.obs["state"].between(0, 1).all()


def test_custom_tree_and_cell_numbers() -> None:
    tree = [["A", "B"], {"C": None, "D": ["D1", "D2"]}]
    adata, returned = simulate_hierarchy(
        tree, n_cells_per_type={"A": 5, "D1": 3}, n_genes=200, n_batches=2, seed=1
    )
    assert returned == tree
    assert adata.obs["cell_type"].value_counts().to_dict() == {"A": 5, "D1": 3}
    assert list(adata.obs["level_1"].cat.categories) == ["A/B", "D"]
    assert list(adata.obs["batch"].cat.categories) == ["batch_0", "batch_1"]


@pytest.mark.parametrize(
    ("tree", "match"),
    [
        ({}, "no cell types"),
        ({"a": ["x"], "b": ["x"]}, "more than one node"),
        ("A", "string"),
        ({"state": None}, "gene program"),
    ],
)
def test_invalid_tree_is_rejected(tree, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_hierarchy(tree, n_cells_per_type=2)


def test_programs_that_do_not_fit_the_genes_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_genes=100"):
        simulate_hierarchy(n_genes=100)
    with pytest.raises(KeyError, match="not cell types"):
        simulate_hierarchy(n_cells_per_type={"neuron": 3})


def test_returned_tree_gives_the_hierarchy_of_the_labels(simulated) -> None:
    from scbranchdiff import hierarchy  # our own module: an import error must fail the test

    adata, tree, _ = simulated
    topology = hierarchy.Hierarchy.from_nested(tree)
    assert topology == hierarchy.Hierarchy.from_annotation(
        adata.obs, ["level_1", "level_2", "cell_type"]
    )
