"""The cell-type hierarchy drawn as a dendrogram whose height is diffusion time."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from ..hierarchy import Hierarchy
from ._colours import Palette, type_colours
from ._figure import finish_figure

if TYPE_CHECKING:
    from ..model import BranchedDiffusion

_INNER_COLOUR = "0.3"


@dataclass(frozen=True)
class DendrogramLayout:
    """Horizontal positions: one per leaf class (in tree order) and one per branch."""

    leaf_order: tuple[str, ...]
    class_x: dict[str, float]
    branch_x: tuple[float, ...]


def dendrogram_layout(tree: Hierarchy) -> DendrogramLayout:
    """Leaves at 0, 1, ... in depth-first order from the root; a branch centred over its children.

    A childless branch holding several classes (the flat hierarchy) spreads them at its start.
    """
    class_x: dict[str, float] = {}
    branch_x = [0.0] * tree.n_branches

    def place(b: int) -> float:
        kids = tree.children(b)
        if kids:
            xs = [place(k) for k in kids]
            branch_x[b] = (xs[0] + xs[-1]) / 2
        else:
            xs = []
            for name in tree.branches[b].classes:
                class_x[name] = float(len(class_x))
                xs.append(class_x[name])
            branch_x[b] = float(np.mean(xs))
        return branch_x[b]

    place(tree.root)
    return DendrogramLayout(tuple(class_x), class_x, tuple(branch_x))


def hierarchy(
    model_or_hierarchy: BranchedDiffusion | Hierarchy,
    *,
    adata: AnnData | None = None,
    labels_key: str | None = None,
    palette: Palette | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | PathLike | None = None,
) -> Axes | None:
    """Plot the cell-type hierarchy as a dendrogram over diffusion time.

    The height is diffusion time t: cell types are leaves at t = 0 (bottom) and the root
    branch, shared by every type, reaches t = 1 (top). Each split is drawn at the time at
    which its types stop sharing a reverse process (its branch's ``t_start``), labelled with
    that time. Splits into more than two branches are drawn as one bar.

    Parameters
    ----------
    model_or_hierarchy
        A trained :class:`~scbranchdiff.model.BranchedDiffusion` or a
        :class:`~scbranchdiff.Hierarchy`.
    adata
        AnnData whose ``uns[f"{labels_key}_colors"]`` colours the leaves. Defaults to the
        model's AnnData.
    labels_key
        Column of ``adata.obs`` holding the cell types. Defaults to the model's.
    palette
        Leaf colours, overriding the AnnData's: a mapping cell type -> colour, a list of
        colours in the hierarchy's class order or a matplotlib colormap name. Without
        palette or stored colours, scanpy's default palette is used.
    ax
        Axes to draw into; a new figure sized to the number of types otherwise.
    show
        Show the figure; None follows ``scanpy.settings.autoshow``.
    save
        Path to save the figure to (any format matplotlib writes).

    Returns
    -------
    The Axes when ``show`` is False, else None.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> tree = sbd.Hierarchy(
    ...     ["B", "T", "mono"],
    ...     [
    ...         sbd.Branch(("B", "T", "mono"), 0.6, 1.0),
    ...         sbd.Branch(("B", "T"), 0.3, 0.6),
    ...         sbd.Branch(("B",), 0.0, 0.3),
    ...         sbd.Branch(("T",), 0.0, 0.3),
    ...         sbd.Branch(("mono",), 0.0, 0.6),
    ...     ],
    ... )
    >>> ax = sbd.pl.hierarchy(tree, show=False)
    """
    tree, adata, labels_key = _resolve_inputs(model_or_hierarchy, adata, labels_key)
    layout = dendrogram_layout(tree)
    colours = type_colours(tree.classes, adata=adata, labels_key=labels_key, palette=palette)
    if ax is None:
        width = max(3.5, 0.45 * tree.n_classes + 1.5)
        _, ax = plt.subplots(figsize=(width, 4.0))
    _draw(ax, tree, layout, colours)
    return finish_figure(ax.figure, ax, show=show, save=save)


def _resolve_inputs(
    model_or_hierarchy: Any, adata: AnnData | None, labels_key: str | None
) -> tuple[Hierarchy, AnnData | None, str | None]:
    if isinstance(model_or_hierarchy, Hierarchy):
        tree = model_or_hierarchy
    elif isinstance(getattr(model_or_hierarchy, "hierarchy", None), Hierarchy):
        model = model_or_hierarchy
        tree = model.hierarchy
        adata = model.adata if adata is None else adata
        labels_key = model.labels_key if labels_key is None else labels_key
    else:
        raise TypeError(
            "`model_or_hierarchy` must be a trained BranchedDiffusion or a Hierarchy, got "
            f"{type(model_or_hierarchy).__name__}."
        )
    if adata is not None and labels_key is None:
        raise ValueError(
            "`labels_key` is needed with `adata` and a Hierarchy: name the `adata.obs` column "
            "holding the cell types."
        )
    return tree, adata, labels_key


def _draw(ax: Axes, tree: Hierarchy, layout: DendrogramLayout, colours: dict[str, str]) -> None:
    for b, branch in enumerate(tree.branches):
        x = layout.branch_x[b]
        is_single_type = len(branch.classes) == 1
        colour = colours[branch.classes[0]] if is_single_type else _INNER_COLOUR
        ax.plot([x, x], [branch.t_start, branch.t_end], color=colour,
                lw=2.5 if is_single_type else 1.8, solid_capstyle="butt", zorder=2)
        kids = tree.children(b)
        below = [layout.branch_x[k] for k in kids] or [layout.class_x[c] for c in branch.classes]
        if len(below) < 2:
            continue
        # the split: one bar over all children, so multifurcations read as one event
        ax.plot([min(below), max(below)], [branch.t_start, branch.t_start], color=_INNER_COLOUR,
                lw=1.8, solid_capstyle="round", zorder=2)
        if branch.t_start > 0:
            ax.plot([x], [branch.t_start], "o", color=_INNER_COLOUR, ms=4, zorder=3)
            _label_split(ax, tree, layout, b)
    xs = [layout.class_x[c] for c in layout.leaf_order]
    ax.scatter(xs, np.zeros(len(xs)), c=[colours[c] for c in layout.leaf_order], s=60,
               edgecolors="white", linewidths=0.8, zorder=5, clip_on=False)
    ax.set_xticks(xs, labels=list(layout.leaf_order), rotation=45, ha="right",
                  rotation_mode="anchor")
    ax.tick_params(axis="x", length=0)
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.set_ylim(-0.04, 1.04)
    ax.set_yticks(np.linspace(0, 1, 5))
    ax.set_ylabel("diffusion time t")
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)


def _label_split(ax: Axes, tree: Hierarchy, layout: DendrogramLayout, b: int) -> None:
    """Write the split time just above the split, on the side away from the parent's bar.

    The parent's bar leaves the split's vertical towards the sibling; the other side is free
    up to the parent's time, so close splits (a caterpillar of small steps) stay readable.
    """
    x, t = layout.branch_x[b], tree.branches[b].t_start
    parent = tree.parent(b)
    is_left_child = parent is not None and x < layout.branch_x[parent]
    # a split just below its parent's would put both labels on one line: write it under its bar
    crowded = parent is not None and tree.branches[parent].t_start - t < 0.04
    ax.annotate(
        f"t = {t:.2f}", (x, t), xytext=(-4 if is_left_child else 4, -3 if crowded else 2),
        textcoords="offset points", fontsize=8, color="0.15",
        ha="right" if is_left_child else "left", va="top" if crowded else "bottom", zorder=4,
    )
