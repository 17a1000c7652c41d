"""The README's notebook example and the docs' quick start run as written, with tiny training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICKSTART = ROOT / "docs" / "quickstart.md"
TRAIN_AS_WRITTEN = "model.train()"
TRAIN_SMALL = "model.train(max_epochs=2, latent_max_epochs=2, enable_progress_bar=False)"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def _run_python_blocks(path: Path, tmp_path: Path, monkeypatch) -> dict:
    """Run every ```python block of `path` in one namespace, with tiny training; returns it."""
    blocks = _python_blocks(path.read_text())
    assert blocks, f"{path.name} has no ```python block"
    code = "\n".join(blocks)
    assert TRAIN_AS_WRITTEN in code  # the substitution below must keep matching the page
    code = code.replace(TRAIN_AS_WRITTEN, TRAIN_SMALL)
    # a UMAP's numba compilation takes ~30 s in a fresh process; the PCA fallback draws the same plot
    monkeypatch.setattr("scbranchdiff.pl._projection._umap_available", lambda: False)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with pytest.warns(UserWarning, match="umap-learn is not installed"):
        exec(compile(code, str(path), "exec"), namespace)
    return namespace


def test_readme_python_example_runs(tmp_path, monkeypatch):
    namespace = _run_python_blocks(README, tmp_path, monkeypatch)
    # what the example promises
    gen = namespace["gen"]
    assert gen.obs["bulk_labels"].value_counts()[["CD14+ Monocyte", "CD19+ B"]].tolist() == [300, 300]
    assert (namespace["b_cells"].obs["bulk_labels"] == "CD19+ B").all()
    assert set(namespace["scores"].index) >= {"CD14+ Monocyte", "CD19+ B"}
    assert (tmp_path / "model_dir").is_dir()
    assert namespace["model2"].classes == namespace["model"].classes


def test_docs_quickstart_runs(tmp_path, monkeypatch):
    namespace = _run_python_blocks(QUICKSTART, tmp_path, monkeypatch)
    generated = namespace["generated"]
    assert set(generated.obs["bulk_labels"].unique()) == {"CD14+ Monocyte", "CD56+ NK"}
    assert {"c2st_auc", "c2st_auc_split_half"} <= set(namespace["scores"].columns)
    assert (tmp_path / "pbmc_model").is_dir()
