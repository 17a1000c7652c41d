"""Model files: loading never runs code, saves are atomic, versions and corruption are clear
errors; generation streamed to .h5ad in chunks."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import scbranchdiff as sbd
from scbranchdiff import _io
from scbranchdiff.model import BranchedDiffusion

from conftest import FAST


class _Planted:
    """Unpickling this object creates a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_pickle(path, marker) -> None:
    with open(path, "wb") as f:
        pickle.dump(_Planted(str(marker)), f)


@pytest.fixture(scope="module")
def pca_model():
    """A small PCA-latent model on simulated counts (log-normalised), trained for a few epochs."""
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=40, n_genes=300, seed=1)
    adata.X = np.log1p(adata.X.toarray() if sp.issparse(adata.X) else adata.X).astype(np.float32)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = BranchedDiffusion(adata, latent="pca", n_latent=8, n_hidden=32, n_trunk_blocks=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=5, batch_size=64, **FAST)
    return model


@pytest.fixture
def saved(pca_model, tmp_path):
    path = tmp_path / "model"
    pca_model.save(path)
    return path


def _fresh_adata(model):
    adata = model.adata.copy()
    for key in [k for k in adata.uns if k.startswith("_scvi")]:
        del adata.uns[key]
    return adata


# ---------------------------------------------------------------- loading runs no code
def test_planted_pickle_is_refused_without_running(pca_model, tmp_path):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "scvi_style"
    bad.mkdir()
    _plant_pickle(bad / "model.pt", marker)
    with pytest.raises(ValueError, match="Pickled model files .* are refused"):
        BranchedDiffusion.load(bad, adata=_fresh_adata(pca_model))
    assert not marker.exists()


def test_pickle_beside_a_real_model_is_never_read(pca_model, saved, tmp_path):
    marker = tmp_path / "PWNED"
    _plant_pickle(saved / "model.pt", marker)
    loaded = BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))
    assert loaded.is_trained and not marker.exists()


def test_pickle_in_place_of_the_tensors_is_refused(pca_model, saved, tmp_path):
    marker = tmp_path / "PWNED"
    _plant_pickle(saved / "model.safetensors", marker)
    with pytest.raises(ValueError, match="checksum"):
        BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))
    # even with a matching checksum the safetensors parser refuses a pickle
    meta = json.loads((saved / "model.json").read_text())
    meta["tensors_sha256"] = _io._sha256(saved / "model.safetensors")
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="corrupted"):
        BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))
    assert not marker.exists()


def test_loading_never_unpickles(pca_model, saved, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr("torch.load", forbidden)
    loaded = BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))
    np.testing.assert_array_equal(
        loaded.generate(5, seed=0, n_steps=10).obsm["X_latent"],
        pca_model.generate(5, seed=0, n_steps=10).obsm["X_latent"],
    )


# ---------------------------------------------------------------- versions and corruption
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=99), "version 99.*Upgrade scbranchdiff"),
        (lambda m: m.update(format_version="1"), "format_version"),
        (lambda m: m.update(format="pickle"), "not a scbranchdiff model file"),
        (lambda m: m.pop("hierarchy"), r"lacks \['hierarchy'\]"),
        (lambda m: m.pop("tensors_sha256"), "lacks"),
    ],
)
def test_newer_or_tampered_metadata_is_a_clear_error(pca_model, saved, edit, message):
    meta = json.loads((saved / "model.json").read_text())
    edit(meta)
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))


def test_truncated_or_garbled_files_are_a_clear_error(pca_model, saved):
    tensors = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(tensors[: len(tensors) // 2])
    with pytest.raises(ValueError, match="truncated, corrupted"):
        BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))
    (saved / "model.json").write_text('{"format": "scbranchdiff", "format_ver')
    with pytest.raises(ValueError, match="not valid JSON"):
        BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))


