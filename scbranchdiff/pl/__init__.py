"""Plots: the hierarchy over diffusion time, and generated, transmuted and intermediate cells
in an embedding fitted on real cells only.

Every plot follows scanpy's conventions: ``ax=`` draws into given Axes; ``save=`` is a bool
or a suffix of the function's name in ``scanpy.settings.figdir`` (or a path with a directory
part, or a :class:`~pathlib.Path`); ``show=`` (None: ``scanpy.settings.autoshow``) shows the
figure and returns None, else the Axes are returned (a dict of Axes by panel name for
:func:`generated_vs_real`); ``return_fig=True`` returns the Figure instead, unshown.

:func:`embed_joint` stores the embedding in ``obsm`` once, so the plots do not fit a UMAP on
every call. :func:`in_tree_order` puts an AnnData's cell-type categories (and colours) in the
order of the tree's leaves, for panels and legends that follow the hierarchy.
"""

from __future__ import annotations

from ._dendrogram import hierarchy
from ._generated import generated_vs_real
from ._intermediates import intermediates
from ._order import in_tree_order
from ._projection import embed_joint
from ._transmutation import transmutation

__all__ = [
    "embed_joint",
    "generated_vs_real",
    "hierarchy",
    "in_tree_order",
    "intermediates",
    "transmutation",
]
