"""Topology-only class trees (no times) and the Newick text format they share with `Hierarchy`.

A `Topology` says which classes group together, coarse to fine, but not when they split. It
comes from a hand-written nested dict, a Newick string without branch lengths or coarse -> fine
annotation columns, and becomes a `Hierarchy` once split times are fitted from data
(`scbranchdiff.hierarchy.fit_split_times`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# A topology node: a class name (leaf) or a tuple of child nodes (a group).
TopologyNode = str | tuple[Any, ...]

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Topology:
    """A class tree without times: leaves are class names, inner nodes are groups.

    Groups with a single child are collapsed into that child, so two topologies with the same
    clades compare equal whatever the nesting depth of the source.

    Parameters
    ----------
    tree
        Nested tuples whose leaves are class names, e.g. ``(("CD4", "CD8"), "B")``.

    Examples
    --------
    >>> from scbranchdiff.hierarchy import Topology
    >>> topology = Topology(((("CD4", "CD8"),), "B"))
    >>> topology.classes, topology.n_classes
    (('CD4', 'CD8', 'B'), 3)
    >>> topology == Topology((("CD4", "CD8"), "B"))  # single-child groups collapse
    True
    """

    tree: TopologyNode
    classes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        tree = _collapse(self.tree)
        classes = tuple(leaves(tree))
        duplicated = sorted({c for c in classes if classes.count(c) > 1})
        if duplicated:
            raise ValueError(f"A topology must name each class once; repeated: {duplicated}.")
        if not classes:
            raise ValueError("A topology needs at least one class.")
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "classes", classes)

    @property
    def n_classes(self) -> int:
        """Number of classes (leaves)."""
        return len(self.classes)

    def clades(self) -> set[frozenset[str]]:
        """Class sets of every group (the root included, leaves excluded)."""
        found: set[frozenset[str]] = set()

        def visit(node: TopologyNode) -> frozenset[str]:
            if isinstance(node, str):
                return frozenset([node])
            members = frozenset().union(*(visit(child) for child in node))
            found.add(members)
            return members

        visit(self.tree)
        return found

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        return set(self.classes) == set(other.classes) and self.clades() == other.clades()

    def __hash__(self) -> int:
        return hash((frozenset(self.classes), frozenset(self.clades())))

    def __repr__(self) -> str:
        return f"Topology({self.to_newick()})"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_nested(cls, nested: Mapping[str, Any] | Sequence[Any]) -> Topology:
        """Build a topology from nested mappings / sequences whose leaves are class names.

        In a mapping, a key whose value is ``None`` is a class; any other value is the content
        of a group named by the key (group names are only for the reader and are dropped). A
        sequence lists the members of a group. Example::

            {"lymphoid": {"T": ["CD4", "CD8"], "B": None}, "myeloid": ["CD14", "CD16"]}
        """
        return cls(_nested_to_tree(nested, path="nested"))

    @classmethod
    def from_newick(cls, newick: str) -> Topology:
        """Build a topology from a Newick string; branch lengths and inner labels are ignored."""
        return cls(_strip_lengths(parse_newick(newick)))

    @classmethod
    def from_annotation(cls, obs: pd.DataFrame, columns: Sequence[str]) -> Topology:
        """Build a topology from annotation columns ordered coarse -> fine.

        The last column holds the classes. Each fine value must sit in exactly one group of
        every coarser column.

        Parameters
        ----------
        obs
            Table with one row per cell (e.g. ``adata.obs``).
        columns
            Column names, coarsest first, e.g. ``["lineage", "subpop", "celltype"]``.
        """
        columns = list(columns)
        if not columns:
            raise ValueError("`columns` must name at least one annotation column.")
        missing = [c for c in columns if c not in obs.columns]
        if missing:
            raise KeyError(f"`columns` {missing} not found in obs; available: {list(obs.columns)}.")
        table = obs[columns].astype(str)
        if obs[columns].isna().any().any():
            raise ValueError(f"Annotation columns {columns} contain missing values.")
        fine = columns[-1]
        for coarse in columns[:-1]:
            n_groups = table.groupby(fine, sort=False)[coarse].nunique()
            bad = n_groups[n_groups > 1]
            if len(bad):
                name = bad.index[0]
                groups = sorted(table.loc[table[fine] == name, coarse].unique())
                raise ValueError(
                    f"Class {name!r} of column {fine!r} sits in several groups of column "
                    f"{coarse!r}: {groups}. Coarse -> fine columns must nest."
                )
        paths = table.drop_duplicates(subset=fine)

        def build(rows: pd.DataFrame, level: int) -> TopologyNode:
            if level == len(columns) - 1:
                return tuple(rows[fine])
            return tuple(
                build(group, level + 1)
                for _, group in rows.groupby(columns[level], sort=False)
            )

        return cls(build(paths, 0))

    def to_newick(self) -> str:
        """Newick string without branch lengths."""
        return _write_newick(self.tree) + ";"


# ---------------------------------------------------------------------- tree helpers
def leaves(node: TopologyNode) -> list[str]:
    """Class names under a topology node, depth first, left to right (``[node]`` for a leaf)."""
    if isinstance(node, str):
        return [node]
    return [leaf for child in node for leaf in leaves(child)]


def _collapse(node: Any) -> TopologyNode:
    """Normalise to nested tuples and replace single-child groups by their child."""
    if isinstance(node, str):
        return node
    if isinstance(node, np.str_):
        return str(node)
    if not isinstance(node, Sequence):
        raise TypeError(f"A topology node must be a class name or a sequence, got {node!r}.")
    children = tuple(_collapse(child) for child in node)
    if not children:
        raise ValueError("A topology group must not be empty.")
    if len(children) == 1:
        return children[0]
    return children


def _nested_to_tree(nested: Any, path: str) -> TopologyNode:
    if isinstance(nested, str):
        return nested
    if isinstance(nested, Mapping):
        children = []
        for key, value in nested.items():
            if value is None:
                children.append(str(key))
            else:
                children.append(_nested_to_tree(value, f"{path}[{key!r}]"))
        return tuple(children)
    if isinstance(nested, Sequence):
        return tuple(_nested_to_tree(item, f"{path}[{i}]") for i, item in enumerate(nested))
    raise TypeError(
        f"{path}: expected a mapping, a sequence or a class name, got {type(nested).__name__}."
    )


# ---------------------------------------------------------------------- Newick
@dataclass
class NewickNode:
    """A parsed Newick node: name (leaves), length (may be None) and children."""

    name: str | None
    length: float | None
    children: list[NewickNode]


def format_length(length: float) -> str:
    """Branch lengths with 12 significant digits, so that write -> read -> write is stable."""
    return format(float(length), ".12g")


def _write_newick(node: TopologyNode) -> str:
    if isinstance(node, str):
        return quote_name(node)
    return "(" + ",".join(_write_newick(child) for child in node) + ")"


def parse_newick(text: str) -> NewickNode:
    """Parse one Newick tree (quoted names, comments in [...] and lengths supported).

    Unquoted underscores are kept as they are (not turned into spaces).
    """
    pos = 0
    n = len(text)

    def error(message: str) -> ValueError:
        return ValueError(f"Invalid Newick at character {pos}: {message}. Text: {text[:80]!r}")

    def skip_blank() -> None:
        nonlocal pos
        while pos < n:
            if text[pos].isspace():
                pos += 1
            elif text[pos] == "[":
                end = text.find("]", pos)
                if end < 0:
                    raise error("unterminated comment")
                pos = end + 1
            else:
                break

    def read_name() -> str | None:
        nonlocal pos
        skip_blank()
        if pos < n and text[pos] == "'":
            pos += 1
            chars = []
            while True:
                if pos >= n:
                    raise error("unterminated quoted name")
                if text[pos] == "'":
                    if pos + 1 < n and text[pos + 1] == "'":
                        chars.append("'")
                        pos += 2
                        continue
                    pos += 1
                    break
                chars.append(text[pos])
                pos += 1
            return "".join(chars)
        start = pos
        while pos < n and text[pos] not in "(),:;[" and not text[pos].isspace():
            if text[pos] == "'":
                raise error("quote inside an unquoted name")
            pos += 1
        return text[start:pos] or None

    def read_length() -> float | None:
        nonlocal pos
        skip_blank()
        if pos < n and text[pos] == ":":
            pos += 1
            skip_blank()
            start = pos
            while pos < n and text[pos] not in "(),:;[" and not text[pos].isspace():
                pos += 1
            try:
                return float(text[start:pos])
            except ValueError:
                raise error(f"branch length {text[start:pos]!r} is not a number") from None
        return None

    def read_node() -> NewickNode:
        nonlocal pos
        skip_blank()
        children: list[NewickNode] = []
        if pos < n and text[pos] == "(":
            pos += 1
            while True:
                children.append(read_node())
                skip_blank()
                if pos < n and text[pos] == ",":
                    pos += 1
                    continue
                if pos < n and text[pos] == ")":
                    pos += 1
                    break
                raise error("expected ',' or ')'")
        name = read_name()
        length = read_length()
        if not children and name is None:
            raise error("a leaf needs a name")
        return NewickNode(name=name, length=length, children=children)

    root = read_node()
    skip_blank()
    if pos < n and text[pos] == ";":
        pos += 1
    skip_blank()
    if pos != n:
        raise error("unexpected text after the tree")
    return root


def _strip_lengths(node: NewickNode) -> TopologyNode:
    if not node.children:
        assert node.name is not None
        return node.name
    return tuple(_strip_lengths(child) for child in node.children)


def quote_name(name: str) -> str:
    """Newick form of a class name: quoted when it holds anything but [A-Za-z0-9_.-]."""
    if _PLAIN_NAME.match(name):
        return name
    return "'" + name.replace("'", "''") + "'"
