"""Generated-vs-real metrics on cases with known answers."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from scipy import sparse
from threadpoolctl import threadpool_limits

import scbranchdiff.metrics as metrics

LABELS = "cell_type"
# pbmc68k_reduced has types of 8-19 cells, too few for a two-sample AUC after splitting
few_cells_warning = pytest.mark.filterwarnings("ignore:Cell types with fewer than")


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # The matrices here are tiny; BLAS threads competing for 2 busy cores cost 10-100x.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def simulated_counts(
    n_cells_per_type: int = 150, n_genes: int = 60, *, seed: int = 0
) -> ad.AnnData:
    """Poisson counts of three cell types, each with its own up-regulated genes."""
    rng = np.random.default_rng(seed)
    types = ["B", "T", "NK"]
    log_rates = rng.normal(0.0, 1.0, size=(len(types), n_genes))
    for k in range(len(types)):
        log_rates[k, 10 * k : 10 * k + 10] += 2.5
    labels = np.repeat(types, n_cells_per_type)
    library = rng.lognormal(0.0, 0.3, size=(len(labels), 1))
    counts = rng.poisson(
        library * np.exp(log_rates[np.repeat(np.arange(len(types)), n_cells_per_type)])
    )
    return ad.AnnData(
        counts.astype(np.float32),
        obs=pd.DataFrame(
            {LABELS: pd.Categorical(labels, categories=types)},
            index=[f"cell{i}" for i in range(len(labels))],
        ),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
    )


def log_normalised(adata: ad.AnnData) -> ad.AnnData:
    out = adata.copy()
    out.X = metrics.log_normalise(adata.X)
    return out


@pytest.fixture(scope="module")
def pbmc() -> ad.AnnData:
    """scanpy's pbmc68k_reduced (700 cells x 765 genes), log-normalised values from ``.raw``."""
    sc = pytest.importorskip("scanpy")
    reduced = sc.datasets.pbmc68k_reduced()
    x = reduced.raw.X.toarray() if hasattr(reduced.raw.X, "toarray") else np.asarray(reduced.raw.X)
    obs = pd.DataFrame(
        {LABELS: reduced.obs["bulk_labels"].astype("category")}, index=reduced.obs_names
    )
    return ad.AnnData(x.astype(np.float64), obs=obs, var=pd.DataFrame(index=reduced.raw.var_names))


def split_in_two(adata: ad.AnnData, seed: int) -> tuple[ad.AnnData, ad.AnnData]:
    """Two disjoint halves of every cell type."""
    rng = np.random.default_rng(seed)
    first = np.zeros(adata.n_obs, dtype=bool)
    for cell_type in adata.obs[LABELS].unique():
        rows = rng.permutation(np.flatnonzero(adata.obs[LABELS] == cell_type))
        first[rows[: len(rows) // 2]] = True
    return adata[first].copy(), adata[~first].copy()


def collapsed(adata: ad.AnnData, shrink: float = 0.5) -> ad.AnnData:
    """Cells moved ``shrink`` of the way towards their type mean: a collapsed generator."""
    out = adata.copy()
    for cell_type in out.obs[LABELS].unique():
        rows = (out.obs[LABELS] == cell_type).to_numpy()
        mean = out.X[rows].mean(axis=0)
        out.X[rows] = mean + (1 - shrink) * (out.X[rows] - mean)
    return out


def with_permuted_labels(adata: ad.AnnData, seed: int) -> ad.AnnData:
    out = adata.copy()
    out.obs[LABELS] = np.random.default_rng(seed).permutation(out.obs[LABELS].to_numpy())
    return out


def assert_same_anndata(a: ad.AnnData, b: ad.AnnData) -> None:
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_index_equal(a.var_names, b.var_names)


# --- metric functions on arrays -------------------------------------------------------------


def test_identical_sets_have_zero_distances_and_chance_auc():
    x = np.random.default_rng(0).normal(size=(120, 8))
    assert metrics.wasserstein2(x, x) == pytest.approx(0.0, abs=1e-9)
    assert metrics.mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    assert metrics.energy_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert 0.4 <= metrics.c2st_auc(x, x) <= 0.6


def test_samples_of_one_distribution_are_indistinguishable():
    rng = np.random.default_rng(1)
    aucs = [
        metrics.c2st_auc(rng.normal(size=(150, 8)), rng.normal(size=(150, 8)), seed=s)
        for s in range(3)
    ]
    assert 0.4 <= np.mean(aucs) <= 0.6


def test_shifted_sets_score_larger_distances_and_auc_near_one():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(150, 8)), rng.normal(size=(150, 8))
    shifted = y + 1.5
    assert metrics.wasserstein2(x, shifted) > 2 * metrics.wasserstein2(x, y)
    assert metrics.mmd_rbf(x, shifted) > 5 * metrics.mmd_rbf(x, y)
    assert metrics.energy_distance(x, shifted) > 2 * metrics.energy_distance(x, y)
    assert metrics.c2st_auc(x, shifted) > 0.95
    assert metrics.c2st_auc(x, shifted, classifier="logistic") > 0.95


def test_wasserstein2_of_a_translation_is_its_length():
    x = np.random.default_rng(3).normal(size=(80, 2))
    assert metrics.wasserstein2(x, x + np.array([3.0, 4.0])) == pytest.approx(5.0)


def test_energy_distance_matches_scipy_in_one_dimension():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=100), rng.normal(1.0, 2.0, size=70)
    assert metrics.energy_distance(a[:, None], b[:, None]) == pytest.approx(
        scipy.stats.energy_distance(a, b)
    )


