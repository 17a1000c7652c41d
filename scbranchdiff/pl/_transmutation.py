"""Transmutation paths: each source cell linked to the cell it was turned into."""

from __future__ import annotations

from os import PathLike

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._checks import require_obs_columns
from ._colours import Palette, type_colours
from ._figure import finish_figure
from ._projection import joint_embedding
from ._scatter import (
    BACKGROUND,
    cell_types,
    point_size,
    share_limits,
    style_embedding,
    type_legend,
    type_order,
)

REQUIRED_COLUMNS = ("source_cell", "source_type", "target_type")


def transmutation(
    adata_real: AnnData,
    adata_transmuted: AnnData,
    labels_key: str,
    *,
    basis: str = "umap",
    layer: str | None = None,
    n_arrows: int = 50,
    palette: Palette | None = None,
    n_pcs: int = 30,
    size: float | None = None,
    seed: int = 0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Plot source cells, their transmuted profiles and the target type's real cells.

    All cells are placed in one embedding fitted on the real cells only; the transmuted cells
    are projected into it. Arrows run from a random subset of source cells to the cells they
    became: a good transmutation lands inside the target type's real cells.

    Parameters
    ----------
    adata_real
        Real cells with cell types in ``obs[labels_key]``; holds every source cell.
    adata_transmuted
        Output of :meth:`~scbranchdiff.model.BranchedDiffusion.transmute`: expression in
        ``.X`` and ``obs`` columns "source_cell" (an ``obs_name`` of ``adata_real``),
        "source_type" and "target_type".
    labels_key
        Column of ``adata_real.obs`` holding the cell types.
    basis
        "umap" or "pca", read from ``obsm[f"X_{basis}_joint"]`` of both AnnData when
        :func:`embed_joint` stored it there, else fitted; or an ``obsm`` key. See
        :func:`generated_vs_real`.
    layer
        Layer of ``adata_real`` holding its expression; None reads ``.X``.
    n_arrows
        Number of source -> transmuted arrows drawn (a seeded random subset).
    palette
        Type colours; see :func:`generated_vs_real`.
    n_pcs
        Principal components of the real cells the embedding is built on.
    size
        Marker area; default from the number of cells.
    seed
        Seed of the embedding and of the arrow subset.
    ax
        Axes to draw into.
    show
        Show the figure; None follows ``scanpy.settings.autoshow``.
    save
        Write the figure, following scanpy; None follows ``scanpy.settings.autosave``. True
        writes "transmutation.pdf" (with scanpy's ``settings.plot_suffix`` and
        ``settings.file_format_figs``) into ``settings.figdir``. A str without a directory
        part is a suffix of that name: "_pbmc.png" writes "transmutation_pbmc.png" there (an
        extension matplotlib writes replaces ``file_format_figs``). A str with a directory
        part ("./fig.png", "out/fig.pdf") or a :class:`~pathlib.Path` is the file itself.
        Saved at scanpy's ``dpi_save`` (``rcParams["savefig.dpi"]``; 150 while that is
        matplotlib's default "figure").
    return_fig
        Return the Figure instead of the Axes, and do not show it.

    Returns
    -------
    Axes | Figure | None
        The Axes when the figure is not shown (``show=False``, or None with
        ``scanpy.settings.autoshow`` off); the Figure with ``return_fig``; None when shown.

    Examples
    --------
    With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
    its example):

    >>> adata = model.adata
    >>> monocytes = adata[adata.obs["bulk_labels"] == "CD14+ Monocyte"]
    >>> b_cells = model.transmute(monocytes, target="CD19+ B", n_steps=50)
    >>> ax = sbd.pl.transmutation(
    ...     adata, b_cells, "bulk_labels", layer="counts", basis="pca", show=False
    ... )
    """
    real_types = cell_types(adata_real, labels_key, name="adata_real")
    obs = adata_transmuted.obs
    require_obs_columns(
        adata_transmuted, REQUIRED_COLUMNS, name="adata_transmuted",
        made_by="`BranchedDiffusion.transmute`",
    )
    source_index = adata_real.obs_names.get_indexer(obs["source_cell"].astype(str))
    if (source_index < 0).any():
        unknown = obs["source_cell"].astype(str)[source_index < 0].unique()[:5].tolist()
        raise KeyError(
            f"`adata_transmuted.obs['source_cell']` names cells absent from "
            f"`adata_real.obs_names`, e.g. {unknown}."
        )
    source_types = obs["source_type"].astype(str).to_numpy()
    target_types = obs["target_type"].astype(str).to_numpy()

    embedding = joint_embedding(
        adata_real, [adata_transmuted], names=["adata_transmuted"], basis=basis, layer=layer,
        n_pcs=n_pcs, seed=seed,
    )
    real, transmuted = embedding.real, embedding.others[0]
    source = real[source_index]
    types = type_order(adata_real, labels_key, source_types, target_types)
    colours = type_colours(types, adata=adata_real, labels_key=labels_key, palette=palette)
    size = point_size(len(real)) if size is None else size
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.8), layout="constrained")

    is_target = np.isin(real_types, np.unique(target_types))
    ax.scatter(*real[~is_target].T, c=BACKGROUND, s=size, linewidths=0, label="real, other types")
    ax.scatter(*real[is_target].T, c=[colours[t] for t in real_types[is_target]], s=size,
               alpha=0.35, linewidths=0, label="real, target type")
    ax.scatter(*source.T, c=[colours[t] for t in source_types], s=size * 2, marker="o",
               edgecolors="black", linewidths=0.4, label="source cells")
    ax.scatter(*transmuted.T, c=[colours[t] for t in target_types], s=size * 2.5, marker="D",
               edgecolors="black", linewidths=0.4, label="transmuted cells", zorder=3)
    shown = np.random.default_rng(seed).permutation(len(source))[:n_arrows]
    ax.quiver(
        *source[shown].T, *(transmuted[shown] - source[shown]).T, angles="xy",
        scale_units="xy", scale=1, width=0.003, headwidth=4, headlength=5, color="0.2",
        alpha=0.8, zorder=4,
    )
    pairs = sorted(set(zip(source_types, target_types, strict=True)))
    title = f"{pairs[0][0]} → {pairs[0][1]}" if len(pairs) == 1 else "transmutation"
    style_embedding(ax, embedding.axis_labels, title)
    markers = [
        Line2D([], [], marker="o", ls="", mfc="white", mec="black", label="source (real)"),
        Line2D([], [], marker="D", ls="", mfc="white", mec="black", label="transmuted"),
        Line2D([], [], marker="o", ls="", color=BACKGROUND, label="real, other types"),
    ]
    used = [t for t in types if t in set(source_types) | set(target_types)]
    type_legend(ax, colours, used, extra=markers)
    share_limits([ax], [real, transmuted])
    return finish_figure(
        ax.figure, ax, show=show, save=save, return_fig=return_fig, name="transmutation"
    )
