"""Continual learning: insert_classes on toy latents and BranchedDiffusion.add_cell_types.

One small model (PCA latent of log-normalised simulated counts, 64-wide network) is trained on 6
of the 8 simulated types, then learns the other two; about 20 s on 2 CPU cores in all.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

NEW_TYPES = ["T_CD8", "DC_plasmacytoid"]  # one per lineage: each splits an old leaf
SEED = 3


# ---------------------------------------------------------------------- insert_classes
def _blobs(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = {"A": [0, 0], "B": [0.5, 0], "C": [6, 0], "D": [6, 0.6], "E": [6, 6]}
    latent = np.concatenate([rng.normal(size=(200, 2)) * 0.3 + m for m in centres.values()])
    labels = np.repeat(list(centres), 200)
    return (latent - latent.mean(0)) / latent.std(), labels


def test_insert_classes_keeps_old_splits_and_finds_the_discovered_topology():
    from scbranchdiff.diffusion import VPSDE
    from scbranchdiff.hierarchy import Hierarchy, discover_hierarchy, insert_classes

    sde = VPSDE()
    latent, labels = _blobs()
    old_mask = ~np.isin(labels, ["B", "D"])
    old = discover_hierarchy(latent[old_mask], labels[old_mask], sde=sde)
    grown = insert_classes(old, latent, labels, sde=sde)
    # new classes appended in order of appearance; old indices unchanged
    assert grown.classes == old.classes + ("B", "D")
    # B joins A's leaf, D joins C's: the same tree as discovery on all classes
    full = discover_hierarchy(latent, labels, sde=sde, classes=grown.classes)
    assert grown.topology == full.topology
    # every old split time is still a split time
    old_starts = {round(b.t_start, 12) for b in old.branches}
    assert old_starts <= {round(b.t_start, 12) for b in grown.branches}
    mapping = Hierarchy.map_branches(old, grown)
    # every old branch maps; only the two new leaves do not
    assert set(mapping.values()) == set(range(old.n_branches))
    unmapped = [grown.branches[j] for j in range(grown.n_branches) if j not in mapping]
    assert sorted(b.classes for b in unmapped) == [("B",), ("D",)]
    # A's leaf was cut at B's join time: both pieces map to it
    a_leaf = old.leaf("A")
    assert sorted(j for j, i in mapping.items() if i == a_leaf) == sorted(
        [grown.leaf("A"), grown.common_branch("A", "B")]
    )


def test_insert_classes_two_new_siblings_and_errors():
    from scbranchdiff.diffusion import VPSDE
    from scbranchdiff.hierarchy import Hierarchy, discover_hierarchy, insert_classes

    sde = VPSDE()
    latent, labels = _blobs()
    old_mask = ~np.isin(labels, ["C", "D"])  # C and D are each other's closest relatives
    old = discover_hierarchy(latent[old_mask], labels[old_mask], sde=sde)
    grown = insert_classes(old, latent, labels, sde=sde, new_classes=["C", "D"])
    assert grown.classes == old.classes + ("C", "D")
    cd = grown.common_branch("C", "D")
    assert set(grown.branches[cd].classes) == {"C", "D"}
    mapping = Hierarchy.map_branches(old, grown)
    assert cd not in mapping  # a branch of new classes only: trained, not copied
    assert set(mapping.values()) == set(range(old.n_branches))

    with pytest.raises(ValueError, match="already in the hierarchy"):
        insert_classes(old, latent, labels, sde=sde, new_classes=["A"])
    with pytest.raises(ValueError, match="nothing to add"):
        insert_classes(old, latent[old_mask], labels[old_mask], sde=sde)
    with pytest.raises(ValueError, match="no cells"):
        insert_classes(old, latent[old_mask], labels[old_mask], sde=sde, new_classes=["Z"])
    with pytest.raises(ValueError, match="flat"):
        insert_classes(Hierarchy.flat(["A", "B"]), latent, labels, sde=sde, new_classes=["C"])


# ---------------------------------------------------------------------- add_cell_types
def _log_normalised(adata):
    import scanpy as sc

    adata = adata.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


@pytest.fixture(scope="module")
def continual(simulated):
    """Model trained on 6 types, state before, then after learning NEW_TYPES."""
    import scbranchdiff as sbd
    from scbranchdiff.latent import PCALatent

    from conftest import FAST, stratified_split

    adata = _log_normalised(simulated[0])
    test = stratified_split(adata.obs["cell_type"], 1 / 3, seed=0)
    train_all, heldout = adata[~test].copy(), adata[test].copy()
    is_new = train_all.obs["cell_type"].isin(NEW_TYPES).to_numpy()
    old = train_all[~is_new].copy()
    old.obs["cell_type"] = old.obs["cell_type"].cat.remove_unused_categories()
    new = train_all[is_new].copy()
    # The latent model stays frozen, so it must represent the new types: a PCA fitted on an
    # atlas holding them (here: all training cells), as an scVI trained on a reference would.
    pca = PCALatent(n_latent=10)
    pca.fit(train_all, train_all.obs["cell_type"].to_numpy())
    sbd.model.BranchedDiffusion.setup_anndata(old, labels_key="cell_type")
    model = sbd.model.BranchedDiffusion(old, latent=pca, n_hidden=64, n_trunk_blocks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=150, batch_size=128, **FAST)
    old_hierarchy = model.hierarchy
    old_state = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    old_types = list(model.classes)
    before = model.generate(60, seed=SEED, n_steps=100)
    # coarse grids: the join times cut old branches into pieces shorter than one step
    coarse = {
        (sampler, n): model.generate(20, sampler=sampler, n_steps=n, seed=SEED, progress_bar=False)
        for sampler in ("sde", "ancestral", "dpm++", "ode") for n in (6, 11)
    }
    new_input = new.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.add_cell_types(new, max_epochs=300, **FAST)
    return {
        "model": model, "old_hierarchy": old_hierarchy, "old_state": old_state,
        "old_types": old_types, "before": before, "train_all": train_all, "heldout": heldout,
        "old_adata": old, "new": new, "new_input": new_input, "coarse": coarse,
    }


def test_add_cell_types_extends_classes_and_hierarchy(continual):
    model = continual["model"]
    assert model.classes == tuple(continual["old_types"]) + tuple(NEW_TYPES)
    assert model.hierarchy.classes == model.classes
    assert len(model.module.heads) == model.hierarchy.n_branches
    # the model's own data and the given AnnData are untouched
    assert set(model.adata.obs["cell_type"]) == set(continual["old_types"])
    new, given = continual["new"], continual["new_input"]
    assert new.obs.equals(given.obs) and np.array_equal(_dense(new.X), _dense(given.X))
    assert list(new.uns) == list(given.uns)
    added = model.train_settings_["added_cell_types"]
    assert added[-1]["cell_types"] == NEW_TYPES
    # transmutation's type moments grow with the types: old rows as trained, new from the new cells
    from scbranchdiff.diffusion._transport import class_moments

    old = continual["old_adata"]
    for cells, types, rows in ((old, continual["old_types"], slice(0, len(continual["old_types"]))),
                               (new, NEW_TYPES, slice(len(continual["old_types"]), None))):
        mean, cov = class_moments(model._scale(model.latent_backend.encode(cells)),
                                  cells.obs["cell_type"].astype(str).to_numpy(), types)
        np.testing.assert_allclose(model.class_mean_[rows], mean, atol=1e-4)
        np.testing.assert_allclose(model.class_cov_[rows], cov, atol=1e-4)


def test_add_cell_types_leaves_every_frozen_parameter_bit_identical(continual):
    from scbranchdiff.hierarchy import Hierarchy

    model, old_state = continual["model"], continual["old_state"]
    state = model.module.state_dict()
    shared = [k for k in old_state if not k.startswith("heads.")]
    assert shared and all(torch.equal(state[k], old_state[k]) for k in shared)
    mapping = Hierarchy.map_branches(continual["old_hierarchy"], model.hierarchy)
    assert set(mapping.values()) == set(range(continual["old_hierarchy"].n_branches))
    n_checked = 0
    for j, i in mapping.items():
        head_keys = [k for k in old_state if k.startswith(f"heads.{i}.")]
        for k in head_keys:
            now = state[k.replace(f"heads.{i}.", f"heads.{j}.", 1)]
            assert torch.equal(now, old_state[k]), (j, i, k)
            n_checked += 1
    assert n_checked > 0
    # the new heads did train (they start as copies of the head they split off)
    trained = model.train_settings_["added_cell_types"][-1]["trained_heads"]
    assert len(trained) == 2
    for j in trained:
        sibling = {"T_CD8": "T_CD4", "DC_plasmacytoid": "DC_conventional"}
        source = continual["old_hierarchy"].leaf(sibling[model.hierarchy.branches[j].classes[0]])
        old_weight = old_state[f"heads.{source}.out.weight"]
        assert not torch.equal(state[f"heads.{j}.out.weight"], old_weight)


def test_add_cell_types_keeps_old_samples_for_a_seed(continual):
    model, before = continual["model"], continual["before"]
    after = model.generate({c: 60 for c in continual["old_types"]}, seed=SEED, n_steps=100)
    assert np.array_equal(before.obs["cell_type"].astype(str), after.obs["cell_type"].astype(str))
    assert np.array_equal(before.obsm["X_latent"], after.obsm["X_latent"])
    assert np.array_equal(_dense(before.X), _dense(after.X))
    # asking for the new types as well does not change the old types' cells either
    both = model.generate(60, seed=SEED, n_steps=100)
    old_rows = both.obs["cell_type"].isin(continual["old_types"]).to_numpy()
    assert np.array_equal(both.obsm["X_latent"][old_rows], before.obsm["X_latent"])


def test_old_samples_stay_identical_with_every_sampler_on_coarse_grids(continual):
    # a branch piece shorter than a grid step once took a step of its own, shifting the
    # children's start (old types changed after add_cell_types with a coarse grid)
    model = continual["model"]
    for (sampler, n), before in continual["coarse"].items():
        after = model.generate(
            {c: 20 for c in continual["old_types"]}, sampler=sampler, n_steps=n, seed=SEED,
            progress_bar=False,
        )
        assert np.array_equal(before.obsm["X_latent"], after.obsm["X_latent"]), (sampler, n)


def test_new_types_generated_are_recognised_as_real_ones(continual):
    import scbranchdiff as sbd

    model, heldout = continual["model"], continual["heldout"]
    generated = model.generate({c: 150 for c in NEW_TYPES}, seed=0, n_steps=100)
    real_new = heldout[heldout.obs["cell_type"].isin(NEW_TYPES).to_numpy()]
    reference = continual["train_all"]
    warnings.filterwarnings("ignore", message="Cell types present on one side only")
    warnings.filterwarnings("ignore", message=".*negative values")
    real = sbd.metrics.label_transfer_accuracy(reference, real_new, "cell_type", is_counts=False)
    fake = sbd.metrics.label_transfer_accuracy(reference, generated, "cell_type", is_counts=False)
    for cell_type in NEW_TYPES:
        assert real[cell_type] > 0.8  # the classifier knows the type
        assert fake[cell_type] >= 0.8 * real[cell_type], (cell_type, fake.to_dict(), real.to_dict())


def test_save_load_keeps_the_new_types(continual, tmp_path):
    import scbranchdiff as sbd

    model = continual["model"]
    model.save(str(tmp_path / "m"))
    # loaded with the original training data, which has no cells of the new types
    loaded = sbd.model.BranchedDiffusion.load(
        str(tmp_path / "m"), continual["old_adata"].copy(), accelerator="cpu"
    )
    assert loaded.classes == model.classes
    assert loaded.hierarchy == model.hierarchy
    a = model.generate({"T_CD8": 20, "T_CD4": 20}, seed=5, n_steps=50)
    b = loaded.generate({"T_CD8": 20, "T_CD4": 20}, seed=5, n_steps=50)
    assert np.array_equal(a.obsm["X_latent"], b.obsm["X_latent"])
    assert loaded.train_settings_["added_cell_types"] == model.train_settings_["added_cell_types"]
    # AnnData holding a new type is accepted: encoding, transmuting from and into it, and
    # scvi-tools' own setup transfer (the registered label categories were extended)
    new = continual["new"]
    assert loaded.get_latent_representation(new).shape == (new.n_obs, 10)
    into_new = loaded.transmute(continual["old_adata"], target="T_CD8", indices=np.arange(5))
    assert (into_new.obs["target_type"] == "T_CD8").all()
    from_new = loaded.transmute(new, target="T_CD4", indices=np.arange(5), n_steps=20)
    assert set(from_new.obs["source_type"].astype(str)) <= set(NEW_TYPES)
    loaded._validate_anndata(new.copy())


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def _snapshot(model):
    return (
        model.classes,
        model.hierarchy,
        {k: v.detach().clone() for k, v in model.module.state_dict().items()},
        dict(model.train_settings_),
        (model.class_mean_.copy(), model.class_cov_.copy()),
    )


def _assert_unchanged(model, snapshot):
    classes, hierarchy, state, settings, (mean, cov) = snapshot
    np.testing.assert_array_equal(model.class_mean_, mean)
    np.testing.assert_array_equal(model.class_cov_, cov)
    assert model.classes == classes
    assert model.hierarchy == hierarchy
    now = model.module.state_dict()
    assert now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)
    assert model.train_settings_ == settings
    assert all(p.requires_grad for p in model.module.parameters())


def test_add_cell_types_bad_input_leaves_model_unchanged(continual):
    from anndata import AnnData

    from conftest import FAST

    model, new = continual["model"], continual["heldout"]
    snapshot = _snapshot(model)
    unseen = new[new.obs["cell_type"] == "T_CD8"].copy()
    unseen.obs["cell_type"] = "T_CD8_again"  # a type the model does not know
    other_genes = unseen[:, :-1].copy()
    with pytest.raises(ValueError, match="other genes"):
        model.add_cell_types(other_genes)
    old_only = new[new.obs["cell_type"].isin(continual["old_types"]).to_numpy()].copy()
    with pytest.raises(ValueError, match="no new cell type"):
        model.add_cell_types(old_only)
    with pytest.raises(ValueError, match="already exist"):
        model.add_cell_types(new, cell_types=["T_CD4"])
    with pytest.raises(ValueError, match="already exist"):  # added types are known now
        model.add_cell_types(new, cell_types=["T_CD8"])
    with pytest.raises(ValueError, match="no cells"):
        model.add_cell_types(new, cell_types=["unknown"])
    with pytest.raises(KeyError, match="cell_type"):
        model.add_cell_types(AnnData(X=new.X, var=new.var))
    _assert_unchanged(model, snapshot)

    # a failure during training restores the model
    with pytest.raises(TypeError):
        model.add_cell_types(unseen, max_epochs=1, plan_kwargs={"no_such_setting": 1}, **FAST)
    _assert_unchanged(model, snapshot)


def test_add_cell_types_refuses_the_flat_model(simulated):
    import scbranchdiff as sbd

    adata = simulated[0][:40].copy()
    sbd.model.BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = sbd.model.BranchedDiffusion(adata, latent="pca", hierarchy="flat")
    model.is_trained_ = True
    model.module = object()  # enough for the check: nothing is trained or read
    with pytest.raises(ValueError, match="flat"):
        model.add_cell_types(adata)
