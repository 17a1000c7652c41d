"""Generated cells next to real cells, in an embedding fitted on the real cells only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike

import matplotlib.pyplot as plt
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._colours import Palette, type_colours
from ._figure import finish_figure
from ._projection import joint_embedding
from ._scatter import (
    BACKGROUND,
    cell_types,
    point_size,
    scatter_types,
    share_limits,
    style_embedding,
    type_legend,
    type_order,
)


def generated_vs_real(
    adata_real: AnnData,
    adata_generated: AnnData,
    labels_key: str,
    *,
    basis: str = "umap",
    layer: str | None = None,
    per_type: bool = False,
    ncols: int = 4,
    palette: Palette | None = None,
    n_pcs: int = 30,
    size: float | None = None,
    seed: int = 0,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
) -> dict[str, Axes] | Figure | None:
    """Plot real and generated cells side by side in one embedding of the real cells.

    The embedding is fitted on the real cells alone (log-normalisation when they hold counts,
    PCA, then UMAP) and the generated cells are projected into it, so both panels share axes
    and a generated cell lands where a real cell with its profile would.

    Parameters
    ----------
    adata_real
        Real cells with cell types in ``obs[labels_key]``.
    adata_generated
        Generated cells with the same genes, e.g. from
        :meth:`~scbranchdiff.model.BranchedDiffusion.generate`; expression is read from ``.X``.
    labels_key
        Column of ``obs`` (in both AnnData) holding the cell types.
    basis
        "umap" (UMAP fitted on the real cells, generated cells mapped by its ``transform``)
        or "pca" (first two principal components of the real cells). When both AnnData hold
        ``obsm[f"X_{basis}_joint"]`` from one :func:`embed_joint` call, those coordinates are
        drawn and nothing is fitted (``layer``, ``n_pcs`` and ``seed`` then only affect the
        drawing order); else the embedding is fitted for this plot. Any other value names an
        ``obsm`` key (``"umap_joint"`` or ``"X_umap_joint"``) that both AnnData must hold.
    layer
        Layer of ``adata_real`` holding its expression (e.g. "counts"); None reads ``.X``.
    per_type
        Add one panel per generated cell type: that type's real cells in colour, its
        generated cells in black, every other real cell in grey.
    ncols
        Panels per row of the per-type grid.
    palette
        Type colours: a mapping type -> colour, a list in type order or a colormap name.
        Defaults to ``adata_real.uns[f"{labels_key}_colors"]``, else scanpy's palette.
    n_pcs
        Principal components of the real cells the embedding is built on.
    size
        Marker area; default from the number of cells.
    seed
        Seed of the PCA, UMAP and drawing order.
    ax
        Two Axes (real, generated) to draw into; only without ``per_type``.
    show
        Show the figure; None follows ``scanpy.settings.autoshow``.
    save
        Write the figure, following scanpy; None follows ``scanpy.settings.autosave``. True
        writes "generated_vs_real.pdf" (with scanpy's ``settings.plot_suffix`` and
        ``settings.file_format_figs``) into ``settings.figdir``. A str without a directory
        part is a suffix of that name: "_pbmc.png" writes "generated_vs_real_pbmc.png" there (an
        extension matplotlib writes replaces ``file_format_figs``). A str with a directory
        part ("./fig.png", "out/fig.pdf") or a :class:`~pathlib.Path` is the file itself.
        Saved at scanpy's ``dpi_save`` (``rcParams["savefig.dpi"]``; 150 while that is
        matplotlib's default "figure").
    return_fig
        Return the Figure instead of the Axes, and do not show it.

    Returns
    -------
    dict[str, Axes] | Figure | None
        The Axes by panel name ("real", "generated" and, with ``per_type``, one per cell
        type) when the figure is not shown (``show=False``, or None with
        ``scanpy.settings.autoshow`` off); the Figure with ``return_fig``; None when shown.

    Examples
    --------
    With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
    its example):

    >>> generated = model.generate(50, n_steps=50, seed=0)
    >>> axes = sbd.pl.generated_vs_real(
    ...     model.adata, generated, "bulk_labels", layer="counts", basis="pca", show=False
    ... )
    """
    real_types = cell_types(adata_real, labels_key, name="adata_real")
    generated_types = cell_types(adata_generated, labels_key, name="adata_generated")
    if ax is not None and (per_type or len(ax) != 2):
        raise ValueError("`ax` must be two Axes (real, generated) and needs `per_type=False`.")
    embedding = joint_embedding(
        adata_real, [adata_generated], names=["adata_generated"], basis=basis, layer=layer,
        n_pcs=n_pcs, seed=seed,
    )
    real, generated = embedding.real, embedding.others[0]
    types = type_order(adata_real, labels_key, generated_types)
    colours = type_colours(types, adata=adata_real, labels_key=labels_key, palette=palette)
    size = point_size(len(real) + len(generated)) if size is None else size

    fig, panels = _layout(ax, per_type, [t for t in types if t in set(generated_types)], ncols)
    scatter_types(panels["real"], real, real_types, colours, size=size, seed=seed)
    scatter_types(panels["generated"], generated, generated_types, colours, size=size, seed=seed)
    style_embedding(panels["real"], embedding.axis_labels, f"real ({len(real)} cells)")
    style_embedding(
        panels["generated"], embedding.axis_labels, f"generated ({len(generated)} cells)"
    )
    type_legend(panels["generated"], colours, types)
    for cell_type, panel in panels.items():
        if cell_type in ("real", "generated"):
            continue
        is_real_type, is_generated_type = real_types == cell_type, generated_types == cell_type
        panel.scatter(*real[~is_real_type].T, c=BACKGROUND, s=size, linewidths=0)
        panel.scatter(*real[is_real_type].T, c=colours[cell_type], s=size, linewidths=0)
        panel.scatter(*generated[is_generated_type].T, c="black", s=size * 0.6, linewidths=0)
        style_embedding(panel, embedding.axis_labels, cell_type)
        panel.set_xlabel("")
        panel.set_ylabel("")
    share_limits(list(panels.values()), [real, generated])
    return finish_figure(
        fig, panels, show=show, save=save, return_fig=return_fig, name="generated_vs_real"
    )


def _layout(
    ax: Sequence[Axes] | None, per_type: bool, types: list[str], ncols: int
) -> tuple[Figure, dict[str, Axes]]:
    if ax is not None:
        return ax[0].figure, {"real": ax[0], "generated": ax[1]}
    if not per_type:
        fig, (real, generated) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
        return fig, {"real": real, "generated": generated}
    nrows = math.ceil(len(types) / ncols)
    fig = plt.figure(figsize=(max(10, 2.6 * ncols), 4.4 + 2.6 * nrows), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.4, 2.6 * nrows])
    real, generated = top.subplots(1, 2)
    grid = bottom.subplots(nrows, ncols, squeeze=False).ravel()
    bottom.suptitle("per type: real in colour, generated in black", fontsize=10)
    for panel in grid[len(types):]:
        panel.set_axis_off()
    return fig, {"real": real, "generated": generated, **dict(zip(types, grid, strict=False))}
