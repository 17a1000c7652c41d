"""The scanpy ending of every plot: save to a path, show, or hand the Axes back."""

from __future__ import annotations

from os import PathLike
from typing import TypeVar

import matplotlib.pyplot as plt
import scanpy as sc
from matplotlib.figure import Figure

AxesLike = TypeVar("AxesLike")


def finish_figure(
    fig: Figure, axes: AxesLike, *, show: bool | None, save: str | PathLike | None
) -> AxesLike | None:
    """Save ``fig`` to ``save`` if given; show it (None: scanpy's autoshow) or return ``axes``."""
    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show is None:
        show = sc.settings.autoshow
    if show:
        plt.show()
        return None
    return axes
