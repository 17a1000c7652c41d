"""How far a discovered class tree agrees with a known one: rooted triplets and clades.

Both measures ignore times and compare topologies only:

- **Triplet agreement.** Every three classes {a, b, c} form a rooted triplet: ab|c when a and
  b share a group that excludes c, or unresolved when the tree splits all three at once. The
  agreement is the fraction of the triplets the *known* tree resolves that the discovered tree
  resolves the same way. Triplets the known tree leaves unresolved (a multifurcation, e.g. six
  T-cell subsets under "T cell") are not counted, so a binary discovered tree is not penalised
  for resolving what the annotation does not.
- **Robinson-Foulds distance** (rooted, on clusters): the number of groups (class sets of two
  or more classes, the root and single classes excluded) found in one tree but not the other.
  It counts resolved multifurcations of the known tree as differences; ``clade_recall`` (the
  fraction of known groups that the discovered tree has) does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from ._hierarchy import Hierarchy
from ._topology import Topology, TopologyNode

TreeLike = Hierarchy | Topology | str | Mapping[str, Any] | Sequence[Any]


def as_topology(tree: TreeLike) -> Topology:
    """The topology of a `Hierarchy`, `Topology`, Newick string or nested mapping / sequence."""
    if isinstance(tree, Hierarchy):
        return tree.topology
    if isinstance(tree, Topology):
        return tree
    if isinstance(tree, str):
        return Topology.from_newick(tree)
    if isinstance(tree, Mapping | Sequence):
        return Topology.from_nested(tree)
    raise TypeError(
        "A tree must be a Hierarchy, a Topology, a Newick string or a nested mapping / "
        f"sequence, got {type(tree).__name__}."
    )


def _restrict(topology: Topology, keep: frozenset[str]) -> Topology:
    """The topology with only the classes in `keep` (single-child groups collapse)."""

    def prune(node: TopologyNode) -> TopologyNode | None:
        if isinstance(node, str):
            return node if node in keep else None
        kids = [k for k in (prune(child) for child in node) if k is not None]
        return tuple(kids) if kids else None

    pruned = prune(topology.tree)
    assert pruned is not None
    return Topology(pruned)


def _pair(
    discovered: TreeLike, known: TreeLike, classes: Sequence[str] | None
) -> tuple[Topology, Topology, tuple[str, ...]]:
    found, truth = as_topology(discovered), as_topology(known)
    if classes is None:
        if set(found.classes) != set(truth.classes):
            raise ValueError(
                "The trees hold different classes: only in the discovered tree "
                f"{sorted(set(found.classes) - set(truth.classes))}, only in the known tree "
                f"{sorted(set(truth.classes) - set(found.classes))}. Pass `classes` to compare "
                "them on classes both hold."
            )
        order = tuple(sorted(truth.classes))
    else:
        order = tuple(sorted({str(c) for c in classes}))
        missing = sorted(set(order) - (set(found.classes) & set(truth.classes)))
        if missing:
            raise ValueError(f"`classes` {missing} are not in both trees.")
        if len(order) < 2:
            raise ValueError(f"`classes` must name at least two classes, got {list(order)}.")
        keep = frozenset(order)
        found, truth = _restrict(found, keep), _restrict(truth, keep)
    return found, truth, order


def _groups(topology: Topology) -> set[frozenset[str]]:
    """Groups of two or more classes, the root excluded."""
    return {c for c in topology.clades() if len(c) < topology.n_classes}


def _lca_sizes(topology: Topology, order: tuple[str, ...]) -> np.ndarray:
    """Size of the smallest group holding each pair of classes (the root: all classes)."""
    index = {c: i for i, c in enumerate(order)}
    sizes = np.full((len(order), len(order)), len(order), dtype=np.int64)
    for clade in sorted(topology.clades(), key=len, reverse=True):  # small groups overwrite
        members = [index[c] for c in clade]
        sizes[np.ix_(members, members)] = len(clade)
    return sizes


def _triplets(sizes: np.ndarray, triples: np.ndarray) -> np.ndarray:
    """Per triple (i, j, k): 0 for ij|k, 1 for ik|j, 2 for jk|i, -1 when unresolved."""
    i, j, k = triples.T
    pair_sizes = np.stack([sizes[i, j], sizes[i, k], sizes[j, k]], axis=1)
    smallest = pair_sizes.min(axis=1, keepdims=True)
    unique = (pair_sizes == smallest).sum(axis=1) == 1
    return np.where(unique, pair_sizes.argmin(axis=1), -1)


def triplet_agreement(
    discovered: TreeLike, known: TreeLike, classes: Sequence[str] | None = None
) -> float:
    """Fraction of the rooted triplets resolved by the known tree that the discovered one shares.

    For three classes a, b, c the known tree says ab|c when a and b share a group without c;
    the discovered tree agrees when it says ab|c too (a different pair or a three-way split
    counts as disagreement). Triplets the known tree leaves unresolved are not counted.

    Parameters
    ----------
    discovered
        The tree to score: a `Hierarchy`, `Topology`, Newick string or nested mapping /
        sequence (times are ignored).
    known
        The reference tree, in any of the same forms (e.g. `Topology.from_annotation`).
    classes
        Compare the trees on these classes only (both trees pruned to them). Default: all
        classes, which must be the same in both trees.

    Returns
    -------
    The agreement in [0, 1]; NaN when the known tree resolves no triplet (a star).

    Examples
    --------
    >>> from scbranchdiff.hierarchy import triplet_agreement
    >>> known = {"lymphoid": {"T": ["CD4", "CD8"], "B": None}, "Mono": None}
    >>> triplet_agreement("(((CD4,CD8),B),Mono);", known)
    1.0
    >>> triplet_agreement("(((CD4,B),CD8),Mono);", known)  # CD4 CD8 | B is wrong
    0.75
    """
    return float(tree_agreement(discovered, known, classes)["triplet_agreement"])


def robinson_foulds(
    discovered: TreeLike, known: TreeLike, classes: Sequence[str] | None = None
) -> int:
    """Rooted Robinson-Foulds distance: groups in one tree but not in the other.

    Groups are class sets of two or more classes below the root. A binary tree compared with
    a known tree that has multifurcations differs by at least the groups that resolve them;
    see ``clade_recall`` of `tree_agreement` for a measure that does not count those.

    Parameters
    ----------
    discovered, known, classes
        As in `triplet_agreement`.

    Returns
    -------
    The number of groups of either tree missing from the other (0 for equal topologies).

    Examples
    --------
    >>> from scbranchdiff.hierarchy import robinson_foulds
    >>> robinson_foulds("(((CD4,CD8),B),Mono);", "(((CD4,B),CD8),Mono);")
    2
    """
    return int(tree_agreement(discovered, known, classes)["robinson_foulds"])


def tree_agreement(
    discovered: TreeLike, known: TreeLike, classes: Sequence[str] | None = None
) -> dict[str, float | int]:
    """Agreement of a discovered class tree with a known one, by triplets and by groups.

    Parameters
    ----------
    discovered
        The tree to score: a `Hierarchy`, `Topology`, Newick string or nested mapping /
        sequence (times are ignored).
    known
        The reference tree, in any of the same forms (e.g. `Topology.from_annotation` on
        coarse -> fine annotation columns, or the tree of
        `scbranchdiff.data.simulate_hierarchy`).
    classes
        Compare the trees on these classes only (both trees pruned to them, e.g. to leave out
        types the reference does not place). Default: all classes, which must be the same in
        both trees.

    Returns
    -------
    A dict with

    ``triplet_agreement``
        Fraction of the triplets the known tree resolves that the discovered tree resolves
        the same way (1 = every resolved relationship recovered; NaN when there are none).
    ``n_triplets``
        Number of triplets the known tree resolves.
    ``robinson_foulds``
        Groups in one tree but not the other (rooted Robinson-Foulds distance).
    ``robinson_foulds_normalised``
        That distance over the number of groups of both trees (0 when neither has any).
    ``clade_recall``
        Fraction of the known tree's groups found in the discovered tree (NaN when the known
        tree has none).
    ``clade_precision``
        Fraction of the discovered tree's groups found in the known tree (NaN when it has
        none).
    ``n_classes``
        Number of classes compared.

    Raises
    ------
    ValueError
        When the trees hold different classes and `classes` is not given, or `classes` names
        a class missing from either tree.

    Examples
    --------
    >>> from scbranchdiff.hierarchy import Topology, tree_agreement
    >>> known = Topology((("CD4", "CD8", "Treg"), "B", "Mono"))  # T cells; the rest unresolved
    >>> scores = tree_agreement("((((CD4,CD8),Treg),B),Mono);", known)
    >>> scores["triplet_agreement"], scores["robinson_foulds"], scores["clade_recall"]
    (1.0, 2, 1.0)
    """
    found, truth, order = _pair(discovered, known, classes)
    groups_found, groups_known = _groups(found), _groups(truth)
    shared = groups_found & groups_known
    distance = len(groups_found ^ groups_known)
    total = len(groups_found) + len(groups_known)

    triples = np.array(list(combinations(range(len(order)), 3)), dtype=np.int64).reshape(-1, 3)
    known_res = _triplets(_lca_sizes(truth, order), triples)
    found_res = _triplets(_lca_sizes(found, order), triples)
    resolved = known_res >= 0
    n_resolved = int(resolved.sum())
    agree = int((found_res[resolved] == known_res[resolved]).sum())
    return {
        "triplet_agreement": agree / n_resolved if n_resolved else float("nan"),
        "n_triplets": n_resolved,
        "robinson_foulds": distance,
        "robinson_foulds_normalised": distance / total if total else 0.0,
        "clade_recall": len(shared) / len(groups_known) if groups_known else float("nan"),
        "clade_precision": len(shared) / len(groups_found) if groups_found else float("nan"),
        "n_classes": len(order),
    }
