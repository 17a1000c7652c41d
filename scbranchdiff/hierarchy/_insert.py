"""Growing a hierarchy by new classes without touching the old tree (continual learning).

Each new class joins the existing tree where the discovery criterion says it becomes
indistinguishable from it: walking down from the root, it follows the child it crosses before
that child's parent splits; it joins the branch where no child is that close, at its crossover
time with the branch's classes (the linkage of `discover_hierarchy`). A join inside a branch
splits that branch in two at the join time; a join at the branch's own split time adds the new
class as one more child there. Old split times never move, so every old branch maps onto one or
two new branches with the same classes plus new ones (`Hierarchy.map_branches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._discovery import (
    CRITERIA,
    LINKAGES,
    MarginalCoefficients,
    _check_min_branch_length,
    crossover_times,
    linkage_height,
)
from ._hierarchy import TIME_TOLERANCE, Branch, Hierarchy


def insert_classes(
    old: Hierarchy,
    latent: np.ndarray,
    labels: Sequence[str] | np.ndarray | pd.Series,
    *,
    sde: MarginalCoefficients,
    new_classes: Sequence[str] | None = None,
    criterion: str = "gaussian",
    linkage: str | None = None,
    min_branch_length: float = 0.01,
    **crossover_kwargs: Any,
) -> Hierarchy:
    """Add classes to a hierarchy, keeping every old branch point.

    Crossover times come from :func:`crossover_times` with the same criterion as
    :func:`discover_hierarchy`. New classes are inserted one at a time, in the order of
    `new_classes`. Starting at the root, a new class ``n`` moves into the child ``k`` of the
    current branch with the smallest linkage height ``h_k`` (the `linkage` of its crossover
    times with ``k``'s classes) when ``h_k`` lies below the branch's split time; otherwise it
    joins the current branch at ``h`` (its height with the branch's classes), which then splits
    in two there: ``[h, t_end)`` holding the old classes and ``n``, ``[t_start, h)`` the old
    classes only, and a new leaf ``[0, h)`` for ``n``. Joins within `min_branch_length` of the
    branch's split time happen at that split time (one more child, no new split).

    Parameters
    ----------
    old
        The hierarchy to extend (not modified).
    latent
        Cells x dimensions, centred and scaled exactly as for training: cells of the new classes
        and reference cells of the old classes.
    labels
        Class of each cell. Old classes without cells are left out of the linkage heights.
    sde
        The training SDE (``alpha(t)``, ``sigma(t)``).
    new_classes
        The classes to add, in the order they are appended to ``old.classes``. Default: the
        labels not in ``old.classes``, in order of first appearance (categories order for a
        categorical).
    criterion
        ``"gaussian"`` or ``"cosine"``, as in :func:`crossover_times`.
    linkage
        ``"single"``, ``"average"`` or ``"complete"``: how crossover times with a group's
        classes become one height. Default as in :func:`discover_hierarchy` (single for
        cosine, average for gaussian).
    min_branch_length
        Shortest diffusion-time length of a new piece of branch.
    **crossover_kwargs
        Other arguments of :func:`crossover_times` (delta, epsilon, n_times, seed, ...).

    Returns
    -------
    The grown hierarchy, with classes ``old.classes + new_classes``. Old classes keep their
    indices; `Hierarchy.map_branches(old, result)` maps every branch of the result that serves
    old classes where an old branch did.

    Raises
    ------
    ValueError
        When a new class is already in `old`, has no cells, a new class is repeated, no cells of
        any old class are given, or `old` is a flat hierarchy of several classes (it has no
        branch points to keep).

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.diffusion import VPSDE
    >>> rng = np.random.default_rng(0)
    >>> centres = {"B": [0, 0], "T": [0.6, 0], "Mono": [5, 5]}
    >>> latent = np.concatenate([rng.normal(size=(100, 2)) * 0.3 + c for c in centres.values()])
    >>> latent = (latent - latent.mean(0)) / latent.std()  # centred and scaled, like the model's
    >>> labels = np.repeat(list(centres), 100)
    >>> from scbranchdiff.hierarchy import discover_hierarchy, insert_classes
    >>> old = discover_hierarchy(latent[labels != "T"], labels[labels != "T"], sde=VPSDE())
    >>> grown = insert_classes(old, latent, labels, sde=VPSDE())
    >>> grown.classes  # new classes last
    ('B', 'Mono', 'T')
    >>> grown.split_time("B", "Mono") == old.split_time("B", "Mono")  # old split times kept
    True
    """
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {CRITERIA}, got {criterion!r}.")
    if linkage is None:
        linkage = "single" if criterion == "cosine" else "average"
    if linkage not in LINKAGES:
        raise ValueError(f"`linkage` must be one of {LINKAGES}, got {linkage!r}.")
    _check_min_branch_length(min_branch_length)
    label_values = np.asarray(pd.Series(labels).astype(str), dtype=object)
    present = list(dict.fromkeys(_first_appearance(labels, label_values)))
    if new_classes is None:
        new_classes = [c for c in present if c not in old.classes]
    new_classes = [str(c) for c in new_classes]
    if not new_classes:
        raise ValueError(
            f"`labels` holds no class outside the hierarchy's {list(old.classes)}: nothing to add."
        )
    known = sorted(set(new_classes) & set(old.classes))
    if known:
        raise ValueError(f"`new_classes` {known} are already in the hierarchy.")
    repeated = sorted({c for c in new_classes if new_classes.count(c) > 1})
    if repeated:
        raise ValueError(f"`new_classes` must be unique; repeated: {repeated}.")
    missing = [c for c in new_classes if c not in present]
    if missing:
        raise ValueError(f"`new_classes` {missing} have no cells in `labels`.")
    reference = [c for c in old.classes if c in present]
    if not reference:
        raise ValueError(
            f"`labels` holds no cells of the hierarchy's classes {list(old.classes)}: the join "
            "points need reference cells of the old classes."
        )
    if old.is_flat and old.n_classes > 1:
        raise ValueError(
            "`old` is flat (one branch for all classes): it has no branch points to keep. "
            "Discover a new hierarchy instead."
        )
    other = sorted(set(present) - set(old.classes) - set(new_classes))
    keep = np.isin(label_values, list(old.classes) + new_classes)
    if other:
        label_values = label_values[keep]
        latent = np.asarray(latent)[keep]
    order, times = crossover_times(
        latent, label_values, sde=sde, classes=reference + new_classes,
        criterion=criterion, **crossover_kwargs,
    )
    index = {c: i for i, c in enumerate(order)}

    hierarchy = old
    for new in new_classes:

        def height(classes: Sequence[str], new: str = new) -> float:
            cols = [index[c] for c in classes if c in index]
            return linkage_height(times[index[new], cols], linkage) if cols else np.inf

        hierarchy = _insert_one(hierarchy, new, height, min_branch_length)
    return hierarchy


def _first_appearance(labels: Any, values: np.ndarray) -> list[str]:
    if isinstance(labels, pd.Series):
        labels = labels.array
    if isinstance(labels, pd.Categorical):
        used = set(values)
        return [str(c) for c in labels.categories if str(c) in used]
    return list(pd.unique(values))


def _insert_one(hierarchy: Hierarchy, new: str, height: Any, gap: float) -> Hierarchy:
    """Insert one class: find its branch and join time, then rebuild the tree."""
    b = hierarchy.root
    while True:
        branch = hierarchy.branches[b]
        kids = hierarchy.children(b)
        if kids:
            heights = [height(hierarchy.branches[k].classes) for k in kids]
            best = int(np.argmin(heights))
            if heights[best] < branch.t_start - TIME_TOLERANCE:
                b = kids[best]
                continue
        break
    t_join = _join_time(height(branch.classes), branch, gap)
    classes = hierarchy.classes + (new,)
    branches: list[Branch] = []
    ancestors = set(_ancestors(hierarchy, b))
    for i, old_branch in enumerate(hierarchy.branches):
        grown = old_branch.classes + (new,)
        if i in ancestors:
            branches.append(Branch(grown, old_branch.t_start, old_branch.t_end))
        elif i == b and t_join > old_branch.t_start + TIME_TOLERANCE:
            # split the branch at the join time: the upper piece also serves the new class
            branches.append(Branch(grown, t_join, old_branch.t_end))
            branches.append(Branch(old_branch.classes, old_branch.t_start, t_join))
        elif i == b:
            # join at the branch's own split time: one more child
            branches.append(Branch(grown, old_branch.t_start, old_branch.t_end))
        else:
            branches.append(old_branch)
    branches.append(Branch((new,), 0.0, t_join))
    return Hierarchy(classes, branches)


def _ancestors(hierarchy: Hierarchy, b: int) -> list[int]:
    out = []
    parent = hierarchy.parent(b)
    while parent is not None:
        out.append(parent)
        parent = hierarchy.parent(parent)
    return out


def _join_time(h: float, branch: Branch, gap: float) -> float:
    """Where on `branch` the new class joins: its height, kept `gap` away from the ends."""
    s, e = branch.t_start, branch.t_end
    t = min(max(h, s), e)
    if e - t < max(gap, TIME_TOLERANCE):
        t = e - gap if gap > 0 else (s + e) / 2
    if s == 0.0:
        # a leaf: the new class needs a leaf of its own of some length
        t = max(t, gap) if e - gap >= gap else e / 2
    elif t - s < gap:
        t = s
    return float(t)
