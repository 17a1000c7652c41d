"""The peers' protocol (CFGen's evaluation): its definitions, checked against answers computed here."""

from __future__ import annotations

import anndata as ad
import numpy as np
import ot
import pandas as pd
import pytest
import scanpy as sc
from threadpoolctl import threadpool_limits

import scbranchdiff.metrics as metrics
from tests.test_metrics import LABELS, assert_same_anndata, simulated_counts, split_in_two

SIGMAS = (0.01, 0.1, 1.0, 10.0, 100.0)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def mmd_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """The protocol's RBF-MMD written out pair by pair."""
    m = min(len(x), len(y))
    x, y = x[:m], y[:m]

    def k(a, b):
        return sum(np.exp(-np.sum((a - b) ** 2) / (2 * s**2)) for s in SIGMAS)

    xx = sum(k(a, b) for a in x for b in x) / m**2
    yy = sum(k(a, b) for a in y for b in y) / m**2
    xy = sum(k(a, b) for a in x for b in y) / m**2
    return xx + yy - 2 * xy


def test_peer_mmd_of_two_points_is_the_closed_form():
    expected = 10 - 2 * sum(np.exp(-1 / (2 * s**2)) for s in SIGMAS)
    assert metrics.peer_mmd(np.zeros((1, 1)), np.ones((1, 1))) == pytest.approx(expected, rel=1e-12)


def test_peer_mmd_matches_the_pairwise_definition_and_cuts_to_the_smaller_set():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 3)), rng.normal(1.0, 2.0, size=(6, 3))
    assert metrics.peer_mmd(x, y) == pytest.approx(mmd_by_loops(x, y), rel=1e-10)
    # only the first min(n_x, n_y) = 6 cells of x count
    assert metrics.peer_mmd(x, y) == pytest.approx(metrics.peer_mmd(x[:6], y), rel=1e-12)
    assert metrics.peer_mmd(x, x) == pytest.approx(0.0, abs=1e-12)


def test_peer_mmd_rejects_bad_bandwidths():
    with pytest.raises(ValueError, match="sigmas"):
        metrics.peer_mmd(np.zeros((2, 2)), np.ones((2, 2)), sigmas=[1.0, 0.0])


def reference_protocol(real: ad.AnnData, generated: ad.AnnData, n_top_genes: int) -> pd.DataFrame:
    """The protocol written with scanpy's own calls, as the peers' evaluation does it."""
    real = real.copy()
    real.layers["counts"] = real.X.copy()
    sc.pp.highly_variable_genes(real, flavor="seurat_v3", n_top_genes=n_top_genes, layer="counts")
    sc.pp.normalize_total(real, target_sum=1e4)
    sc.pp.log1p(real)
    sc.tl.pca(real, n_comps=30, mask_var="highly_variable", svd_solver="full")
    hvg = real.var["highly_variable"].to_numpy()
    real_hvg = real[:, hvg]
    mean = np.asarray(real_hvg.X.mean(axis=0)).ravel()
    pcs = real.varm["PCs"][hvg]
    generated = generated.copy()
    sc.pp.normalize_total(generated, target_sum=1e4)
    sc.pp.log1p(generated)
    generated_pcs = (np.asarray(generated[:, hvg].X) - mean) @ pcs
    rows = {}
    for cell_type in real.obs[LABELS].cat.categories:
        x = real.obsm["X_pca"][(real.obs[LABELS] == cell_type).to_numpy()]
        y = generated_pcs[(generated.obs[LABELS] == cell_type).to_numpy()]
        cost = ot.dist(x, y)  # squared Euclidean
        w2 = np.sqrt(ot.emd2(ot.unif(len(x)), ot.unif(len(y)), cost, numItermax=10_000_000))
        rows[cell_type] = {"w2": w2, "mmd": mmd_by_loops(x, y)}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_peer_protocol_reproduces_the_protocol_written_with_scanpy():
    real, generated = split_in_two(
        simulated_counts(n_cells_per_type=60, n_genes=120, seed=1), seed=0
    )
    generated.X = generated.X * 2  # counts of another depth: normalisation must remove it
    expected = reference_protocol(real, generated, n_top_genes=50)
    table = metrics.peer_protocol(real, generated, LABELS, n_top_genes=50)
    assert table.attrs["n_genes"] == 50
    for cell_type in ["B", "T", "NK"]:
        assert table.loc[cell_type, "w2"] == pytest.approx(expected.loc[cell_type, "w2"], rel=1e-5)
        assert table.loc[cell_type, "mmd"] == pytest.approx(
            expected.loc[cell_type, "mmd"], rel=1e-5, abs=1e-9
        )
    assert table.loc["overall", "w2"] == pytest.approx(expected["w2"].mean(), rel=1e-5)


