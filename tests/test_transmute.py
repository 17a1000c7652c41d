"""Transmutation: target identity, what is kept of the source cell, layout and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import scbranchdiff as sbd
from scbranchdiff.model import BranchedDiffusion

from conftest import FAST, stratified_split


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


def _state_score(adata, layer=None) -> np.ndarray:
    """Mean log-expression of the simulated state program's genes."""
    genes = np.flatnonzero(adata.var["program"].to_numpy() == "state")
    x = adata.layers[layer] if layer else adata.X
    return _dense(x)[:, genes].mean(axis=1)


def _snapshot(adata) -> tuple:
    return (list(adata.obs.columns), sorted(adata.uns), list(adata.var_names), list(adata.layers))


@pytest.mark.parametrize(("source", "target"), [("T_CD4", "B_naive"), ("mono_classical", "T_CD8")])
def test_ode_keeps_the_cell_state_better_than_sde(simulated_pca_model, source, target):
    model, train, held_out = simulated_pca_model
    cells = np.flatnonzero(held_out.obs["cell_type"] == source)
    real = sbd.metrics.label_transfer_accuracy(train, held_out, "cell_type", layer="lognorm")
    kept = {}
    for method in ("ode", "sde"):
        out = model.transmute(held_out, target, indices=cells, sampler=method, seed=0)
        assigned = sbd.metrics.label_transfer_accuracy(train, out, "cell_type", layer="lognorm")
        assert assigned[target] >= 0.9 * real[target], (method, assigned[target], real[target])
        source_state = _state_score(held_out[cells], "lognorm")
        kept[method] = np.corrcoef(source_state, _state_score(out))[0, 1]
    assert kept["ode"] >= 0.7, kept
    assert kept["ode"] > kept["sde"] + 0.1, kept


# siblings that differ little (leaf programs at log fold change 0.4): they split late, ~0.35
LATE_TREE = {"lymphoid": {"T": ["T_CD4", "T_CD8"], "B": ["B_naive", "B_memory"]}, "myeloid": ["mono", "DC"]}
LATE_PAIRS = [("T_CD4", "T_CD8"), ("T_CD8", "T_CD4"), ("B_naive", "B_memory"), ("B_memory", "B_naive")]


@pytest.fixture(scope="module")
def late_split_model():
    """A branched model (PCA latent, discovered tree) on siblings that split late. About 40 s."""
    import scanpy as sc

    adata, _ = sbd.data.simulate_hierarchy(
        tree=LATE_TREE, n_cells_per_type=250, n_genes=300, depth_effect=(1.6, 1.2, 0.4), seed=0
    )
    adata.layers["lognorm"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4, layer="lognorm")
    sc.pp.log1p(adata, layer="lognorm")
    held = stratified_split(adata.obs["cell_type"], 0.25, seed=0)
    train, held_out = adata[~held].copy(), adata[held].copy()
    BranchedDiffusion.setup_anndata(train, labels_key="cell_type", layer="lognorm")
    model = BranchedDiffusion(train, latent="pca", n_latent=10, n_hidden=128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=300, **FAST)
    return model, train, held_out


def test_transmutation_into_a_late_splitting_sibling_lands_in_the_target(late_split_model):
    """The state at a late split still carries its type; moment matching removes it (issue 14)."""
    model, train, held_out = late_split_model
    for source, target in LATE_PAIRS:
        assert model.hierarchy.split_time(source, target) < 0.5  # later than any other split
    real = sbd.metrics.label_transfer_accuracy(train, held_out, "cell_type", layer="lognorm")
    ratios: dict[tuple[str, bool], list[float]] = {}
    for source, target in LATE_PAIRS:
        cells = np.flatnonzero(held_out.obs["cell_type"] == source)
        for sampler, match in (("ode", True), ("ode", False), ("sde", True)):
            out = model.transmute(held_out, target, indices=cells, sampler=sampler, match=match, seed=0)
            assigned = sbd.metrics.label_transfer_accuracy(train, out, "cell_type", layer="lognorm")
            ratios.setdefault((sampler, match), []).append(assigned[target] / real[target])
            if sampler == "ode":  # the cell state, a program independent of the type, is kept
                kept = np.corrcoef(_state_score(held_out[cells], "lognorm"), _state_score(out, "lognorm"))[0, 1]
                assert kept >= 0.9, (source, target, match, kept)
    assert min(ratios["ode", True]) >= 0.9, ratios
    assert min(ratios["sde", True]) >= 0.85 and np.mean(ratios["sde", True]) >= 0.9, ratios
    # without the matching, the ODE keeps the source's side of the split: fewer land in the target
    assert np.mean(ratios["ode", True]) >= np.mean(ratios["ode", False]) + 0.05, ratios


