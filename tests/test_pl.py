"""Plots: the hierarchy dendrogram and the real-cell embeddings (matplotlib Agg, small data)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

import scbranchdiff as sbd
from scbranchdiff import Branch, Hierarchy

TYPES = ("B", "CD4+/CD25 T Reg", "CD8 T", "CD14+ Monocyte")
STORED_COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3"]
# PNGs for a person to look at; tests write into tmp_path unless this is set
CHECK_DIR = os.environ.get("SCBRANCHDIFF_PL_CHECK_DIR")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def png_path(tmp_path: Path, name: str) -> Path:
    folder = Path(CHECK_DIR) if CHECK_DIR else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def six_type_tree() -> Hierarchy:
    """((B, T Reg, (CD8 T, NK)) at 0.45 [a three-way split], (Mono, DC) at 0.30) at 0.70."""
    classes = ["B", "CD4+/CD25 T Reg", "CD8 T", "CD14+ Monocyte", "NK", "DC"]
    return Hierarchy(classes, [
        Branch(tuple(classes), 0.7, 1.0),
        Branch(("B", "CD4+/CD25 T Reg", "CD8 T", "NK"), 0.45, 0.7),
        Branch(("B",), 0.0, 0.45),
        Branch(("CD4+/CD25 T Reg",), 0.0, 0.45),
        Branch(("CD8 T", "NK"), 0.2, 0.45),
        Branch(("CD8 T",), 0.0, 0.2),
        Branch(("NK",), 0.0, 0.2),
        Branch(("CD14+ Monocyte", "DC"), 0.3, 0.7),
        Branch(("CD14+ Monocyte",), 0.0, 0.3),
        Branch(("DC",), 0.0, 0.3),
    ])


def counts(types, n_per_type: int, *, seed: int, prefix: str, n_genes: int = 30) -> ad.AnnData:
    """Poisson counts whose gene means depend on the type name only (same profile in any call)."""
    rng = np.random.default_rng(seed)
    means = {t: np.random.default_rng(sum(map(ord, t))).gamma(2.0, 1.5, n_genes) for t in types}
    x = np.concatenate([rng.poisson(means[t], (n_per_type, n_genes)) for t in types])
    labels = np.repeat(list(types), n_per_type)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels, categories=list(dict.fromkeys(types)))},
        index=pd.Index([f"{prefix}{i}" for i in range(len(labels))], dtype=object),
    )
    var = pd.DataFrame(index=pd.Index([f"gene{i}" for i in range(n_genes)], dtype=object))
    adata = ad.AnnData(x.astype(np.float32), obs=obs, var=var)
    return adata


@pytest.fixture
def real() -> ad.AnnData:
    adata = counts(TYPES, 40, seed=0, prefix="real")
    adata.uns["cell_type_colors"] = STORED_COLOURS
    return adata


def point_colours(collection) -> list[str]:
    return [to_hex(c) for c in collection.get_facecolors()]


# ---------------------------------------------------------------------------- hierarchy
def test_leaves_are_drawn_in_tree_order_with_readable_names(tmp_path):
    ax = sbd.pl.hierarchy(six_type_tree(), show=False, save=png_path(tmp_path, "hierarchy"))
    names = [label.get_text() for label in ax.get_xticklabels()]
    # depth-first from the root: lymphoid group (B, T Reg, (CD8 T, NK)) then (Mono, DC)
    assert names == ["B", "CD4+/CD25 T Reg", "CD8 T", "NK", "CD14+ Monocyte", "DC"]
    assert all(label.get_rotation() > 0 for label in ax.get_xticklabels())
    assert ax.get_ylabel() == "diffusion time t"


def test_every_split_is_drawn_at_its_time_and_labelled():
    ax = sbd.pl.hierarchy(six_type_tree(), show=False)
    assert sorted(text.get_text() for text in ax.texts) == [
        "t = 0.20", "t = 0.30", "t = 0.45", "t = 0.70",
    ]
    bars = [
        line for line in ax.lines
        if np.ptp(line.get_ydata()) == 0 and np.ptp(line.get_xdata()) > 0
    ]
    assert sorted(float(bar.get_ydata()[0]) for bar in bars) == [0.2, 0.3, 0.45, 0.7]


def test_three_way_split_is_one_bar_over_all_three_children():
    ax = sbd.pl.hierarchy(six_type_tree(), show=False)
    (bar,) = [line for line in ax.lines if list(line.get_ydata()) == [0.45, 0.45]]
    # leaves B (x=0) and T Reg (x=1), and the (CD8 T, NK) group centred at x=2.5
    assert list(bar.get_xdata()) == [0.0, 2.5]
    children_tops = [
        line for line in ax.lines
        if np.ptp(line.get_xdata()) == 0 and np.ptp(line.get_ydata()) > 0
        and max(line.get_ydata()) == 0.45
    ]
    assert len(children_tops) == 3


def test_root_branch_reaches_t_one_and_leaves_sit_at_zero():
    ax = sbd.pl.hierarchy(six_type_tree(), show=False)
    assert max(max(line.get_ydata()) for line in ax.lines) == 1.0
    leaves = ax.collections[-1]
    assert np.all(leaves.get_offsets()[:, 1] == 0.0)


def test_leaves_take_the_stored_category_colours_of_the_models_anndata(real):
    tree = Hierarchy(list(TYPES), [
        Branch(TYPES, 0.6, 1.0),
        Branch(("B", "CD4+/CD25 T Reg", "CD8 T"), 0.3, 0.6),
        Branch(("B",), 0.0, 0.3),
        Branch(("CD4+/CD25 T Reg",), 0.0, 0.3),
        Branch(("CD8 T",), 0.0, 0.3),
        Branch(("CD14+ Monocyte",), 0.0, 0.6),
    ])
    model = SimpleNamespace(hierarchy=tree, adata=real, labels_key="cell_type")
    ax = sbd.pl.hierarchy(model, show=False)
    assert point_colours(ax.collections[-1]) == STORED_COLOURS


def test_leaves_fall_back_to_scanpys_default_palette():
    ax = sbd.pl.hierarchy(Hierarchy.flat(["a", "b", "c"]), show=False)
    colours = point_colours(ax.collections[-1])
    assert colours == [to_hex(c) for c in sbd.pl._colours.default_palette(3)]
    assert len(set(colours)) == 3


def test_explicit_palette_overrides_stored_colours(real):
    tree = Hierarchy.flat(list(TYPES))
    palette = dict(zip(TYPES, ["black", "red", "green", "blue"], strict=True))
    ax = sbd.pl.hierarchy(tree, adata=real, labels_key="cell_type", palette=palette, show=False)
    assert point_colours(ax.collections[-1]) == [to_hex(c) for c in palette.values()]


def test_hierarchy_plot_draws_into_a_given_axes():
    _, ax = plt.subplots()
    assert sbd.pl.hierarchy(six_type_tree(), ax=ax, show=False) is ax


def test_hierarchy_plot_rejects_other_objects():
    with pytest.raises(TypeError, match="model_or_hierarchy"):
        sbd.pl.hierarchy("not a tree", show=False)


# ---------------------------------------------------------------------------- embeddings
def test_generated_and_real_panels_share_limits_and_colours(real, tmp_path):
    generated = counts(TYPES, 15, seed=1, prefix="gen")
    axes = sbd.pl.generated_vs_real(
        real, generated, "cell_type", basis="pca", show=False,
        save=png_path(tmp_path, "generated_vs_real"),
    )
    assert set(axes) == {"real", "generated"}
    assert axes["real"].get_xlim() == axes["generated"].get_xlim()
    assert axes["real"].get_ylim() == axes["generated"].get_ylim()
    assert axes["real"].get_xlabel() == "PC1" and axes["generated"].get_ylabel() == "PC2"
    assert len(axes["generated"].collections[0].get_offsets()) == generated.n_obs
    legend = [text.get_text() for text in axes["generated"].get_legend().get_texts()]
    assert legend == list(TYPES)
    assert set(point_colours(axes["generated"].collections[0])) == set(STORED_COLOURS)


def test_generated_cells_are_projected_not_refitted(real):
    """A generated copy of the real cells lands exactly on them: the axes come from real cells."""
    axes = sbd.pl.generated_vs_real(real, real.copy(), "cell_type", basis="pca", show=False)
    real_points = np.sort(axes["real"].collections[0].get_offsets(), axis=0)
    generated_points = np.sort(axes["generated"].collections[0].get_offsets(), axis=0)
    np.testing.assert_allclose(generated_points, real_points, atol=1e-6)


def test_per_type_panels_follow_the_real_category_order(real, tmp_path):
    generated = counts(TYPES[::-1], 10, seed=2, prefix="gen")
    axes = sbd.pl.generated_vs_real(
        real, generated, "cell_type", basis="pca", per_type=True, ncols=2, show=False,
        save=png_path(tmp_path, "generated_vs_real_per_type"),
    )
    assert list(axes) == ["real", "generated", *TYPES]
    assert [axes[t].get_title() for t in TYPES] == list(TYPES)


@pytest.mark.slow
def test_umap_is_fitted_on_real_cells_and_generated_cells_are_mapped_into_it(real, tmp_path):
    generated = counts(TYPES, 15, seed=1, prefix="gen")
    axes = sbd.pl.generated_vs_real(
        real, generated, "cell_type", show=False, save=png_path(tmp_path, "generated_vs_real_umap")
    )
    assert axes["real"].get_xlabel() == "UMAP1"
    assert axes["real"].get_xlim() == axes["generated"].get_xlim()


def test_missing_labels_key_is_named(real):
    with pytest.raises(KeyError, match="not_a_column"):
        sbd.pl.generated_vs_real(real, real, "not_a_column", basis="pca", show=False)


def transmuted_cells(real: ad.AnnData, n: int = 12) -> ad.AnnData:
    sources = real.obs_names[real.obs["cell_type"] == "B"][:n]
    cells = counts(["CD8 T"], n, seed=3, prefix="tr")
    cells.obs = pd.DataFrame(
        {"source_cell": sources, "source_type": "B", "target_type": "CD8 T", "t_split": 0.45,
         "cell_type": "CD8 T"},
        index=cells.obs_names,
    )
    return cells


def test_transmutation_links_each_shown_source_to_its_transmuted_cell(real, tmp_path):
    transmuted = transmuted_cells(real)
    ax = sbd.pl.transmutation(
        real, transmuted, "cell_type", basis="pca", n_arrows=5, show=False,
        save=png_path(tmp_path, "transmutation"),
    )
    (arrows,) = [c for c in ax.collections if isinstance(c, matplotlib.quiver.Quiver)]
    assert arrows.N == 5
    sources = ax.collections[2].get_offsets()
    landed = ax.collections[3].get_offsets()
    assert len(sources) == len(landed) == transmuted.n_obs
    # arrow tails sit on source cells
    tails = np.column_stack([arrows.X, arrows.Y])
    assert all(np.isclose(sources, tail).all(axis=1).any() for tail in tails)
    assert ax.get_title() == "B → CD8 T"


def test_transmutation_names_unknown_source_cells(real):
    transmuted = transmuted_cells(real)
    transmuted.obs["source_cell"] = "nobody"
    with pytest.raises(KeyError, match="source_cell"):
        sbd.pl.transmutation(real, transmuted, "cell_type", basis="pca", show=False)


def intermediate_states(n_states: int = 6) -> ad.AnnData:
    """State i: one intermediate at t = 0.45 and two leaves (T Reg, CD8 T)."""
    leaves_a = counts(["CD4+/CD25 T Reg"], n_states, seed=4, prefix="a")
    leaves_b = counts(["CD8 T"], n_states, seed=5, prefix="b")
    middle = leaves_a.copy()
    middle.X = np.round((leaves_a.X + leaves_b.X) / 2)
    middle.obs_names = [f"m{i}" for i in range(n_states)]
    cells = ad.concat([middle, leaves_a, leaves_b])
    cells.obs["state_id"] = np.tile(np.arange(n_states), 3)
    cells.obs["stage"] = ["intermediate"] * n_states + ["leaf"] * (2 * n_states)
    cells.obs["t"] = [0.45] * n_states + [0.0] * (2 * n_states)
    cells.obs["branch"] = [1] * n_states + [3] * n_states + [5] * n_states
    cells.obs["cell_type"] = ["CD4+/CD25 T Reg"] * (2 * n_states) + ["CD8 T"] * n_states
    return cells


def test_intermediates_are_linked_to_their_leaf_outcomes(real, tmp_path):
    states = intermediate_states()
    ax = sbd.pl.intermediates(
        real, states, "cell_type", basis="pca", n_states=4, show=False,
        save=png_path(tmp_path, "intermediates"),
    )
    (links,) = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert len(links.get_segments()) == 4 * 2
    middle = ax.collections[-1].get_offsets()
    assert len(middle) == 6
    starts = np.array([segment[0] for segment in links.get_segments()])
    assert all(np.isclose(middle, start).all(axis=1).any() for start in starts)
    assert "leaf outcome" in [text.get_text() for text in ax.get_legend().get_texts()]


def test_intermediates_require_the_stage_column(real):
    states = intermediate_states()
    del states.obs["stage"]
    with pytest.raises(KeyError, match="stage"):
        sbd.pl.intermediates(real, states, "cell_type", basis="pca", show=False)


# ---------------------------------------------------------------------------- scanpy's save rule
PLOTS = ("hierarchy", "generated_vs_real", "transmutation", "intermediates")


def plot(name: str, real: ad.AnnData, **kwargs):
    """Draw plot ``name`` on small data (PCA embeddings: fast)."""
    if name == "hierarchy":
        return sbd.pl.hierarchy(six_type_tree(), **kwargs)
    kwargs.setdefault("basis", "pca")
    if name == "generated_vs_real":
        generated = counts(TYPES, 15, seed=1, prefix="gen")
        return sbd.pl.generated_vs_real(real, generated, "cell_type", **kwargs)
    if name == "transmutation":
        return sbd.pl.transmutation(real, transmuted_cells(real), "cell_type", **kwargs)
    return sbd.pl.intermediates(real, intermediate_states(), "cell_type", **kwargs)


SCANPY_FIGURE_SETTINGS = ("figdir", "file_format_figs", "plot_suffix", "autosave", "autoshow")


@pytest.fixture
def scanpy_settings():
    """scanpy's settings, restored afterwards (monkeypatch cannot: they are class properties)."""
    import scanpy as sc

    before = {name: getattr(sc.settings, name) for name in SCANPY_FIGURE_SETTINGS}
    yield sc.settings
    for name, value in before.items():
        setattr(sc.settings, name, value)


