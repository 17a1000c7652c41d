"""The branched score network: one shared trunk, one small head per branch (multi-task).

The trunk runs once per batch. Each sample then goes through the head of its own branch only:
the heads' parameters are gathered per sample, so a batch costs one trunk pass plus one head
pass per sample in a constant number of operations, whatever the number of branches (the
reference code ran the trunk once per branch and every head on every sample).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class FourierTimeEmbedding(nn.Module):
    """Random Fourier features of the diffusion time (Tancik et al. 2020).

    The frequencies are fixed buffers drawn once from N(0, scale^2), so a saved model reproduces
    the same features.
    """

    def __init__(self, n_features: int = 64, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("frequencies", torch.randn(n_features // 2, generator=gen) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * t[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block conditioned on a time (and class) embedding.

    LayerNorm rather than BatchNorm: at sampling time every sample of a batch shares one t, and
    batch statistics would cancel the time and label embeddings.
    """

    def __init__(self, n_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(n_hidden)
        self.linear_in = nn.Linear(n_hidden, n_hidden)
        self.condition = nn.Linear(n_hidden, n_hidden)
        self.linear_out = nn.Linear(n_hidden, n_hidden)
        self.dropout = nn.Dropout(dropout)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.act(self.linear_in(self.norm(h)) + self.condition(emb))
        return h + self.linear_out(self.dropout(z))


class BranchHead(nn.Module):
    """The branch-specific part of the network.

    Optional residual blocks (``n_blocks``, applied per branch), then a per-branch feature-wise
    affine map of the normalised features and a per-branch output projection. The affine map
    and the projection of all samples are evaluated in one batched operation by
    :class:`BranchedScoreNetwork` (each sample with its own branch's parameters).
    """

    def __init__(self, n_hidden: int, n_latent: int, n_blocks: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ResidualBlock(n_hidden, dropout) for _ in range(n_blocks)])
        self.scale = nn.Parameter(torch.ones(n_hidden))
        self.shift = nn.Parameter(torch.zeros(n_hidden))
        self.out = nn.Linear(n_hidden, n_latent)


