"""Distances between two point clouds (cells x features): exact W2, RBF-MMD, energy distance.

All three are zero for identical sets. At a few hundred cells per type they reward a generator
that collapses towards the type mean (a shrunken cloud sits closer to every real cell), which is
why :func:`~scbranchdiff.metrics.c2st_auc` is the headline metric and these are reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ot
from sklearn.metrics import pairwise_distances

#: Multiples of the median pairwise distance of the reference (real) cells used as RBF bandwidths.
MMD_BANDWIDTH_FACTORS: tuple[float, ...] = (0.5, 1.0, 2.0)


def _as_points(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty 2-d array (cells x features), got shape {x.shape}."
        )
    return x


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"`x` and `y` must have the same number of features, got {x.shape[1]} and {y.shape[1]}."
        )
    return x, y


def wasserstein2(x: np.ndarray, y: np.ndarray) -> float:
    """Exact 2-Wasserstein distance between two empirical distributions with uniform weights.

    Solves the optimal transport problem exactly with :func:`ot.emd2` on the squared Euclidean
    cost and returns the square root of the optimal cost.

    Parameters
    ----------
    x, y
        Points (cells x features), e.g. principal components; sizes may differ.

    Returns
    -------
    float
        W2 in the units of the coordinates; 0 for identical sets.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    >>> from scbranchdiff.metrics import wasserstein2
    >>> round(wasserstein2(x, x + 1.0), 2)  # a shift by 1 in each of 5 dimensions: sqrt(5)
    2.24
    """
    x, y = _pair(x, y)
    cost = ot.dist(x, y, metric="sqeuclidean")
    weights_x = np.full(len(x), 1.0 / len(x))
    weights_y = np.full(len(y), 1.0 / len(y))
    w2_squared = ot.emd2(weights_x, weights_y, cost, numItermax=10_000_000)
    return float(np.sqrt(max(float(w2_squared), 0.0)))


def median_distance(x: np.ndarray) -> float:
    """Median Euclidean distance between distinct points of ``x`` (the median heuristic)."""
    x = _as_points(x, "x")
    if len(x) < 2:
        raise ValueError("The median heuristic needs at least 2 points.")
    distances = pairwise_distances(x)
    return float(np.median(distances[np.triu_indices(len(x), k=1)]))


def mmd_rbf(
    x: np.ndarray,
    y: np.ndarray,
    bandwidths: Sequence[float] | None = None,
) -> float:
    """Squared maximum mean discrepancy with a mixture of RBF kernels (biased V-statistic).

    The kernel is the mean over bandwidths ``s`` of ``exp(-|a - b|^2 / (2 s^2))``. The biased
    estimate is never negative and is exactly 0 for identical sets; compare it only between
    comparisons with the same numbers of cells (as :func:`~scbranchdiff.metrics.evaluate` does).

    Parameters
    ----------
    x
        Reference points (real cells), cells x features.
    y
        Compared points (generated cells), same features.
    bandwidths
        Kernel bandwidths in the units of the coordinates. None (default): the fixed factors
        ``MMD_BANDWIDTH_FACTORS = (0.5, 1, 2)`` times the median pairwise distance of ``x``, so the
        kernel is fixed by the real cells and does not move with the generator.

    Returns
    -------
    float
        MMD^2 (between 0 and 2).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    >>> from scbranchdiff.metrics import mmd_rbf
    >>> bool(mmd_rbf(x, y) < mmd_rbf(x, y + 1.0))
    True
    """
    x, y = _pair(x, y)
    if bandwidths is None:
        scale = median_distance(x) if len(x) > 1 else 1.0
        bandwidths = [f * (scale if scale > 0 else 1.0) for f in MMD_BANDWIDTH_FACTORS]
    bandwidths = np.asarray(bandwidths, dtype=np.float64)
    if bandwidths.ndim != 1 or bandwidths.size == 0 or np.any(bandwidths <= 0):
        raise ValueError(f"`bandwidths` must be positive numbers, got {bandwidths!r}.")

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        squared = pairwise_distances(a, b, metric="sqeuclidean")
        return float(np.mean([np.exp(-squared / (2 * s**2)).mean() for s in bandwidths]))

    mmd_squared = mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)
    return max(mmd_squared, 0.0)


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance between two multivariate samples.

    ``sqrt(2 E|X - Y| - E|X - X'| - E|Y - Y'|)`` with Euclidean norms and all pairs averaged
    (V-statistic): the d-dimensional form of :func:`scipy.stats.energy_distance`, which is 1-d only.

    Parameters
    ----------
    x, y
        Points (cells x features); sizes may differ.

    Returns
    -------
    float
        Energy distance; 0 for identical sets.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    >>> from scbranchdiff.metrics import energy_distance
    >>> bool(energy_distance(x, y) < energy_distance(x, y + 1.0))
    True
    """
    x, y = _pair(x, y)
    between = pairwise_distances(x, y).mean()
    within_x = pairwise_distances(x).mean()
    within_y = pairwise_distances(y).mean()
    return float(np.sqrt(max(2 * between - within_x - within_y, 0.0)))