def test_peer_protocol_ranks_a_shifted_generator_below_fresh_real_cells_and_reads_labels():
    real, fresh = split_in_two(simulated_counts(n_cells_per_type=80, seed=2), seed=0)
    shifted = fresh.copy()
    shifted.X = shifted.X.copy()
    shifted.X[:, :30] = shifted.X[:, :30] ** 1.5  # every type's marker programme exaggerated
    mislabelled = fresh.copy()
    mislabelled.obs[LABELS] = np.roll(fresh.obs[LABELS].to_numpy(), 80 // 2)  # B labelled T, ...
    good = metrics.peer_protocol(real, fresh, LABELS)
    bad = metrics.peer_protocol(real, shifted, LABELS)
    wrong = metrics.peer_protocol(real, mislabelled, LABELS)
    types = ["B", "T", "NK"]
    assert (bad.loc[types, "w2"] > good.loc[types, "w2"] + 0.5).all()
    assert (bad.loc[types, "mmd"] > good.loc[types, "mmd"]).all()
    assert (wrong.loc[types, "w2"] > good.loc[types, "w2"] + 3.0).all()
    assert (wrong.loc[types, "mmd"] > 2 * good.loc[types, "mmd"]).all()
    # the types separate well: fresh real cells are recognised, relabelled cells are not
    assert good.loc["overall", "knn_f1"] > 0.95
    assert wrong.loc["overall", "knn_f1"] < 0.2
    assert good.loc["overall", "c2st_auc"] < 0.65
    assert list(good.index) == ["B", "T", "NK", "overall"]
    assert good.loc["overall", "n_real"] == real.n_obs


def test_small_types_are_not_scored_and_log_normalised_generators_are_accepted():
    real, fresh = split_in_two(simulated_counts(n_cells_per_type=30, seed=3), seed=0)  # 15 per type
    with pytest.raises(ValueError, match="No cell type has 20 real"):
        metrics.peer_protocol(real, fresh, LABELS)
    table = metrics.peer_protocol(real, fresh, LABELS, min_cells=10)
    logged = fresh.copy()
    logged.X = metrics.log_normalise(fresh.X)
    same = metrics.peer_protocol(real, logged, LABELS, min_cells=10, generated_log_normalised=True)
    pd.testing.assert_frame_equal(table, same, rtol=1e-9)


def test_bad_input_raises_and_leaves_the_data_unchanged():
    real, fresh = split_in_two(simulated_counts(seed=4), seed=0)
    before_real, before_fresh = real.copy(), fresh.copy()
    logged = real.copy()
    logged.X = metrics.log_normalise(real.X)
    with pytest.raises(ValueError, match="raw counts"):
        metrics.peer_protocol(logged, fresh, LABELS)
    with pytest.raises(ValueError, match="other genes"):
        metrics.peer_protocol(real, fresh[:, :50].copy(), LABELS)
    negative = fresh.copy()
    negative.X = negative.X - 1.0
    with pytest.raises(ValueError, match="negative"):
        metrics.peer_protocol(real, negative, LABELS)
    with pytest.raises(ValueError, match="n_pcs"):
        metrics.peer_protocol(real, fresh, LABELS, n_pcs=0)
    assert_same_anndata(real, before_real)
    assert_same_anndata(fresh, before_fresh)