def test_transmuted_pbmc68k_cells_are_assigned_to_the_target(pbmc68k_model, pbmc68k_split):
    train, held_out = pbmc68k_split
    before = _snapshot(held_out)
    target = "CD19+ B"
    sources = np.flatnonzero(held_out.obs["bulk_labels"] != target)
    real = sbd.metrics.label_transfer_accuracy(train, held_out, "bulk_labels", layer="counts")
    for method in ("ode", "sde"):
        out = pbmc68k_model.transmute(held_out, target, indices=sources, sampler=method, seed=0)
        assert "counts" in out.layers, "transmuted cells mirror the registered layer"
        assigned = sbd.metrics.label_transfer_accuracy(train, out, "bulk_labels", layer="counts")
        ratio = assigned[target] / real[target]
        assert ratio >= 0.9, f"{method}: {assigned[target]:.2f} vs real {real[target]:.2f}"
    assert _snapshot(held_out) == before, "a new AnnData must not be written into"


def test_output_layout_follows_the_input_cells(simulated_pca_model):
    model, _, held_out = simulated_pca_model
    rng = np.random.default_rng(0)
    cells = rng.permutation(held_out.n_obs)[:60]
    out = model.transmute(held_out, "T_CD8", indices=cells, sampler="sde", seed=3, n_steps=100)
    assert out.n_obs == 60
    assert list(out.var_names) == list(model.adata.var_names)
    assert list(out.obs["source_cell"]) == list(held_out.obs_names[cells])
    sources = held_out.obs["cell_type"].astype(str).to_numpy()[cells]
    assert list(out.obs["source_type"].astype(str)) == list(sources)
    assert (out.obs["target_type"] == "T_CD8").all() and (out.obs["cell_type"] == "T_CD8").all()
    expected_t = [model.hierarchy.split_time(s, "T_CD8") for s in sources]
    np.testing.assert_allclose(out.obs["t_split"], expected_t)
    assert out.obsm["X_latent"].shape == (60, model.latent_backend.n_latent)
    assert out.uns["scbranchdiff"]["sampler"] == "sde" and out.uns["scbranchdiff"]["seed"] == 3
    again = model.transmute(held_out, "T_CD8", indices=cells, sampler="sde", seed=3, n_steps=100)
    np.testing.assert_array_equal(out.obsm["X_latent"], again.obsm["X_latent"])
    other = model.transmute(held_out, "T_CD8", indices=cells, sampler="sde", seed=4, n_steps=100)
    assert not np.allclose(out.obsm["X_latent"], other.obsm["X_latent"])
    # a cell's result does not depend on which other cells are transmuted with it
    alone = model.transmute(held_out, "T_CD8", indices=cells[:5], sampler="ode")
    with_others = model.transmute(held_out, "T_CD8", indices=cells, sampler="ode")
    np.testing.assert_allclose(alone.obsm["X_latent"], with_others.obsm["X_latent"][:5], atol=1e-4)


def test_cells_of_the_target_type_come_back_unchanged(simulated_pca_model):
    model, _, held_out = simulated_pca_model
    cells = np.flatnonzero(held_out.obs["cell_type"] == "B_memory")
    out = model.transmute(held_out, "B_memory", indices=cells)
    assert (out.obs["t_split"] == 0).all()
    latent = model.get_latent_representation(held_out[cells].copy())
    np.testing.assert_allclose(out.obsm["X_latent"], latent, rtol=1e-5, atol=1e-5)
    # with an explicit t they are noised and regenerated, staying of their type
    moved = model.transmute(held_out, "B_memory", indices=cells, t=0.3)
    assert (moved.obs["t_split"] == 0.3).all()
    assert not np.allclose(moved.obsm["X_latent"], latent)


