"""Faults during training: NaN loss, interruption and resume, determinism (small obsm latents)."""

from __future__ import annotations

import warnings

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

import scbranchdiff as sbd
from scbranchdiff.model import BranchedDiffusion

from conftest import FAST

CENTRES = {"a": (0.0, 0.0), "b": (0.0, 4.0), "c": (4.0, 0.0), "d": (4.5, 4.5)}


def _clusters(n_per_type: int = 60, seed: int = 0) -> ad.AnnData:
    """Four Gaussian clusters as a 2-d obsm embedding (no genes needed)."""
    rng = np.random.default_rng(seed)
    types = np.repeat(list(CENTRES), n_per_type)
    emb = np.array([CENTRES[t] for t in types]) + 0.4 * rng.normal(size=(len(types), 2))
    adata = ad.AnnData(
        X=np.zeros((len(types), 1), np.float32),
        obs=pd.DataFrame({"cell_type": pd.Categorical(types)}, index=[f"c{i}" for i in range(len(types))]),
    )
    adata.obsm["X_emb"] = emb.astype(np.float32)
    return adata


def _model(adata: ad.AnnData) -> BranchedDiffusion:
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    return BranchedDiffusion(adata, latent="X_emb", n_hidden=32, n_trunk_blocks=1, hierarchy="auto")


def _weights(model: BranchedDiffusion) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.module.state_dict().items()}


def _train(model: BranchedDiffusion, **kwargs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(batch_size=32, seed=1, **{"max_epochs": 6, **FAST, **kwargs})


class _EpochsSeen(pl.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append(trainer.current_epoch)


class _Preempted(Exception):
    pass


class _PreemptAtEpoch(pl.Callback):
    """Stands in for a cluster preemption: the job dies at the start of an epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Preempted(f"preempted at epoch {self.epoch}")


def test_nan_loss_stops_with_epoch_and_step_and_leaves_model_untrained(tmp_path):
    model = _model(_clusters())
    with pytest.raises(FloatingPointError, match=r"epoch \d+, step \d+"):
        _train(model, lr=1e30)
    assert not model.is_trained
    assert model.module is None and model.hierarchy_ is None
    with pytest.raises(RuntimeError, match="not trained"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_nan_loss_in_further_training_keeps_the_trained_weights():
    model = _model(_clusters())
    _train(model, max_epochs=2)
    before = _weights(model)
    with pytest.raises(FloatingPointError, match="epoch"):
        _train(model, lr=1e30)
    assert model.is_trained
    for k, v in _weights(model).items():
        assert torch.equal(v, before[k]), k
    assert np.isfinite(model.generate(5, seed=0, n_steps=10).obsm["X_latent"]).all()


def test_non_finite_latent_is_refused_before_training():
    adata = _clusters()
    adata.obsm["X_emb"][3, 1] = np.inf
    model = _model(adata)
    with pytest.raises(FloatingPointError, match="1 cells"):
        _train(model)
    assert model.module is None and not model.is_trained


def test_model_with_non_finite_weights_is_not_saved(tmp_path):
    model = _model(_clusters())
    _train(model, max_epochs=1)
    with torch.no_grad():
        next(model.module.parameters())[0] = float("nan")
    with pytest.raises(FloatingPointError, match="refusing to save"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_interrupted_training_resumes_from_checkpoint_to_the_same_model(tmp_path):
    uninterrupted = _model(_clusters())
    _train(uninterrupted, checkpoint_dir=tmp_path / "full")

    preempted = _model(_clusters())
    with pytest.raises(_Preempted):
        _train(preempted, checkpoint_dir=tmp_path / "ckpt", callbacks=[_PreemptAtEpoch(3)])
    assert not preempted.is_trained
    assert (tmp_path / "ckpt" / "last.ckpt").exists()

    # the restarted job builds the model again and resumes where the checkpoint left off
    resumed, seen = _model(_clusters()), _EpochsSeen()
    _train(resumed, checkpoint_dir=tmp_path / "ckpt", ckpt_path="last", callbacks=[seen])
    assert resumed.is_trained
    assert seen.epochs == [3, 4, 5], "only the epochs lost to the interruption are trained again"
    expected = _weights(uninterrupted)
    for k, v in _weights(resumed).items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6, msg=k)
    a = uninterrupted.generate(20, seed=4, n_steps=20).obsm["X_latent"]
    b = resumed.generate(20, seed=4, n_steps=20).obsm["X_latent"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_resume_without_checkpoint_dir_is_a_clear_error():
    model = _model(_clusters())
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _train(model, ckpt_path="last")
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        _train(model, ckpt_path="/nonexistent/x.ckpt")


def test_same_seed_same_data_gives_the_same_model_and_cells():
    first, second = _model(_clusters()), _model(_clusters())
    _train(first, max_epochs=3)
    _train(second, max_epochs=3)
    w1, w2 = _weights(first), _weights(second)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert first.hierarchy.to_newick() == second.hierarchy.to_newick()
    np.testing.assert_array_equal(
        first.generate(15, seed=2, n_steps=20).obsm["X_latent"],
        second.generate(15, seed=2, n_steps=20).obsm["X_latent"],
    )


# ---------------------------------------------------------------- routing of training samples
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_hierarchy import hierarchies  # noqa: E402

from scbranchdiff.module import BranchLookup  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(hierarchies(), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), st.integers(0, 2**16))
def test_training_routes_every_sample_to_the_branch_sampling_uses(h, times, seed):
    """The tensor lookup used in the loss agrees with Hierarchy.branch_index (used by the sampler)."""
    rng = np.random.default_rng(seed)
    t = np.array(times + [b.t_start for b in h.branches])
    cell_type = rng.integers(0, h.n_classes, len(t))
    lookup = BranchLookup(h)
    got = lookup(torch.as_tensor(cell_type), torch.as_tensor(t, dtype=torch.float32)).numpy()
    # float32 times (as in training) may round across a boundary: compare at the rounded times
    expected = h.branch_index(cell_type, t.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(got, expected)


def test_checkpoints_leave_no_temporaries_and_a_bad_directory_is_refused_before_training(tmp_path):
    import scanpy as sc

    from scbranchdiff import _io

    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=20, n_genes=300, seed=0)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = BranchedDiffusion(adata, latent="pca", n_hidden=16)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    # what a job killed while writing its checkpoint left (a dead process on this host)
    stale = folder / f".last.ckpt.tmp-{_io._host_tag()}.999999999.0123abcd.ckpt"
    stale.write_text("partial")
    model.train(max_epochs=2, checkpoint_dir=str(folder), **FAST)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    fresh = BranchedDiffusion(adata, latent="pca", n_hidden=16)
    with pytest.raises(NotADirectoryError, match="checkpoint_dir"):
        fresh.train(max_epochs=2, checkpoint_dir=str(not_a_dir), **FAST)
    assert fresh.module is None
