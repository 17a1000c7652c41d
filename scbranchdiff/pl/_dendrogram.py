"""The cell-type hierarchy drawn as a dendrogram over log-SNR or diffusion time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import PathPatch
from matplotlib.path import Path
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Affine2D, Bbox, ScaledTranslation

from ..hierarchy import Hierarchy, log_snr
from ..hierarchy._scale import check_scale, leaf_time
from ._colours import Palette, type_colours
from ._figure import Save, finish_figure

if TYPE_CHECKING:
    from ..hierarchy._scale import MarginalCoefficients
    from ..model import BranchedDiffusion

_INNER_COLOUR = "0.3"
_RARE_COLOUR = "#b2182b"
_LABEL_SIZE = 8
# Label candidates tried per side and direction before giving up on a free spot.
_MAX_LABEL_SHIFTS = 40
LOG_SNR_LABEL = r"log-SNR $\lambda = \log\,a(t)^2 / s(t)^2$"
TIME_LABEL = "diffusion time t"


@dataclass(frozen=True)
class DendrogramLayout:
    """Horizontal positions: one per leaf class (in tree order) and one per branch."""

    leaf_order: tuple[str, ...]
    class_x: dict[str, float]
    branch_x: tuple[float, ...]


@dataclass(frozen=True)
class HeightScale:
    """Where a diffusion time is drawn: its y, the axis limits and how splits are labelled."""

    name: str
    y_of: Callable[[float], float]
    bottom: float  # leaves (t = 0)
    top: float  # the root's upper end (t = 1, or the axis edge on the log-SNR scale)
    label: str
    split_text: Callable[[float], str]
    # log-SNR only: where the axis breaks (lambda(0) is infinite: leaves sit below the break)
    cut: float | None = None
    t_of_y: Callable[[np.ndarray], np.ndarray] | None = None
    y_of_t: Callable[[np.ndarray], np.ndarray] | None = None

    def y(self, t: float) -> float:
        """y of a time; t = 0 maps to the leaves' row and t = 1 to the top."""
        if t <= 0.0:
            return self.bottom
        if t >= 1.0:
            return self.top
        return self.y_of(t)


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
    scale: str | None = None,
    sde: MarginalCoefficients | None = None,
    rare_threshold: int = 100,
    palette: Palette | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: Save = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Plot the cell-type hierarchy as a dendrogram: leaves at the bottom, the root on top.

    Each split is drawn at the height at which its types stop sharing a reverse process and
    labelled with it; splits into more than two branches are drawn as one bar. Labels are
    placed so that no two overlap (a thin line joins a label moved away from its split).

    Two height scales (see :doc:`/concepts`):

    - ``"log_snr"``: the log signal-to-noise ratio lambda(t) = log(a(t)^2 / s(t)^2) of the
      noising kernel at the split time (:func:`~scbranchdiff.hierarchy.log_snr`). lambda
      falls as t grows, so the axis runs from high lambda (leaves, bottom) to low lambda
      (root, top); a split's lambda is about c - 2 log(distance between the types), so splits
      spread by how different the types are. The axis is zoomed on the splits; a second axis
      on the right reads diffusion time t.
    - ``"t"``: diffusion time, the time the model trains and samples in, from 0 (leaves) to 1
      (the root's top). Under the VP schedule the splits crowd into a narrow band of t.

    Parameters
    ----------
    model_or_hierarchy
        A trained :class:`~scbranchdiff.model.BranchedDiffusion` or a
        :class:`~scbranchdiff.Hierarchy`.
    adata
        AnnData whose ``obs[labels_key]`` gives the number of cells of each type (shown under
        the leaves, rare types highlighted) and whose ``uns[f"{labels_key}_colors"]`` colours
        the leaves. Defaults to the model's AnnData.
    labels_key
        Column of ``adata.obs`` holding the cell types. Defaults to the model's.
    scale
        ``"log_snr"`` or ``"t"``. Default: ``"log_snr"`` when the SDE is known (a model, or
        `sde` given), else ``"t"`` (a `Hierarchy` stores times only).
    sde
        The SDE the times belong to, for ``"log_snr"``. Defaults to the model's ``sde``.
    rare_threshold
        Types with fewer cells than this in `adata` are drawn as rare (red name, ringed leaf).
    palette
        Leaf colours, overriding the AnnData's: a mapping cell type -> colour, a list of
        colours in the hierarchy's class order or a matplotlib colormap name. Without
        palette or stored colours, scanpy's default palette is used.
    ax
        Axes to draw into; a new figure sized to the number of types otherwise.
    show
        Show the figure; None follows ``scanpy.settings.autoshow``.
    save
        Save the figure, as in scanpy: True writes ``{sc.settings.figdir}/hierarchy.{format}``,
        a str without a directory is a suffix of that name, a path is the file itself; None
        follows ``sc.settings.autosave``.
    return_fig
        Return the Figure instead of showing it.

    Returns
    -------
    The Figure with ``return_fig``; else the Axes when ``show`` is False, else None.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> from scbranchdiff.diffusion import VPSDE
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
    >>> ax = sbd.pl.hierarchy(tree, sde=VPSDE(), show=False)  # log-SNR heights
    >>> sorted(text.get_text() for text in ax.texts)
    ['λ = −0.42', 'λ = −3.62']
    >>> ax = sbd.pl.hierarchy(tree, scale="t", show=False)  # diffusion time
    >>> sorted(text.get_text() for text in ax.texts)
    ['t = 0.30', 't = 0.60']
    """
    tree, adata, labels_key, sde = _resolve_inputs(model_or_hierarchy, adata, labels_key, sde)
    if scale is None:
        scale = "t" if sde is None else "log_snr"
    check_scale(scale, sde)
    if rare_threshold < 0:
        raise ValueError(f"`rare_threshold` must be non-negative, got {rare_threshold}.")
    layout = dendrogram_layout(tree)
    colours = type_colours(tree.classes, adata=adata, labels_key=labels_key, palette=palette)
    counts = _cell_counts(tree, adata, labels_key)
    heights = _height_scale(tree, scale, sde)
    if ax is None:
        width = max(3.5, 0.5 * tree.n_classes + 1.8)
        _, ax = plt.subplots(figsize=(width, 4.2))
    _draw(ax, tree, layout, colours, heights, counts, rare_threshold)
    return finish_figure(ax.figure, ax, show=show, save=save, return_fig=return_fig)


def _resolve_inputs(
    model_or_hierarchy: Any,
    adata: AnnData | None,
    labels_key: str | None,
    sde: Any,
) -> tuple[Hierarchy, AnnData | None, str | None, Any]:
    if isinstance(model_or_hierarchy, Hierarchy):
        tree = model_or_hierarchy
    elif isinstance(getattr(model_or_hierarchy, "hierarchy", None), Hierarchy):
        model = model_or_hierarchy
        tree = model.hierarchy
        adata = model.adata if adata is None else adata
        labels_key = model.labels_key if labels_key is None else labels_key
        sde = getattr(model, "sde", None) if sde is None else sde
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
    if adata is not None and labels_key not in adata.obs:
        raise KeyError(f"`labels_key={labels_key!r}` is not a column of adata.obs.")
    return tree, adata, labels_key, sde


def _cell_counts(
    tree: Hierarchy, adata: AnnData | None, labels_key: str | None
) -> dict[str, int] | None:
    if adata is None or labels_key is None:
        return None
    found = adata.obs[labels_key].astype(str).value_counts()
    return {c: int(found.get(c, 0)) for c in tree.classes}


def _height_scale(tree: Hierarchy, scale: str, sde: Any) -> HeightScale:
    if scale == "t":
        return HeightScale("t", lambda t: t, 0.0, 1.0, TIME_LABEL, lambda t: f"t = {t:.2f}")
    splits = sorted({b.t_start for b in tree.branches if b.t_start > 0.0})
    t_leaf = leaf_time(sde)
    floor = float(log_snr(1.0, sde))  # the noisiest the SDE gets
    if splits:
        lam = np.asarray(log_snr(np.asarray(splits), sde))
        pad = max(0.1 * float(np.ptp(lam)), 0.6)
        top, cut = max(float(lam.min()) - pad, floor), float(lam.max()) + pad
    else:
        top, cut = floor, float(log_snr(t_leaf, sde))
    bottom = cut + 0.06 * (cut - top)
    # a dense table for the right-hand t axis (any lambda maps to a time; outside: clipped)
    grid_t = np.concatenate([np.geomspace(1e-6, 1e-2, 200), np.linspace(1e-2, 1.0, 2000)[1:]])
    grid_lam = np.asarray(log_snr(grid_t, sde))

    def t_of_y(y: np.ndarray) -> np.ndarray:
        return np.interp(y, grid_lam[::-1], grid_t[::-1])

    def y_of_t(t: np.ndarray) -> np.ndarray:
        return np.interp(t, grid_t, grid_lam)

    return HeightScale(
        "log_snr", lambda t: float(log_snr(t, sde)), bottom, top, LOG_SNR_LABEL,
        lambda t: f"λ = {float(log_snr(t, sde)):.2f}".replace("-", "\N{MINUS SIGN}"),
        cut, t_of_y, y_of_t,
    )


def _draw(
    ax: Axes,
    tree: Hierarchy,
    layout: DendrogramLayout,
    colours: dict[str, str],
    heights: HeightScale,
    counts: Mapping[str, int] | None,
    rare_threshold: int,
) -> None:
    splits: list[int] = []
    for b, branch in enumerate(tree.branches):
        x = layout.branch_x[b]
        is_single_type = len(branch.classes) == 1
        colour = colours[branch.classes[0]] if is_single_type else _INNER_COLOUR
        y_start, y_end = heights.y(branch.t_start), heights.y(branch.t_end)
        width = 2.5 if is_single_type else 1.8
        if branch.t_start <= 0.0 and heights.cut is not None:
            # below the axis break the leaf continues, dotted, to t = 0 (lambda = +inf)
            ax.plot([x, x], [y_start, heights.cut], color=colour, lw=width, ls=":", zorder=2)
            y_start = heights.cut
        ax.plot([x, x], [y_start, y_end], color=colour, lw=width, solid_capstyle="butt",
                zorder=2)
        kids = tree.children(b)
        below = [layout.branch_x[k] for k in kids] or [layout.class_x[c] for c in branch.classes]
        if len(below) < 2:
            continue
        # the split: one bar over all children, so multifurcations read as one event
        ax.plot([min(below), max(below)], [y_start, y_start], color=_INNER_COLOUR,
                lw=1.8, solid_capstyle="round", zorder=2)
        if branch.t_start > 0:
            ax.plot([x], [y_start], "o", color=_INNER_COLOUR, ms=4, zorder=3)
            splits.append(b)

    order = layout.leaf_order
    xs = [layout.class_x[c] for c in order]
    rare = {c for c in order if counts is not None and counts[c] < rare_threshold}
    ax.scatter(xs, np.full(len(xs), heights.bottom), c=[colours[c] for c in order], s=60,
               edgecolors=[_RARE_COLOUR if c in rare else "white" for c in order],
               linewidths=[1.8 if c in rare else 0.8 for c in order], zorder=5, clip_on=False)
    names = list(order) if counts is None else [f"{c} ({counts[c]:,})" for c in order]
    ax.set_xticks(xs, labels=names, rotation=45, ha="right", rotation_mode="anchor")
    for tick, name in zip(ax.get_xticklabels(), order, strict=True):
        if name in rare:
            tick.set_color(_RARE_COLOUR)
            tick.set_fontweight("bold")
    ax.tick_params(axis="x", length=0)
    ax.set_xlim(-0.6, len(xs) - 0.4)
    if counts is not None:
        ax.set_xlabel("cell type (cells)")
    if rare:
        marker = Line2D([], [], ls="", marker="o", mfc="white", mec=_RARE_COLOUR, mew=1.8)
        ax.legend([marker], [f"rare type (< {rare_threshold} cells)"], loc="lower left",
                  bbox_to_anchor=(0.0, 1.0), frameon=False, fontsize=_LABEL_SIZE,
                  borderaxespad=0.2, handletextpad=0.3)
    if heights.name == "t":
        ax.set_ylim(-0.04, 1.04)
        ax.set_yticks(np.linspace(0, 1, 5))
    else:
        _log_snr_axes(ax, heights)
    ax.set_ylabel(heights.label)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    _label_splits(ax, tree, layout, heights, splits)


def _log_snr_axes(ax: Axes, heights: HeightScale) -> None:
    """High log-SNR (leaves) at the bottom, low (root) on top; diffusion time on the right.

    The axis breaks just above the leaves: their lambda(0) is infinite. Both spines stop at
    the break and the leaves' row is ticked +inf (left) and 0 (right).
    """
    assert heights.cut is not None and heights.t_of_y is not None and heights.y_of_t is not None
    top, cut, bottom = heights.top, heights.cut, heights.bottom
    ax.set_ylim(bottom + 0.03 * (bottom - top), top)
    ticks = [v for v in MaxNLocator(6).tick_values(top, cut) if top <= v <= cut]
    ax.set_yticks([*ticks, bottom], labels=[*_tick_text(ticks), "+\N{INFINITY}"])
    ax.spines["left"].set_bounds(cut, top)
    right = ax.secondary_yaxis("right", functions=(heights.t_of_y, heights.y_of_t))
    t_top, t_cut = (float(v) for v in heights.t_of_y(np.array([top, cut])))
    t_ticks = [v for v in MaxNLocator(5).tick_values(t_cut, t_top) if t_cut <= v <= t_top]
    right.set_yticks([*t_ticks, float(heights.t_of_y(np.array([bottom]))[0])],
                     labels=[*_tick_text(t_ticks), "0"])
    right.spines["right"].set_bounds(t_cut, t_top)
    right.spines["right"].set_color("0.6")
    right.tick_params(colors="0.4", labelsize=_LABEL_SIZE)
    right.set_ylabel(TIME_LABEL, color="0.4")


def _tick_text(values: list[float]) -> list[str]:
    """Tick labels with as few decimals as write the ticks exactly, and a true minus sign."""
    for decimals in range(4):
        texts = [f"{v:.{decimals}f}" for v in values]
        if all(abs(float(text) - v) < 1e-9 for text, v in zip(texts, values, strict=True)):
            break
    return [t.replace("-", "\N{MINUS SIGN}") for t in texts]


def _label_splits(
    ax: Axes, tree: Hierarchy, layout: DendrogramLayout, heights: HeightScale, splits: list[int]
) -> None:
    """Write each split's height next to it, moving labels apart so that none overlap.

    Splits are labelled from the root down. A label goes first just above its split, on the
    side away from the parent's bar (the other side is free up to the parent's height); if
    that spot overlaps a label already placed, the other side, then spots below the split,
    then spots moved further up or down are tried. A label moved off its split gets a thin
    line to it.
    """
    if not splits:
        return
    figure = ax.figure
    renderer = _renderer(figure)
    px_per_pt = figure.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    placed: list[Bbox] = []
    # the root (lowest in t... highest in the tree) first
    for b in sorted(splits, key=lambda k: -tree.branches[k].t_start):
        t = tree.branches[b].t_start
        text = heights.split_text(t)
        x, y = layout.branch_x[b], heights.y(t)
        anchor = ax.transData.transform((x, y))
        probe = ax.text(0, 0, text, fontsize=_LABEL_SIZE)
        size = probe.get_window_extent(renderer)
        probe.remove()
        width, height = size.width, size.height
        parent = tree.parent(b)
        left_first = parent is not None and x < layout.branch_x[parent]
        spots = [
            (dx_pt, dy_pt, ha, va,
             _box(anchor, dx_pt * px_per_pt, dy_pt * px_per_pt, width, height, ha, va))
            for dx_pt, dy_pt, ha, va in _candidates(left_first, height / px_per_pt)
        ]
        free = [spot for spot in spots if not any(spot[4].overlaps(other) for other in placed)]
        inside = [spot for spot in free if frame.contains(*spot[4].p0)
                  and frame.contains(*spot[4].p1)]
        partly = [spot for spot in free if frame.contains(*spot[4].p0)
                  or frame.contains(*spot[4].p1)]
        # the nearest free spot inside the axes, partly inside, anywhere; crowded out: the first
        dx_pt, dy_pt, ha, va, box = (inside or partly or free or spots)[0]
        ax.annotate(
            text, (x, y), xytext=(dx_pt, dy_pt), textcoords="offset points",
            fontsize=_LABEL_SIZE, color="0.15", ha=ha, va=va, zorder=4,
        )
        if abs(dy_pt) > height / px_per_pt + 4:  # moved off its split: a line to it
            _leader(ax, (x, y), (dx_pt, dy_pt))
        placed.append(box.padded(1.0))


def _leader(ax: Axes, anchor: tuple[float, float], offset_pt: tuple[float, float]) -> None:
    """A thin line from a split (data) to its label (offset in points), as a patch.

    Its transform follows the split and the figure's dpi, like the label's offset; as a patch
    it is neither a label (``ax.texts``) nor a branch (``ax.lines``).
    """
    points = Affine2D().scale(1 / 72) + ax.figure.dpi_scale_trans
    transform = points + ScaledTranslation(anchor[0], anchor[1], ax.transData)
    line = PathPatch(Path([(0.0, 0.0), offset_pt]), transform=transform, fill=False,
                     edgecolor="0.6", lw=0.6, zorder=3, clip_on=False)
    ax.add_artist(line)


def _candidates(left_first: bool, height_pt: float):
    """Offsets (points) and alignments to try, nearest first: above, below, then further."""
    sides = [-4.0, 4.0] if left_first else [4.0, -4.0]
    step = height_pt + 1.0
    for k in range(_MAX_LABEL_SHIFTS):
        for dx in sides:
            ha = "right" if dx < 0 else "left"
            yield dx, 2.0 + k * step, ha, "bottom"
            yield dx, -3.0 - k * step, ha, "top"


def _box(anchor: np.ndarray, dx: float, dy: float, width: float, height: float,
         ha: str, va: str) -> Bbox:
    """Display-space box of a label at `anchor` + (dx, dy) pixels with the given alignment."""
    x0 = anchor[0] + dx - (width if ha == "right" else 0.0)
    y0 = anchor[1] + dy - (height if va == "top" else 0.0)
    return Bbox.from_bounds(x0, y0, width, height)


def _renderer(figure: Any) -> Any:
    canvas = figure.canvas
    if hasattr(canvas, "get_renderer"):
        return canvas.get_renderer()
    figure.draw_without_rendering()
    return figure._get_renderer()
