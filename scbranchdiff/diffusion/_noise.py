"""The one noise-stream scheme of the package: standard normals keyed by (seed, chunk, key, step).

Every random number of generation, transmutation and intermediates comes from here. A stream is
fixed by the sampler's seed, the chunk of a streamed generation (or another stream id chosen by
the caller), a key (the first class of a branch in hierarchy order, or the class itself for the
label-guided network) and the global step of the time grid (-1 for the initial state). Adding a
class, a chunk or a branch therefore never changes the numbers another one draws.

A stream's first k rows do not depend on how many rows are drawn (children continue the first
rows of their parent branch, whose size is set by the largest class below it): the normals are
made by Box-Muller from uniforms that torch draws one after another. `torch.randn` is not
prefix-stable: it fills the last 16 values of a draw from fresh uniforms, so a type's cells
changed when more cells of another type were requested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def _generator(*entropy: int) -> torch.Generator:
    seed = int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


def _normal_rows(n: int, n_columns: int, generator: torch.Generator) -> torch.Tensor:
    """`n` x `n_columns` standard normals whose first k rows are the same for every n >= k."""
    u = torch.rand(n, n_columns, 2, generator=generator, dtype=torch.float64)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[..., 0]))  # 1 - u lies in (0, 1]
    return radius * torch.cos(2.0 * torch.pi * u[..., 1])


@dataclass(frozen=True)
class NoiseStreams:
    """Keyed standard normal draws.

    Parameters
    ----------
    seed
        Seed of every stream.
    n_latent
        Columns of each draw.
    device, dtype
        Where the draws are returned.

    Examples
    --------
    >>> from scbranchdiff.diffusion import NoiseStreams
    >>> streams = NoiseStreams(seed=0, n_latent=3)
    >>> a = streams.normal([(0, 4), (2, 1)], step=5)  # 4 rows of key 0, 1 row of key 2
    >>> b = streams.normal([(2, 1)], step=5)
    >>> a.shape, bool((a[4:] == b).all())  # a key's rows do not depend on the other keys
    (torch.Size([5, 3]), True)
    >>> c = streams.normal([(0, 40)], step=5)
    >>> bool((c[:4] == a[:4]).all())  # nor on how many rows of the key are drawn
    True
    """

    seed: int
    n_latent: int
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32

    def normal(self, rows: Sequence[tuple[int, int]], step: int, chunk: int = 0) -> torch.Tensor:
        """`n` standard normal rows for each (key, n) in `rows`, at global `step` of `chunk`.

        Step -1 is the initial state (the prior at t = 1, or a forward-noised cell).
        """
        parts = [
            _normal_rows(n, self.n_latent, _generator(self.seed, chunk, key, step + 1))
            for key, n in rows
        ]
        return torch.cat(parts).to(device=self.device, dtype=self.dtype)