def test_genes_in_another_order_are_matched_by_name(simulated_pca_model):
    model, _, held_out = simulated_pca_model
    cells = np.arange(20)
    shuffled = held_out[:, np.random.default_rng(1).permutation(held_out.n_vars)].copy()
    a = model.transmute(held_out, "DC_conventional", indices=cells)
    b = model.transmute(shuffled, "DC_conventional", indices=cells)
    np.testing.assert_allclose(a.obsm["X_latent"], b.obsm["X_latent"], atol=1e-5)


def test_bad_input_raises_and_changes_nothing(simulated_pca_model):
    model, _, held_out = simulated_pca_model
    params = [p.detach().clone() for p in model.module.parameters()]
    before = _snapshot(held_out)
    with pytest.raises(KeyError, match="Unknown `target`"):
        model.transmute(held_out, "not a type")
    with pytest.raises(ValueError, match="missing 3"):
        model.transmute(held_out[:, 3:].copy(), "T_CD8")
    no_labels = held_out.copy()
    del no_labels.obs["cell_type"]
    with pytest.raises(KeyError, match="cell_type"):
        model.transmute(no_labels, "T_CD8")
    no_layer = held_out.copy()
    del no_layer.layers["lognorm"]
    with pytest.raises(KeyError, match="lognorm"):
        model.transmute(no_layer, "T_CD8")
    unknown = held_out[:10].copy()
    unknown.obs["cell_type"] = pd.Categorical(["alien"] * 10)
    with pytest.raises(ValueError, match="alien"):
        model.transmute(unknown, "T_CD8")
    with pytest.raises(ValueError, match="`sampler`"):
        model.transmute(held_out, "T_CD8", sampler="euler")
    with pytest.raises(ValueError, match="`t`"):
        model.transmute(held_out, "T_CD8", t=1.5)
    with pytest.raises(IndexError, match="indices"):
        model.transmute(held_out, "T_CD8", indices=[held_out.n_obs])
    with pytest.raises(TypeError, match="`match` must be True or False"):
        model.transmute(held_out, "T_CD8", match="yes")
    assert _snapshot(held_out) == before
    assert all(torch.equal(p, q) for p, q in zip(params, model.module.parameters(), strict=True))


def test_flat_model_needs_t_and_has_no_intermediates(simulated_pca_model):
    _, train, held_out = simulated_pca_model
    adata = train.copy()
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type", layer="lognorm")
    flat = BranchedDiffusion(adata, latent="pca", n_latent=10, n_hidden=32, hierarchy="flat")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat.train(max_epochs=2, **FAST)
    cells = np.flatnonzero(held_out.obs["cell_type"] == "T_CD4")[:10]
    with pytest.raises(ValueError, match="pass `t`"):
        flat.transmute(held_out, "T_CD8", indices=cells)
    out = flat.transmute(held_out, "T_CD8", indices=cells, t=0.5, n_steps=20)
    assert out.n_obs == 10 and (out.obs["t_split"] == 0.5).all()
    with pytest.raises(ValueError, match="flat"):
        flat.sample_intermediates(["T_CD4", "T_CD8"], 5)


