"""scvi-tools training semantics: held-out cells, a validation loss in history, early stopping."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc

import scbranchdiff as sbd
from scbranchdiff.model import BranchedDiffusion
from scbranchdiff.train import stratified_split

FAST = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture
def pca_adata():
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=40, n_genes=300, seed=0)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    return adata


def test_held_out_cells_give_a_validation_loss_in_history(pca_adata):
    model = BranchedDiffusion(pca_adata, latent="pca", n_hidden=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=6, train_size=0.75, **FAST)
    history = model.history
    assert len(history["validation_loss"]) == 6 and len(history["train_loss"]) == 6
    losses = history["validation_loss"]["validation_loss"].to_numpy(dtype=float)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert model.train_settings_["train_size"] == 0.75


def test_early_stopping_stops_when_the_validation_loss_stalls(pca_adata):
    model = BranchedDiffusion(pca_adata, latent="pca", n_hidden=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # no decrease is large enough: stops after the patience
        model.train(
            max_epochs=100, train_size=0.75, early_stopping=True, early_stopping_patience=2,
            early_stopping_min_delta=10.0, **FAST,
        )
    assert len(model.history["validation_loss"]) <= 4


def test_early_stopping_without_held_out_cells_raises_and_changes_nothing(pca_adata):
    model = BranchedDiffusion(pca_adata, latent="pca", n_hidden=32)
    with pytest.raises(ValueError, match="train_size"):
        model.train(max_epochs=2, early_stopping=True, **FAST)
    assert model.module is None and not model.is_trained


def test_split_holds_out_the_same_share_of_every_type():
    labels = np.repeat([0, 1, 2], [100, 20, 1])
    train, val = stratified_split(labels, 0.9, None, seed=3)
    assert sorted(np.concatenate([train, val])) == list(range(121))
    assert [int((labels[val] == c).sum()) for c in range(3)] == [10, 2, 0]
    with pytest.raises(ValueError, match="train_size"):
        stratified_split(labels, 1.5, None, seed=0)
