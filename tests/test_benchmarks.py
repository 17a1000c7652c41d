"""The benchmark scripts run end to end (quick mode, simulated data) and print the tables the docs show.

Trains tiny models only (a few dozen steps each, width 32-256): about 40 s on 2 CPU cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def own_threads(monkeypatch):
    """The scripts set one thread for torch and BLAS (`_common.single_thread`): undone after each test."""
    import torch

    threads = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))  # restored by monkeypatch
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import quality
    import speed

    import _common

    yield _common, quality, speed
    for name in ("_common", "quality", "speed"):
        sys.modules.pop(name, None)


def _table(text: str, title: str) -> list[list[str]]:
    """Rows (split on whitespace) of the printed table after the line '## title'."""
    lines = text.splitlines()
    start = lines.index(f"## {title}")
    # title, caption, blank, header, index-name line, then rows until a blank line
    rows = []
    for line in lines[start + 5 :]:
        if not line.strip():
            break
        rows.append(line)
    return [lines[start + 3].split(), *[r.rsplit(None, len(lines[start + 3].split())) for r in rows]]


def test_quick_benchmarks_print_their_tables(scripts, capsys, tmp_path):
    common, quality, speed = scripts
    raw = tmp_path / "quality.csv"
    quality.main(["--quick", "--datasets", "simulated", "--raw", str(raw)])
    out = capsys.readouterr().out
    header, *rows = _table(out, "simulated, seed 0")
    assert header == list(quality.COLUMNS)
    assert [r[0] for r in rows] == list(quality.METHODS)
    values = {r[0]: dict(zip(header, map(float, r[1:]), strict=True)) for r in rows}
    for method, row in values.items():
        for col in ("auc_latent", "auc_pca"):
            assert 0.0 <= row[col] <= 1.0, (method, col, row[col])
    # the floor: held-out real cells are recognised about as often as the reference real cells
    assert 0.8 <= values["real"]["label_ratio"] <= 1.2

    # seeds are summarised as mean +- SEM from the raw rows (here: the one run, and it again as seed 1)
    import pandas as pd

    once = pd.read_csv(raw)
    twice = pd.concat([once, once.assign(seed=1, auc_pca=once["auc_pca"] + 0.1)])
    summary = quality.summarise(twice)
    assert list(summary.index) == list(quality.METHODS)
    branched = once.set_index("method").loc["branched"]
    # mean of x and x + 0.1 is x + 0.05, their SEM 0.05
    assert summary.loc["branched", "auc_pca"] == f"{branched['auc_pca'] + 0.05:.3f} ± 0.050"
    assert summary.loc["branched", "auc_latent"] == f"{branched['auc_latent']:.3f} ± 0.000"

    speed.main(["--quick"])
    out = capsys.readouterr().out
    for section in ("train", "generate", "prefix", "samplers", "continual", "counts"):
        assert f"## {section}" in out
    train_header, *train_rows = _table(out, "train")
    assert train_header == ["heads", "train_cells_per_s", "bare_step_cells_per_s", "ms_per_step", "loop_overhead",
                            "unit_bare_steps_per_step", "peak_mem_mb"]
    assert [r[0] for r in train_rows] == ["branched", "flat", "branched / flat"]
    prefix_header, *prefix_rows = _table(out, "prefix")
    assert prefix_header == ["seconds", "network_rows"]
    rows = {r[0]: float(r[-1]) for r in prefix_rows}
    # one call per type repeats the shared branches: more rows, and the ratio is their quotient
    assert rows["branched, one call per type"] > rows["branched, all types in one call"] > 0
    assert rows["speed-up of shared prefixes"] == pytest.approx(
        rows["branched, one call per type"] / rows["branched, all types in one call"], rel=1e-3)
    # the unit of cost: one bare step of the plain MLP takes milliseconds, not seconds
    assert 1e-5 < common.bare_step_seconds(n_steps=5, repeats=1) < 1.0

    # results go between markers; other sections of the page are kept
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Streaming and memory\nkept\n")
    common.write_section("quality", "table 1", page)
    common.write_section("quality", "table 2", page)
    text = page.read_text()
    assert "kept" in text and "table 2" in text and "table 1" not in text


def test_scvi_stage_profile_splits_loop_from_model_arithmetic(monkeypatch):
    """benchmarks/scvi_stage.py times scvi-tools' loop and a plain loop of the same module."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import scvi_stage

    try:
        row = scvi_stage.run_dataset("simulated", quick=True, epochs=3, n_steps=10)
    finally:
        for name in ("_common", "scvi_stage"):
            sys.modules.pop(name, None)
    # two epochs after the first are timed: 702 training cells in batches of 128, 6 steps each
    assert row["steps_timed"] == 12
    assert row["scvi_tools_ms"] > 0 and row["plain_ms"] > 0
    assert row["loop_overhead"] == pytest.approx(row["scvi_tools_ms"] / row["plain_ms"])
    # the ZINB likelihood's lgamma/digamma and the linear layers are found in the profile
    assert 0 < row["gamma_share"] < 1 and 0 < row["matmul_share"] < 1
    assert row["gamma_share"] + row["matmul_share"] < 1