def test_transmuted_cells_plot_with_pl_transmutation(simulated_pca_model):
    model, _, held_out = simulated_pca_model
    cells = np.flatnonzero(held_out.obs["cell_type"] == "T_CD4")
    out = model.transmute(held_out, "B_naive", indices=cells)
    ax = sbd.pl.transmutation(
        held_out, out, "cell_type", basis="pca", layer="lognorm", show=False, n_arrows=len(cells)
    )
    by_label = {c.get_label(): c for c in ax.collections}
    sources = by_label["source cells"].get_offsets()
    transmuted = by_label["transmuted cells"].get_offsets()
    # one point per source and per transmuted cell, each source drawn at its real cell
    assert len(sources) == len(transmuted) == len(cells)
    real = by_label["real, other types"].get_offsets()
    assert {tuple(np.round(p, 6)) for p in sources} <= {tuple(np.round(p, 6)) for p in real}
    # arrows go from each source to its own transmuted cell
    arrows = next(c for c in ax.collections if type(c).__name__ == "Quiver")
    assert arrows.N == len(cells)
    ends = np.asarray(arrows.get_offsets()) + np.column_stack([arrows.U, arrows.V])
    assert {tuple(np.round(p, 4)) for p in ends} == {tuple(np.round(p, 4)) for p in transmuted}


def test_method_is_a_deprecated_name_of_sampler(simulated_pca_model):
    model, _, held_out = simulated_pca_model
    cells = np.flatnonzero(held_out.obs["cell_type"] == "T_CD4")[:5]
    with pytest.warns(FutureWarning, match="sampler"):
        old = model.transmute(held_out, "T_CD8", indices=cells, method="sde", seed=1, n_steps=20)
    new = model.transmute(held_out, "T_CD8", indices=cells, sampler="sde", seed=1, n_steps=20)
    np.testing.assert_array_equal(old.obsm["X_latent"], new.obsm["X_latent"])


def test_bad_batch_size_or_time_is_refused(simulated_pca_model):
    model, _, held_out = simulated_pca_model
    cells = np.flatnonzero(held_out.obs["cell_type"] == "T_CD4")[:5]
    for bad in (-1, 0, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            model.transmute(held_out, "T_CD8", indices=cells, batch_size=bad)
    with pytest.raises(ValueError, match="t_min"):
        model.transmute(held_out, "T_CD8", indices=cells, t=1e-12)
    with pytest.raises(ValueError, match="t_min"):
        model.sample_intermediates(["T_CD4", "T_CD8"], 3, t=1e-12)


def test_type_moments_are_saved_and_files_without_them_still_load(simulated_pca_model, tmp_path):
    model, train, held_out = simulated_pca_model
    cells = np.flatnonzero(held_out.obs["cell_type"] == "T_CD4")[:20]
    expected = model.transmute(held_out, "T_CD8", indices=cells).obsm["X_latent"]
    unmatched = model.transmute(held_out, "T_CD8", indices=cells, match=False).obsm["X_latent"]
    assert not np.allclose(expected, unmatched, atol=1e-3)
    model.save(tmp_path / "new")
    loaded = BranchedDiffusion.load(tmp_path / "new")  # no cells needed
    np.testing.assert_array_equal(loaded.class_cov_, model.class_cov_)
    np.testing.assert_allclose(loaded.transmute(held_out, "T_CD8", indices=cells).obsm["X_latent"], expected, atol=1e-5)
    # a file written before the moments were kept (0.5)
    loaded.class_mean_ = loaded.class_cov_ = None
    loaded.save(tmp_path / "old")
    with_cells = BranchedDiffusion.load(tmp_path / "old", adata=train)
    np.testing.assert_allclose(with_cells.transmute(held_out, "T_CD8", indices=cells).obsm["X_latent"], expected,
                               atol=1e-4)
    without = BranchedDiffusion.load(tmp_path / "old")
    with pytest.warns(UserWarning, match="without moment matching"):
        out = without.transmute(held_out, "T_CD8", indices=cells)
    np.testing.assert_allclose(out.obsm["X_latent"], unmatched, atol=1e-5)
    assert out.uns["scbranchdiff"]["match"] is False
    # loaded with cells of some types only: no moments of the others, so no matching
    partial = BranchedDiffusion.load(tmp_path / "old", adata=train[train.obs["cell_type"] != "B_naive"].copy())
    with pytest.warns(UserWarning, match=r"no cells of \['B_naive'\]"):
        out = partial.transmute(held_out, "T_CD8", indices=cells)
    np.testing.assert_allclose(out.obsm["X_latent"], unmatched, atol=1e-5)
