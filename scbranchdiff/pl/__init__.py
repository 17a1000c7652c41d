"""Plots: the hierarchy over diffusion time, and generated, transmuted and intermediate cells
in an embedding fitted on real cells only.

Every function follows scanpy's conventions: ``ax=`` to draw into given Axes, ``show=`` and
``save=`` (a path); the Axes are returned when ``show`` is False.
"""

from __future__ import annotations

from ._dendrogram import hierarchy
from ._generated import generated_vs_real
from ._intermediates import intermediates
from ._transmutation import transmutation

__all__ = ["generated_vs_real", "hierarchy", "intermediates", "transmutation"]
