"""Outputs are safe in scanpy workflows: no aliased arrays, counts kept, unique names, writable."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import scbranchdiff as sbd
from scbranchdiff.model import BranchedDiffusion

FAST = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def scvi_model_with_batches():
    """A tiny scVI-latent model on simulated counts in two batches (counts in a layer)."""
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=40, n_genes=300, seed=1)
    adata.obs["donor"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "d1", "d2"))
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)  # X log-normalised, counts in the layer: the usual layout
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type", layer="counts", batch_key="donor")
    model = BranchedDiffusion(adata, n_latent=5, n_hidden=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=3, latent_max_epochs=3, **FAST)
    return model, adata


def _data(x):
    return x.data if sp.issparse(x) else np.asarray(x)


def test_generated_cells_go_through_the_scanpy_workflow_and_keep_their_counts(scvi_model_with_batches):
    model, real = scvi_model_with_batches
    gen = model.generate(30, seed=0, n_steps=10)
    assert not np.shares_memory(_data(gen.X), _data(gen.layers["counts"]))
    counts = gen.layers["counts"].copy()
    sc.pp.normalize_total(gen, target_sum=1e4)
    sc.pp.log1p(gen)
    assert (gen.layers["counts"] != counts).nnz == 0, "normalising X changed the counts layer"
    assert np.array_equal(_data(counts), np.round(_data(counts)))
    sc.pp.highly_variable_genes(gen, n_top_genes=100)
    sc.pp.pca(gen, n_comps=10)
    sc.pp.neighbors(gen, n_neighbors=10)
    sc.tl.umap(gen)
    sc.tl.rank_genes_groups(gen, "cell_type", method="wilcoxon")
    joint = sc.concat([real, gen], label="source", keys=["real", "generated"], index_unique=None)
    assert joint.obs_names.is_unique
    assert (joint[joint.obs["source"] == "generated"].layers["counts"] != counts).nnz == 0
    # decoding batch recorded under the training data's batch column
    assert set(gen.obs["donor"].astype(str)) <= {"d1", "d2"}


def test_generated_names_are_unique_across_calls(scvi_model_with_batches):
    model, _ = scvi_model_with_batches
    first = model.generate(5, seed=0, n_steps=5)
    second = model.generate(5, seed=0, n_steps=5)
    assert not set(first.obs_names) & set(second.obs_names)
    hybrids = model.sample_intermediates(list(model.classes[:2]), 3, n_steps=5)
    assert hybrids.obs_names.is_unique


def test_every_writer_works_with_pandas_string_dtype(scvi_model_with_batches, tmp_path):
    # pandas 3 makes this dtype the default; anndata refuses to write it unless told to
    try:
        pd.get_option("future.infer_string")
    except KeyError:  # pandas.errors.OptionError is a KeyError
        pytest.skip("pandas < 2.1 has no string-dtype inference to test (future.infer_string)")
    model, real = scvi_model_with_batches
    with pd.option_context("future.infer_string", True):
        outputs = {
            "generated": model.generate(5, seed=0, n_steps=5),
            "transmuted": model.transmute(real[:6], target=model.classes[-1], n_steps=5),
            "intermediates": model.sample_intermediates(list(model.classes[:2]), 3, n_steps=5),
        }
        for name, out in outputs.items():
            out.write_h5ad(tmp_path / f"{name}.h5ad")
            back = ad.read_h5ad(tmp_path / f"{name}.h5ad")
            assert list(back.obs_names) == list(out.obs_names)
        streamed = model.generate_to_file(tmp_path / "streamed.h5ad", 4, n_steps=5, seed=0)
    back = ad.read_h5ad(streamed)
    assert "counts" in back.layers and (back.layers["counts"] != back.X).nnz == 0
    assert back.obs_names.is_unique and back.n_obs == 4 * len(model.classes)


def test_encoding_with_the_internal_scvi_prints_no_setup_transfer_message(scvi_model_with_batches, capfd):
    import logging

    import scvi

    model, real = scvi_model_with_batches
    verbosity = scvi.settings.verbosity
    scvi.settings.verbosity = logging.INFO  # the default: the message used to show on every call
    try:
        capfd.readouterr()
        model.get_latent_representation(real[:20].copy())
        model.transmute(real[:5].copy(), target=model.classes[0], n_steps=5, progress_bar=False)
        out, err = capfd.readouterr()
    finally:
        scvi.settings.verbosity = verbosity
    assert "attempting to transfer" not in out + err
