"""Cell-type categories in the order of the leaves of a hierarchy, for plots that follow the tree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anndata import AnnData

from .._checks import labels_column
from ..hierarchy import Hierarchy, Topology


def _tree_classes(tree: Any) -> list[str]:
    """Leaf names of a model's hierarchy, a Hierarchy, a Topology or a sequence of names."""
    if isinstance(getattr(tree, "hierarchy", None), Hierarchy):  # a BranchedDiffusion
        tree = tree.hierarchy
    if isinstance(tree, Hierarchy):
        tree = tree.topology
    if isinstance(tree, Topology):
        return list(tree.classes)
    if isinstance(tree, Sequence) and not isinstance(tree, str):
        return [str(t) for t in tree]
    raise TypeError(
        "`tree` must be a BranchedDiffusion model, a Hierarchy, a Topology or a list of "
        f"cell-type names, got {type(tree).__name__}."
    )


def in_tree_order(adata: AnnData, labels_key: str, tree: Any) -> AnnData:
    """A copy of ``adata`` whose cell-type categories follow the leaves of a hierarchy.

    Scanpy draws categories (legends, the panels of :func:`generated_vs_real` with
    ``per_type=True``) in the order of ``adata.obs[labels_key].cat.categories``. This reorders
    them as the leaves of the tree are drawn by :func:`hierarchy`, so related cell types sit
    side by side. Types of ``adata`` that the tree does not name keep their order, after the
    others. Colours stored by scanpy in ``adata.uns[f"{labels_key}_colors"]`` (one per
    category) are reordered with the categories, so every type keeps its colour.

    Parameters
    ----------
    adata
        Annotated cells; not modified.
    labels_key
        Column of ``adata.obs`` with the cell types (converted to categorical in the copy if it
        is not).
    tree
        A trained :class:`~scbranchdiff.model.BranchedDiffusion` (its ``hierarchy``), a
        :class:`~scbranchdiff.Hierarchy`, a :class:`~scbranchdiff.hierarchy.Topology`, or a list
        of cell-type names in the order wanted.

    Returns
    -------
    A copy of ``adata`` with ``obs[labels_key]`` categorical in tree order.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from scbranchdiff import Hierarchy
    >>> tree = Hierarchy.from_newick("((B:0.3,T:0.3):0.3,Mono:0.6):0.4;")
    >>> cells = ad.AnnData(np.zeros((4, 2)), obs=pd.DataFrame(
    ...     {"cell_type": pd.Categorical(["Mono", "T", "B", "NK"])}, index=list("abcd")))
    >>> cells.uns["cell_type_colors"] = ["#1f77b4", "#ff7f0e", "#279e68", "#d62728"]  # B Mono NK T
    >>> ordered = sbd.pl.in_tree_order(cells, "cell_type", tree)
    >>> list(ordered.obs["cell_type"].cat.categories)  # NK is not in the tree: last
    ['B', 'T', 'Mono', 'NK']
    >>> list(ordered.uns["cell_type_colors"])  # each type keeps its colour
    ['#1f77b4', '#d62728', '#ff7f0e', '#279e68']
    >>> list(cells.obs["cell_type"].cat.categories)  # the input is unchanged
    ['B', 'Mono', 'NK', 'T']
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    order_of_tree = _tree_classes(tree)
    column = labels_column(adata, labels_key).astype("category")
    old = list(column.cat.categories)
    by_name = {str(c): c for c in old}
    order = [by_name[t] for t in order_of_tree if t in by_name]
    order += [c for c in old if c not in order]
    out = adata.copy()
    out.obs[labels_key] = column.cat.reorder_categories(order)
    colours_key = f"{labels_key}_colors"
    colours = out.uns.get(colours_key)
    if colours is not None and len(colours) == len(old):  # scanpy's: one per category
        by_category = dict(zip(old, list(colours), strict=True))
        out.uns[colours_key] = [by_category[c] for c in order]
    return out