@pytest.fixture
def figdir(tmp_path, scanpy_settings) -> Path:
    """scanpy's figure settings pointed at an empty tmp folder (not created yet)."""
    folder = tmp_path / "figures"
    scanpy_settings.figdir = folder
    scanpy_settings.file_format_figs = "pdf"
    scanpy_settings.plot_suffix = ""
    scanpy_settings.autosave = False
    return folder


def saved(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("name", PLOTS)
def test_save_true_writes_the_function_name_into_scanpys_figdir(name, real, figdir):
    plot(name, real, show=False, save=True)
    assert saved(figdir) == [f"{name}.pdf"]


@pytest.mark.parametrize("name", PLOTS)
def test_save_str_is_a_suffix_of_the_function_name_as_in_scanpy(name, real, figdir):
    plot(name, real, show=False, save="_x.png")
    plot(name, real, show=False, save="_y")
    assert saved(figdir) == [f"{name}_x.png", f"{name}_y.pdf"]


def test_save_suffix_follows_plot_suffix_and_file_format(real, figdir, scanpy_settings):
    scanpy_settings.plot_suffix = "_run1"
    scanpy_settings.file_format_figs = "svg"
    plot("generated_vs_real", real, show=False, save="_pbmc")
    plot("generated_vs_real", real, show=False, save="_pbmc.v2.png")
    assert saved(figdir) == [
        "generated_vs_real_pbmc.v2_run1.png", "generated_vs_real_pbmc_run1.svg",
    ]


def test_save_str_with_a_directory_or_a_path_is_the_file_itself(real, figdir, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    plot("transmutation", real, show=False, save=str(tmp_path / "out" / "absolute.png"))
    plot("transmutation", real, show=False, save="out/relative.svg")
    plot("transmutation", real, show=False, save=Path("bare.png"))
    assert saved(tmp_path / "out") == ["absolute.png", "relative.svg"]
    assert (tmp_path / "bare.png").is_file()
    # a bare str is scanpy's suffix, not a file in the working directory
    plot("transmutation", real, show=False, save="bare.png")
    assert saved(figdir) == ["transmutationbare.png"]


@pytest.mark.parametrize("name", PLOTS)
def test_autosave_saves_unless_save_is_false(name, real, figdir, scanpy_settings):
    scanpy_settings.autosave = True
    plot(name, real, show=False, save=False)
    assert saved(figdir) == []
    plot(name, real, show=False)
    assert saved(figdir) == [f"{name}.pdf"]


def test_saved_figures_use_scanpys_dpi_save(real, figdir, monkeypatch):
    from PIL import Image

    plot("hierarchy", real, show=False, save="_default.png")
    monkeypatch.setitem(matplotlib.rcParams, "savefig.dpi", 72)  # sc.set_figure_params(dpi_save=72)
    plot("hierarchy", real, show=False, save="_72.png")
    dpi = {p.name: Image.open(p).info["dpi"][0] for p in figdir.iterdir()}
    assert dpi == {"hierarchy_default.png": pytest.approx(150, abs=0.1),
                   "hierarchy_72.png": pytest.approx(72, abs=0.1)}


def test_save_rejects_other_types(real):
    with pytest.raises(TypeError, match="save"):
        plot("hierarchy", real, show=False, save=3)


# ---------------------------------------------------------------------------- return types
@pytest.mark.parametrize("name", PLOTS)
def test_return_fig_returns_the_figure_without_showing_it(name, real, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("shown despite return_fig"))
    fig = plot(name, real, show=True, return_fig=True)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig.axes


@pytest.mark.parametrize("name", PLOTS)
def test_plots_return_axes_unless_shown(name, real, monkeypatch, scanpy_settings):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    axes = plot(name, real, show=False)
    panels = axes.values() if isinstance(axes, dict) else [axes]
    assert all(isinstance(panel, matplotlib.axes.Axes) for panel in panels)
    assert plot(name, real, show=True) is None and shown == [True]
    scanpy_settings.autoshow = False
    assert plot(name, real) is not None and shown == [True]


def test_return_fig_gives_the_whole_figure_for_axes_in_a_subfigure(real, figdir):
    fig = plt.figure()
    left, _ = fig.subfigures(1, 2)
    ax = left.subplots(1, 2)
    generated = counts(TYPES, 15, seed=1, prefix="gen")
    returned = sbd.pl.generated_vs_real(
        real, generated, "cell_type", basis="pca", ax=ax, save=True, return_fig=True
    )
    assert returned is fig
    assert saved(figdir) == ["generated_vs_real.pdf"]


# ---------------------------------------------------------------------------- stored embeddings
def fake_umap(real_pcs, other_pcs, *, n_neighbors, seed):
    """A stand-in for the UMAP fit (seconds): the first two PCs, scaled."""
    return 2 * real_pcs[:, :2], [2 * pcs[:, :2] for pcs in other_pcs]


def refuse_fit(*args, **kwargs):
    raise AssertionError("the embedding was fitted again")


def test_embed_joint_stores_coordinates_and_settings_in_every_anndata(real):
    generated = counts(TYPES, 15, seed=1, prefix="gen")
    states = intermediate_states()
    sbd.pl.embed_joint(real, generated, states, basis="pca", layer=None, n_pcs=10)
    for adata, fitted_on in [(real, "real"), (generated, "projected"), (states, "projected")]:
        assert adata.obsm["X_pca_joint"].shape == (adata.n_obs, 2)
        info = adata.uns["X_pca_joint"]
        assert info["basis"] == "pca" and info["fitted_on"] == fitted_on
        assert info["params"] == {"n_pcs": 10, "n_neighbors": 15, "seed": 0}
    assert real.uns["X_pca_joint"]["fit_id"] == states.uns["X_pca_joint"]["fit_id"]
    # the same coordinates as a plot that fits its own embedding
    fresh = real.copy()
    del fresh.obsm["X_pca_joint"]
    axes = sbd.pl.generated_vs_real(
        fresh, counts(TYPES, 15, seed=1, prefix="gen"), "cell_type", basis="pca", n_pcs=10,
        show=False,
    )
    np.testing.assert_allclose(
        np.sort(axes["generated"].collections[0].get_offsets(), axis=0),
        np.sort(generated.obsm["X_pca_joint"], axis=0), atol=1e-4,
    )


def test_embed_joint_key_added_and_h5ad_round_trip(real, tmp_path):
    generated = counts(TYPES, 15, seed=1, prefix="gen")
    sbd.pl.embed_joint(real, generated, basis="pca", key_added="X_mine")
    assert "X_mine" in real.obsm and "X_mine" in generated.obsm
    assert "X_pca_joint" not in real.obsm
    real.write_h5ad(tmp_path / "real.h5ad")
    assert ad.read_h5ad(tmp_path / "real.h5ad").uns["X_mine"]["basis"] == "pca"


def test_embed_joint_rejects_unknown_bases(real):
    with pytest.raises(ValueError, match="basis"):
        sbd.pl.embed_joint(real, basis="tsne")


@pytest.mark.parametrize("name", PLOTS[1:])
def test_plots_read_a_stored_umap_instead_of_fitting_one(name, real, monkeypatch):
    from scbranchdiff.pl import _projection

    monkeypatch.setattr(_projection, "_umap_available", lambda: True)
    monkeypatch.setattr(_projection, "_umap_fitted_on_real", fake_umap)
    generated = counts(TYPES, 15, seed=1, prefix="gen")
    transmuted, states = transmuted_cells(real), intermediate_states()
    sbd.pl.embed_joint(real, generated, transmuted, states)
    monkeypatch.setattr(_projection, "_umap_fitted_on_real", refuse_fit)
    monkeypatch.setattr(_projection, "fit_expression_pca", refuse_fit)
    if name == "generated_vs_real":
        axes = sbd.pl.generated_vs_real(real, generated, "cell_type", show=False)
        ax, drawn = axes["generated"], generated
    elif name == "transmutation":
        ax = sbd.pl.transmutation(real, transmuted, "cell_type", show=False)
        drawn = transmuted
    else:
        ax = sbd.pl.intermediates(real, states, "cell_type", show=False)
        drawn = states
    assert ax.get_xlabel() == "UMAP1"
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    stored = drawn.obsm["X_umap_joint"]
    assert all(np.isclose(points, cell, atol=1e-6).all(axis=1).any() for cell in stored)


def test_plots_read_any_obsm_key_given_as_basis(real, monkeypatch):
    from scbranchdiff.pl import _projection

    generated = counts(TYPES, 15, seed=1, prefix="gen")
    sbd.pl.embed_joint(real, generated, basis="pca", key_added="X_mine")
    monkeypatch.setattr(_projection, "fit_expression_pca", refuse_fit)
    for basis in ("mine", "X_mine"):
        axes = sbd.pl.generated_vs_real(real, generated, "cell_type", basis=basis, show=False)
        assert axes["real"].get_xlabel() == "PC1"


def test_a_missing_obsm_basis_is_named(real):
    with pytest.raises(KeyError, match="adata_generated.*embed_joint"):
        sbd.pl.generated_vs_real(real, real.copy(), "cell_type", basis="X_none", show=False)


def test_embeddings_from_different_calls_are_fitted_again_with_a_warning(real):
    generated = counts(TYPES, 15, seed=1, prefix="gen")
    other = counts(TYPES, 15, seed=2, prefix="gen")
    sbd.pl.embed_joint(real, generated, basis="pca")
    sbd.pl.embed_joint(real.copy(), other, basis="pca")
    with pytest.warns(UserWarning, match="different `embed_joint` calls"):
        sbd.pl.generated_vs_real(real, other, "cell_type", basis="pca", show=False)
    with pytest.warns(UserWarning, match="`adata_transmuted` lacks"):
        sbd.pl.transmutation(real, transmuted_cells(real), "cell_type", basis="pca", show=False)


# ---------------------------------------------------------------------------- in_tree_order
def test_in_tree_order_follows_the_leaves_and_keeps_each_types_colour(real):
    tree = six_type_tree()
    shuffled = ["CD14+ Monocyte", "CD8 T", "B", "CD4+/CD25 T Reg"]
    colour_of = dict(zip(TYPES, STORED_COLOURS, strict=True))
    real.obs["cell_type"] = real.obs["cell_type"].cat.reorder_categories(shuffled)
    real.uns["cell_type_colors"] = [colour_of[t] for t in shuffled]
    ordered = sbd.pl.in_tree_order(real, "cell_type", tree)
    categories = list(ordered.obs["cell_type"].cat.categories)
    assert categories == [t for t in tree.topology.classes if t in TYPES] == list(TYPES)
    assert list(ordered.uns["cell_type_colors"]) == [colour_of[t] for t in categories]
    assert (ordered.obs["cell_type"].astype(str) == real.obs["cell_type"].astype(str)).all()
    assert list(real.obs["cell_type"].cat.categories) == shuffled  # input unchanged
    assert list(real.uns["cell_type_colors"]) == [colour_of[t] for t in shuffled]


def test_in_tree_order_takes_a_model_a_hierarchy_a_topology_or_names(real):
    tree = six_type_tree()
    expected = list(sbd.pl.in_tree_order(real, "cell_type", tree).obs["cell_type"].cat.categories)
    for given in (SimpleNamespace(hierarchy=tree), tree.topology, list(tree.topology.classes)):
        ordered = sbd.pl.in_tree_order(real, "cell_type", given)
        assert list(ordered.obs["cell_type"].cat.categories) == expected


def test_in_tree_order_puts_unknown_types_last_and_converts_plain_columns(real):
    real.obs["cell_type"] = real.obs["cell_type"].astype(str)  # not categorical
    del real.uns["cell_type_colors"]
    ordered = sbd.pl.in_tree_order(real, "cell_type", ["CD8 T", "Absent", "B"])
    assert list(ordered.obs["cell_type"].cat.categories) == [
        "CD8 T", "B", "CD14+ Monocyte", "CD4+/CD25 T Reg",  # the rest in their sorted order
    ]
    assert "cell_type_colors" not in ordered.uns


def test_in_tree_order_leaves_colours_that_do_not_match_the_categories(real):
    real.uns["cell_type_colors"] = STORED_COLOURS[:2]  # stale: scanpy would redraw them
    ordered = sbd.pl.in_tree_order(real, "cell_type", six_type_tree())
    assert list(ordered.uns["cell_type_colors"]) == STORED_COLOURS[:2]


def test_in_tree_order_names_bad_arguments(real):
    with pytest.raises(KeyError, match="labels_key='kind'"):
        sbd.pl.in_tree_order(real, "kind", six_type_tree())
    with pytest.raises(TypeError, match="Hierarchy, a Topology"):
        sbd.pl.in_tree_order(real, "cell_type", "B")
    with pytest.raises(TypeError, match="AnnData"):
        sbd.pl.in_tree_order(real.obs, "cell_type", six_type_tree())
