"""Shared fixtures: real and simulated data, and small trained models (trained once per session)."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Small, fast settings used by every trained fixture (2 CPU cores, whole suite in minutes).
FAST = {"enable_progress_bar": False, "enable_model_summary": False}


def shared_file(name: str) -> Path:
    """Path of a file in ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not available (development data, not shipped)")
    return path


def stratified_split(labels, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out cells, the same fraction from every type."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        n = int(round(test_fraction * len(idx)))
        test[rng.choice(idx, size=n, replace=False)] = True
    return test


@pytest.fixture(scope="session")
def pbmc68k_split():
    """pbmc68k with 25% of each type held out: (train AnnData, test AnnData)."""
    import scbranchdiff as sbd

    adata = sbd.data.pbmc68k()
    test = stratified_split(adata.obs["bulk_labels"], 0.25, seed=0)
    return adata[~test].copy(), adata[test].copy()


@pytest.fixture(scope="session")
def pbmc68k_model(pbmc68k_split):
    """A branched model trained on the pbmc68k training split."""
    import scbranchdiff as sbd

    train, _ = pbmc68k_split
    train = train.copy()
    sbd.model.BranchedDiffusion.setup_anndata(train, labels_key="bulk_labels", layer="counts")
    model = sbd.model.BranchedDiffusion(train, n_hidden=128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=400, latent_max_epochs=150, **FAST)
    return model


@pytest.fixture(scope="session")
def simulated():
    """Simulated counts from a known 3-level tree of 8 types: (adata, nested tree)."""
    import scbranchdiff as sbd

    return sbd.data.simulate_hierarchy(n_cells_per_type=150, n_genes=300, seed=0)
