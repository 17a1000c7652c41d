"""Every public argument is checked with an error that names it, before any work is done."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc

import scbranchdiff as sbd
from scbranchdiff.model import BranchedDiffusion

FAST = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def tiny_scvi():
    """A tiny scVI-latent model on 300 pbmc68k cells (counts in layers['counts'])."""
    adata = sbd.data.pbmc68k()[:300].copy()
    BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    model = BranchedDiffusion(adata, n_latent=5, n_hidden=16, scvi_kwargs={"n_hidden": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=2, latent_max_epochs=2, **FAST)
    return model


@pytest.fixture
def lognorm():
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=20, n_genes=300, seed=0)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


@pytest.mark.parametrize(
    ("name", "value"),
    [("n_latent", 0), ("n_hidden", 0), ("n_hidden", 2.5), ("n_trunk_blocks", -1), ("n_head_blocks", True)],
)
def test_network_sizes_are_checked_at_construction(lognorm, name, value):
    BranchedDiffusion.setup_anndata(lognorm, labels_key="cell_type")
    with pytest.raises(ValueError, match=f"`{name}`"):
        BranchedDiffusion(lognorm, latent="pca", **{name: value})


def test_unsupported_scvi_settings_are_refused_at_construction():
    adata = sbd.data.pbmc68k()
    BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    with pytest.raises(ValueError, match="gene_likelihood"):
        BranchedDiffusion(adata, scvi_kwargs={"gene_likelihood": "normal"})
    with pytest.raises(TypeError, match="not_an_argument"):
        BranchedDiffusion(adata, scvi_kwargs={"not_an_argument": 1})
    with pytest.raises(ValueError, match="n_layers"):
        BranchedDiffusion(adata, scvi_kwargs={"n_layers": 0})


def test_poisson_scvi_latent_trains_and_generates():
    adata = sbd.data.pbmc68k()[:200].copy()
    BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    model = BranchedDiffusion(adata, n_latent=4, n_hidden=16, scvi_kwargs={"gene_likelihood": "poisson"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, latent_max_epochs=1, **FAST)
    out = model.generate(3, n_steps=5)
    assert np.isfinite(out.layers["expected"]).all() and out.n_obs == 3 * len(model.classes)


@pytest.mark.parametrize("n_steps", [2.5, "5", True, 0, 10**7])
def test_bad_step_counts_are_refused(tiny_scvi, n_steps):
    with pytest.raises(ValueError, match="n_steps"):
        tiny_scvi.generate(2, n_steps=n_steps)


@pytest.mark.parametrize("seed", [-1, "a", 1.5])
def test_bad_seeds_are_refused_by_name(tiny_scvi, seed):
    with pytest.raises(ValueError, match="`seed`"):
        tiny_scvi.generate(2, n_steps=5, seed=seed)
    with pytest.raises(ValueError, match="`seed`"):
        tiny_scvi.transmute(target=tiny_scvi.classes[0], indices=[0], n_steps=5, seed=seed)


def test_bool_cell_counts_are_refused(tiny_scvi):
    with pytest.raises(ValueError, match="n_cells"):
        tiny_scvi.generate({tiny_scvi.classes[0]: True}, n_steps=5)


def test_absurd_in_memory_generation_is_refused_with_an_estimate(tiny_scvi):
    with pytest.raises(MemoryError, match="GiB.*generate_to_file"):
        tiny_scvi.generate(10**12, n_steps=5)


def test_add_cell_types_refuses_zero_epochs_and_changes_nothing(tiny_scvi):
    new = sbd.data.pbmc68k()[300:340].copy()
    new.obs["bulk_labels"] = "new type"
    before = {k: v.clone() for k, v in tiny_scvi.module.state_dict().items()}
    with pytest.raises(ValueError, match="max_epochs"):
        tiny_scvi.add_cell_types(new, max_epochs=0)
    assert "new type" not in tiny_scvi.classes
    assert all(torch_equal(v, before[k]) for k, v in tiny_scvi.module.state_dict().items())


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_transmute_checks_its_input_like_train(tiny_scvi):
    cells = tiny_scvi.adata[:10].copy()
    halved = cells.copy()
    halved.layers["counts"] = halved.layers["counts"] * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        tiny_scvi.transmute(halved, target=tiny_scvi.classes[0], n_steps=5)
    broken = cells.copy()
    broken.layers["counts"] = broken.layers["counts"].toarray()
    broken.layers["counts"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tiny_scvi.transmute(broken, target=tiny_scvi.classes[0], n_steps=5)


def test_scvi_internal_column_names_are_refused_and_nothing_is_written(lognorm):
    lognorm.obs["_scvi_labels"] = lognorm.obs["cell_type"]
    before = (list(lognorm.obs.columns), sorted(lognorm.uns))
    with pytest.raises(ValueError, match="_scvi"):
        BranchedDiffusion.setup_anndata(lognorm, labels_key="_scvi_labels")
    assert (list(lognorm.obs.columns), sorted(lognorm.uns)) == before


def test_training_on_one_cell_is_refused(lognorm):
    one = lognorm[:1].copy()
    BranchedDiffusion.setup_anndata(one, labels_key="cell_type")
    model = BranchedDiffusion(one, latent="X_pca" if "X_pca" in one.obsm else "pca", n_hidden=16)
    with pytest.raises(ValueError, match="at least two cells"):
        model.train(max_epochs=1, **FAST)
