"""Generation straight to an .h5ad file, chunk by chunk, with memory bounded by the chunk size.

Each chunk (at most `batch_size` cells of every requested type) is sampled, decoded and
appended to the file before the next one starts, so a million cells need no more memory than
one chunk plus a few bytes of per-cell metadata (labels, library sizes). The file uses
anndata's on-disk format (written with `anndata.io.write_elem` and appended with
`anndata.io.sparse_dataset`): `anndata.read_h5ad(path, backed="r")` opens it without loading X.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from ._model import BranchedDiffusion


def _append(f, key: str, block) -> None:
    """Append rows to an element of an open h5ad file, creating it (resizable) on first use."""
    from anndata.io import sparse_dataset, write_elem

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


def write_generated(
    model: BranchedDiffusion,
    path: str | os.PathLike,
    counts: Mapping[int, int],
    *,
    sampler: str,
    n_steps: int | None,
    seed: int,
    batch_size: int,
    expected: bool,
    overwrite: bool,
) -> Path:
    """Sample `counts` (class index -> n) chunk by chunk into a new .h5ad file at `path`."""
    import h5py
    from anndata.io import write_elem

    path = Path(path)
    if path.suffix != ".h5ad":
        raise ValueError(f"`path` must end in '.h5ad', got {str(path)!r}.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; pass `overwrite=True` to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = model._sampler(sampler, n_steps, seed)
    classes = list(model.classes)
    codes: list[np.ndarray] = []
    extra_obs: dict[str, list[np.ndarray]] = {}
    decodes = model.latent_backend.can_decode
    # written beside the target and renamed when complete: an interrupted run leaves no partial file
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            # mapping groups first, with their encoding metadata, then rows appended into them
            for group in ("obsm", "layers"):
                write_elem(f, group, {})
            for chunk, latents in model._latent_chunks(tree, counts, batch_size):
                z = np.concatenate(list(latents.values()))
                types = np.repeat([model.hierarchy.classes[k] for k in latents], [len(v) for v in latents.values()])
                codes.append(pd.Categorical(types, categories=classes).codes.astype(np.int16))
                _append(f, "obsm/X_latent", z)
                if decodes:
                    decoded = model.latent_backend.decode(z, types, np.random.default_rng([seed, chunk]))
                    _append(f, "X", decoded.X)
                    if expected and "expected" in decoded.layers:
                        _append(f, "layers/expected", decoded.layers["expected"])
                    for key, value in decoded.obs.items():
                        extra_obs.setdefault(key, []).append(np.asarray(value))
            n_total = sum(len(c) for c in codes)
            obs = pd.DataFrame(index=pd.Index([f"gen-{i}" for i in range(n_total)]))
            obs[model.labels_key] = pd.Categorical.from_codes(np.concatenate(codes), categories=classes)
            obs["generated"] = True
            for key, values in extra_obs.items():
                obs[key] = np.concatenate(values)
            write_elem(f, "obs", obs)
            write_elem(f, "var", model.adata.var.copy() if decodes else pd.DataFrame(index=pd.Index([], dtype=str)))
            write_elem(f, "uns", {"scbranchdiff": model._provenance(sampler=sampler, n_steps=tree.n_steps, seed=seed)})
            for group in ("obsp", "varm", "varp"):
                if group not in f:
                    write_elem(f, group, {})
            f.attrs["encoding-type"] = "anndata"
            f.attrs["encoding-version"] = "0.1.0"
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
