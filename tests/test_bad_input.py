"""Messy input: each bad AnnData or argument gives a clear error (argument, what was found, what
is expected) and leaves the AnnData and the model as they were; odd but valid input just works."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scbranchdiff as sbd
from scbranchdiff.model import BranchedDiffusion

from conftest import FAST


@pytest.fixture(scope="module")
def counts_data():
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=30, n_genes=300, seed=3)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    rng = np.random.default_rng(0)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    adata.obsm["X_emb"] = (rng.normal(size=(adata.n_obs, 3)) + 3 * codes[:, None]).astype(np.float32)
    return adata


@pytest.fixture
def adata(counts_data):
    return counts_data.copy()


def _state(adata):
    """What a failed call must not change."""
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    return (list(adata.obs.columns), sorted(adata.uns), sorted(adata.layers), sorted(adata.obsm), x.tobytes())


def _fit(adata, latent="X_emb", max_epochs=2, **model_kwargs):
    model = BranchedDiffusion(adata, latent=latent, n_hidden=16, n_trunk_blocks=1, **model_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=max_epochs, batch_size=64, latent_max_epochs=1, **FAST)
    return model


# ---------------------------------------------------------------- labels
def test_missing_labels_key_names_the_columns_and_changes_nothing(adata):
    before = _state(adata)
    with pytest.raises(KeyError, match="labels_key='celltype'.*columns"):
        BranchedDiffusion.setup_anndata(adata, labels_key="celltype")
    assert _state(adata) == before


def test_nan_labels_are_counted_and_change_nothing(adata):
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[[2, 5], adata.obs.columns.get_loc("cell_type")] = np.nan
    before = _state(adata)
    with pytest.raises(ValueError, match="2 missing labels"):
        BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    assert _state(adata) == before


def test_single_cell_type_trains_and_generates(adata):
    one = adata[adata.obs["cell_type"] == adata.obs["cell_type"].iloc[0]].copy()
    one.obs["cell_type"] = one.obs["cell_type"].cat.remove_unused_categories()
    BranchedDiffusion.setup_anndata(one, labels_key="cell_type")
    model = _fit(one)
    assert model.hierarchy.classes == model.classes and len(model.classes) == 1
    assert model.generate(4, seed=0, n_steps=5).n_obs == 4


def test_types_with_one_or_two_cells_warn_and_still_train(adata):
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[0], labels[1:3] = "singleton", "pair"
    adata.obs["cell_type"] = pd.Categorical(labels)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = BranchedDiffusion(adata, latent="X_emb", n_hidden=16, n_trunk_blocks=1)
    with pytest.warns(UserWarning, match=r"fewer than 3 cells: \{'pair': 2, 'singleton': 1\}"):
        model.train(max_epochs=2, batch_size=64, **FAST)
    assert {"singleton", "pair"} <= set(model.hierarchy.classes)
    out = model.generate({"singleton": 3, "pair": 2}, seed=0, n_steps=5)
    assert out.obs["cell_type"].value_counts()[["singleton", "pair"]].tolist() == [3, 2]


def test_unused_categories_are_ignored_with_a_warning(adata):
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.add_categories(["ghost"])
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    with pytest.warns(UserWarning, match="no cells.*ghost"):
        model = BranchedDiffusion(adata, latent="X_emb")
    assert "ghost" not in model.classes
    with pytest.raises(KeyError, match="ghost"):
        _fit(adata).generate({"ghost": 3})


def test_integer_categories_work_and_are_named_by_their_text(adata):
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.codes.astype(int) + 10
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = _fit(adata)
    assert set(model.classes) == {str(c) for c in adata.obs["cell_type"].unique()}
    assert model.generate({"10": 3}, seed=0, n_steps=5).obs["cell_type"].tolist() == ["10"] * 3


def test_labels_equal_as_text_are_refused(adata):
    values = adata.obs["cell_type"].cat.codes.astype(object).to_numpy(copy=True)
    values[0] = str(values[1])  # 0 and "0": two categories that print the same
    adata.obs["cell_type"] = pd.Categorical(values)
    with pytest.raises(ValueError, match="equal as text"):
        BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")


# ---------------------------------------------------------------- expression values
def _set_dense(adata, x):
    adata.X = np.asarray(x, dtype=np.float32)
    return adata


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("latent", ["scvi", "pca"])
def test_nan_or_inf_expression_is_refused(adata, bad, latent):
    x = adata.X.toarray()
    x[4, 7] = bad
    _set_dense(adata, x)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    before = _state(adata)
    with pytest.raises(ValueError, match=r"adata.X has NaN or infinite values; latent='(scvi|pca)'"):
        BranchedDiffusion(adata, latent=latent)
    assert _state(adata) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda x: x - 1.0, "negative values"),
        (lambda x: np.log1p(x), "non-integer values"),
    ],
)
def test_scvi_latent_needs_raw_counts(adata, edit, message):
    _set_dense(adata, edit(adata.X.toarray()))
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    with pytest.raises(ValueError, match=f"adata.X has {message}.*latent='scvi' needs raw counts"):
        BranchedDiffusion(adata, latent="scvi")
    BranchedDiffusion(adata, latent="pca")  # normalised data are fine for PCA


def test_counts_layer_is_checked_not_x(adata):
    adata.layers["counts"] = adata.X.copy()
    adata.X = np.log1p(adata.X.toarray())
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type", layer="counts")
    BranchedDiffusion(adata, latent="scvi")
    adata.layers["counts"] = adata.layers["counts"] * 0.5
    with pytest.raises(ValueError, match=r"adata.layers\['counts'\] has non-integer"):
        BranchedDiffusion(adata, latent="scvi")


def test_missing_layer_is_named(adata):
    before = _state(adata)
    with pytest.raises(KeyError, match=r"layer='raw'.*layers: \[.*\]"):
        BranchedDiffusion.setup_anndata(adata, labels_key="cell_type", layer="raw")
    assert _state(adata) == before


def test_cells_without_counts_are_refused_genes_without_counts_warn(adata):
    x = adata.X.toarray()
    x[:, 5] = 0
    _set_dense(adata, x)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    with pytest.warns(UserWarning, match="1 genes with no counts"):
        BranchedDiffusion(adata, latent="scvi")
    x[[3, 8], :] = 0
    _set_dense(adata, x)
    with pytest.raises(ValueError, match="2 cells with no counts.*filter_cells"):
        BranchedDiffusion(adata, latent="scvi")


@pytest.mark.parametrize("layout", ["float16", "csc"])
def test_float16_or_csc_counts_train_through_scvi(adata, layout):
    x = adata.X.toarray()
    adata.X = x.astype(np.float16) if layout == "float16" else sp.csc_matrix(x)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = _fit(adata, latent="scvi", max_epochs=1, n_latent=4)
    if layout == "float16":
        assert adata.X.dtype == np.float16, "the user's matrix is upcast internally, not changed"
    else:
        assert sp.isspmatrix_csc(adata.X)
    assert np.isfinite(model.get_latent_representation()).all()


@pytest.mark.parametrize("layout", ["csr", "csc", "dense", "float16"])
def test_pca_latent_is_the_same_for_every_matrix_layout(adata, layout):
    x = adata.X.toarray()
    reference = adata.copy()
    reference.X = x
    adata.X = {"csr": sp.csr_matrix(x), "csc": sp.csc_matrix(x), "dense": x, "float16": x.astype(np.float16)}[layout]
    latents = []
    for data in (reference, adata):
        BranchedDiffusion.setup_anndata(data, labels_key="cell_type")
        model = BranchedDiffusion(data, latent="pca", n_latent=5)
        model.latent_backend.fit(data, None, layer=None, seed=0)
        latents.append(np.abs(model.latent_backend.encode(data)))
    np.testing.assert_allclose(latents[1], latents[0], rtol=1e-3, atol=1e-3)


def test_view_is_refused_before_anything_is_written(adata):
    view = adata[:50]
    before = _state(adata)
    with pytest.raises(ValueError, match=r"view.*\.copy\(\)"):
        BranchedDiffusion.setup_anndata(view, labels_key="cell_type")
    assert view.is_view and _state(adata) == before


def test_backed_anndata_works_with_an_embedding_and_is_refused_for_expression(adata, tmp_path):
    adata.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    BranchedDiffusion.setup_anndata(backed, labels_key="cell_type")
    with pytest.raises(ValueError, match="backed.*to_memory"):
        BranchedDiffusion(backed, latent="pca")
    model = _fit(backed)
    assert model.generate(3, seed=0, n_steps=5).n_obs == 3 * len(model.classes)


def test_not_an_anndata_is_a_type_error():
    with pytest.raises(TypeError, match="must be an AnnData, got DataFrame"):
        BranchedDiffusion.setup_anndata(pd.DataFrame({"cell_type": ["a"]}), labels_key="cell_type")


# ---------------------------------------------------------------- arguments of train / generate
@pytest.fixture(scope="module")
def trained(counts_data):
    adata = counts_data.copy()
    adata.X = np.log1p(adata.X.toarray())
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    return _fit(adata, latent="pca", n_latent=5)


@pytest.mark.parametrize(
    ("n_cells", "error", "message"),
    [
        (0, ValueError, "positive"),
        (-5, ValueError, "positive"),
        ({"A": 0}, (ValueError, KeyError), ""),
        ({"not a type": 3}, KeyError, "Unknown cell types"),
        (2.5, TypeError, "int or a mapping"),
        ({}, ValueError, "no cells"),
    ],
)
def test_generate_refuses_bad_n_cells(trained, n_cells, error, message):
    if n_cells == {"A": 0}:
        n_cells = {trained.classes[0]: 0}
    with pytest.raises(error, match=message):
        trained.generate(n_cells)


@pytest.mark.parametrize(("kwargs", "message"), [({"batch_size": 0}, "batch_size"), ({"sampler": "ddim"}, "sampler")])
def test_generate_refuses_bad_settings(trained, kwargs, message):
    with pytest.raises(ValueError, match=message):
        trained.generate(3, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_epochs": 0}, "max_epochs"), ({"batch_size": -1}, "batch_size"), ({"lr": float("nan")}, "lr")],
)
def test_train_refuses_bad_settings_before_changing_the_model(trained, kwargs, message):
    weights = {k: v.clone() for k, v in trained.module.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        trained.train(**kwargs)
    assert all((v == weights[k]).all() for k, v in trained.module.state_dict().items())


def test_latent_of_new_cells_reorders_genes_and_writes_nothing(trained):
    query = trained.adata.copy()
    for key in [k for k in query.uns if k.startswith("_scvi")]:
        del query.uns[key]
    query.obs = query.obs[["cell_type"]].copy()
    expected = trained.get_latent_representation()
    shuffled = query[:, query.var_names[::-1]].copy()
    before = _state(shuffled)
    with pytest.warns(UserWarning, match="another order"):
        latent = trained.get_latent_representation(shuffled)
    np.testing.assert_allclose(latent, expected, rtol=1e-4, atol=1e-4)
    assert _state(shuffled) == before, "a never set-up AnnData is not registered or changed"
    with pytest.raises(ValueError, match=r"1 missing, e.g. \['.+'\]"):
        trained.get_latent_representation(query[:, 1:].copy())
    np.testing.assert_allclose(trained.get_latent_representation(query[:10]), expected[:10], rtol=1e-4, atol=1e-4)
