"""pandas frames that anndata writes under pandas 2 and 3 alike."""

from __future__ import annotations

import numpy as np
import pandas as pd


def plain_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its index, string columns and categories as object dtype.

    anndata refuses to write pandas' new string dtype (the default in pandas 3) unless a global
    setting allows it; our outputs use plain Python strings so that ``write_h5ad`` works under
    pandas 2 and 3 alike.
    """
    frame = frame.copy()
    frame.index = pd.Index(np.asarray(frame.index, dtype=object), dtype=object, name=frame.index.name)
    for key in frame.columns:
        column = frame[key]
        if isinstance(column.dtype, pd.CategoricalDtype):
            categories = pd.Index(np.asarray(column.cat.categories, dtype=object), dtype=object)
            if categories.inferred_type in ("string", "empty"):
                frame[key] = pd.Categorical(
                    np.asarray(column.astype(object), dtype=object), categories=categories,
                    ordered=column.cat.ordered,
                )
        elif isinstance(column.dtype, pd.StringDtype) or column.dtype.kind in "OU":
            frame[key] = pd.Series(np.asarray(column, dtype=object), index=frame.index, dtype=object)
    return frame