# ---------------------------------------------------------------- atomic saves
def _tree(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_crash_mid_save_leaves_the_old_model_intact(pca_model, saved, monkeypatch):
    before = _tree(saved)
    import safetensors.numpy

    def crash(arrays, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt  # the process is killed while writing

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        pca_model.save(saved, overwrite=True)
    assert _tree(saved) == before
    assert sorted(p.name for p in saved.parent.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))


def test_crash_between_the_renames_points_to_the_previous_model(pca_model, saved, monkeypatch):
    before = _tree(saved)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == 2:  # old model moved aside, new one not yet in place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        pca_model.save(saved, overwrite=True)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="previous model is intact at") as info:
        BranchedDiffusion.load(saved, adata=_fresh_adata(pca_model))
    backup = next(saved.parent.glob(".model.old-*"))
    assert str(backup) in str(info.value)
    assert _tree(backup) == before


def test_overwrite_false_protects_an_existing_directory(pca_model, tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pca_model.save(target)
    assert _tree(target) == {"notes.txt": b"mine"}


def test_load_reorders_genes_by_name_and_leaves_the_given_anndata_alone(pca_model, saved):
    adata = _fresh_adata(pca_model)
    shuffled = adata[:, adata.var_names[::-1]].copy()
    uns_before, obs_before = set(shuffled.uns), list(shuffled.obs.columns)
    with pytest.warns(UserWarning, match="another order"):
        loaded = BranchedDiffusion.load(saved, adata=shuffled)
    assert list(loaded.adata.var_names) == list(adata.var_names)
    assert set(shuffled.uns) == uns_before and list(shuffled.obs.columns) == obs_before
    with pytest.raises(ValueError, match="1 missing"):
        BranchedDiffusion.load(saved, adata=adata[:, 1:].copy())


# ---------------------------------------------------------------- streamed generation
def test_generate_to_file_streams_chunks_with_right_labels_and_counts(pca_model, tmp_path):
    n_cells = {pca_model.classes[0]: 23, pca_model.classes[3]: 7}
    path = pca_model.generate_to_file(tmp_path / "gen.h5ad", n_cells, seed=5, n_steps=10, batch_size=10)
    assert not list(tmp_path.glob(".gen.h5ad.tmp-*"))
    backed = ad.read_h5ad(path, backed="r")
    assert backed.shape == (30, pca_model.adata.n_vars)
    out = backed.to_memory()
    assert out.obs[pca_model.labels_key].value_counts()[list(n_cells)].to_dict() == n_cells
    assert list(out.obs[pca_model.labels_key].cat.categories) == list(pca_model.classes)
    assert list(out.var_names) == list(pca_model.adata.var_names)
    assert out.uns["scbranchdiff"]["seed"] == 5 and out.obs["generated"].all()
    # same latents per type as in-memory generation with the same seed and batch size
    mem = pca_model.generate(n_cells, seed=5, n_steps=10, batch_size=10)
    for cell_type in n_cells:
        np.testing.assert_allclose(
            out.obsm["X_latent"][out.obs[pca_model.labels_key] == cell_type],
            mem.obsm["X_latent"][mem.obs[pca_model.labels_key] == cell_type],
            rtol=1e-5, atol=1e-5,
        )
    np.testing.assert_allclose(out.X, pca_model.latent_backend.decode(out.obsm["X_latent"], None, None).X, atol=1e-4)


def test_generate_to_file_refuses_bad_arguments(pca_model, tmp_path):
    with pytest.raises(ValueError, match=r"\.h5ad"):
        pca_model.generate_to_file(tmp_path / "gen.csv", 5)
    (tmp_path / "gen.h5ad").write_text("keep")
    with pytest.raises(FileExistsError, match="overwrite"):
        pca_model.generate_to_file(tmp_path / "gen.h5ad", 5)
    assert (tmp_path / "gen.h5ad").read_text() == "keep"
    with pytest.raises(ValueError, match="batch_size"):
        pca_model.generate_to_file(tmp_path / "new.h5ad", 5, batch_size=0)
    with pytest.raises(ValueError, match="positive"):
        pca_model.generate_to_file(tmp_path / "new.h5ad", 0)
