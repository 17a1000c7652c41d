"""Two scales for the heights of a hierarchy: diffusion time t and the log signal-to-noise ratio.

The model trains and samples in diffusion time t, so a `Hierarchy` stores its split times in t.
Under the VP schedule, though, t is a poor ruler for how different cell types are: the signal
scale a(t) falls from 0.28 to 0.08 between t = 0.5 and t = 0.7, so the splits of real trees
crowd into a narrow band of t. The log signal-to-noise ratio of the noising kernel
x_t = a(t) x_0 + s(t) z,

    lambda(t) = log(a(t)^2 / s(t)^2),

falls monotonically from +inf at t = 0 to lambda(1) (about -10.05 for beta_min = 0.1,
beta_max = 20). Two types whose means lie a distance D apart (in the scaled latent, in units of
their within-type spread) become indistinguishable at lambda ~ c - 2 log D: a split's lambda is
linear in the log of how far apart the types are, so a split 2 log 2 ~ 1.4 lower in lambda
separates types about twice as far apart, whatever the schedule.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

# The two scales a hierarchy's heights can be given in.
SCALES = ("t", "log_snr")
# Smallest time the model trains and samples at when the SDE does not say (VPSDE.t_min).
DEFAULT_T_MIN = 1e-3
_BISECTION_STEPS = 64


class MarginalCoefficients(Protocol):
    """Anything with the VP kernel coefficients a(t) and s(t) on numpy arrays (e.g. `VPSDE`)."""

    def alpha(self, t: Any) -> Any: ...

    def sigma(self, t: Any) -> Any: ...


def log_snr(t: float | np.ndarray, sde: MarginalCoefficients) -> float | np.ndarray:
    """Log signal-to-noise ratio lambda(t) = log(a(t)^2 / s(t)^2) of the noising kernel.

    It falls monotonically in t: +inf at t = 0, about -10.05 at t = 1 for the reference VP SDE
    (beta_min = 0.1, beta_max = 20). A split's lambda is, for well-separated types, about
    c - 2 log(distance between the types' means in units of their spread), so lambda spreads
    splits by how different the types are, where t crowds them into a narrow band.

    Parameters
    ----------
    t
        Diffusion times (a number or an array).
    sde
        The training SDE; only ``alpha(t)`` and ``sigma(t)`` are used.

    Returns
    -------
    lambda(t), a float for a scalar `t`, else an array of the shape of `t`.

    Examples
    --------
    >>> from scbranchdiff.diffusion import VPSDE
    >>> from scbranchdiff.hierarchy import log_snr
    >>> sde = VPSDE()
    >>> [round(float(log_snr(t, sde)), 2) for t in (0.25, 0.5, 0.7, 1.0)]
    [0.09, -2.46, -4.94, -10.05]
    >>> float(log_snr(0.0, sde))
    inf
    """
    times = np.asarray(t, dtype=np.float64)
    a = np.asarray(sde.alpha(times), dtype=np.float64)
    s = np.asarray(sde.sigma(times), dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = 2.0 * (np.log(a) - np.log(s))
    return float(out) if out.ndim == 0 else out


def time_at_log_snr(
    value: float | np.ndarray, sde: MarginalCoefficients
) -> float | np.ndarray:
    """Inverse of `log_snr`: the diffusion time t in [0, 1] at which lambda(t) equals `value`.

    Parameters
    ----------
    value
        Log signal-to-noise ratios, each at least lambda(1) (+inf gives t = 0).
    sde
        The training SDE; only ``alpha(t)`` and ``sigma(t)`` are used.

    Returns
    -------
    t, a float for a scalar `value`, else an array of its shape.

    Raises
    ------
    ValueError
        When a value is NaN or below lambda(1): the SDE never gets that noisy by t = 1.

    Examples
    --------
    >>> from scbranchdiff.diffusion import VPSDE
    >>> from scbranchdiff.hierarchy import log_snr, time_at_log_snr
    >>> sde = VPSDE()
    >>> round(float(time_at_log_snr(log_snr(0.42, sde), sde)), 12)
    0.42
    """
    target = np.asarray(value, dtype=np.float64)
    if np.isnan(target).any():
        raise ValueError("`value` contains NaN.")
    floor = log_snr(1.0, sde)
    # a rounding margin: lambda(1) written to 12 digits and read back may fall just below
    too_low = target < floor - 1e-9 * max(1.0, abs(floor))
    if too_low.any():
        raise ValueError(
            f"log-SNR {float(target[too_low].min()):.6g} is below lambda(1) = {floor:.6g}: "
            "the SDE never gets that noisy by t = 1."
        )
    lo = np.zeros_like(target)
    hi = np.ones_like(target)
    for _ in range(_BISECTION_STEPS):  # lambda falls in t: keep lambda(lo) >= target >= lambda(hi)
        mid = 0.5 * (lo + hi)
        above = np.asarray(log_snr(mid, sde)) >= target
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    out = np.where(np.isposinf(target), 0.0, np.where(target <= floor, 1.0, 0.5 * (lo + hi)))
    return float(out) if out.ndim == 0 else out


def check_scale(scale: str, sde: MarginalCoefficients | None) -> None:
    """Raise unless `scale` is one of `SCALES` and an SDE is given for ``"log_snr"``."""
    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {SCALES}, got {scale!r}.")
    if scale == "log_snr" and sde is None:
        raise ValueError(
            "`scale='log_snr'` needs the SDE the times belong to: pass `sde=` (e.g. "
            "`model.sde`, or `scbranchdiff.diffusion.VPSDE()` for the reference schedule)."
        )


def leaf_time(sde: MarginalCoefficients) -> float:
    """Where leaves end on the log-SNR scale: the SDE's ``t_min`` (lambda(0) is infinite)."""
    return float(getattr(sde, "t_min", DEFAULT_T_MIN))
