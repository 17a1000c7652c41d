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
        model.train(max_epochs=700, latent_max_epochs=150, **FAST)
    return model


@pytest.fixture(scope="session")
def simulated():
    """Simulated counts from a known 3-level tree of 8 types: (adata, nested tree)."""
    import scbranchdiff as sbd

    return sbd.data.simulate_hierarchy(n_cells_per_type=150, n_genes=300, seed=0)


@pytest.fixture(scope="session")
def simulated_pca_model(simulated):
    """A branched model (PCA latent, annotated tree) on 75% of `simulated`, log-normalised.

    Returns (model, train, held_out); both AnnData have layers["lognorm"] (the registered
    layer). About 30 s on 2 CPU cores. The simulated state program is type-independent.
    """
    import scanpy as sc

    import scbranchdiff as sbd

    adata = simulated[0].copy()
    adata.layers["lognorm"] = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4, layer="lognorm")
    sc.pp.log1p(adata, layer="lognorm")
    test = stratified_split(adata.obs["cell_type"], 0.25, seed=0)
    train, held_out = adata[~test].copy(), adata[test].copy()
    sbd.model.BranchedDiffusion.setup_anndata(train, labels_key="cell_type", layer="lognorm")
    model = sbd.model.BranchedDiffusion(
        train,
        latent="pca",
        n_latent=10,
        n_hidden=128,
        hierarchy=["level_1", "level_2", "cell_type"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=300, **FAST)
    return model, train, held_out


@pytest.fixture(scope="session")
def pbmc_facs_split():
    """FACS-sorted PBMC (../shared/data), 500 HVGs, 25% of each type held out."""
    import anndata as ad
    import scanpy as sc

    adata = ad.read_h5ad(shared_file("pbmc_facs.h5ad"))
    adata.layers["counts"] = adata.X.copy()
    logged = sc.pp.log1p(sc.pp.normalize_total(adata, target_sum=1e4, copy=True), copy=True)
    sc.pp.highly_variable_genes(logged, n_top_genes=500)
    adata = adata[:, logged.var["highly_variable"].to_numpy()].copy()
    test = stratified_split(adata.obs["celltype"], 0.25, seed=0)
    return adata[~test].copy(), adata[test].copy()
