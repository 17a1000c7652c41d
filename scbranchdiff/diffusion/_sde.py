"""The variance-preserving SDE (Song et al. 2021) that every part of the package shares.

Forward process on t in [0, 1]: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW with a linear
beta(t) = beta_min + (beta_max - beta_min) t. The same object is used for training, sampling,
transmutation and branch-point discovery, so that "time t" means the same thing everywhere.

The marginal coefficients accept numpy arrays as well as torch tensors: hierarchy discovery
is pure numpy and must use exactly the kernel that training uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _exp(x: Any) -> Any:
    if isinstance(x, np.ndarray | float | int):
        return np.exp(x)
    return x.exp()


@dataclass(frozen=True)
class VPSDE:
    """Variance-preserving SDE with a linear noise schedule.

    Parameters
    ----------
    beta_min
        beta(0). The reference value is 0.1.
    beta_max
        beta(1). The reference value is 20; with 20 the signal left at t = 1 is
        a(1) = exp(-5.05) ~ 0.006, so the N(0, I) prior is reached. The value 5 used by the
        reference single-cell code leaves a(1) = 0.28 and is refused.
    t_min
        Smallest time used in training and sampling (avoids the singular score at t = 0).

    Examples
    --------
    >>> from scbranchdiff.diffusion import VPSDE
    >>> sde = VPSDE()
    >>> round(float(sde.alpha(0.5)), 3), round(float(sde.sigma(0.5)), 3)  # x_t = alpha x_0 + sigma z
    (0.281, 0.96)
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3

    def __post_init__(self) -> None:
        if not (0 <= self.beta_min < self.beta_max):
            raise ValueError(
                f"`beta_min` and `beta_max` must satisfy 0 <= beta_min < beta_max, "
                f"got {self.beta_min} and {self.beta_max}."
            )
        if not 0 < self.t_min < 0.1:
            raise ValueError(f"`t_min` must lie in (0, 0.1), got {self.t_min}.")
        if self.prior_mismatch > 0.05:
            raise ValueError(
                f"With beta_min={self.beta_min}, beta_max={self.beta_max} the signal left at "
                f"t = 1 is a(1) = {self.prior_mismatch:.3f}: the N(0, I) prior is not reached. "
                "Use a larger `beta_max` (reference value 20)."
            )

    def beta(self, t: Any) -> Any:
        """Noise rate beta(t)."""
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def integrated_beta(self, t: Any) -> Any:
        """B(t) = integral of beta from 0 to t."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t: Any) -> Any:
        """Signal coefficient a(t) = exp(-B(t) / 2) of the kernel x_t = a(t) x_0 + s(t) z."""
        return _exp(-0.5 * self.integrated_beta(t))

    def sigma(self, t: Any) -> Any:
        """Noise coefficient s(t) = sqrt(1 - exp(-B(t)))."""
        return (1.0 - _exp(-self.integrated_beta(t))) ** 0.5

    @property
    def prior_mismatch(self) -> float:
        """a(1): how much of x_0 survives at t = 1 (0 means the prior is exact)."""
        return float(self.alpha(1.0))

    def marginal_sample(self, x0: Any, t: Any, noise: Any) -> Any:
        """Draw from the forward kernel: x_t = a(t) x_0 + s(t) z.

        `t` has one entry per row of `x0`; `noise` has the shape of `x0`.
        """
        a = self.alpha(t)[:, None]
        s = self.sigma(t)[:, None]
        return a * x0 + s * noise

    def drift(self, x: Any, t: Any) -> Any:
        """Forward drift f(x, t) = -1/2 beta(t) x, with `t` one entry per row."""
        return -0.5 * self.beta(t)[:, None] * x

    def diffusion(self, t: Any) -> Any:
        """Forward diffusion coefficient g(t) = sqrt(beta(t))."""
        return self.beta(t) ** 0.5

    def to_dict(self) -> dict[str, float]:
        """Plain parameters, for saving."""
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min}
