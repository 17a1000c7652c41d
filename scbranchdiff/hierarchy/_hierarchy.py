"""The `Hierarchy` value type: which branch (set of classes, time interval) serves (class, t).

A branch holds (class, t) when the class is one of its classes and t_start <= t < t_end; the
root (all classes, t_end = 1) also holds t = 1. Going from t = 1 down to 0 a class follows the
path root -> ... -> its leaf. Every (class, t) pair with t in [0, 1] lies in exactly one branch;
t > 1 is served by the root and t < 0 by the leaf.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._scale import (
    MarginalCoefficients,
    check_scale,
    leaf_time,
    log_snr,
    time_at_log_snr,
)
from ._topology import (
    NewickNode,
    Topology,
    TopologyNode,
    format_length,
    leaves,
    parse_newick,
    quote_name,
)

# Times closer than this are the same time (equality, Newick leaves reaching t = 0).
TIME_TOLERANCE = 1e-9
# Log-SNR heights closer than this are the same (log-SNR Newick leaves reaching t_min).
LOG_SNR_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Branch:
    """One branch of a hierarchy: the classes it serves over [t_start, t_end).

    Parameters
    ----------
    classes
        Class names, in the owning hierarchy's class order.
    t_start
        Lower end of the interval (0 for leaves).
    t_end
        Upper end of the interval (1 for the root).

    Examples
    --------
    >>> from scbranchdiff import Branch
    >>> branch = Branch(("CD4 T", "CD8 T"), t_start=0.2, t_end=0.5)
    >>> branch.is_leaf, round(branch.length, 2)
    (False, 0.3)
    """

    classes: tuple[str, ...]
    t_start: float
    t_end: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "t_start", float(self.t_start))
        object.__setattr__(self, "t_end", float(self.t_end))

    @property
    def length(self) -> float:
        """Diffusion-time length t_end - t_start."""
        return self.t_end - self.t_start

    @property
    def is_leaf(self) -> bool:
        """Whether the branch serves a single class down to t = 0."""
        return len(self.classes) == 1 and self.t_start == 0.0


class Hierarchy:
    """A tree of branches over diffusion time, one reverse process per branch.

    Branches are stored in a canonical order (pre-order from the root, children ordered by
    their first class in ``classes``), so equal trees have equal branch indices whatever
    order they were given in.

    Parameters
    ----------
    classes
        Class (cell type) names; their order fixes the integer class indices.
    branches
        The branches. Validated: every (class, t) pair in [0, 1] lies in exactly one branch,
        each class's branches nest (a lower branch's classes are a subset of the branch above),
        children end where their parent starts, a single root holds all classes up to t = 1,
        and each branch reaching t = 0 holds one class.

    Raises
    ------
    ValueError
        When the branches do not form such a tree; the message names the offending branch.

    Examples
    --------
    >>> from scbranchdiff import Branch, Hierarchy
    >>> tree = Hierarchy(["B", "T", "Mono"], [
    ...     Branch(("B", "T", "Mono"), 0.6, 1.0),
    ...     Branch(("B", "T"), 0.3, 0.6),
    ...     Branch(("B",), 0.0, 0.3),
    ...     Branch(("T",), 0.0, 0.3),
    ...     Branch(("Mono",), 0.0, 0.6),
    ... ])
    >>> tree.split_time("B", "T")
    0.3
    >>> tree.branches[tree.common_branch("B", "T")].classes
    ('B', 'T')
    >>> [tree.branches[b].classes for b in tree.path("T")]
    [('B', 'T', 'Mono'), ('B', 'T'), ('T',)]
    >>> Hierarchy.from_dict(tree.to_dict()) == tree
    True
    """

    def __init__(self, classes: Sequence[str], branches: Sequence[Branch]) -> None:
        classes = tuple(str(c) for c in classes)
        if not classes:
            raise ValueError("`classes` must not be empty.")
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        if repeated:
            raise ValueError(f"`classes` must be unique; repeated: {repeated}.")
        order = {c: i for i, c in enumerate(classes)}
        normalised = [_normalise_branch(b, order, i) for i, b in enumerate(branches)]
        if not normalised:
            raise ValueError("`branches` must not be empty.")
        paths = _class_paths(classes, normalised)
        root = paths[classes[0]][0]
        parent, children = _links(classes, normalised, paths)

        # Canonical order: pre-order from the root, children by their first class.
        for kids in children:
            kids.sort(key=lambda k: order[normalised[k].classes[0]])
        ranked: list[int] = []
        stack = [root]
        while stack:
            b = stack.pop()
            ranked.append(b)
            stack.extend(reversed(children[b]))
        new_index = {old: new for new, old in enumerate(ranked)}

        self._classes = classes
        self._class_order = order
        self._branches = tuple(normalised[b] for b in ranked)
        self._parent = [
            None if parent[b] is None else new_index[parent[b]] for b in ranked
        ]
        self._children = [[new_index[k] for k in children[b]] for b in ranked]
        self._paths = {c: [new_index[b] for b in paths[c]] for c in classes}
        self._build_lookup()

    # ------------------------------------------------------------------ basic properties
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in index order."""
        return self._classes

    @property
    def branches(self) -> tuple[Branch, ...]:
        """Branches in canonical order (root first)."""
        return self._branches

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self._classes)

    @property
    def n_branches(self) -> int:
        """Number of branches (one reverse process / output head each)."""
        return len(self._branches)

    @property
    def root(self) -> int:
        """Index of the branch holding every class up to t = 1."""
        return 0

    @property
    def is_flat(self) -> bool:
        """Whether the hierarchy is a single branch holding every class over [0, 1]."""
        return self.n_branches == 1

    @property
    def topology(self) -> Topology:
        """The tree without times (single-child chains collapsed; a flat hierarchy is a star)."""

        def node(b: int) -> TopologyNode:
            kids = self._children[b]
            if not kids:
                classes = self._branches[b].classes
                return classes[0] if len(classes) == 1 else tuple(classes)
            return tuple(node(k) for k in kids)

        return Topology(node(self.root))

    def clades(self) -> set[frozenset[str]]:
        """Class sets of all groups of two or more classes (the root included)."""
        return self.topology.clades()

    # ------------------------------------------------------------------ lookups
    def class_index(self, names: str | Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
        """Integer class indices of class names.

        Raises
        ------
        KeyError
            Naming every unknown class.
        """
        values = np.atleast_1d(np.asarray(names, dtype=object))
        unknown = sorted({str(v) for v in values.ravel()} - set(self._classes))
        if unknown:
            raise KeyError(f"Unknown classes {unknown}; known classes: {list(self._classes)}.")
        codes = pd.Categorical(values.ravel().astype(str), categories=self._classes).codes
        return codes.astype(np.int64).reshape(values.shape)

    def path(self, cell_type: str) -> list[int]:
        """Branch indices a class passes through, from the root (t = 1) to its leaf (t = 0)."""
        self._check_class(cell_type)
        return list(self._paths[cell_type])

    def leaf(self, cell_type: str) -> int:
        """Index of the branch serving the class at t = 0 (its leaf; the root if flat)."""
        return self.path(cell_type)[-1]

    def children(self, branch: int) -> list[int]:
        """Indices of the branches directly below `branch` in time (they end where it starts)."""
        self._check_branch(branch)
        return list(self._children[branch])

    def parent(self, branch: int) -> int | None:
        """Index of the branch above `branch` (None for the root)."""
        self._check_branch(branch)
        return self._parent[branch]

    def common_branch(self, *cell_types: str) -> int:
        """The smallest branch holding every one of `cell_types`.

        That is the last branch their root-to-leaf paths share: the leaf for a single class
        (or the same class repeated), the root for classes that split at the root.

        Raises
        ------
        TypeError
            When no class is given.
        KeyError
            When a class is not in the hierarchy.
        """
        if not cell_types:
            raise TypeError("`common_branch` needs at least one class.")
        paths = [self.path(c) for c in cell_types]
        common = self.root
        for branches in zip(*paths, strict=False):
            if len(set(branches)) > 1:
                break
            common = branches[0]
        return common

    def split_time(self, a: str, b: str) -> float:
        """Time at which classes `a` and `b` stop sharing a branch (0 when ``a == b``)."""
        return self._branches[self.common_branch(a, b)].t_start

    def split_times(self) -> dict[frozenset[str], float]:
        """Diffusion time t of every split: ``{classes of the splitting group: its t_start}``.

        One entry per branch with two or more children (the root included), root first; this
        is the form `from_topology` takes, so ``Hierarchy.from_topology(h.topology,
        h.split_times())`` rebuilds ``h`` (when no branch has a single child). Training and
        sampling use these times. See `split_heights` for a scale on which splits spread by how
        different the types are.

        Examples
        --------
        >>> from scbranchdiff import Hierarchy
        >>> tree = Hierarchy.from_newick("((B:0.3,T:0.3):0.3,Mono:0.6):0.4;")
        >>> {"+".join(sorted(group)): t for group, t in tree.split_times().items()}
        {'B+Mono+T': 0.6, 'B+T': 0.3}
        """
        return {
            frozenset(branch.classes): branch.t_start
            for b, branch in enumerate(self._branches)
            if len(self._children[b]) >= 2
        }

    def split_heights(
        self, sde: MarginalCoefficients | None = None, scale: str = "log_snr"
    ) -> dict[frozenset[str], float]:
        """Height of every split on a chosen scale: ``{classes of the splitting group: height}``.

        Parameters
        ----------
        sde
            The SDE the split times belong to (e.g. ``model.sde``); needed for ``"log_snr"``.
            A `Hierarchy` does not store it.
        scale
            ``"log_snr"`` (default): the log signal-to-noise ratio
            lambda(t) = log(a(t)^2 / s(t)^2) of the noising kernel at the split time (see
            `scbranchdiff.hierarchy.log_snr`); it falls as t grows, so types that split earlier
            in the reverse process (higher in the tree) have lower lambda, and a split's lambda
            is about c - 2 log(distance between the types). ``"t"``: diffusion time, as
            `split_times`.

        Returns
        -------
        The heights, keyed and ordered as `split_times`.

        Examples
        --------
        >>> from scbranchdiff import Hierarchy
        >>> from scbranchdiff.diffusion import VPSDE
        >>> tree = Hierarchy.from_newick("((B:0.3,T:0.3):0.3,Mono:0.6):0.4;")
        >>> heights = tree.split_heights(VPSDE())
        >>> [round(heights[frozenset(g)], 2) for g in (["B", "T"], ["B", "T", "Mono"])]
        [-0.42, -3.62]
        """
        check_scale(scale, sde)
        times = self.split_times()
        if scale == "t":
            return times
        assert sde is not None
        return {group: float(log_snr(t, sde)) for group, t in times.items()}

    def branch_index(self, class_idx: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        """Branch serving each (class, t) pair, vectorised.

        Parameters
        ----------
        class_idx
            Integer class indices (see `class_index`).
        t
            Diffusion times, broadcastable against `class_idx`. t >= 1 maps to the root,
            t <= 0 to the leaf.

        Returns
        -------
        Integer branch indices with the broadcast shape.
        """
        class_idx = np.asarray(class_idx)
        if class_idx.size and not np.issubdtype(class_idx.dtype, np.integer):
            raise TypeError(f"`class_idx` must hold integers, got dtype {class_idx.dtype}.")
        t = np.asarray(t, dtype=np.float64)
        class_idx, t = np.broadcast_arrays(class_idx, t)
        if class_idx.size and (class_idx.min() < 0 or class_idx.max() >= self.n_classes):
            raise ValueError(
                f"`class_idx` must lie in [0, {self.n_classes - 1}], got values in "
                f"[{class_idx.min()}, {class_idx.max()}]."
            )
        if np.isnan(t).any():
            raise ValueError("`t` contains NaN.")
        # Exact integer keys: (class, rank of t among all branch starts), one sorted array.
        t_rank = np.searchsorted(self._start_values, np.clip(t, 0.0, 1.0), side="right")
        keys = class_idx.astype(np.int64) * self._rank_stride + t_rank
        position = np.searchsorted(self._lookup_keys, keys, side="right") - 1
        return self._lookup_branch[position]

    def _build_lookup(self) -> None:
        self._start_values = np.unique([b.t_start for b in self._branches])
        self._rank_stride = len(self._start_values) + 1
        keys, branch_of_key = [], []
        for c, name in enumerate(self._classes):
            for b in reversed(self._paths[name]):  # leaf first: ascending t_start
                rank = np.searchsorted(self._start_values, self._branches[b].t_start, "right")
                keys.append(c * self._rank_stride + rank)
                branch_of_key.append(b)
        self._lookup_keys = np.asarray(keys, dtype=np.int64)
        self._lookup_branch = np.asarray(branch_of_key, dtype=np.int64)

    def _check_class(self, cell_type: str) -> None:
        if cell_type not in self._class_order:
            raise KeyError(f"Unknown class {cell_type!r}; known classes: {list(self._classes)}.")

    def _check_branch(self, branch: int) -> None:
        if not 0 <= branch < self.n_branches:
            raise IndexError(f"`branch` must lie in [0, {self.n_branches - 1}], got {branch}.")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def flat(cls, classes: Sequence[str]) -> Hierarchy:
        """One branch holding every class over [0, 1] (the flat, label-guided model)."""
        classes = tuple(classes)
        return cls(classes, [Branch(classes, 0.0, 1.0)])

    @classmethod
    def from_topology(
        cls,
        topology: Topology,
        split_times: Mapping[frozenset[str], float],
        classes: Sequence[str] | None = None,
    ) -> Hierarchy:
        """Attach times to a topology.

        Parameters
        ----------
        topology
            The tree.
        split_times
            For every group of the topology (its class set as a frozenset), the time at which
            it splits into its children (its branch's t_start). A child whose split time equals
            its parent's is merged into the parent (the split becomes multifurcating).
        classes
            Class order of the result; defaults to the topology's leaf order.
        """
        classes = tuple(topology.classes if classes is None else classes)
        if set(classes) != set(topology.classes):
            raise ValueError(
                f"`classes` {sorted(classes)} differ from the topology's classes "
                f"{sorted(topology.classes)}."
            )
        branches: list[Branch] = []

        def members(node: TopologyNode) -> frozenset[str]:
            return frozenset(leaves(node))

        def time_of(node: TopologyNode) -> float:
            if isinstance(node, str):
                return 0.0
            key = members(node)
            if key not in split_times:
                raise ValueError(f"`split_times` has no time for the group {sorted(key)}.")
            return float(split_times[key])

        def emit(node: TopologyNode, t_end: float) -> None:
            t_start = time_of(node)
            if not isinstance(node, str) and t_start <= 0.0:
                raise ValueError(
                    f"Group {sorted(members(node))} must split at t > 0, got {t_start}."
                )
            if t_start > t_end or (t_start == t_end and not isinstance(node, str)):
                raise ValueError(
                    f"Group {sorted(members(node))} splits at t = {t_start}, not before its "
                    f"parent (t = {t_end}): children must split before parents."
                )
            branches.append(Branch(tuple(sorted(members(node))), t_start, t_end))
            if isinstance(node, str):
                return
            for child in _absorb_equal_times(node, t_start, time_of):
                emit(child, t_start)

        if isinstance(topology.tree, str):
            return cls.flat(classes)
        root_start = time_of(topology.tree)
        if not 0.0 <= root_start < 1.0:
            raise ValueError(f"The root must split in [0, 1), got t = {root_start}.")
        emit(topology.tree, 1.0)
        return cls(classes, branches)

    @classmethod
    def from_nested(cls, nested: Mapping[str, Any] | Sequence[Any]) -> Topology:
        """Topology from nested mappings / sequences; see `Topology.from_nested`."""
        return Topology.from_nested(nested)

    @classmethod
    def from_annotation(cls, obs: pd.DataFrame, columns: Sequence[str]) -> Topology:
        """Topology from coarse -> fine annotation columns; see `Topology.from_annotation`."""
        return Topology.from_annotation(obs, columns)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: ``{"classes": [...], "branches": [{...}, ...]}``."""
        return {
            "classes": list(self._classes),
            "branches": [
                {"classes": list(b.classes), "t_start": b.t_start, "t_end": b.t_end}
                for b in self._branches
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hierarchy:
        """Inverse of `to_dict`."""
        for key in ("classes", "branches"):
            if key not in d:
                raise KeyError(f"Hierarchy dict lacks the key {key!r}; found {sorted(d)}.")
        branches = []
        for i, b in enumerate(d["branches"]):
            missing = {"classes", "t_start", "t_end"} - set(b)
            if missing:
                raise KeyError(f"Branch {i} of the hierarchy dict lacks {sorted(missing)}.")
            branches.append(Branch(tuple(b["classes"]), b["t_start"], b["t_end"]))
        return cls(d["classes"], branches)

    def to_newick(self, scale: str = "t", sde: MarginalCoefficients | None = None) -> str:
        """Newick string of the tree, with branch lengths on a chosen scale.

        Class names holding anything but letters, digits, ``_``, ``.`` or ``-`` are quoted
        (e.g. ``'CD4+/CD25 T Reg'``). Lengths carry 12 significant digits. A childless branch
        holding several classes (the flat hierarchy) is written as a group of zero-length
        leaves. Edit the string in any tree viewer or by hand and pass it back to
        ``BranchedDiffusion(hierarchy=...)`` (diffusion-time lengths) or `from_newick`.

        Parameters
        ----------
        scale
            ``"t"`` (default): each length is the branch's diffusion-time length, the root's
            included, so every root-to-leaf path sums to 1; the form
            ``BranchedDiffusion(hierarchy=...)`` reads. ``"log_snr"``: each length is the drop
            of the log signal-to-noise ratio lambda(t) = log(a(t)^2 / s(t)^2) over the branch
            (see `split_heights`); the root starts at lambda(1) and leaves end at
            lambda(``sde.t_min``) (lambda(0) is infinite), for viewing the tree on a scale
            where splits spread by how different the types are. Read it back with
            ``from_newick(s, scale="log_snr", sde=sde)``.
        sde
            The SDE the times belong to (e.g. ``model.sde``); needed for ``"log_snr"``.

        Raises
        ------
        ValueError
            For ``"log_snr"`` when a leaf branch ends below ``sde.t_min``.

        Examples
        --------
        >>> from scbranchdiff import Hierarchy
        >>> from scbranchdiff.diffusion import VPSDE
        >>> tree = Hierarchy.from_newick("((B:0.3,T:0.3):0.3,Mono:0.6):0.4;")
        >>> tree.to_newick()
        '((B:0.3,T:0.3):0.3,Mono:0.6):0.4;'
        >>> text = tree.to_newick(scale="log_snr", sde=VPSDE())
        >>> Hierarchy.from_newick(text, scale="log_snr", sde=VPSDE()) == tree
        True
        """
        check_scale(scale, sde)
        if scale == "t":

            def length(branch: Branch) -> float:
                return branch.length

        else:
            assert sde is not None
            t_leaf = leaf_time(sde)

            def length(branch: Branch) -> float:
                start = branch.t_start if branch.t_start > 0 else t_leaf
                if branch.t_end <= t_leaf:
                    raise ValueError(
                        f"Branch {list(branch.classes)} ends at t = {branch.t_end:.6g}, not above "
                        f"sde.t_min = {t_leaf:g}, where log-SNR leaves end: write this "
                        "hierarchy with scale='t'."
                    )
                return float(log_snr(start, sde)) - float(log_snr(branch.t_end, sde))

        def write(b: int) -> str:
            branch = self._branches[b]
            kids = self._children[b]
            if kids:
                label = "(" + ",".join(write(k) for k in kids) + ")"
            elif len(branch.classes) == 1:
                label = quote_name(branch.classes[0])
            else:  # several classes served down to t = 0 by one branch
                zero = format_length(0.0)
                label = "(" + ",".join(f"{quote_name(c)}:{zero}" for c in branch.classes) + ")"
            return f"{label}:{format_length(length(branch))}"

        return write(self.root) + ";"

    @classmethod
    def from_newick(
        cls,
        s: str,
        classes: Sequence[str] | None = None,
        *,
        scale: str = "t",
        sde: MarginalCoefficients | None = None,
    ) -> Hierarchy:
        """Hierarchy from a Newick string with branch lengths.

        With ``scale="t"`` the lengths are diffusion-time lengths: the root's length sets its
        start (1 - length) and every leaf must reach t = 0 (within 1e-9). With
        ``scale="log_snr"`` they are drops of the log signal-to-noise ratio, as written by
        ``to_newick(scale="log_snr", sde=sde)``: the root starts at lambda(1) and every leaf
        must reach lambda(``sde.t_min``) (within 1e-6). A group whose children are all
        zero-length leaves reaching the bottom is one branch holding them all (the flat
        hierarchy). A Newick string without lengths is a topology only: use
        `Topology.from_newick` and `fit_split_times`.

        Parameters
        ----------
        s
            The Newick string.
        classes
            Class order of the result; defaults to the leaf order of the string.
        scale
            ``"t"`` (default) or ``"log_snr"``: what the branch lengths measure.
        sde
            The SDE the log-SNR belongs to; needed for ``"log_snr"``.

        Examples
        --------
        >>> from scbranchdiff import Hierarchy
        >>> tree = Hierarchy.from_newick("((B:0.3,T:0.3):0.3,Mono:0.6):0.4;")
        >>> tree.split_time("B", "T"), tree.split_time("B", "Mono")
        (0.3, 0.6)
        """
        check_scale(scale, sde)
        tree = parse_newick(s)
        if _any_length_missing(tree):
            raise ValueError(
                "The Newick string lacks branch lengths (the root's included), so it gives "
                "no split times. Build a `Topology.from_newick(...)` and fit the times with "
                "`scbranchdiff.hierarchy.fit_split_times`."
            )
        if scale == "t":
            top, bottom, tolerance = 1.0, 0.0, TIME_TOLERANCE

            def to_time(height: float) -> float:
                return height

            def where(height: float) -> str:
                return (
                    f"t = {height:.6g}, not at 0: the branch lengths from the root to every "
                    "leaf must sum to 1 (a string written with scale='log_snr' is read with "
                    "`Hierarchy.from_newick(s, scale='log_snr', sde=...)`)"
                )

        else:
            assert sde is not None
            # heights grow downwards: log-SNR rises from lambda(1) at the root's top
            top, bottom = float(log_snr(1.0, sde)), float(log_snr(leaf_time(sde), sde))
            tolerance = LOG_SNR_TOLERANCE

            def to_time(height: float) -> float:
                return float(time_at_log_snr(height, sde))

            def where(height: float) -> str:
                return (
                    f"log-SNR {height:.6g}, not at lambda(t_min) = {bottom:.6g}: the branch "
                    "lengths from the root to every leaf must sum to lambda(t_min) - lambda(1) "
                    f"= {bottom - top:.6g}"
                )

        sign = -1.0 if scale == "t" else 1.0
        branches: list[Branch] = []

        def emit(node: NewickNode, t_end: float, h_end: float) -> tuple[str, ...]:
            assert node.length is not None
            h_start = h_end + sign * node.length
            reaches_bottom = abs(h_start - bottom) <= tolerance
            if node.children and reaches_bottom and all(
                not c.children and c.length == 0 for c in node.children
            ):  # one branch serving several classes down to t = 0
                names = tuple(str(c.name) for c in node.children)
                branches.append(Branch(names, 0.0, t_end))
                return names
            if node.children:
                t_start = to_time(h_start)
                names: tuple[str, ...] = ()
                for child in node.children:
                    names += emit(child, t_start, h_start)
            else:
                assert node.name is not None
                names = (node.name,)
                if not reaches_bottom:
                    raise ValueError(f"Leaf {node.name!r} ends at {where(h_start)}.")
                t_start = 0.0
            branches.append(Branch(names, t_start, t_end))
            return names

        leaf_order = emit(tree, 1.0, top)
        return cls(leaf_order if classes is None else classes, branches)

    # ------------------------------------------------------------------ continual learning
    @staticmethod
    def map_branches(old: Hierarchy, new: Hierarchy) -> dict[int, int]:
        """Match the branches of a grown hierarchy to those of the one it extends.

        Rule: let ``added`` be the classes of `new` absent from `old`. New branch ``b'`` maps
        to old branch ``b`` when ``set(b'.classes) - added == set(b.classes)`` (so the old
        class set is a subset of the new one and differs from it by new classes only) and
        ``[b'.t_start, b'.t_end]`` lies inside ``[b.t_start, b.t_end]`` (equal intervals
        included, 1e-9 tolerance). Such a new branch serves the old classes exactly where the
        old branch did, so its weights can be copied and frozen. Branches holding only new
        classes, or whose interval crosses an old split time, are not mapped.

        Returns
        -------
        ``{new branch index: old branch index}``.
        """
        added = set(new.classes) - set(old.classes)
        by_classes: dict[frozenset[str], list[int]] = {}
        for i, b in enumerate(old.branches):
            by_classes.setdefault(frozenset(b.classes), []).append(i)
        mapping: dict[int, int] = {}
        for j, b_new in enumerate(new.branches):
            kept = frozenset(b_new.classes) - added
            for i in by_classes.get(kept, []):
                b_old = old.branches[i]
                if (
                    b_old.t_start - TIME_TOLERANCE <= b_new.t_start
                    and b_new.t_end <= b_old.t_end + TIME_TOLERANCE
                ):
                    mapping[j] = i
                    break
        return mapping

    # ------------------------------------------------------------------ dunder
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hierarchy):
            return NotImplemented
        if self._classes != other._classes or self.n_branches != other.n_branches:
            return False
        return all(
            a.classes == b.classes
            and abs(a.t_start - b.t_start) <= TIME_TOLERANCE
            and abs(a.t_end - b.t_end) <= TIME_TOLERANCE
            for a, b in zip(self._branches, other._branches, strict=True)
        )

    def __hash__(self) -> int:
        return hash((self._classes, tuple(b.classes for b in self._branches)))

    def __repr__(self) -> str:
        lines = [f"Hierarchy({self.n_classes} classes, {self.n_branches} branches)"]

        def write(b: int, depth: int) -> None:
            branch = self._branches[b]
            close = "]" if b == self.root else ")"
            names = (
                f"all {self.n_classes} classes"
                if b == self.root and self.n_classes > 3
                else ", ".join(branch.classes)
            )
            lines.append(
                f"{'  ' * (depth + 1)}#{b} [{branch.t_start:.3f}, {branch.t_end:.3f}{close} {names}"
            )
            for k in self._children[b]:
                write(k, depth + 1)

        write(self.root, 0)
        return "\n".join(lines)


# ---------------------------------------------------------------------- validation helpers
def _normalise_branch(branch: Branch, order: Mapping[str, int], i: int) -> Branch:
    if not isinstance(branch, Branch):
        raise TypeError(f"Branch {i} must be a `Branch`, got {type(branch).__name__}.")
    if not branch.classes:
        raise ValueError(f"Branch {i} holds no classes.")
    unknown = sorted(set(branch.classes) - set(order))
    if unknown:
        raise ValueError(f"Branch {i} holds classes {unknown} that are not in `classes`.")
    if len(set(branch.classes)) != len(branch.classes):
        raise ValueError(f"Branch {i} names a class twice: {list(branch.classes)}.")
    if not (math.isfinite(branch.t_start) and math.isfinite(branch.t_end)):
        raise ValueError(
            f"Branch {i} has a non-finite interval [{branch.t_start}, {branch.t_end})."
        )
    if not 0.0 <= branch.t_start < branch.t_end <= 1.0:
        raise ValueError(
            f"Branch {i} ({list(branch.classes)}) has interval [{branch.t_start}, "
            f"{branch.t_end}); expected 0 <= t_start < t_end <= 1."
        )
    ordered = tuple(sorted(branch.classes, key=order.__getitem__))
    return Branch(ordered, branch.t_start, branch.t_end)


def _class_paths(classes: tuple[str, ...], branches: list[Branch]) -> dict[str, list[int]]:
    """For each class, its branches from the root down; checks they tile [0, 1] and nest."""
    holding: dict[str, list[int]] = {c: [] for c in classes}
    for i, b in enumerate(branches):
        for c in b.classes:
            holding[c].append(i)
    paths: dict[str, list[int]] = {}
    for c in classes:
        path = sorted(holding[c], key=lambda i: branches[i].t_start, reverse=True)
        if not path:
            raise ValueError(f"Class {c!r} lies in no branch.")
        top, bottom = branches[path[0]], branches[path[-1]]
        if top.t_end != 1.0:
            raise ValueError(
                f"Class {c!r} is in no branch reaching t = 1 (its top ends at {top.t_end})."
            )
        if bottom.t_start != 0.0:
            raise ValueError(
                f"Class {c!r} is in no branch reaching t = 0 (its lowest starts at "
                f"{bottom.t_start})."
            )
        for upper, lower in zip(path[:-1], path[1:], strict=True):
            b_up, b_low = branches[upper], branches[lower]
            if b_low.t_end != b_up.t_start:
                kind = "overlap" if b_low.t_end > b_up.t_start else "leave a gap"
                raise ValueError(
                    f"Class {c!r}: branches {list(b_up.classes)} [{b_up.t_start}, {b_up.t_end}) "
                    f"and {list(b_low.classes)} [{b_low.t_start}, {b_low.t_end}) {kind}; a child "
                    "must end where its parent starts, so that each (class, t) lies in exactly "
                    "one branch."
                )
            if not set(b_low.classes) <= set(b_up.classes):
                raise ValueError(
                    f"Branch {list(b_low.classes)} does not nest in the branch above it, "
                    f"{list(b_up.classes)}."
                )
        paths[c] = path
    tops = {paths[c][0] for c in classes}
    if len(tops) != 1 or set(branches[next(iter(tops))].classes) != set(classes):
        raise ValueError(
            "There must be a single root branch holding every class up to t = 1; found "
            f"{[list(branches[i].classes) for i in sorted(tops)]}."
        )
    return paths


def _links(
    classes: tuple[str, ...], branches: list[Branch], paths: Mapping[str, list[int]]
) -> tuple[list[int | None], list[list[int]]]:
    parent: list[int | None] = [None] * len(branches)
    children: list[list[int]] = [[] for _ in branches]
    for c in classes:
        for upper, lower in zip(paths[c][:-1], paths[c][1:], strict=True):
            if parent[lower] is None:
                parent[lower] = upper
                children[upper].append(lower)
    return parent, children


# ---------------------------------------------------------------------- tree helpers
def _absorb_equal_times(
    node: tuple[Any, ...], t_split: float, time_of: Any
) -> list[TopologyNode]:
    """Children of `node`, with children that split at the same time replaced by theirs."""
    out: list[TopologyNode] = []
    for child in node:
        if not isinstance(child, str) and time_of(child) == t_split:
            out.extend(_absorb_equal_times(child, t_split, time_of))
        else:
            out.append(child)
    return out


def _any_length_missing(node: NewickNode) -> bool:
    return node.length is None or any(_any_length_missing(c) for c in node.children)
