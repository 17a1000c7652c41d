"""Moving noised states of one class onto another's noised distribution (transmutation).

At a split time t the hierarchy treats two classes as one, but they are not identical there:
the split is placed where their noised distributions become hard to tell apart, not where they
coincide (docs/concepts.md, "Transmutation across a late split"). A state taken up from a cell of class A still
carries A's share ``a(t) (mu_A - mu_B)`` of the difference, which the deterministic ODE keeps all
the way down B's path. :func:`noised_gaussian_map` removes it: the optimal-transport map between
Gaussian approximations of the two noised distributions, ``N(a mu, a^2 C + s^2 I)``, which is
affine, so what distinguishes cells within A (their state) is kept, only rescaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..hierarchy._discovery import group_moments


def _sqrt_spd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square root and inverse square root of a symmetric positive definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    root = np.sqrt(np.maximum(values, 0.0))
    inverse = np.where(root > 0, 1.0 / np.where(root > 0, root, 1.0), 0.0)
    return (vectors * root) @ vectors.T, (vectors * inverse) @ vectors.T


def noised_gaussian_map(
    mean_from: np.ndarray,
    cov_from: np.ndarray,
    mean_to: np.ndarray,
    cov_to: np.ndarray,
    alpha: float,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Affine map ``x -> x @ A.T + b`` taking one class's noised Gaussian onto another's.

    The classes' clean latents are approximated by ``N(mean_from, cov_from)`` and
    ``N(mean_to, cov_to)``; the forward kernel ``x_t = alpha x_0 + sigma z`` turns them into
    ``N(alpha mean, alpha^2 cov + sigma^2 I)``. The map is the optimal-transport (W2) map between
    these two Gaussians: ``A = S^-1/2 (S^1/2 T S^1/2)^1/2 S^-1/2`` with S and T the noised
    covariances, ``b = alpha mean_to - A alpha mean_from``. It is the identity for two equal
    classes and tends to it as ``alpha -> 0``.

    Parameters
    ----------
    mean_from, cov_from
        Mean (d) and covariance (d x d) of the class the states come from.
    mean_to, cov_to
        Mean and covariance of the class they should look like.
    alpha, sigma
        Signal and noise scale of the forward kernel at the time of the states; ``sigma > 0``.

    Returns
    -------
    A
        d x d matrix (symmetric positive definite).
    b
        Offset, d.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.diffusion import noised_gaussian_map
    >>> A, b = noised_gaussian_map(np.zeros(2), np.eye(2), np.ones(2), np.eye(2), alpha=0.5, sigma=0.8)
    >>> bool(np.allclose(A, np.eye(2))), b.round(6).tolist()  # equal covariances: a shift
    (True, [0.5, 0.5])
    """
    if not sigma > 0:
        raise ValueError(f"`sigma` must be positive, got {sigma}.")
    mean_from, mean_to = np.asarray(mean_from, float), np.asarray(mean_to, float)
    eye = np.eye(len(mean_from))
    source = alpha**2 * np.asarray(cov_from, float) + sigma**2 * eye
    target = alpha**2 * np.asarray(cov_to, float) + sigma**2 * eye
    root, inverse_root = _sqrt_spd(source)
    middle, _ = _sqrt_spd(root @ target @ root)
    A = inverse_root @ middle @ inverse_root
    A = (A + A.T) / 2
    b = alpha * mean_to - A @ (alpha * mean_from)
    return A, b


def class_moments(z: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean (K x d) and covariance (K x d x d) of the latent `z` per class of `classes`.

    A class with one cell gets zero covariance; one without cells the moments of all of `z`.
    """
    labels = np.asarray(labels).astype(str)
    z = np.asarray(z, dtype=np.float64)
    means, covs = group_moments([z[labels == name] if (labels == name).any() else z for name in classes])
    return means.astype(np.float32), covs.astype(np.float32)
