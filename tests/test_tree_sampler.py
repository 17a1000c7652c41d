"""Tree integration: each grid step is taken by the branch that holds its start time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scbranchdiff.diffusion import VPSDE, TreeSampler
from scbranchdiff.hierarchy import Hierarchy

OLD = "((A:0.3,B:0.3):0.4,C:0.7):0.3;"
# D joins the A/B branch at t = 0.6: the piece [0.6, 0.7) holds no point of a 4-step grid
NEW = "(((A:0.3,B:0.3):0.3,D:0.6):0.1,C:0.7):0.3;"


def _sampler(hierarchy: Hierarchy, eps_model, method: str, n_steps: int) -> TreeSampler:
    return TreeSampler(
        eps_model=eps_model, hierarchy=hierarchy, sde=VPSDE(), n_steps=n_steps, method=method,
        seed=0, class_conditional=False, n_latent=3,
    )


@pytest.mark.parametrize("method", ["sde", "ancestral", "dpm++", "ode"])
@pytest.mark.parametrize("n_steps", [4, 7])
def test_cutting_a_branch_between_grid_points_changes_no_old_class(method, n_steps):
    old = Hierarchy.from_newick(OLD, classes=["A", "B", "C"])
    new = Hierarchy.from_newick(NEW, classes=["A", "B", "C", "D"])
    mapping = Hierarchy.map_branches(old, new)  # new branch -> the old branch it copies

    def eps_old(x, t, branch, cell_type):  # a different "head" per old branch
        return torch.tanh(x * (0.5 + 0.1 * branch)) * (0.2 + t)  # t: one time for all rows

    def eps_new(x, t, branch, cell_type):
        return eps_old(x, t, mapping[branch], cell_type)

    counts_old = {0: 5, 1: 4, 2: 3}
    before = _sampler(old, eps_old, method, n_steps).generate(counts_old)
    after = _sampler(new, eps_new, method, n_steps).generate(counts_old)
    for k in counts_old:
        np.testing.assert_array_equal(before[k].numpy(), after[k].numpy())


def test_the_split_map_moves_one_noised_class_onto_the_other():
    """noised_gaussian_map: states of A noised to t come out with B's noised mean and covariance."""
    from scbranchdiff.diffusion import noised_gaussian_map

    rng = np.random.default_rng(0)
    d, n = 4, 200_000
    mean_a, mean_b = rng.normal(size=d), rng.normal(size=d) + 2.0
    root_a, root_b = rng.normal(size=(d, d)), rng.normal(size=(d, d)) * 0.5
    cov_a, cov_b = root_a @ root_a.T, root_b @ root_b.T
    alpha, sigma = 0.4, float(np.sqrt(1 - 0.4**2))
    x0 = rng.multivariate_normal(mean_a, cov_a, size=n)
    x_t = alpha * x0 + sigma * rng.normal(size=(n, d))
    A, b = noised_gaussian_map(mean_a, cov_a, mean_b, cov_b, alpha=alpha, sigma=sigma)
    moved = x_t @ A.T + b
    target_cov = alpha**2 * cov_b + sigma**2 * np.eye(d)
    np.testing.assert_allclose(moved.mean(0), alpha * mean_b, atol=0.02)
    np.testing.assert_allclose(np.cov(moved, rowvar=False), target_cov, atol=0.03)
    assert np.linalg.eigvalsh(A).min() > 0  # a gradient of a convex function: no cell is flipped
    # the same class is left where it is; at alpha -> 0 every class is left where it is
    same_A, same_b = noised_gaussian_map(mean_a, cov_a, mean_a, cov_a, alpha=alpha, sigma=sigma)
    np.testing.assert_allclose(same_A, np.eye(d), atol=1e-10)
    np.testing.assert_allclose(same_b, 0.0, atol=1e-10)
    far_A, far_b = noised_gaussian_map(mean_a, cov_a, mean_b, cov_b, alpha=1e-4, sigma=1.0)
    np.testing.assert_allclose(far_A, np.eye(d), atol=1e-6)
    np.testing.assert_allclose(far_b, 0.0, atol=1e-3)
    with pytest.raises(ValueError, match="`sigma` must be positive"):
        noised_gaussian_map(mean_a, cov_a, mean_b, cov_b, alpha=1.0, sigma=0.0)


def test_few_step_samplers_reach_the_data_spread_with_the_exact_noise_model():
    """Gaussian data, exact noise prediction: dpm++ with 49 steps has the data's sd per
    dimension (ancestral with 50 is ~10% narrower: the error dpm++'s second order removes)."""
    from scbranchdiff.diffusion import ancestral, denoise, dpm_solver_2m, time_grid

    sde = VPSDE()
    sd = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)

    def eps_fn(x, t):  # exact: the noised data is N(0, a^2 sd^2 + s^2)
        tt = torch.tensor(t, dtype=torch.float64)
        a, s = sde.alpha(tt), sde.sigma(tt)
        return s * x / (a**2 * sd**2 + s**2)

    gen = torch.Generator().manual_seed(0)
    n = 40_000

    def spread(step_fn, n_steps):
        ts = time_grid(n_steps, sde, spacing="edm")
        x = torch.randn(n, 3, dtype=torch.float64, generator=gen)
        noise = lambda step: torch.randn(n, 3, dtype=torch.float64, generator=gen)  # noqa: E731
        x = step_fn(eps_fn, x, ts, sde, noise)
        x = x[0] if isinstance(x, tuple) else x  # dpm++ also returns its memory
        return denoise(eps_fn, x, ts[-1], sde).std(0) / sd

    np.testing.assert_allclose(spread(dpm_solver_2m, 49).numpy(), 1.0, atol=0.03)
    assert (spread(ancestral, 50) < 0.93).all()
