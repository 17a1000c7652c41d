"""Drawing cells in an embedding: type-coloured points, a type legend, shared limits."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D

from .._checks import labels_column

BACKGROUND = "0.85"


def point_size(n_cells: int) -> float:
    """Marker area that keeps a few hundred or a hundred thousand cells readable."""
    return float(np.clip(8000 / max(n_cells, 1), 2.0, 30.0))


def cell_types(adata: AnnData, labels_key: str, *, name: str) -> np.ndarray:
    """Cell-type names of ``adata`` as strings, with a KeyError naming a missing column."""
    return labels_column(adata, labels_key, name=name).astype(str).to_numpy()


def type_order(adata: AnnData, labels_key: str, *extra: Iterable[str]) -> list[str]:
    """Types in the order of ``adata``'s categories, then types only seen in ``extra``."""
    column = adata.obs[labels_key]
    if isinstance(column.dtype, pd.CategoricalDtype):
        present = set(column.astype(str))
        order = [str(c) for c in column.cat.categories if str(c) in present]
    else:
        order = sorted(set(column.astype(str)))
    for labels in extra:
        order += [t for t in pd.unique(np.asarray(labels, dtype=str)) if t not in order]
    return order


def scatter_types(
    ax: Axes,
    coords: np.ndarray,
    types: np.ndarray,
    colours: Mapping[str, str],
    *,
    size: float,
    seed: int = 0,
    **kwargs,
) -> PathCollection:
    """One scatter of all cells coloured by type, drawn in a seeded random order.

    A random order keeps the last-drawn type from hiding the others where they overlap.
    """
    order = np.random.default_rng(seed).permutation(len(coords))
    return ax.scatter(
        coords[order, 0], coords[order, 1], c=[colours[t] for t in types[order]], s=size,
        linewidths=kwargs.pop("linewidths", 0), plotnonfinite=True, **kwargs,
    )


def type_legend(
    ax: Axes,
    colours: Mapping[str, str],
    types: Sequence[str],
    *,
    title: str | None = None,
    extra: Sequence[Line2D] = (),
) -> None:
    """Legend of type colours (and any extra marker handles) to the right of ``ax``."""
    handles = [
        Line2D([], [], marker="o", ls="", color=colours[t], markersize=7, label=t) for t in types
    ]
    ax.legend(
        handles=[*handles, *extra], title=title, loc="center left", bbox_to_anchor=(1.02, 0.5),
        frameon=False, fontsize=8, title_fontsize=9,
    )


def share_limits(axes: Sequence[Axes], coords: Sequence[np.ndarray], *, pad: float = 0.05) -> None:
    """Give every Axes the same limits, covering all ``coords`` with a margin."""
    points = np.concatenate([c for c in coords if len(c)])
    points = points[np.isfinite(points).all(axis=1)]
    low, high = points.min(axis=0), points.max(axis=0)
    margin = (high - low) * pad + 1e-9
    for ax in axes:
        ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
        ax.set_ylim(low[1] - margin[1], high[1] + margin[1])


def style_embedding(ax: Axes, axis_labels: tuple[str, str], title: str | None = None) -> None:
    """Scanpy's embedding look: axis names, no tick values (they carry no meaning)."""
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        # long cell-type names ("CD8+/CD45RA+ Naive Cytotoxic") would run into the next panel
        ax.set_title(textwrap.fill(title, width=24))
