"""The hierarchy dendrogram: log-SNR heights, cells per leaf, rare types, non-overlapping labels."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import scbranchdiff as sbd
from scbranchdiff import Hierarchy
from scbranchdiff.diffusion import VPSDE
from scbranchdiff.hierarchy import Topology, log_snr

SDE = VPSDE()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def caterpillar(n: int = 8, first: float = 0.40, step: float = 0.01) -> Hierarchy:
    """((((t0, t1), t2), t3) ...): splits `step` apart in t, the tightest a tree gets."""
    node, t = f"(t0:{first},t1:{first})", first
    for i in range(2, n):
        node = f"({node}:{step},t{i}:{t + step})"
        t += step
    return Hierarchy.from_newick(f"{node}:{1 - t};")


def balanced(step: float = 0.01) -> Hierarchy:
    """Eight types, three levels, every split `step` apart in t."""
    topology = Topology(((("a", "b"), ("c", "d")), (("e", "f"), ("g", "h"))))
    times = {}
    for clade in topology.clades():
        times[clade] = 0.40 + step * {2: 0, 4: 1, 8: 2}[len(clade)]
    return Hierarchy.from_topology(topology, times)


def cells(counts: dict[str, int]) -> ad.AnnData:
    labels = np.repeat(list(counts), list(counts.values()))
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels, categories=list(counts))})
    obs.index = [f"cell{i}" for i in range(len(obs))]
    return ad.AnnData(np.zeros((len(obs), 3), dtype=np.float32), obs=obs)


def split_labels(ax) -> list:
    return [text for text in ax.texts if text.get_text()[:1] in ("t", "λ")]


def overlapping_pairs(ax) -> list[tuple[str, str]]:
    ax.figure.canvas.draw()
    boxes = [(text.get_text(), text.get_window_extent()) for text in split_labels(ax)]
    return [
        (name_a, name_b)
        for (name_a, box_a), (name_b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]


# ---------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "tree", [caterpillar(), caterpillar(12), balanced()], ids=["cat8", "cat12", "bal8"]
)
@pytest.mark.parametrize("scale", ["t", "log_snr"])
def test_no_two_split_labels_overlap_when_splits_are_0_01_apart(tree: Hierarchy, scale: str):
    ax = sbd.pl.hierarchy(tree, scale=scale, sde=SDE, show=False)
    n_splits = len(tree.split_times())
    assert len(split_labels(ax)) == n_splits
    assert overlapping_pairs(ax) == []


def test_labels_stay_apart_in_a_small_given_axes():
    _, ax = plt.subplots(figsize=(3.0, 2.5))
    sbd.pl.hierarchy(caterpillar(10), ax=ax, scale="t", show=False)
    assert overlapping_pairs(ax) == []


# ---------------------------------------------------------------------------- scales
def test_log_snr_scale_draws_each_split_at_its_log_snr_with_a_labelled_axis():
    tree = balanced(step=0.1)
    ax = sbd.pl.hierarchy(tree, sde=SDE, show=False)  # an SDE given: log-SNR by default
    assert ax.get_ylabel().startswith("log-SNR")
    expected = sorted(float(log_snr(t, SDE)) for t in set(tree.split_times().values()))
    bars = sorted({
        round(float(line.get_ydata()[0]), 9) for line in ax.lines
        if np.ptp(line.get_ydata()) == 0 and np.ptp(line.get_xdata()) > 0
    })
    assert bars == pytest.approx(expected)
    texts = sorted(text.get_text() for text in split_labels(ax))
    heights = tree.split_heights(SDE).values()  # one label per splitting group
    assert texts == sorted(f"λ = {v:.2f}".replace("-", "\N{MINUS SIGN}") for v in heights)
    # leaves (lambda = +inf) below the axis break, the root (low lambda) on top
    bottom, top = ax.get_ylim()
    assert bottom > max(expected) and top < min(expected)
    assert ax.get_yticklabels()[-1].get_text() == "+\N{INFINITY}"
    (right,) = [child for child in ax.child_axes if child.get_ylabel() == "diffusion time t"]
    assert right.get_yticklabels()[-1].get_text() == "0"


def test_log_snr_spreads_splits_that_crowd_in_t():
    # two splits 0.05 apart near t = 0.65 take 4x more of the drawn height in lambda
    tree = Hierarchy.from_newick("((a:0.6,b:0.6):0.05,c:0.65):0.35;")
    in_t = sbd.pl.hierarchy(tree, scale="t", show=False)
    in_lambda = sbd.pl.hierarchy(tree, scale="log_snr", sde=SDE, show=False)

    def share(ax) -> float:
        heights = sorted(set(tree.split_times().values()))
        ys = [ax.transData.transform((0, h))[1] for h in
              (heights if ax is in_t else [float(log_snr(t, SDE)) for t in heights])]
        return abs(ys[1] - ys[0]) / ax.get_window_extent().height

    assert share(in_lambda) > 4 * share(in_t)


def test_default_scale_follows_whether_the_sde_is_known():
    tree = caterpillar(4)
    assert sbd.pl.hierarchy(tree, show=False).get_ylabel() == "diffusion time t"
    model = SimpleNamespace(hierarchy=tree, adata=None, labels_key=None, sde=SDE)
    assert sbd.pl.hierarchy(model, show=False).get_ylabel().startswith("log-SNR")
    assert sbd.pl.hierarchy(model, scale="t", show=False).get_ylabel() == "diffusion time t"


def test_scale_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs the SDE"):
        sbd.pl.hierarchy(caterpillar(3), scale="log_snr", show=False)
    with pytest.raises(ValueError, match="`scale` must be one of"):
        sbd.pl.hierarchy(caterpillar(3), scale="snr", sde=SDE, show=False)


def test_flat_hierarchy_draws_on_both_scales():
    tree = Hierarchy.flat(["a", "b", "c"])
    for scale in ("t", "log_snr"):
        ax = sbd.pl.hierarchy(tree, scale=scale, sde=SDE, show=False)
        assert split_labels(ax) == []


# ---------------------------------------------------------------------------- cells per leaf
def test_leaves_show_cell_numbers_and_rare_types_stand_out():
    tree = caterpillar(4)
    counts = {"t0": 1500, "t1": 40, "t2": 99, "t3": 100}
    ax = sbd.pl.hierarchy(tree, adata=cells(counts), labels_key="cell_type", show=False)
    ticks = {label.get_text(): label for label in ax.get_xticklabels()}
    assert set(ticks) == {"t0 (1,500)", "t1 (40)", "t2 (99)", "t3 (100)"}
    rare = {text for text, label in ticks.items() if label.get_fontweight() == "bold"}
    assert rare == {"t1 (40)", "t2 (99)"}
    assert ticks["t1 (40)"].get_color() != ticks["t0 (1,500)"].get_color()
    legend = ax.get_legend()
    assert legend is not None and "rare type (< 100 cells)" in legend.get_texts()[0].get_text()
    # the leaves of rare types are ringed
    leaves = ax.collections[-1]
    assert len({tuple(edge) for edge in leaves.get_edgecolors()}) == 2


def test_rare_threshold_is_a_parameter_and_types_without_cells_count_zero():
    tree = caterpillar(3)
    adata = cells({"t0": 300, "t1": 150})
    ax = sbd.pl.hierarchy(tree, adata=adata, labels_key="cell_type", rare_threshold=200,
                          show=False)
    ticks = [label.get_text() for label in ax.get_xticklabels()]
    assert "t2 (0)" in ticks
    bold = {label.get_text() for label in ax.get_xticklabels() if label.get_fontweight() == "bold"}
    assert bold == {"t1 (150)", "t2 (0)"}
    none_rare = sbd.pl.hierarchy(tree, adata=cells({"t0": 300, "t1": 300, "t2": 300}),
                                 labels_key="cell_type", show=False)
    assert none_rare.get_legend() is None


def test_a_missing_labels_column_is_named():
    with pytest.raises(KeyError, match="nope"):
        sbd.pl.hierarchy(caterpillar(3), adata=cells({"t0": 5}), labels_key="nope", show=False)


def test_the_plot_of_a_model_uses_its_sde_cells_and_labels_key():
    tree = caterpillar(4)
    adata = cells({"t0": 500, "t1": 50, "t2": 500, "t3": 500})
    model = SimpleNamespace(hierarchy=tree, adata=adata, labels_key="cell_type", sde=SDE)
    ax = sbd.pl.hierarchy(model, show=False)
    assert ax.get_ylabel().startswith("log-SNR")
    assert "t1 (50)" in [label.get_text() for label in ax.get_xticklabels()]
    assert overlapping_pairs(ax) == []
