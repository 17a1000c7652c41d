"""The ways of asking for a hierarchy (``BranchedDiffusion(hierarchy=...)``) and their parsing.

A spec is one of: ``"auto"`` (discover the tree from the data), ``"flat"`` (`LABEL_GUIDED`:
no tree, one branch with a class embedding), a `Hierarchy` (tree and split times), a Newick
string (a `Hierarchy` when it has branch lengths, else a `Topology`), a nested mapping (a
`Topology`) or a list of annotation columns, coarse to fine (a `Topology`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ._hierarchy import Hierarchy
from ._topology import Topology

HierarchySpec = str | Sequence[str] | Mapping[str, Any] | Hierarchy | Topology

# Discover the hierarchy from the data.
AUTO = "auto"
# The flat, label-guided network: one branch for every class, told apart by a class embedding.
LABEL_GUIDED = "flat"


def is_label_guided(spec: Any) -> bool:
    """Whether a hierarchy spec asks for the flat, label-guided network (`LABEL_GUIDED`).

    Parameters
    ----------
    spec
        A hierarchy spec, as accepted by `parse_hierarchy_spec`, or its parsed form.

    Returns
    -------
    True for the string ``"flat"`` only. A flat `Hierarchy` is not the label-guided network:
    it is a tree of one branch that the model trains without a class embedding.

    Examples
    --------
    >>> from scbranchdiff.hierarchy import LABEL_GUIDED, is_label_guided
    >>> is_label_guided(LABEL_GUIDED), is_label_guided("auto")
    (True, False)
    """
    return isinstance(spec, str) and spec == LABEL_GUIDED


def parse_hierarchy_spec(
    spec: HierarchySpec,
    classes: Sequence[str],
    obs: pd.DataFrame | None = None,
    labels_key: str | None = None,
) -> str | Hierarchy | Topology:
    """Check a hierarchy spec against the cell types and parse it into a tree.

    Parameters
    ----------
    spec
        ``"auto"`` (discover the tree from the data) or ``"flat"`` (`LABEL_GUIDED`), returned
        as they are; a `Hierarchy`, returned as it is once every class is found in it; a
        Newick string (a `Hierarchy` when it holds diffusion-time branch lengths, i.e. any
        ``:``, e.g. from ``Hierarchy.to_newick()``, else a `Topology`); a nested mapping
        (`Topology.from_nested`); or a list of column names of `obs`, coarse to fine
        (`Topology.from_annotation`).
    classes
        The cell types (e.g. the categories of ``adata.obs[labels_key]``).
    obs
        Table with one row per cell (e.g. ``adata.obs``); needed for a list of columns only.
    labels_key
        Column of `obs` holding the cell types: the last (finest) of a list of columns must be
        this one (not checked when None). Error messages name it.

    Returns
    -------
    The string ``"auto"`` or ``"flat"``, the given or parsed `Hierarchy`, or a `Topology`
    (whose split times are still to be fitted, `fit_split_times`). A `Hierarchy` parsed from
    Newick has its classes in the order of `classes`, not the leaf order of the string.

    Raises
    ------
    TypeError
        When `spec` is none of the above (a `Topology` included).
    ValueError
        When the classes of a `Hierarchy` miss some of `classes`, when the parsed tree's classes
        differ from `classes`, when the last of a list of columns is not `labels_key`, when a
        list of columns is given without `obs`, or when `spec` is malformed (e.g. invalid
        Newick or annotation columns that do not nest).
    KeyError
        When columns of a list are not in `obs`.

    Examples
    --------
    >>> import pandas as pd
    >>> from scbranchdiff.hierarchy import parse_hierarchy_spec
    >>> classes = ["B", "CD4", "CD8"]
    >>> parse_hierarchy_spec("flat", classes)
    'flat'
    >>> parse_hierarchy_spec("((CD4,CD8),B);", classes)
    Topology(((CD4,CD8),B);)
    >>> parse_hierarchy_spec({"T": ["CD4", "CD8"], "B": None}, classes)
    Topology(((CD4,CD8),B);)
    >>> tree = parse_hierarchy_spec("((CD4:0.5,CD8:0.5):0.25,B:0.75):0.25;", classes)
    >>> tree.split_time("CD4", "CD8"), tree.split_time("CD4", "B")
    (0.5, 0.75)
    >>> obs = pd.DataFrame({"lineage": ["T", "T", "B"], "cell_type": ["CD4", "CD8", "B"]})
    >>> parse_hierarchy_spec(["lineage", "cell_type"], classes, obs, labels_key="cell_type")
    Topology(((CD4,CD8),B);)
    >>> parse_hierarchy_spec("(CD4,CD8);", classes)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The hierarchy's classes ['CD4', 'CD8'] differ from the cell types in `classes`: ...
    """
    where = "`classes`" if labels_key is None else f"adata.obs[{labels_key!r}]"
    if isinstance(spec, Hierarchy):
        unknown = sorted(set(classes) - set(spec.classes))
        if unknown:
            raise ValueError(
                f"Cell types in {where} are missing from the given hierarchy: {unknown} "
                f"(hierarchy classes: {list(spec.classes)})."
            )
        return spec
    if isinstance(spec, str) and spec in (AUTO, LABEL_GUIDED):
        return spec
    parsed: Hierarchy | Topology
    if isinstance(spec, str):
        parsed = Hierarchy.from_newick(spec) if _has_lengths(spec) else Topology.from_newick(spec)
    elif isinstance(spec, Mapping):
        parsed = Topology.from_nested(spec)
    elif isinstance(spec, Sequence) and all(isinstance(c, str) for c in spec):
        if obs is None:
            raise ValueError("A list of obs columns as `hierarchy` needs `obs` (adata.obs).")
        missing = [c for c in spec if c not in obs]
        if missing:
            raise KeyError(f"`hierarchy` columns {missing} are not in adata.obs.")
        if labels_key is not None and spec[-1] != labels_key:
            raise ValueError(
                f"The last (finest) `hierarchy` column must be the labels key "
                f"{labels_key!r}, got {spec[-1]!r}."
            )
        parsed = Topology.from_annotation(obs, list(spec))
    else:
        raise TypeError(
            "`hierarchy` must be 'auto', 'flat', a list of obs columns, a nested dict, a "
            f"Newick string or a Hierarchy, got {type(spec).__name__}."
        )
    if set(parsed.classes) != set(classes):
        raise ValueError(
            f"The hierarchy's classes {sorted(parsed.classes)} differ from the cell types in "
            f"{where}: {sorted(classes)}."
        )
    if isinstance(parsed, Hierarchy) and parsed.classes != tuple(classes):
        # the model's class order, not the leaf order of the string (a saved model checks it)
        parsed = Hierarchy(classes, parsed.branches)
    return parsed


def _has_lengths(newick: str) -> bool:
    """Whether a Newick string holds branch lengths (any ``:``, quoted names included)."""
    return ":" in newick