def test_copies_of_real_cells_score_below_chance():
    x = np.random.default_rng(5).normal(size=(150, 8))
    assert metrics.c2st_auc(x, x[::-1]) < 0.4


def test_too_few_cells_give_nan_auc_with_a_warning():
    x = np.zeros((5, 3))
    with pytest.warns(UserWarning, match="at least 10 cells"):
        assert np.isnan(metrics.c2st_auc(x, x))


def test_marker_overlap_is_one_for_the_same_cells_and_low_for_permuted_labels():
    adata = log_normalised(simulated_counts())
    labels = adata.obs[LABELS].astype(str).to_numpy()
    same = metrics.marker_overlap(adata.X, labels, adata.X, labels, n_markers=10)
    permuted = metrics.marker_overlap(
        adata.X, labels, adata.X, np.random.default_rng(0).permutation(labels), n_markers=10
    )
    assert (same == 1.0).all()
    assert permuted.mean() < 0.5


# --- evaluate and label transfer on AnnData -------------------------------------------------


def test_evaluate_table_has_a_row_per_type_and_split_half_columns():
    real, generated = split_in_two(simulated_counts(), seed=0)
    generated.obsm["X_latent"] = generated.X[:, :5].copy()
    real.obsm["X_latent"] = real.X[:, :5].copy()
    table = metrics.evaluate(real, generated, LABELS, n_pcs=10, latent_key="X_latent")
    assert list(table.index) == ["B", "T", "NK", "overall"]
    assert table.index.name == LABELS
    expected = ["n_cells"] + [m + s for m in metrics.METRICS for s in ("", "_split_half")]
    assert list(table.columns) == expected
    assert table.loc["overall", "n_cells"] == table["n_cells"].iloc[:-1].sum() == 3 * 25
    assert table.loc["overall", "w2"] == pytest.approx(table["w2"].iloc[:-1].mean())
    assert table.attrs["is_counts"] is True
    without_reference = metrics.evaluate(real, generated, LABELS, n_pcs=10, split_half=False)
    assert "c2st_auc_latent" not in without_reference.columns
    assert not any(c.endswith("_split_half") for c in without_reference.columns)
    pd.testing.assert_series_equal(without_reference["w2"], table["w2"])


def test_fresh_real_cells_score_like_the_split_half_reference():
    real, generated = split_in_two(simulated_counts(n_cells_per_type=240), seed=1)
    table = metrics.evaluate(real, generated, LABELS, n_pcs=10)
    overall = table.loc["overall"]
    assert 0.35 <= overall["c2st_auc"] <= 0.65
    assert 0.35 <= overall["c2st_auc_split_half"] <= 0.65
    assert overall["label_accuracy"] > 0.9 and overall["label_accuracy_split_half"] > 0.9
    assert overall["mean_corr"] > 0.95 and overall["marker_overlap"] > 0.7


@few_cells_warning
def test_collapsed_generator_scores_clearly_higher_auc_than_real_split_halves(pbmc):
    # Cells shrunk halfway to their type mean: W2 and MMD can prefer them to real cells,
    # the kNN two-sample AUC must not.
    real, source = split_in_two(pbmc, seed=0)
    fresh = metrics.evaluate(real, source, LABELS, seed=0).loc["overall"]
    collapsed_table = metrics.evaluate(real, collapsed(source), LABELS, seed=0)
    collapsed_overall = collapsed_table.loc["overall"]
    assert collapsed_overall["c2st_auc_split_half"] < 0.62
    assert fresh["c2st_auc"] < 0.62
    assert collapsed_overall["c2st_auc"] > collapsed_overall["c2st_auc_split_half"] + 0.15
    assert collapsed_overall["c2st_auc"] > fresh["c2st_auc"] + 0.15


@few_cells_warning
def test_type_blind_generator_scores_high_auc_and_low_label_accuracy(pbmc):
    real, source = split_in_two(pbmc, seed=1)
    table = metrics.evaluate(real, with_permuted_labels(source, seed=1), LABELS, seed=1)
    overall = table.loc["overall"]
    assert overall["c2st_auc"] > overall["c2st_auc_split_half"] + 0.15
    assert overall["label_accuracy"] < 0.3 < overall["label_accuracy_split_half"]
    assert overall["marker_overlap"] < 0.2 < overall["marker_overlap_split_half"]


