"""The scanpy ending of every plot: save (scanpy's ``save`` rule), show, or hand back.

``save`` follows :func:`scanpy.plotting._utils.savefig_or_show`: None follows
``sc.settings.autosave``; True writes ``{figdir}/{function}{plot_suffix}.{file_format_figs}``;
a str without a directory part is a suffix of that name whose extension, when it has one,
replaces ``file_format_figs``. Unlike scanpy, a str with a directory part and any
:class:`os.PathLike` are the file itself (matplotlib picks the format from its extension), and
the figure is written from the Figure object, not from pyplot's current figure.
"""

from __future__ import annotations

import logging
import os
import sys
from os import PathLike
from pathlib import Path
from typing import TypeVar

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure, SubFigure

AxesLike = TypeVar("AxesLike")
Save = bool | str | PathLike | None

# scanpy's default `dpi_save`, used while rcParams["savefig.dpi"] is matplotlib's "figure"
DEFAULT_DPI_SAVE = 150

logger = logging.getLogger(__name__)


def figure_path(save: Save, name: str) -> Path | None:
    """File that ``save`` asks the figure of plot function ``name`` to be written to.

    None when nothing is to be saved. See the module docstring for the rule.
    """
    if save is None:
        save = sc.settings.autosave
    if isinstance(save, bool | np.bool_):
        if not save:
            return None
        suffix = ""
    elif isinstance(save, PathLike):
        return Path(save).expanduser()
    elif isinstance(save, str):
        if _has_directory(save):
            return Path(save).expanduser()
        suffix = save
    else:
        raise TypeError(
            f"`save` must be a bool, a str or a path, got {type(save).__name__}."
        )
    ext = sc.settings.file_format_figs
    stem, dot, maybe_ext = suffix.rpartition(".")
    if dot and maybe_ext.lower() in FigureCanvasBase.get_supported_filetypes():
        suffix, ext = stem, maybe_ext
    return Path(sc.settings.figdir) / f"{name}{suffix}{sc.settings.plot_suffix}.{ext}"


def save_dpi() -> float:
    """Resolution of saved figures: scanpy's ``dpi_save`` (``rcParams["savefig.dpi"]``)."""
    dpi = mpl.rcParams["savefig.dpi"]
    return DEFAULT_DPI_SAVE if isinstance(dpi, str) else dpi


def finish_figure(
    fig: Figure | SubFigure,
    axes: AxesLike,
    *,
    show: bool | None,
    save: Save,
    return_fig: bool = False,
    name: str | None = None,
) -> AxesLike | Figure | None:
    """Save ``fig`` as ``save`` asks, then return it, show it or return ``axes``.

    ``fig`` may be a subfigure (the parent of Axes drawn into one); the whole figure is saved
    and returned.

    ``name`` is the plot function's name, the stem of files saved with ``save=True`` or a
    suffix; by default the name of the calling function. With ``return_fig`` the Figure is
    returned and not shown; otherwise ``show`` (None: ``sc.settings.autoshow``) shows it and
    returns None (closing a saved figure, as scanpy does), or the Axes are returned.
    """
    while isinstance(fig, SubFigure):
        fig = fig.figure
    path = figure_path(save, sys._getframe(1).f_code.co_name if name is None else name)
    if path is not None:
        if path.parent == Path(sc.settings.figdir):
            # a name chosen here: say where it went, as scanpy does
            path.parent.mkdir(parents=True, exist_ok=True)
            logger.warning("saving figure to file %s", path)
        fig.savefig(path, dpi=save_dpi(), bbox_inches="tight")
    if return_fig:
        return fig
    if sc.settings.autoshow if show is None else show:
        plt.show()
        if path is not None:
            plt.close(fig)
        return None
    return axes


def _has_directory(path: str) -> bool:
    return any(sep in path for sep in (os.sep, os.altsep, "/") if sep)
