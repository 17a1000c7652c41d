"""Intermediate states at branch points, linked to the leaf cells they resolve into."""

from __future__ import annotations

from itertools import pairwise
from os import PathLike

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._checks import require_obs_columns
from ._colours import Palette, type_colours
from ._figure import finish_figure
from ._projection import joint_embedding
from ._scatter import (
    cell_types,
    point_size,
    scatter_types,
    share_limits,
    style_embedding,
    type_legend,
    type_order,
)

REQUIRED_COLUMNS = ("state_id", "stage", "t")
STAGES = ("intermediate", "leaf")


def intermediates(
    adata_real: AnnData,
    adata_intermediates: AnnData,
    labels_key: str,
    *,
    basis: str = "umap",
    layer: str | None = None,
    n_states: int = 30,
    palette: Palette | None = None,
    cmap: str = "viridis",
    n_pcs: int = 30,
    size: float | None = None,
    seed: int = 0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Plot intermediate states and the leaf cells they become, over the real cells.

    Real cells (faint, coloured by type) fix the embedding; intermediate states (diamonds
    coloured by their diffusion time t) and leaf outcomes (circles coloured by type) are
    projected into it. Lines join the states of one ``state_id`` from high to low t and the
    last intermediate to each of its leaf outcomes.

    Parameters
    ----------
    adata_real
        Real cells with cell types in ``obs[labels_key]``.
    adata_intermediates
        Output of :meth:`~scbranchdiff.model.BranchedDiffusion.sample_intermediates`:
        expression in ``.X`` and ``obs`` columns "state_id", "stage" ("intermediate" or
        "leaf") and "t"; leaf rows carry their type in ``obs[labels_key]``.
    labels_key
        Column of ``adata_real.obs`` holding the cell types.
    basis
        "umap" or "pca", read from ``obsm[f"X_{basis}_joint"]`` of both AnnData when
        :func:`embed_joint` stored it there, else fitted; or an ``obsm`` key. See
        :func:`generated_vs_real`.
    layer
        Layer of ``adata_real`` holding its expression; None reads ``.X``.
    n_states
        Number of state ids whose links are drawn (a seeded random subset); every point is
        drawn.
    palette
        Type colours; see :func:`generated_vs_real`.
    cmap
        Colormap of the intermediates' diffusion time.
    n_pcs
        Principal components of the real cells the embedding is built on.
    size
        Marker area; default from the number of cells.
    seed
        Seed of the embedding and of the state subset.
    ax
        Axes to draw into.
    show
        Show the figure; None follows ``scanpy.settings.autoshow``.
    save
        Write the figure, following scanpy; None follows ``scanpy.settings.autosave``. True
        writes "intermediates.pdf" (with scanpy's ``settings.plot_suffix`` and
        ``settings.file_format_figs``) into ``settings.figdir``. A str without a directory
        part is a suffix of that name: "_pbmc.png" writes "intermediates_pbmc.png" there (an
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

    >>> states = model.sample_intermediates(
    ...     ["CD14+ Monocyte", "Dendritic"], n_cells=30, n_steps=50
    ... )
    >>> ax = sbd.pl.intermediates(
    ...     model.adata, states, "bulk_labels", layer="counts", basis="pca", show=False
    ... )
    """
    real_types = cell_types(adata_real, labels_key, name="adata_real")
    obs = adata_intermediates.obs
    require_obs_columns(
        adata_intermediates, REQUIRED_COLUMNS, name="adata_intermediates",
        made_by="`BranchedDiffusion.sample_intermediates`",
    )
    stage = obs["stage"].astype(str).to_numpy()
    unknown = sorted(set(stage) - set(STAGES))
    if unknown:
        raise ValueError(f"`obs['stage']` must hold {STAGES}, found also {unknown}.")
    is_leaf = stage == "leaf"
    leaf_types = (
        obs[labels_key].astype(str).to_numpy()[is_leaf] if labels_key in obs else np.array([])
    )

    embedding = joint_embedding(
        adata_real, [adata_intermediates], names=["adata_intermediates"], basis=basis, layer=layer,
        n_pcs=n_pcs, seed=seed,
    )
    real, states = embedding.real, embedding.others[0]
    types = type_order(adata_real, labels_key, leaf_types)
    colours = type_colours(types, adata=adata_real, labels_key=labels_key, palette=palette)
    size = point_size(len(real)) if size is None else size
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.8), layout="constrained")

    scatter_types(ax, real, real_types, colours, size=size, alpha=0.25, seed=seed)
    ax.add_collection(LineCollection(
        _links(obs, states, n_states, seed), colors="0.25", linewidths=0.7, alpha=0.7, zorder=2,
    ))
    leaf_colours = [colours[t] for t in leaf_types] if len(leaf_types) else "0.4"
    ax.scatter(*states[is_leaf].T, c=leaf_colours, s=size * 2.5, edgecolors="black",
               linewidths=0.4, zorder=3)
    t = obs["t"].to_numpy(dtype=float)
    # t on [0, 1] in every figure, so a colour means the same time across plots
    points = ax.scatter(*states[~is_leaf].T, c=t[~is_leaf], cmap=cmap, vmin=0.0, vmax=1.0,
                        s=size * 3, marker="D", edgecolors="black", linewidths=0.5, zorder=4)
    ax.figure.colorbar(points, ax=ax, label="diffusion time t of the intermediate state",
                       location="bottom", shrink=0.5, aspect=30, pad=0.02)
    style_embedding(ax, embedding.axis_labels, "intermediate states → leaf outcomes")
    markers = [
        Line2D([], [], marker="D", ls="", mfc="white", mec="black", label="intermediate"),
        Line2D([], [], marker="o", ls="", mfc="white", mec="black", label="leaf outcome"),
    ]
    type_legend(ax, colours, types, extra=markers)
    share_limits([ax], [real, states])
    return finish_figure(
        ax.figure, ax, show=show, save=save, return_fig=return_fig, name="intermediates"
    )


def _links(obs, coords: np.ndarray, n_states: int, seed: int) -> list[np.ndarray]:
    """Segments of each shown state: intermediates by decreasing t, the last one to each leaf."""
    state_ids = obs["state_id"].to_numpy()
    ids = np.unique(state_ids)
    shown = np.random.default_rng(seed).permutation(len(ids))[:n_states]
    t = obs["t"].to_numpy(dtype=float)
    is_leaf = obs["stage"].astype(str).to_numpy() == "leaf"
    segments = []
    for state in ids[shown]:
        rows = np.flatnonzero(state_ids == state)
        chain = rows[~is_leaf[rows]][np.argsort(-t[rows[~is_leaf[rows]]], kind="stable")]
        segments += [coords[[a, b]] for a, b in pairwise(chain)]
        if len(chain):
            segments += [coords[[chain[-1], leaf]] for leaf in rows[is_leaf[rows]]]
    return segments
