"""The tutorials run top to bottom (tiny training, PCA plots) and draw their figures.

Each notebook is executed with papermill in a fresh kernel, with the "parameters" cell
overridden by the small values below; about 20-30 s per notebook on 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
SMALL = {
    "max_epochs": 2,
    "latent_max_epochs": 2,
    "n_cells": 30,
    "n_steps": 20,
    "basis": "pca",  # a UMAP's numba compilation alone takes ~30 s in each fresh kernel
}
FIGURES = {
    "01_generation": ["generation_hierarchy", "generation_loss", "generation_generated_vs_real",
                      "generation_markers", "generation_scores"],
    "02_transmutation": ["transmutation_embedding", "transmutation_top_genes",
                         "transmutation_fold_changes", "transmutation_intermediates"],
    "03_continual_learning": ["continual_hierarchy", "continual_generated_vs_real",
                              "continual_markers"],
}


def test_every_tutorial_is_tested():
    assert sorted(p.stem for p in TUTORIALS.glob("*.ipynb")) == sorted(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_stored_outputs_come_from_this_version(name):
    import json

    import scbranchdiff

    stamp = json.loads((TUTORIALS / f"{name}.ipynb").read_text())["metadata"].get("scbranchdiff", {})
    assert stamp.get("version") == scbranchdiff.__version__, (
        f"{name}.ipynb holds outputs of scbranchdiff {stamp.get('version')}: run `make tutorials`"
    )


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_tutorial_runs_and_draws_its_figures(name, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"]:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    figdir = tmp_path / "figures"
    parameters = {**SMALL, "figdir": str(figdir)}
    if name == "03_continual_learning":
        parameters["new_max_epochs"] = 2
    if name == "02_transmutation":
        parameters.pop("n_cells")
    papermill.execute_notebook(
        str(TUTORIALS / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
        parameters=parameters, cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
    )
    for figure in FIGURES[name]:
        png = figdir / f"{figure}.png"
        assert png.exists(), figure
        assert png.stat().st_size > 5_000, figure  # a drawn figure, not an empty canvas
