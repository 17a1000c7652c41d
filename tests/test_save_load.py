"""scvi-tools save/load semantics: prefix, loading without an AnnData, history, registry views."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import scbranchdiff as sbd
from scbranchdiff.model import BranchedDiffusion

FAST = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def scvi_model():
    adata = sbd.data.pbmc68k()[:300].copy()
    BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    model = BranchedDiffusion(adata, n_latent=4, n_hidden=16, scvi_kwargs={"n_hidden": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=3, latent_max_epochs=2, train_size=0.8, **FAST)
    return model


def test_history_survives_save_and_load(scvi_model, tmp_path):
    scvi_model.save(tmp_path / "m")
    loaded = BranchedDiffusion.load(tmp_path / "m", adata=scvi_model.adata)
    for key in ("train_loss", "validation_loss"):
        np.testing.assert_allclose(
            loaded.history[key][key].to_numpy(dtype=float),
            scvi_model.history[key][key].to_numpy(dtype=float),
        )


def test_models_with_prefixes_share_a_directory_with_other_files(scvi_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    scvi_model.save(tmp_path, prefix="a_")
    scvi_model.save(tmp_path, prefix="b_")
    assert sorted(os.listdir(tmp_path)) == [
        "a_model.json", "a_model.safetensors", "b_model.json", "b_model.safetensors", "notes.txt",
    ]
    with pytest.raises(FileExistsError):
        scvi_model.save(tmp_path, prefix="a_")
    scvi_model.save(tmp_path, prefix="a_", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    loaded = BranchedDiffusion.load(tmp_path, adata=scvi_model.adata, prefix="b_")
    assert loaded.hierarchy == scvi_model.hierarchy
    with pytest.raises(ValueError, match="prefix"):
        scvi_model.save(tmp_path, prefix="../escape_")


def test_a_model_loaded_without_anndata_generates_the_same_cells(scvi_model, tmp_path):
    scvi_model.save(tmp_path / "m")
    alone = BranchedDiffusion.load(tmp_path / "m")
    ours = scvi_model.generate(4, n_steps=10, seed=2, progress_bar=False)
    theirs = alone.generate(4, n_steps=10, seed=2, progress_bar=False)
    np.testing.assert_array_equal(ours.obsm["X_latent"], theirs.obsm["X_latent"])
    assert (ours.X != theirs.X).nnz == 0
    assert list(theirs.var_names) == list(scvi_model.adata.var_names)
    for call in (lambda: alone.transmute(target=alone.classes[0]), alone.get_latent_representation,
                 lambda: alone.train(max_epochs=1)):
        with pytest.raises(ValueError, match="loaded without an AnnData"):
            call()
    # real cells still transmute
    out = alone.transmute(scvi_model.adata[:5].copy(), target=alone.classes[0], n_steps=10)
    assert out.n_obs == 5


def test_unsupported_save_and_load_arguments_are_refused(scvi_model, tmp_path):
    with pytest.raises(TypeError, match="bogus"):
        scvi_model.save(tmp_path / "m", bogus=1)
    assert not (tmp_path / "m").exists()
    scvi_model.save(tmp_path / "m")
    with pytest.raises(ValueError, match="backup_url"):
        BranchedDiffusion.load(tmp_path / "m", backup_url="https://example.org/model")
    with pytest.raises(TypeError, match="bogus"):
        BranchedDiffusion.load(tmp_path / "m", bogus=1)


def test_registry_views_read_the_saved_setup(scvi_model, tmp_path, capsys):
    scvi_model.save(tmp_path / "m")
    registry = BranchedDiffusion.load_registry(tmp_path / "m")
    assert registry["setup_args"] == {"labels_key": "bulk_labels", "layer": "counts", "batch_key": None}
    BranchedDiffusion.view_setup_args(tmp_path / "m")
    assert "labels_key: bulk_labels" in capsys.readouterr().out