class BranchedScoreNetwork(nn.Module):
    """Shared trunk plus one head per branch, predicting the noise of the VP kernel.

    Parameters
    ----------
    n_latent
        Dimension of the (standardised) latent space.
    n_branches
        Number of heads (branches of the hierarchy).
    n_classes
        If > 0, a learned class embedding is added to the time embedding: the flat,
        label-guided baseline of the paper (one branch, class as input).
    n_hidden
        Width of the trunk and heads.
    n_trunk_blocks
        Residual blocks shared by all branches.
    n_head_blocks
        Residual blocks in each head, before its feature-wise affine map and output
        projection. With 0 (default) every head is evaluated for a whole batch in one
        gathered operation, so a branched model trains about as fast as a flat one whatever
        the number of branches; with more, heads run one branch at a time.
    n_time_features
        Number of random Fourier features of t.
    dropout
        Dropout inside residual blocks.

    Examples
    --------
    >>> import torch
    >>> from scbranchdiff.module import BranchedScoreNetwork
    >>> network = BranchedScoreNetwork(n_latent=10, n_branches=5, n_hidden=64)
    >>> x, t = torch.randn(8, 10), torch.rand(8)
    >>> branch = torch.tensor([0, 0, 1, 1, 2, 3, 4, 4])  # one head per branch
    >>> network(x, t, branch).shape  # predicted noise
    torch.Size([8, 10])
    """

    def __init__(
        self,
        n_latent: int,
        n_branches: int,
        n_classes: int = 0,
        n_hidden: int = 256,
        n_trunk_blocks: int = 3,
        n_head_blocks: int = 0,
        n_time_features: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_latent = n_latent
        self.n_hidden = n_hidden
        self.n_head_blocks = n_head_blocks
        self.dropout = dropout
        self.time_features = FourierTimeEmbedding(n_time_features)
        self.time_mlp = nn.Sequential(
            nn.Linear(n_time_features, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_hidden)
        )
        self.class_embedding = nn.Embedding(n_classes, n_hidden) if n_classes > 0 else None
        self.input = nn.Linear(n_latent, n_hidden)
        self.trunk = nn.ModuleList([ResidualBlock(n_hidden, dropout) for _ in range(n_trunk_blocks)])
        self.head_norm = nn.LayerNorm(n_hidden, elementwise_affine=False)
        self.heads = nn.ModuleList([self._new_head() for _ in range(n_branches)])

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.input.weight.device

    @property
    def class_conditional(self) -> bool:
        """Whether the network takes the class as input (flat baseline)."""
        return self.class_embedding is not None

    def _new_head(self) -> BranchHead:
        return BranchHead(self.n_hidden, self.n_latent, self.n_head_blocks, self.dropout)

    def add_heads(self, n_new: int, warm_start_from: list[int] | None = None) -> list[int]:
        """Append `n_new` heads, optionally copying the weights of existing heads.

        Returns the indices of the new heads.
        """
        first = len(self.heads)
        for i in range(n_new):
            if warm_start_from is not None and warm_start_from[i] is not None:
                # a copy draws no random numbers: the training that follows sees the same stream
                head = copy.deepcopy(self.heads[warm_start_from[i]])
            else:
                head = self._new_head().to(next(self.parameters()).device)
            self.heads.append(head)
        return list(range(first, first + n_new))

    def embed(self, t: torch.Tensor, cell_type: torch.Tensor | None) -> torch.Tensor:
        """Time (and, for the flat model, class) embedding."""
        emb = self.time_mlp(self.time_features(t))
        if self.class_embedding is not None:
            if cell_type is None:
                raise ValueError("This network is class-conditional: `cell_type` is required.")
            emb = emb + self.class_embedding(cell_type)
        return emb

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        branch: torch.Tensor | int,
        cell_type: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise z in x_t = a(t) x_0 + s(t) z.

        Parameters
        ----------
        x
            Noised latents, shape (n, n_latent).
        t
            Times, shape (n,), or one time for every sample (a 0-d tensor, as in sampling: the
            time embedding is then computed once and broadcast).
        branch
            Branch index per sample, shape (n,), or one int for the whole batch (sampling).
        cell_type
            Class index per sample; used only by the class-conditional (flat) network.
        """
        if t.dim() == 0:  # one time for the whole batch: embed it once
            t = t.reshape(1)
        emb = self.embed(t, cell_type)
        h = self.input(x)
        for block in self.trunk:
            h = block(h, emb)
        if isinstance(branch, int):
            head = self.heads[branch]
            for block in head.blocks:
                h = block(h, emb)
            return head.out(nn.functional.silu(self.head_norm(h) * head.scale + head.shift))
        if self.n_head_blocks > 0:
            h = self._branch_blocks(h, emb, branch)
        # each sample with its own branch's affine map, gathered (n x n_hidden: cheap)
        scale = torch.stack([head.scale for head in self.heads])[branch]
        shift = torch.stack([head.shift for head in self.heads])[branch]
        u = nn.functional.silu(self.head_norm(h) * scale + shift)
        # output projections: every head's on every sample in one matmul, then each sample's
        # own picked. Gathering an (n, n_latent, n_hidden) weight per sample instead cost 7x
        # more on CPU (its backward scatters n copies of the weights back into the heads).
        weight = torch.cat([head.out.weight for head in self.heads])  # (branches * n_latent, h)
        bias = torch.stack([head.out.bias for head in self.heads])[branch]
        every = (u @ weight.T).view(len(u), len(self.heads), -1)
        return every[torch.arange(len(u), device=u.device), branch] + bias

    def _branch_blocks(self, h: torch.Tensor, emb: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """Per-branch residual blocks: one sort, then each head on its own contiguous chunk."""
        order = torch.argsort(branch)
        sizes = torch.bincount(branch, minlength=len(self.heads)).tolist()
        h_chunks = torch.split(h[order], sizes)
        emb_chunks = torch.split(emb[order], sizes)
        outputs = []
        for b, (h_b, emb_b) in enumerate(zip(h_chunks, emb_chunks, strict=True)):
            for block in self.heads[b].blocks if sizes[b] > 0 else ():
                h_b = block(h_b, emb_b)
            outputs.append(h_b)
        out = torch.empty_like(h)
        out[order] = torch.cat(outputs)
        return out
