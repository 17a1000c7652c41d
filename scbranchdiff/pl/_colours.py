"""One colour per cell type: from a given palette, the AnnData's stored colours, or scanpy's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import pandas as pd
from anndata import AnnData
from matplotlib.colors import is_color_like, to_hex
from scanpy.plotting import palettes

from .._checks import labels_column

Palette = Mapping[str, str] | Sequence[str] | str


def default_palette(n: int) -> list[str]:
    """Scanpy's default colours for ``n`` categories (the same rule as ``sc.pl`` uses)."""
    cycle = mpl.rcParams["axes.prop_cycle"].by_key().get("color", [])
    if len(cycle) >= n:
        colours = list(cycle[:n])
    elif n <= 20:
        colours = list(palettes.default_20[:n])
    elif n <= 28:
        colours = list(palettes.default_28[:n])
    elif n <= len(palettes.default_102):
        colours = list(palettes.default_102[:n])
    else:
        colours = ["grey"] * n
    return [to_hex(c) for c in colours]


def type_colours(
    types: Sequence[str],
    *,
    adata: AnnData | None = None,
    labels_key: str | None = None,
    palette: Palette | None = None,
) -> dict[str, str]:
    """Colour of each cell type, as hex strings.

    Priority: ``palette`` (a mapping type -> colour, a list of colours in ``types`` order or a
    matplotlib colormap name), then ``adata.uns[f"{labels_key}_colors"]`` matched to the
    categories of ``adata.obs[labels_key]`` (so types keep the colours of the user's scanpy
    plots), then scanpy's default palette over the categories (or ``types`` without AnnData).
    """
    types = [str(t) for t in types]
    if palette is not None:
        return _from_palette(types, palette)
    categories = _categories(adata, labels_key)
    colours: dict[str, str] = {}
    stored = None if adata is None else adata.uns.get(f"{labels_key}_colors")
    if categories is not None and stored is not None and len(stored) >= len(categories):
        colours = {c: to_hex(col) for c, col in zip(categories, stored, strict=False)}
    elif categories is not None:
        colours = dict(zip(categories, default_palette(len(categories)), strict=True))
    missing = [t for t in types if t not in colours]
    if missing:
        # types unknown to the AnnData (e.g. a new cell type) get colours not used yet
        candidates = default_palette(len(colours) + len(missing))
        spare = [c for c in candidates if c not in colours.values()]
        spare += ["grey"] * len(missing)
        colours.update(zip(missing, spare, strict=False))
    return {t: colours[t] for t in types}


def _categories(adata: AnnData | None, labels_key: str | None) -> list[str] | None:
    if adata is None or labels_key is None:
        return None
    column = labels_column(adata, labels_key)
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [str(c) for c in column.cat.categories]
    return sorted({str(v) for v in column.dropna()})


def _from_palette(types: list[str], palette: Palette) -> dict[str, str]:
    if isinstance(palette, str):
        if is_color_like(palette):
            return {t: to_hex(palette) for t in types}
        try:
            cmap = mpl.colormaps[palette]
        except KeyError:
            raise ValueError(
                f"`palette={palette!r}` is neither a colour nor a matplotlib colormap name."
            ) from None
        n = max(len(types) - 1, 1)
        return {t: to_hex(cmap(i / n)) for i, t in enumerate(types)}
    if isinstance(palette, Mapping):
        missing = [t for t in types if t not in palette]
        if missing:
            raise KeyError(f"`palette` has no colour for the cell types {missing}.")
        return {t: to_hex(palette[t]) for t in types}
    palette = list(palette)
    if len(palette) < len(types):
        raise ValueError(
            f"`palette` lists {len(palette)} colours for {len(types)} cell types; "
            "pass at least one colour per type or a mapping type -> colour."
        )
    return {t: to_hex(c) for t, c in zip(types, palette, strict=False)}
