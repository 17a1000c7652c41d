"""Discovering a class hierarchy from data: when do two classes become indistinguishable?

Each class's cells are pushed through the forward VP kernel x_t = a(t) x_0 + s(t) z of the
SDE used for training, in the latent space used for training. The crossover time of two classes
is the first t at which their noised distributions are (nearly) indistinguishable; classes are
then merged in order of crossover time, and each merge becomes a branch point.

Two criteria decide "indistinguishable":

``"cosine"`` (the paper, Tseng et al. 2024)
    Mean cosine similarity of index-paired noised samples between two classes, against the
    mean within each class, smoothed over time; crossover when
    inter(i, j) >= (intra(i) + intra(j)) / 2 - epsilon. Merged by single linkage.
``"gaussian"``
    Closed-form moments: class c noised to time t has mean a(t) mu_c and covariance
    a(t)^2 Sigma_c + s(t)^2 I. The Bhattacharyya distance D_B(t) between the two Gaussians
    falls monotonically in t (both pass through the same Markov kernel), and the Bayes error
    of telling them apart is at least (1 - sqrt(1 - exp(-2 D_B))) / 2. Crossover = first t at
    which that lower bound reaches 1/2 - delta, i.e. no classifier can beat accuracy 1/2 + delta
    on the Gaussian surrogates. No smoothing, no sampling noise, and delta has a meaning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d

from ._hierarchy import Hierarchy
from ._scale import MarginalCoefficients
from ._topology import Topology, TopologyNode, leaves

CRITERIA = ("gaussian", "cosine")
LINKAGES = ("single", "average", "complete")
_LINKAGE_FUNCTIONS = {"single": np.min, "average": np.mean, "complete": np.max}
# `fit_split_times` names the same rules by the statistic they take.
_REDUCE_LINKAGES = {"mean": "average", "min": "single", "max": "complete"}
# Floats held at once when noising samples for the cosine criterion (~32 MB).
_CHUNK_FLOATS = 4_000_000


# ---------------------------------------------------------------------- public API
def crossover_times(
    latent: np.ndarray,
    labels: Sequence[str] | np.ndarray | pd.Series,
    *,
    sde: MarginalCoefficients,
    classes: Sequence[str] | None = None,
    criterion: str = "gaussian",
    n_cells_per_class: int = 100,
    n_times: int = 1000,
    smoothing_sigma: float = 3.0,
    epsilon: float = 0.01,
    delta: float = 0.1,
    seed: int | np.random.Generator | None = 0,
) -> tuple[tuple[str, ...], np.ndarray]:
    """Time at which each pair of classes becomes indistinguishable under forward diffusion.

    Parameters
    ----------
    latent
        Cells x dimensions, already centred and scaled exactly as for training.
    labels
        Class of each cell.
    sde
        The training SDE; only ``alpha(t)`` and ``sigma(t)`` on numpy arrays are used.
    classes
        Class order of the result. Default: the categories of a categorical `labels`, else the
        sorted unique labels. A listed class without cells crosses every class at t = 1
        (with a warning).
    criterion
        ``"gaussian"`` (Bayes-error bound on the moments, the default) or ``"cosine"`` (the
        paper's). See the module docstring.
    n_cells_per_class
        Cells drawn per class for ``"cosine"`` (with replacement when a class has fewer).
        ``"gaussian"`` uses the moments of all cells.
    n_times
        Size of the evenly spaced time grid on [0, 1].
    smoothing_sigma
        ``"cosine"``: width, in grid steps, of the Gaussian filter over time.
    epsilon
        ``"cosine"``: crossover when inter >= mean intra - epsilon (paper: 0.005; 0.01 for
        single-cell data).
    delta
        ``"gaussian"``: crossover when the Bayes error lower bound reaches 1/2 - delta.
    seed
        Seed or generator for the cell draws and noise of ``"cosine"``.

    Returns
    -------
    classes
        Class names, in matrix order.
    times
        Symmetric K x K matrix of crossover times (0 on the diagonal). A pair that never
        crosses by t = 1 gets 1 (with a warning).

    Notes
    -----
    A class with a single cell is a point mass: ``"cosine"`` pairs independent noisings of
    that cell as its intra-class pairs, ``"gaussian"`` gives it zero covariance.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.diffusion import VPSDE
    >>> rng = np.random.default_rng(0)
    >>> centres = {"B": [0, 0], "T": [0.6, 0], "Mono": [5, 5]}
    >>> latent = np.concatenate([rng.normal(size=(100, 2)) * 0.3 + c for c in centres.values()])
    >>> latent = (latent - latent.mean(0)) / latent.std()  # centred and scaled, like the model's
    >>> labels = np.repeat(list(centres), 100)
    >>> from scbranchdiff.hierarchy import crossover_times
    >>> classes, times = crossover_times(latent, labels, sde=VPSDE())
    >>> classes
    ('B', 'Mono', 'T')
    >>> bool(times[0, 2] < times[0, 1])  # B and T become alike sooner than B and Mono
    True
    """
    latent, codes, classes_out = _prepare(latent, labels, classes)
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {CRITERIA}, got {criterion!r}.")
    if n_times < 2:
        raise ValueError(f"`n_times` must be at least 2, got {n_times}.")
    k = len(classes_out)
    counts = np.bincount(codes, minlength=k)
    empty = counts == 0
    if empty.any():
        warnings.warn(
            f"Classes {[classes_out[i] for i in np.flatnonzero(empty)]} have no cells; they "
            "are treated as crossing every class at t = 1 (merged at the root).",
            stacklevel=2,
        )
    present = np.flatnonzero(~empty)
    times = np.ones((k, k))
    if len(present) > 1:
        grid = np.linspace(0.0, 1.0, n_times)
        groups = [latent[codes == c] for c in present]
        if criterion == "cosine":
            if not 0 < epsilon < 1:
                raise ValueError(f"`epsilon` must lie in (0, 1), got {epsilon}.")
            sub = _cosine_crossovers(
                groups, grid, sde, n_cells_per_class, smoothing_sigma, epsilon,
                np.random.default_rng(seed),
            )
        else:
            if not 0 < delta < 0.5:
                raise ValueError(f"`delta` must lie in (0, 0.5), got {delta}.")
            sub = _gaussian_crossovers(groups, grid, sde, delta)
        never = np.isinf(sub)
        if never.any():
            pairs = [
                (classes_out[present[i]], classes_out[present[j]])
                for i, j in zip(*np.nonzero(np.triu(never)), strict=True)
            ]
            warnings.warn(
                f"{len(pairs)} class pairs never become indistinguishable by t = 1 (e.g. "
                f"{pairs[:3]}); they are given crossover time 1. Check that the latent is "
                "scaled as for training and that the SDE reaches its prior.",
                stacklevel=2,
            )
            sub[never] = 1.0
        times[np.ix_(present, present)] = sub
    np.fill_diagonal(times, 0.0)
    return classes_out, times


def discover_hierarchy(
    latent: np.ndarray,
    labels: Sequence[str] | np.ndarray | pd.Series,
    *,
    sde: MarginalCoefficients,
    classes: Sequence[str] | None = None,
    criterion: str = "gaussian",
    linkage: str | None = None,
    n_cells_per_class: int = 100,
    n_times: int = 1000,
    smoothing_sigma: float = 3.0,
    epsilon: float = 0.01,
    delta: float = 0.1,
    min_branch_length: float = 0.01,
    seed: int | np.random.Generator | None = 0,
) -> Hierarchy:
    """Discover the branch points of a class hierarchy from a latent space.

    Crossover times come from `crossover_times`; classes are then merged agglomeratively in
    increasing crossover time. Merge time = max(linkage height, each merged group's previous
    merge time + `min_branch_length`); the root keeps at least `min_branch_length` below t = 1.

    Parameters
    ----------
    latent, labels, sde, classes, n_cells_per_class, n_times, smoothing_sigma, epsilon, delta, seed
        As in `crossover_times`.
    criterion
        ``"gaussian"`` (default) or ``"cosine"`` (the paper's, exactly as published when
        `linkage` is left at single).

        Why ``"gaussian"`` (with average linkage) is the default, measured with the VP SDE
        (b0 = 0.1, b1 = 20) by ``benchmarks/lineage.py`` (PCA 10/20/30 of log-normalised
        counts, both latent scalings; see the benchmarks page):

        - agreement with known trees (FACS-sorted PBMC annotation, two simulated count trees
          with 8 and 14 types): mean triplet agreement 0.92 (average and single linkage
          tie: 0.920 and 0.923; average recovers 45/60 simulated trees, single 44/60);
          the paper's cosine criterion 0.82-0.83 with single or average linkage.
        - robust to how the latent is scaled: under one global scale both criteria score
          0.95; under per-dimension standardisation the Gaussian criterion keeps 0.89, the
          cosine criterion falls to 0.70.
        - no sampling noise, no smoothing, and `delta` is a classifier accuracy (a pair has
          crossed when no classifier can beat accuracy 1/2 + delta on the Gaussian
          surrogates) instead of a similarity margin. delta in 0.05-0.2 gave the same trees;
          a larger delta moves all splits earlier.

        Neither criterion spreads the split times: with b1 = 20 a pair crosses when
        a(t)^2 / s(t)^2 falls below a constant over its squared separation, so splits crowd
        where a(t) collapses (PBMC 0.42-0.76, paul15 0.53-0.73; inner branches down to
        `min_branch_length`). Read heights on the log-SNR scale instead
        (`Hierarchy.split_heights`): there a split sits at about log(8 theta) - 2 log D for
        types a distance D apart, theta = -log(1 - 4 delta^2) / 2.
    linkage
        ``"single"`` (the paper's), ``"average"`` (UPGMA on crossover times) or
        ``"complete"``. Default: single for ``"cosine"``, average for ``"gaussian"``.
    min_branch_length
        Shortest diffusion-time length of a branch (so every head gets training time).

    Returns
    -------
    The hierarchy, with classes in the order of `crossover_times`.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.diffusion import VPSDE
    >>> rng = np.random.default_rng(0)
    >>> centres = {"B": [0, 0], "T": [0.6, 0], "Mono": [5, 5]}
    >>> latent = np.concatenate([rng.normal(size=(100, 2)) * 0.3 + c for c in centres.values()])
    >>> latent = (latent - latent.mean(0)) / latent.std()  # centred and scaled, like the model's
    >>> labels = np.repeat(list(centres), 100)
    >>> from scbranchdiff.hierarchy import discover_hierarchy
    >>> tree = discover_hierarchy(latent, labels, sde=VPSDE())
    >>> bool(tree.split_time("B", "T") < tree.split_time("B", "Mono"))
    True
    """
    if linkage is None:
        linkage = "single" if criterion == "cosine" else "average"
    if linkage not in LINKAGES:
        raise ValueError(f"`linkage` must be one of {LINKAGES}, got {linkage!r}.")
    _check_min_branch_length(min_branch_length)
    classes_out, times = crossover_times(
        latent, labels, sde=sde, classes=classes, criterion=criterion,
        n_cells_per_class=n_cells_per_class, n_times=n_times, smoothing_sigma=smoothing_sigma,
        epsilon=epsilon, delta=delta, seed=seed,
    )
    if len(classes_out) == 1:
        return Hierarchy.flat(classes_out)
    tree, heights = _agglomerate(classes_out, times, linkage)
    topology = Topology(tree)
    split_times = _order_split_times(topology, heights, min_branch_length)
    return Hierarchy.from_topology(topology, split_times, classes=classes_out)


def fit_split_times(
    topology: Topology | Mapping[str, Any] | Sequence[Any] | str,
    latent: np.ndarray,
    labels: Sequence[str] | np.ndarray | pd.Series,
    *,
    sde: MarginalCoefficients,
    classes: Sequence[str] | None = None,
    reduce: str = "mean",
    min_branch_length: float = 0.01,
    **crossover_kwargs: Any,
) -> Hierarchy:
    """Give a hand-made topology split times fitted from data.

    Each group's split time is the `reduce` ("mean", "min" or "max") of the crossover times
    between classes in different children of the group; then children are made to split at
    least `min_branch_length` before their parent (parents are pushed up; near t = 1 children
    are pushed down instead).

    Parameters
    ----------
    topology
        A `Topology`, a nested dict / list (`Topology.from_nested`) or a Newick string.
    latent, labels, sde, classes
        As in `crossover_times`. The topology's classes must be exactly the data's classes.
    reduce
        How the crossover times between two child groups become one split time.
    min_branch_length
        Shortest diffusion-time length of a branch.
    **crossover_kwargs
        Passed to `crossover_times` (criterion, delta, epsilon, n_times, seed, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.diffusion import VPSDE
    >>> rng = np.random.default_rng(0)
    >>> centres = {"B": [0, 0], "T": [0.6, 0], "Mono": [5, 5]}
    >>> latent = np.concatenate([rng.normal(size=(100, 2)) * 0.3 + c for c in centres.values()])
    >>> latent = (latent - latent.mean(0)) / latent.std()  # centred and scaled, like the model's
    >>> labels = np.repeat(list(centres), 100)
    >>> from scbranchdiff.hierarchy import fit_split_times
    >>> tree = fit_split_times((("B", "T"), "Mono"), latent, labels, sde=VPSDE())
    >>> sorted(tree.branches[tree.common_branch("B", "T")].classes)
    ['B', 'T']
    """
    if not isinstance(topology, Topology):
        if isinstance(topology, str):
            topology = Topology.from_newick(topology)
        else:
            topology = Topology.from_nested(topology)
    if reduce not in _REDUCE_LINKAGES:
        raise ValueError(f"`reduce` must be one of {sorted(_REDUCE_LINKAGES)}, got {reduce!r}.")
    _check_min_branch_length(min_branch_length)
    if classes is None:
        classes = _default_classes(labels)
    if set(classes) != set(topology.classes):
        raise ValueError(
            "The topology's classes and the data's differ: only in the topology "
            f"{sorted(set(topology.classes) - set(classes))}, only in the data "
            f"{sorted(set(classes) - set(topology.classes))}."
        )
    classes_out, times = crossover_times(
        latent, labels, sde=sde, classes=classes, **crossover_kwargs
    )
    if len(classes_out) == 1:
        return Hierarchy.flat(classes_out)
    index = {c: i for i, c in enumerate(classes_out)}
    heights: dict[frozenset[str], float] = {}

    def visit(node: TopologyNode) -> list[int]:
        if isinstance(node, str):
            return [index[node]]
        members = [visit(child) for child in node]
        between = [
            times[np.ix_(a, b)].ravel()
            for i, a in enumerate(members)
            for b in members[i + 1 :]
        ]
        flat = [m for group in members for m in group]
        heights[frozenset(classes_out[m] for m in flat)] = linkage_height(
            np.concatenate(between), _REDUCE_LINKAGES[reduce]
        )
        return flat

    visit(topology.tree)
    split_times = _order_split_times(topology, heights, min_branch_length)
    return Hierarchy.from_topology(topology, split_times, classes=classes_out)


# ---------------------------------------------------------------------- input handling
def _default_classes(labels: Any) -> tuple[str, ...]:
    if isinstance(labels, pd.Series):
        labels = labels.array
    if isinstance(labels, pd.Categorical):
        return tuple(str(c) for c in labels.categories)
    return tuple(sorted({str(v) for v in np.asarray(labels, dtype=object)}))


def _prepare(
    latent: np.ndarray, labels: Any, classes: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    latent = np.asarray(latent, dtype=np.float64)
    if latent.ndim != 2:
        raise ValueError(f"`latent` must be cells x dimensions, got shape {latent.shape}.")
    if not np.isfinite(latent).all():
        raise ValueError("`latent` contains NaN or infinite values.")
    label_values = np.asarray(pd.Series(labels).astype(object), dtype=object)
    if len(label_values) != len(latent):
        raise ValueError(
            f"`labels` has {len(label_values)} entries but `latent` has {len(latent)} cells."
        )
    if pd.isna(label_values).any():
        raise ValueError("`labels` contains missing values.")
    label_values = label_values.astype(str)
    classes_out = _default_classes(labels) if classes is None else tuple(map(str, classes))
    if len(set(classes_out)) != len(classes_out):
        raise ValueError(f"`classes` must be unique, got {list(classes_out)}.")
    if not classes_out:
        raise ValueError("No classes: `labels` is empty.")
    unknown = sorted(set(label_values) - set(classes_out))
    if unknown:
        raise ValueError(f"`labels` holds classes {unknown} that are not in `classes`.")
    codes = pd.Categorical(label_values, categories=classes_out).codes.astype(np.int64)
    return latent, codes, classes_out


def _check_min_branch_length(min_branch_length: float) -> None:
    if not 0 <= min_branch_length < 0.5:
        raise ValueError(f"`min_branch_length` must lie in [0, 0.5), got {min_branch_length}.")


# ---------------------------------------------------------------------- criteria
def _first_crossing(crossed: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Time of the first True along the last axis; inf where there is none."""
    first = np.argmax(crossed, axis=-1)
    return np.where(crossed.any(axis=-1), grid[first], np.inf)


def _cosine_crossovers(
    groups: list[np.ndarray],
    grid: np.ndarray,
    sde: MarginalCoefficients,
    n_cells: int,
    smoothing_sigma: float,
    epsilon: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The paper's criterion: smoothed mean cosine similarities of noised samples."""
    if n_cells < 2:
        raise ValueError(f"`n_cells_per_class` must be at least 2, got {n_cells}.")
    x0 = np.stack(
        [g[rng.choice(len(g), size=n_cells, replace=len(g) < n_cells)] for g in groups]
    )  # K x n x d
    k, n, d = x0.shape
    similarity = np.empty((len(grid), k, k))
    chunk = max(1, _CHUNK_FLOATS // (k * n * d))
    for start in range(0, len(grid), chunk):
        t = grid[start : start + chunk]
        a = np.asarray(sde.alpha(t), dtype=np.float64)[:, None, None, None]
        s = np.asarray(sde.sigma(t), dtype=np.float64)[:, None, None, None]
        # VP kernel: x_t = a(t) x_0 + s(t) z
        xt = a * x0[None] + s * rng.standard_normal((len(t), k, n, d))
        unit = xt / np.maximum(np.linalg.norm(xt, axis=-1, keepdims=True), 1e-12)
        block = np.einsum("cknd,cjnd->ckj", unit, unit) / n
        # Within a class each sample is paired with the next one (a distinct partner; the
        # reference reverses the order instead, which uses only n / 2 distinct pairs).
        intra = np.einsum("cknd,cknd->ck", unit, np.roll(unit, 1, axis=2)) / n
        diag = np.arange(k)
        block[:, diag, diag] = intra
        similarity[start : start + chunk] = block
    if smoothing_sigma > 0:
        similarity = gaussian_filter1d(similarity, smoothing_sigma, axis=0)
    intra = np.diagonal(similarity, axis1=1, axis2=2)  # T x K
    threshold = (intra[:, :, None] + intra[:, None, :]) / 2 - epsilon
    crossed = np.moveaxis(similarity >= threshold, 0, -1)  # K x K x T
    return _first_crossing(crossed, grid)


def group_moments(groups: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean (K x d) and sample covariance (K x d x d) of each of K groups of rows.

    Computed in the groups' own precision; a group with one row gets zero covariance. Shared
    with transmutation's class moments (``diffusion._transport.class_moments``).
    """
    d = groups[0].shape[1]
    means = np.stack([g.mean(axis=0) for g in groups])
    covs = np.stack([np.cov(g, rowvar=False).reshape(d, d) if len(g) > 1 else np.zeros((d, d)) for g in groups])
    return means, covs


def _gaussian_crossovers(
    groups: list[np.ndarray], grid: np.ndarray, sde: MarginalCoefficients, delta: float
) -> np.ndarray:
    """First t at which the Bayes error lower bound of the noised Gaussians reaches 1/2 - delta."""
    k = len(groups)
    d = groups[0].shape[1]
    means, covs = group_moments(groups)
    # A tiny ridge keeps log-determinants finite at t = 0 for rank-deficient classes.
    ridge = 1e-8 * max(float(np.mean(np.diagonal(covs, axis1=1, axis2=2))), 1.0)
    covs = covs + ridge * np.eye(d)
    a2 = np.asarray(sde.alpha(grid), dtype=np.float64) ** 2
    s2 = np.asarray(sde.sigma(grid), dtype=np.float64) ** 2
    eig_class = np.linalg.eigvalsh(covs)  # K x d
    # log det(a^2 Sigma_c + s^2 I) at every time, K x T
    logdet_class = np.log(a2[None, :, None] * eig_class[:, None, :] + s2[None, :, None]).sum(-1)
    # Bhattacharyya: D_B <= threshold  <=>  (1 - sqrt(1 - BC^2)) / 2 >= 1/2 - delta
    threshold = -0.5 * np.log1p(-4.0 * delta**2)
    i_idx, j_idx = np.triu_indices(k, 1)
    distance = np.empty((len(i_idx), len(grid)))
    pairs_per_chunk = max(1, _CHUNK_FLOATS // (len(grid) * d))
    for start in range(0, len(i_idx), pairs_per_chunk):
        i, j = i_idx[start : start + pairs_per_chunk], j_idx[start : start + pairs_per_chunk]
        eig_pair, vectors = np.linalg.eigh((covs[i] + covs[j]) / 2)  # P x d, P x d x d
        w2 = np.einsum("pdk,pd->pk", vectors, means[i] - means[j]) ** 2
        pooled = a2[None, :, None] * eig_pair[:, None, :] + s2[None, :, None]  # P x T x d
        mahalanobis = (a2[None, :, None] * w2[:, None, :] / pooled).sum(-1)
        log_ratio = np.log(pooled).sum(-1) - 0.5 * (logdet_class[i] + logdet_class[j])
        distance[start : start + pairs_per_chunk] = mahalanobis / 8 + log_ratio / 2
    crossed = distance <= threshold
    first = np.argmax(crossed, axis=-1)
    # Linear interpolation of log D_B between the grid points around the crossing.
    lower = np.maximum(first - 1, 0)
    rows = np.arange(len(first))
    d_lo = np.log(np.maximum(distance[rows, lower], 1e-300))
    d_hi = np.log(np.maximum(distance[rows, first], 1e-300))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(d_lo > d_hi, (d_lo - np.log(threshold)) / (d_lo - d_hi), 1.0)
    t_cross = grid[lower] + np.clip(frac, 0.0, 1.0) * (grid[first] - grid[lower])
    t_cross = np.where(crossed.any(axis=-1), t_cross, np.inf)
    out = np.zeros((k, k))
    out[i_idx, j_idx] = t_cross
    out[j_idx, i_idx] = t_cross
    return out


# ---------------------------------------------------------------------- merging
def linkage_height(values: np.ndarray, linkage: str) -> float:
    """One height from the crossover times between two groups of classes.

    ``"single"`` takes their minimum, ``"average"`` their mean and ``"complete"`` their
    maximum (numpy's ``min``, ``mean`` and ``max`` over the whole array, as given).
    """
    return float(_LINKAGE_FUNCTIONS[linkage](values))


def _agglomerate(
    classes: tuple[str, ...], times: np.ndarray, linkage: str
) -> tuple[TopologyNode, dict[frozenset[str], float]]:
    """Agglomerative clustering on crossover times; returns the binary tree and merge heights.

    Single linkage merges pairs in increasing crossover time (the paper's union-find); ties
    are broken by class order.
    """
    clusters: list[tuple[TopologyNode, list[int]]] = [(c, [i]) for i, c in enumerate(classes)]
    heights: dict[frozenset[str], float] = {}
    while len(clusters) > 1:
        best = None
        for p in range(len(clusters)):
            for q in range(p + 1, len(clusters)):
                height = linkage_height(times[np.ix_(clusters[p][1], clusters[q][1])], linkage)
                if best is None or height < best[0]:
                    best = (height, p, q)
        assert best is not None
        height, p, q = best
        members = clusters[p][1] + clusters[q][1]
        merged = ((clusters[p][0], clusters[q][0]), members)
        heights[frozenset(classes[m] for m in members)] = height
        clusters = [c for r, c in enumerate(clusters) if r not in (p, q)]
        clusters.insert(p, merged)
    return clusters[0][0], heights


def _order_split_times(
    topology: Topology, heights: Mapping[frozenset[str], float], min_branch_length: float
) -> dict[frozenset[str], float]:
    """Make every group split at least `min_branch_length` after its children and before 1.

    Bottom-up, a group's time is raised to (latest child time + min_branch_length) (leaves
    count as 0); top-down, the root is kept at most 1 - min_branch_length and each child at
    most (parent - min_branch_length). If the tree is too deep for `min_branch_length`, the
    gap is shrunk to fit, with a warning.
    """
    depth = _max_branches_on_path(topology.tree)
    gap = min_branch_length
    if gap * depth > 1.0:
        gap = 1.0 / (depth + 1)
        warnings.warn(
            f"The tree has up to {depth} branches on a path, too many for "
            f"min_branch_length={min_branch_length}; using {gap:.4g} instead.",
            stacklevel=3,
        )
    ceiling = 1.0 - max(gap, 1e-6)
    times: dict[frozenset[str], float] = {}

    def raise_up(node: TopologyNode) -> tuple[frozenset[str], float]:
        if isinstance(node, str):
            return frozenset([node]), 0.0
        below = [raise_up(child) for child in node]
        key = frozenset().union(*(members for members, _ in below))
        times[key] = max([heights[key]] + [t + gap for _, t in below])
        return key, times[key]

    def cap(node: TopologyNode, limit: float) -> None:
        if isinstance(node, str):
            return
        key = frozenset(leaves(node))
        times[key] = min(times[key], limit)
        for child in node:
            cap(child, times[key] - gap)

    raise_up(topology.tree)
    cap(topology.tree, ceiling)
    return times


def _max_branches_on_path(node: TopologyNode) -> int:
    if isinstance(node, str):
        return 1
    return 1 + max(_max_branches_on_path(child) for child in node)
