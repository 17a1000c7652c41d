"""An .h5ad file written row block by row block, with memory bounded by the block size.

Used for generations too large to hold in memory: each block of rows is appended to the file
before the next one is made, so a million cells need no more memory than one block plus a few
bytes of per-cell metadata. The file uses anndata's on-disk format (elements written with
`anndata.io.write_elem`, sparse matrices appended with `anndata.io.sparse_dataset`):
`anndata.read_h5ad(path, backed="r")` opens it without loading X. It knows nothing of models.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import atomic_file, check_file_target


class H5adAppender:
    """Append row blocks to a new .h5ad file, then write obs/var/uns; atomic on success.

    The file is written beside `path` and renamed into place when :meth:`finish` has run and
    the ``with`` block ends without error (:func:`~scbranchdiff._io.atomic_file`: the
    overwrite check holds at that moment); on any error the partial file is removed and a file
    already at `path` is left as it was.

    Parameters
    ----------
    path
        Target file, ending in ".h5ad".
    overwrite
        Replace an existing file.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd, tempfile, os
    >>> from scbranchdiff.model._streaming import H5adAppender
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5ad")
    >>> with H5adAppender(path) as out:
    ...     for block in range(3):
    ...         out.append("X", np.ones((2, 4)))
    ...     out.finish(obs=pd.DataFrame(index=[f"c{i}" for i in range(6)]),
    ...                var=pd.DataFrame(index=list("abcd")))
    >>> ad.read_h5ad(path).shape
    (6, 4)
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        path = Path(path)
        if path.suffix != ".h5ad":
            raise ValueError(f"`path` must end in '.h5ad', got {str(path)!r}.")
        check_file_target(path, overwrite=overwrite)
        self.path = path
        self._overwrite = overwrite
        self._stack = contextlib.ExitStack()
        self._file: Any = None
        self._finished = False

    def __enter__(self) -> H5adAppender:
        import h5py
        from anndata.io import write_elem

        # written to a temporary beside `path`, renamed into place (the overwrite check made
        # again then) only when complete
        tmp = self._stack.enter_context(atomic_file(self.path, overwrite=self._overwrite))
        try:
            self._file = h5py.File(tmp, "w")
            # mapping groups first, with their encoding metadata, then rows appended into them
            for group in ("obsm", "layers"):
                write_elem(self._file, group, {})
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def append(self, key: str, block: np.ndarray | sp.spmatrix) -> None:
        """Append rows to element `key` (e.g. "X", "obsm/X_latent"), creating it on first use."""
        from anndata.io import sparse_dataset, write_elem

        f = self._file
        if sp.issparse(block):
            block = sp.csr_matrix(block, dtype=np.float32)
            if key not in f:
                write_elem(f, key, block)
            else:
                sparse_dataset(f[key]).append(block)
            return
        block = np.ascontiguousarray(block, dtype=np.float32)
        if key not in f:
            write_elem(f, key, block, dataset_kwargs={"maxshape": (None, *block.shape[1:]), "chunks": True})
        else:
            data = f[key]
            n = data.shape[0]
            data.resize(n + block.shape[0], axis=0)
            data[n:] = block

    def finish(self, obs: pd.DataFrame, var: pd.DataFrame, uns: dict | None = None) -> None:
        """Write the per-cell and per-gene tables and `uns`; the file is complete after this."""
        from anndata.io import write_elem

        f = self._file
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        write_elem(f, "uns", dict(uns or {}))
        for group in ("obsp", "varm", "varp"):
            if group not in f:
                write_elem(f, group, {})
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        self._finished = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._file.close()
        if exc_type is None and not self._finished:
            error = RuntimeError("H5adAppender closed before `finish()`: no file was written.")
            self._stack.__exit__(RuntimeError, error, None)
            raise error
        self._stack.__exit__(exc_type, exc, tb)
