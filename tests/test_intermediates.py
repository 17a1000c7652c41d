"""Intermediate states at branch points and the leaf cells they become."""

from __future__ import annotations

import numpy as np
import pytest

import scbranchdiff as sbd

CHILDREN = ["T_CD4", "T_CD8"]
UNRELATED = "mono_classical"


@pytest.fixture(scope="module")
def hybrids(simulated_pca_model):
    model, _, _ = simulated_pca_model
    return model.sample_intermediates(CHILDREN, n_cells=100, seed=0, n_steps=200)


def _centroids(model, adata) -> dict[str, np.ndarray]:
    z = model.get_latent_representation(adata.copy())
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    return {c: z[labels == c].mean(axis=0) for c in np.unique(labels)}


def test_layout_links_each_state_to_one_cell_of_every_type(simulated_pca_model, hybrids):
    model, _, _ = simulated_pca_model
    obs = hybrids.obs
    assert hybrids.n_obs == 300 and list(hybrids.var_names) == list(model.adata.var_names)
    assert list(obs["stage"].cat.categories) == ["intermediate", "leaf"]
    inter = obs[obs["stage"] == "intermediate"]
    leaves = obs[obs["stage"] == "leaf"]
    assert inter["cell_type"].isna().all()
    assert leaves["cell_type"].astype(str).value_counts().to_dict() == {"T_CD4": 100, "T_CD8": 100}
    for cell_type in CHILDREN:
        ids = leaves.loc[leaves["cell_type"] == cell_type, "state_id"]
        assert sorted(ids) == sorted(inter["state_id"])
    split = model.hierarchy.split_time(*CHILDREN)
    # the first grid time at or below the split (200 steps: spacing 0.005)
    assert (inter["t"] <= split).all() and (inter["t"] > split - 0.006).all()
    assert (leaves["t"] == 0).all()
    assert (inter["branch"] == model.hierarchy.common_branch(*CHILDREN)).all()
    assert hybrids.obsm["X_state"].shape == (300, model.latent_backend.n_latent)
    assert hybrids.uns["scbranchdiff"]["cell_types"] == CHILDREN


def test_leaf_cells_are_the_generated_cells_of_the_same_seed(simulated_pca_model, hybrids):
    model, _, _ = simulated_pca_model
    generated = model.generate({c: 100 for c in CHILDREN}, seed=0, n_steps=200)
    for cell_type in CHILDREN:
        leaf = hybrids[(hybrids.obs["stage"] == "leaf") & (hybrids.obs["cell_type"] == cell_type)]
        gen = generated[generated.obs["cell_type"] == cell_type]
        np.testing.assert_allclose(leaf.obsm["X_latent"], gen.obsm["X_latent"], atol=1e-5)


def test_a_multistep_sampler_continues_from_the_stopped_states_as_generate_does(simulated_pca_model):
    # dpm++ carries the last step's estimate: stopping inside a branch must not reset it
    model, _, _ = simulated_pca_model
    t = model.hierarchy.split_time(*CHILDREN) + 0.1
    hyb = model.sample_intermediates(CHILDREN, n_cells=20, t=t, sampler="dpm++", n_steps=30, seed=3)
    generated = model.generate({c: 20 for c in CHILDREN}, sampler="dpm++", n_steps=30, seed=3)
    for cell_type in CHILDREN:
        leaf = hyb[(hyb.obs["stage"] == "leaf") & (hyb.obs["cell_type"] == cell_type)]
        gen = generated[generated.obs["cell_type"] == cell_type]
        np.testing.assert_allclose(leaf.obsm["X_latent"], gen.obsm["X_latent"], atol=1e-5)


def test_intermediates_lie_between_the_child_types(simulated_pca_model, hybrids):
    model, train, _ = simulated_pca_model
    centroid = _centroids(model, train)
    inter = hybrids[hybrids.obs["stage"] == "intermediate"].obsm["X_latent"]
    for child in CHILDREN:
        to_child = np.linalg.norm(inter - centroid[child], axis=1).mean()
        unrelated = np.linalg.norm(centroid[UNRELATED] - centroid[child])
        assert to_child < unrelated, (child, to_child, unrelated)
    # the hybrids are nearer the two children than any other type
    names = list(centroid)
    dist = np.stack([np.linalg.norm(inter - centroid[c], axis=1) for c in names], axis=1)
    nearest = np.asarray(names)[dist.argmin(axis=1)]
    counts = dict(zip(*np.unique(nearest, return_counts=True), strict=True))
    assert np.isin(nearest, CHILDREN).mean() >= 0.9, counts


def test_every_leaf_outcome_is_assigned_to_its_type(simulated_pca_model, hybrids):
    _, train, held_out = simulated_pca_model
    leaves = hybrids[hybrids.obs["stage"] == "leaf"].copy()
    real = sbd.metrics.label_transfer_accuracy(train, held_out, "cell_type", layer="lognorm")
    assigned = sbd.metrics.label_transfer_accuracy(train, leaves, "cell_type", layer="lognorm")
    for cell_type in CHILDREN:
        assert assigned[cell_type] >= 0.9 * real[cell_type], (cell_type, assigned, real)


def test_intermediates_higher_up_and_pbmc68k(simulated_pca_model, pbmc68k_model):
    model, _, _ = simulated_pca_model
    types = ["T_CD4", "B_naive", "B_memory"]
    hyb = model.sample_intermediates(types, n_cells=10, t=0.8, sampler="ode", n_steps=50, seed=1)
    assert hyb.n_obs == 40
    assert (hyb.obs.loc[hyb.obs["stage"] == "intermediate", "t"] <= 0.8).all()
    # an scVI latent: intermediates decode to counts, like generated cells
    pbmc = pbmc68k_model.sample_intermediates(
        ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T"], n_cells=20, sampler="ode", n_steps=50
    )
    assert pbmc.n_obs == 60 and "counts" in pbmc.layers
    assert np.isfinite(pbmc.layers["expected"]).all()


def test_bad_input_raises(simulated_pca_model):
    model, _, _ = simulated_pca_model
    with pytest.raises(KeyError, match="alien"):
        model.sample_intermediates(["T_CD4", "alien"], 5)
    with pytest.raises(ValueError, match="two or more"):
        model.sample_intermediates(["T_CD4"], 5)
    with pytest.raises(ValueError, match="two or more"):
        model.sample_intermediates(["T_CD4", "T_CD4"], 5)
    with pytest.raises(TypeError, match="list"):
        model.sample_intermediates("T_CD4", 5)
    with pytest.raises(ValueError, match="below the split"):
        model.sample_intermediates(CHILDREN, 5, t=0.1)
    with pytest.raises(ValueError, match="n_cells"):
        model.sample_intermediates(CHILDREN, 0)


def test_output_plots_with_pl_intermediates(simulated_pca_model, hybrids):
    _, train, _ = simulated_pca_model
    ax = sbd.pl.intermediates(train, hybrids, "cell_type", basis="pca", layer="lognorm", show=False)
    from matplotlib.collections import LineCollection, PathCollection

    points = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    # every real, intermediate and leaf cell is drawn
    assert points == train.n_obs + hybrids.n_obs
    links = next(c for c in ax.collections if isinstance(c, LineCollection))
    # each link starts at an intermediate state and ends at one of its leaves
    assert 0 < len(links.get_segments()) <= (hybrids.obs["stage"] == "leaf").sum()
