"""The README's notebook example runs as written, with tiny training settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TRAIN_AS_WRITTEN = "model.train()"
TRAIN_SMALL = "model.train(max_epochs=2, latent_max_epochs=2, enable_progress_bar=False)"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = _python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    code = "\n".join(blocks)
    assert TRAIN_AS_WRITTEN in code  # the substitution below must keep matching the README
    code = code.replace(TRAIN_AS_WRITTEN, TRAIN_SMALL)
    # a UMAP's numba compilation takes ~30 s in a fresh process; the PCA fallback draws the same plot
    monkeypatch.setattr("scbranchdiff.pl._projection._umap_available", lambda: False)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with pytest.warns(UserWarning, match="umap-learn is not installed"):
        exec(compile(code, str(README), "exec"), namespace)
    # what the example promises
    gen = namespace["gen"]
    assert gen.obs["bulk_labels"].value_counts()[["CD14+ Monocyte", "CD19+ B"]].tolist() == [300, 300]
    assert (namespace["b_cells"].obs["bulk_labels"] == "CD19+ B").all()
    assert set(namespace["scores"].index) >= {"CD14+ Monocyte", "CD19+ B"}
    assert (tmp_path / "model_dir").is_dir()
    assert namespace["model2"].classes == namespace["model"].classes
