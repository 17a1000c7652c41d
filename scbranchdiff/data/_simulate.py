"""Negative-binomial counts from a known cell-type tree: ground truth for hierarchy tests."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._frames import plain_strings

Tree = Mapping | Sequence

DEFAULT_TREE: dict = {
    "lymphoid": {
        "T": ["T_CD4", "T_CD8"],
        "B": ["B_naive", "B_memory"],
    },
    "myeloid": {
        "mono": ["mono_classical", "mono_nonclassical"],
        "DC": ["DC_conventional", "DC_plasmacytoid"],
    },
}
"""Default tree: 2 lineages -> 4 types -> 8 subtypes (3 levels)."""


_RESERVED_PROGRAMS = ("state", "background")


@dataclass(frozen=True)
class _Node:
    """A node of the tree other than the root: its name and depth (1 = child of the root)."""

    name: str
    depth: int


def simulate_hierarchy(
    tree: Tree | None = None,
    n_cells_per_type: int | Mapping[str, int] = 200,
    n_genes: int = 500,
    *,
    genes_per_program: int = 20,
    depth_effect: float | Sequence[float] = (1.6, 1.2, 0.8),
    state_program: bool = True,
    state_effect: float = 2.0,
    library_size: float = 2000.0,
    library_size_log_sd: float = 0.3,
    dispersion: float = 0.2,
    n_batches: int = 1,
    batch_effect: float = 0.3,
    seed: int = 0,
) -> tuple[AnnData, Tree]:
    """Simulate single-cell counts whose cell types follow a known tree.

    Every node of the tree below the root (coarse groups and leaf cell types alike) owns a
    program of ``genes_per_program`` genes that it up-regulates, so a cell of a leaf type
    expresses the programs of all its ancestors: types that share ancestors share programs,
    and siblings are closer than cousins. Coarser levels have stronger effects by default
    (``depth_effect``). A continuous ``state`` in [0, 1], drawn independently of the type,
    drives one more program of its own genes (disjoint from every type program), the kind of
    within-type variation that transmutation must keep. The remaining genes are background.

    Model, for cell ``c`` and gene ``g``::

        log w_cg = log p_g + sum_{nodes v on c's path} depth_effect[depth(v)] * e_g * [g in v]
                   + state_effect * state_c * [g in state program] + batch_{b(c), g}
        mu_cg = L_c * w_cg / sum_g w_cg,   L_c ~ LogNormal(log library_size, library_size_log_sd)
        x_cg ~ NegativeBinomial(mean mu_cg, variance mu_cg + dispersion * mu_cg^2)

    with baseline proportions ``log p_g ~ N(0, 1)`` and per-gene effect multipliers
    ``e_g ~ Uniform(0.5, 1.5)``.

    Parameters
    ----------
    tree
        The cell-type tree as a nested structure, the form ``Hierarchy.from_nested`` reads:
        a mapping from a group name to its subtree (``None`` for a leaf), or a list of leaf
        names and mappings. Leaves are the cell types. Unnamed nested lists are groups named
        by their leaves joined with ``"/"``. Defaults to :data:`DEFAULT_TREE` (8 types over
        3 levels).
    n_cells_per_type
        Cells per leaf type: one number for all, or a mapping from type to number. Types
        left out get no cells and are not categories of ``obs`` (the returned ``tree`` still
        holds them), so a mapping can simulate a subset of the tree, e.g. to hold a type out.
    n_genes
        Number of genes; must hold every program.
    genes_per_program
        Genes up-regulated by each node of the tree (and by the state program).
    depth_effect
        Log fold change of a node's program by depth (first entry: children of the root);
        the last entry is used for deeper levels. A single number applies to every level.
    state_program
        Whether to simulate the continuous state and its program. ``obs["state"]`` is always
        written; without the program it has no effect on expression.
    state_effect
        Log fold change of the state program between ``state = 0`` and ``state = 1``.
    library_size
        Median total counts per cell.
    library_size_log_sd
        Standard deviation of the log total counts per cell.
    dispersion
        Negative-binomial dispersion ``phi`` (variance ``mu + phi * mu^2``; ``1 / phi`` is
        scvi-tools' inverse dispersion ``theta``). 0 gives Poisson counts.
    n_batches
        Number of batches, assigned at random; each shifts every gene's log mean by
        ``N(0, batch_effect)``. With 1 there is no batch effect.
    batch_effect
        Standard deviation of the per-batch, per-gene log fold change.
    seed
        Seed of the random generator; the same arguments give the same data.

    Returns
    -------
    adata
        Cells x genes with ``X`` and ``layers["counts"]`` the integer counts (CSR
        ``float32``); ``obs`` with ``level_1``, ..., ``level_{d-1}`` (coarse to fine group of
        each cell; a leaf shallower than the tree repeats its own name), ``cell_type``,
        ``state`` (in [0, 1]), ``batch`` and ``library_size`` (the simulated ``L_c``), all
        label columns categorical in tree order; ``var["program"]`` naming the node that owns
        each gene (``"state"`` or ``"background"`` otherwise); ``uns["simulation"]`` the
        arguments.
    tree
        A copy of the tree that generated the data (the default one when ``tree`` is
        ``None``), for ``Hierarchy.from_nested``.

    Raises
    ------
    ValueError
        If the tree is empty or has repeated names, the programs do not fit in ``n_genes``,
        or a number is out of range.
    KeyError
        If ``n_cells_per_type`` names a type that is not a leaf of the tree.

    Examples
    --------
    >>> from scbranchdiff.data import simulate_hierarchy
    >>> adata, tree = simulate_hierarchy(n_cells_per_type=50, seed=1)
    >>> adata.obs["cell_type"].nunique(), sorted(tree)
    (8, ['lymphoid', 'myeloid'])
    """
    tree = copy.deepcopy(DEFAULT_TREE if tree is None else tree)
    paths = _leaf_paths(tree)
    _check_paths(paths)
    cell_types = [path[-1].name for path in paths]
    counts_per_type = _cells_per_type(n_cells_per_type, cell_types)
    nodes = list(dict.fromkeys(node for path in paths for node in path))
    effects = _effects_by_depth(depth_effect, max(node.depth for node in nodes))
    n_programs = len(nodes) + int(state_program)
    if genes_per_program < 1 or n_programs * genes_per_program > n_genes:
        raise ValueError(
            f"n_genes={n_genes} cannot hold {n_programs} programs of genes_per_program="
            f"{genes_per_program} genes; expected n_genes >= {n_programs * genes_per_program}."
        )
    for name, value in [("library_size", library_size), ("n_batches", n_batches)]:
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    for name, value in [
        ("dispersion", dispersion),
        ("library_size_log_sd", library_size_log_sd),
        ("batch_effect", batch_effect),
    ]:
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}.")

    rng = np.random.default_rng(seed)
    # Programs occupy disjoint random genes so that gene order carries no information.
    gene_order = rng.permutation(n_genes)
    program_genes = {
        name: gene_order[i * genes_per_program : (i + 1) * genes_per_program]
        for i, name in enumerate([node.name for node in nodes] + ["state"] * state_program)
    }
    log_baseline = rng.normal(0.0, 1.0, size=n_genes)
    gene_effect = rng.uniform(0.5, 1.5, size=n_genes)

    # log fold change of every gene in every leaf type: the sum over the nodes on its path.
    type_log_fc = np.zeros((len(paths), n_genes))
    for k, path in enumerate(paths):
        for node in path:
            genes = program_genes[node.name]
            type_log_fc[k, genes] += effects[node.depth - 1] * gene_effect[genes]

    type_of_cell = np.repeat(np.arange(len(paths)), [counts_per_type[name] for name in cell_types])
    n_cells = type_of_cell.size
    if n_cells == 0:
        raise ValueError("n_cells_per_type asks for no cells at all.")
    state = rng.uniform(0.0, 1.0, size=n_cells)
    batch = rng.integers(n_batches, size=n_cells)
    # One batch means no batch effect, whatever batch_effect says.
    batch_log_fc = rng.normal(0.0, batch_effect * (n_batches > 1), size=(n_batches, n_genes))
    library = library_size * np.exp(rng.normal(0.0, library_size_log_sd, size=n_cells))

    log_weight = log_baseline + type_log_fc[type_of_cell] + batch_log_fc[batch]
    if state_program:
        genes = program_genes["state"]
        log_weight[:, genes] += state_effect * state[:, None] * gene_effect[genes]
    weight = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
    mean = library[:, None] * weight / weight.sum(axis=1, keepdims=True)
    counts = _negative_binomial(rng, mean, dispersion)

    adata = AnnData(
        X=sp.csr_matrix(counts, dtype=np.float32),
        obs=plain_strings(_annotation(paths, type_of_cell, state, batch, n_batches, library)),
        var=plain_strings(_gene_programs(n_genes, program_genes)),
    )
    adata.layers["counts"] = adata.X.copy()
    adata.uns["simulation"] = {
        "seed": seed,
        "n_genes": n_genes,
        "genes_per_program": genes_per_program,
        "depth_effect": list(effects),
        "state_program": state_program,
        "state_effect": state_effect,
        "library_size": library_size,
        "library_size_log_sd": library_size_log_sd,
        "dispersion": dispersion,
        "n_batches": n_batches,
        "batch_effect": batch_effect,
    }
    return adata, tree


def _leaf_paths(tree: Tree) -> list[tuple[_Node, ...]]:
    """Path of nodes (below the root) from the top to each leaf, leaves in tree order."""

    def walk(subtree: object, depth: int) -> list[tuple[_Node, ...]]:
        if isinstance(subtree, str):
            return [(_Node(subtree, depth),)]
        if isinstance(subtree, Mapping):
            paths = []
            for name, child in subtree.items():
                if not isinstance(name, str):
                    raise ValueError(f"tree names must be strings, got {name!r}.")
                if child is None:
                    paths.append((_Node(name, depth),))
                else:
                    below = walk(child, depth + 1)
                    if not below:
                        raise ValueError(f"tree group {name!r} has no cell types below it.")
                    paths.extend((_Node(name, depth), *path) for path in below)
            return paths
        if isinstance(subtree, Sequence):
            paths = []
            for child in subtree:
                if isinstance(child, (str, Mapping)):
                    paths.extend(walk(child, depth))
                elif isinstance(child, Sequence):
                    below = walk(child, depth + 1)
                    if not below:
                        raise ValueError("tree has an empty group.")
                    group = _Node("/".join(path[-1].name for path in below), depth)
                    paths.extend((group, *path) for path in below)
                else:
                    raise ValueError(
                        f"tree entries must be names, mappings or lists, got {child!r}."
                    )
            return paths
        raise ValueError(f"tree must be a mapping or a list, got {type(subtree).__name__}.")

    if isinstance(tree, str):
        raise ValueError(
            f"tree must be a mapping or a list of cell types, got the string {tree!r}."
        )
    return walk(tree, 1)


def _check_paths(paths: list[tuple[_Node, ...]]) -> None:
    """A tree needs cell types, and every name (group or type) must name one node."""
    if not paths:
        raise ValueError("tree has no cell types.")
    seen: dict[str, tuple[str, ...]] = {}
    for path in paths:
        for i, node in enumerate(path):
            if node.name in _RESERVED_PROGRAMS:
                raise ValueError(
                    f"tree may not name a node {node.name!r}; it names a gene program in "
                    "var['program']."
                )
            ancestry = tuple(n.name for n in path[: i + 1])
            if seen.setdefault(node.name, ancestry) != ancestry:
                raise ValueError(f"tree uses the name {node.name!r} for more than one node.")


def _cells_per_type(n_cells_per_type: int | Mapping[str, int], cell_types: list[str]) -> dict:
    if isinstance(n_cells_per_type, Mapping):
        unknown = sorted(set(n_cells_per_type) - set(cell_types))
        if unknown:
            raise KeyError(
                f"n_cells_per_type names {unknown}, which are not cell types of the tree "
                f"({cell_types})."
            )
        numbers = {name: int(n_cells_per_type.get(name, 0)) for name in cell_types}
    else:
        numbers = dict.fromkeys(cell_types, int(n_cells_per_type))
    if any(n < 0 for n in numbers.values()):
        raise ValueError(f"n_cells_per_type must be non-negative, got {numbers}.")
    return numbers


def _effects_by_depth(depth_effect: float | Sequence[float], depth: int) -> list[float]:
    if np.isscalar(depth_effect):
        depth_effect = [depth_effect]
    effects = [float(effect) for effect in depth_effect]
    if not effects:
        raise ValueError("depth_effect must hold at least one number.")
    return (effects + [effects[-1]] * depth)[:depth]


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, dispersion: float) -> np.ndarray:
    """NB(mean, variance mean + dispersion mean^2) as a gamma-Poisson mixture."""
    if dispersion == 0:
        return rng.poisson(mean)
    rate = rng.gamma(shape=1.0 / dispersion, scale=mean * dispersion)
    return rng.poisson(rate)


def _annotation(
    paths: list[tuple[_Node, ...]],
    type_of_cell: np.ndarray,
    state: np.ndarray,
    batch: np.ndarray,
    n_batches: int,
    library: np.ndarray,
) -> pd.DataFrame:
    """obs: one label column per level (coarse to fine), then state, batch and library size."""
    n_levels = max(len(path) for path in paths)
    # A leaf shallower than the tree keeps its own name at the deeper levels, so columns nest.
    levels = [[path[min(i, len(path) - 1)].name for path in paths] for i in range(n_levels)]
    columns = [f"level_{i + 1}" for i in range(n_levels - 1)] + ["cell_type"]
    obs = pd.DataFrame(
        {
            column: pd.Categorical(
                np.asarray(names, dtype=object)[type_of_cell], categories=list(dict.fromkeys(names))
            )
            for column, names in zip(columns, levels, strict=True)
        },
        index=pd.Index([f"cell_{i:05d}" for i in range(type_of_cell.size)]),
    )
    # Types given no cells are not labels of this dataset (a model would get empty classes).
    obs = obs.apply(lambda labels: labels.cat.remove_unused_categories())
    obs["state"] = state
    batches = [f"batch_{b}" for b in range(n_batches)]
    obs["batch"] = pd.Categorical(np.asarray(batches, dtype=object)[batch], categories=batches)
    obs["library_size"] = library
    return obs


def _gene_programs(n_genes: int, program_genes: dict[str, np.ndarray]) -> pd.DataFrame:
    program = np.full(n_genes, "background", dtype=object)
    for name, genes in program_genes.items():
        program[genes] = name
    return pd.DataFrame(
        {"program": pd.Categorical(program, categories=[*program_genes, "background"])},
        index=pd.Index([f"gene_{g:04d}" for g in range(n_genes)]),
    )