def test_permuted_labels_get_low_label_transfer_accuracy(pbmc):
    train, query = split_in_two(pbmc, seed=2)
    held_out = metrics.label_transfer_accuracy(train, query, LABELS)
    permuted = metrics.label_transfer_accuracy(train, with_permuted_labels(query, seed=2), LABELS)
    counts = query.obs[LABELS].value_counts()
    large = counts.index[counts >= 30]
    assert held_out[large].mean() > 0.6
    assert permuted[large].mean() < 0.3
    assert list(held_out.index) == list(pbmc.obs[LABELS].cat.categories)


def test_counts_and_log_normalised_input_give_the_same_table():
    real, generated = split_in_two(simulated_counts(), seed=3)
    from_counts = metrics.evaluate(real, generated, LABELS, n_pcs=10)
    from_log = metrics.evaluate(log_normalised(real), log_normalised(generated), LABELS, n_pcs=10)
    assert from_counts.attrs["is_counts"] and not from_log.attrs["is_counts"]
    pd.testing.assert_frame_equal(from_counts, from_log, check_exact=False, atol=1e-6)


def test_sparse_input_gives_the_same_table_as_dense():
    real, generated = split_in_two(simulated_counts(), seed=3)
    dense = metrics.evaluate(real, generated, LABELS, n_pcs=10)
    real.X, generated.X = sparse.csr_matrix(real.X), sparse.csr_matrix(generated.X)
    pd.testing.assert_frame_equal(
        metrics.evaluate(real, generated, LABELS, n_pcs=10), dense, atol=1e-6
    )


def test_generated_genes_in_another_order_are_matched_by_name():
    real, generated = split_in_two(simulated_counts(), seed=4)
    reordered = generated[:, generated.var_names[::-1]].copy()
    pd.testing.assert_frame_equal(
        metrics.evaluate(real, generated, LABELS, n_pcs=10),
        metrics.evaluate(real, reordered, LABELS, n_pcs=10),
        check_exact=False,
        atol=1e-9,
    )


def test_mismatched_genes_raise_naming_them_and_leave_inputs_unchanged():
    real, generated = split_in_two(simulated_counts(), seed=5)
    renamed = generated.copy()
    renamed.var_names = [*generated.var_names[:-2], "CD3E", "MS4A1"]
    before_real, before_generated = real.copy(), renamed.copy()
    with pytest.raises(ValueError, match=r"gene58.*gene59|CD3E.*MS4A1") as error:
        metrics.evaluate(real, renamed, LABELS)
    assert "gene58" in str(error.value) and "CD3E" in str(error.value)
    with pytest.raises(ValueError, match="gene58"):
        metrics.label_transfer_accuracy(real, renamed, LABELS)
    assert_same_anndata(real, before_real)
    assert_same_anndata(renamed, before_generated)


def test_disjoint_labels_raise_naming_them_and_leave_inputs_unchanged():
    real, generated = split_in_two(simulated_counts(), seed=6)
    generated.obs[LABELS] = generated.obs[LABELS].cat.rename_categories(["b", "t", "nk"])
    before_real, before_generated = real.copy(), generated.copy()
    with pytest.raises(ValueError, match=r"No cell type is shared.*'NK'.*'nk'"):
        metrics.evaluate(real, generated, LABELS)
    with pytest.raises(KeyError, match="labels_key='celltype'"):
        metrics.evaluate(real, generated, "celltype")
    assert_same_anndata(real, before_real)
    assert_same_anndata(generated, before_generated)


def test_types_on_one_side_only_are_ignored_with_a_warning():
    real, generated = split_in_two(simulated_counts(), seed=7)
    without_nk = generated[generated.obs[LABELS] != "NK"].copy()
    with pytest.warns(UserWarning, match="only in the real cells: 'NK'"):
        table = metrics.evaluate(real, without_nk, LABELS, n_pcs=10)
    assert list(table.index) == ["B", "T", "overall"]


def test_mixed_counts_and_log_normalised_inputs_raise():
    real, generated = split_in_two(simulated_counts(), seed=8)
    with pytest.raises(ValueError, match="is_counts"):
        metrics.evaluate(real, log_normalised(generated), LABELS)


def test_expected_counts_next_to_real_counts_are_accepted_when_told():
    real, generated = split_in_two(simulated_counts(), seed=9)
    expected = generated.copy()
    expected.X = expected.X + 0.25
    table = metrics.evaluate(real, expected, LABELS, n_pcs=10, is_counts=True)
    assert table.loc["overall", "mean_corr"] > 0.9


def test_missing_latent_key_raises_key_error():
    real, generated = split_in_two(simulated_counts(), seed=10)
    real.obsm["X_latent"] = np.zeros((real.n_obs, 3))
    with pytest.raises(KeyError, match="adata_generated.obsm"):
        metrics.evaluate(real, generated, LABELS, latent_key="X_latent")


def test_small_types_get_nan_auc_with_a_warning():
    real, generated = split_in_two(simulated_counts(n_cells_per_type=40), seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="fewer than 10 cells"):
            metrics.evaluate(real, generated, LABELS, n_pcs=10)
    with pytest.warns(UserWarning, match="fewer than 10 cells"):
        table = metrics.evaluate(real, generated, LABELS, n_pcs=10)
    assert table["c2st_auc"].isna().all()
    assert table["w2"].notna().all()
