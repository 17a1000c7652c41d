"""Vectorised (class, t) -> branch routing on tensors, for training on many cells at once."""

from __future__ import annotations

import math

import torch

from ..hierarchy import Hierarchy


class BranchLookup(torch.nn.Module):
    """Vectorised (class, t) -> branch index on tensors, from the hierarchy's class paths.

    For class c with path branches p_0 (root), ..., p_k (leaf) starting at s_0 > ... > s_k = 0,
    t lies in p_j with j = #{i : s_i > t}.

    Parameters
    ----------
    hierarchy
        The branches.

    Examples
    --------
    >>> import torch
    >>> from scbranchdiff.hierarchy import Hierarchy
    >>> from scbranchdiff.module import BranchLookup
    >>> h = Hierarchy.from_newick("((A:0.3,B:0.3):0.4,C:0.7):0.3;")  # A, B split at t = 0.3
    >>> lookup = BranchLookup(h)
    >>> cell_type = torch.tensor([0, 0, 2])  # A, A, C
    >>> t = torch.tensor([0.1, 0.5, 0.9])
    >>> [h.branches[b].classes for b in lookup(cell_type, t).tolist()]
    [('A',), ('A', 'B'), ('A', 'B', 'C')]
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        super().__init__()
        paths = [hierarchy.path(c) for c in hierarchy.classes]
        depth = max(len(p) for p in paths)
        starts = torch.full((len(paths), depth), -math.inf, dtype=torch.float64)
        ids = torch.zeros((len(paths), depth), dtype=torch.long)
        for k, path in enumerate(paths):
            for j, b in enumerate(path):
                starts[k, j] = hierarchy.branches[b].t_start
                ids[k, j] = b
            ids[k, len(path):] = path[-1]
        self.register_buffer("starts", starts, persistent=False)
        self.register_buffer("ids", ids, persistent=False)

    def forward(self, cell_type: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        depth = (self.starts[cell_type] > t[:, None].to(self.starts.dtype)).sum(dim=1)
        depth = depth.clamp(max=self.ids.shape[1] - 1)
        return self.ids[cell_type, depth]
