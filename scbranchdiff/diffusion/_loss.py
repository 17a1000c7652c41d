"""The training loss: denoising score matching written as noise prediction (as in the paper)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._sde import VPSDE

# denoiser(x_t, t, cell_type) -> predicted noise z_hat (the score is -z_hat / s(t))
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoisePredictionLoss:
    """E ||z_hat(a(t) x_0 + s(t) z, t) - z||^2 with t ~ U(t_min, t_max), z ~ N(0, I).

    Equal to score matching weighted by s(t)^2. By default t_max = 1 for every cell; continual
    learning caps each cell's times at its class's join time (above it frozen heads serve it).

    Parameters
    ----------
    sde
        The forward SDE (kernel and t_min).

    Examples
    --------
    >>> import torch
    >>> from scbranchdiff.diffusion import VPSDE, NoisePredictionLoss
    >>> sde = VPSDE()
    >>> loss = NoisePredictionLoss(sde)
    >>> x0 = torch.zeros(512, 2)  # all data at the origin: the noise is x_t / s(t)
    >>> perfect = lambda x_t, t, c: x_t / sde.sigma(t)[:, None]
    >>> float(loss(perfect, x0, torch.zeros(512, dtype=torch.long))) < 1e-10
    True
    """

    sde: VPSDE

    def sample_times(
        self, x0: torch.Tensor, t_max: torch.Tensor | None = None, u: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One time per row: uniform in [t_min, 1], or in [t_min, t_max] per row.

        `u` (uniform in [0, 1), one per row) fixes the draw, e.g. for a validation loss.
        """
        t_min = self.sde.t_min
        if u is None:
            u = torch.rand(x0.shape[0], device=x0.device)
        if t_max is None:
            return u * (1 - t_min) + t_min
        return t_min + u * (t_max - t_min)

    def __call__(
        self,
        denoiser: Denoiser,
        x0: torch.Tensor,
        cell_type: torch.Tensor,
        t_max: torch.Tensor | None = None,
        u: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of a batch; `u` and `z` fix the time and noise draws (else random)."""
        t = self.sample_times(x0, t_max, u)
        z = torch.randn_like(x0) if z is None else z
        x_t = self.sde.marginal_sample(x0, t, z)  # VP kernel: x_t = a(t) x_0 + s(t) z
        return ((denoiser(x_t, t, cell_type) - z) ** 2).mean()
