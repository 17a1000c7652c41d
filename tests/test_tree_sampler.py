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


@pytest.mark.parametrize("method", ["sde", "ancestral", "ode"])
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
