"""One 2-D embedding defined by real cells only, onto which other cells are projected.

Real cells fix every step (log-normalisation kind, PCA with the real gene means, UMAP), so
generated or transmuted cells cannot move the axes they are looked at in: a generator that
misses a type shows up as cells far from it, not as a warped map.

:func:`embed_joint` stores such an embedding in ``obsm`` (and its settings in ``uns``) of every
AnnData, so plots read it instead of fitting a UMAP again.
"""

from __future__ import annotations

import dataclasses
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from anndata import AnnData

from ..metrics import fit_expression_pca

BASES = ("umap", "pca")
AXIS_NAMES = {"umap": "UMAP", "pca": "PC", "tsne": "tSNE"}


@dataclass(frozen=True)
class RealEmbedding:
    """2-D coordinates of the real cells and of each projected AnnData."""

    real: np.ndarray
    others: tuple[np.ndarray, ...]
    basis: str
    axis_labels: tuple[str, str]


def embed_real_project_others(
    adata_real: AnnData,
    others: Sequence[AnnData],
    *,
    basis: str = "umap",
    layer: str | None = None,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    seed: int = 0,
) -> RealEmbedding:
    """Embed ``adata_real`` and project ``others`` into the same 2-D coordinates.

    Expression is log-normalised when it holds counts (decided on the real cells; the other
    AnnData must hold the same kind) and reduced by a PCA fitted on the real cells. With
    ``basis="umap"`` a UMAP is fitted on the real principal components and the others are
    mapped into it by umap-learn's ``transform`` (what :func:`scanpy.tl.ingest` does);
    ``"pca"`` shows the first two real principal components.

    ``layer`` is read from ``adata_real``; the others are read from ``.X``, where the model
    writes its sampled counts.
    """
    if basis not in BASES:
        raise ValueError(f"`basis` must be one of {BASES}, got {basis!r}.")
    space = fit_expression_pca(adata_real, n_pcs=n_pcs, layer=layer, seed=seed)
    real_pcs = space.transform(adata_real, name="adata_real")
    read_x = dataclasses.replace(space, layer=None)
    other_pcs = [read_x.transform(other, name="the projected cells") for other in others]
    if basis == "umap" and _umap_available():
        real, projected = _umap_fitted_on_real(
            real_pcs, other_pcs, n_neighbors=n_neighbors, seed=seed
        )
        return RealEmbedding(real, tuple(projected), "umap", ("UMAP1", "UMAP2"))
    if basis == "umap":
        warnings.warn(
            "umap-learn is not installed: showing the real cells' PCA instead of a UMAP.",
            UserWarning,
            stacklevel=3,
        )
    return RealEmbedding(
        real_pcs[:, :2], tuple(p[:, :2] for p in other_pcs), "pca", ("PC1", "PC2")
    )


def _umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def _umap_fitted_on_real(
    real_pcs: np.ndarray, other_pcs: list[np.ndarray], *, n_neighbors: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    # umap-learn directly: scanpy's ingest does the same transform, but rebuilds the neighbour
    # index through pynndescent internals that break across versions (pynndescent 0.7).
    from umap import UMAP

    reducer = UMAP(n_neighbors=min(n_neighbors, len(real_pcs) - 1), random_state=seed, n_jobs=1)
    real = reducer.fit_transform(real_pcs)
    projected = [reducer.transform(pcs) if len(pcs) else np.zeros((0, 2)) for pcs in other_pcs]
    return np.asarray(real), [np.asarray(p) for p in projected]


def joint_key(basis: str) -> str:
    """The ``obsm`` key :func:`embed_joint` writes by default and plots read for ``basis``."""
    return f"X_{basis}_joint"


def embed_joint(
    adata_real: AnnData,
    *others: AnnData,
    basis: str = "umap",
    key_added: str | None = None,
    layer: str | None = None,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    seed: int = 0,
) -> None:
    """Embed real cells once and project other cells into it, storing the coordinates.

    The embedding is the one every ``sbd.pl`` embedding plot draws: fitted on ``adata_real``
    alone (log-normalisation when it holds counts, PCA, then UMAP) with ``others`` (generated,
    transmuted or intermediate cells) mapped into it. Fitting a UMAP takes seconds to minutes,
    so compute it once here: plots given ``basis="umap"`` then read ``obsm["X_umap_joint"]``
    of their AnnData instead of fitting again (likewise for "pca"; pass a custom
    ``key_added`` to them as their ``basis``). Embed all AnnData that will be plotted together
    in one call: each call fits a new embedding, and plots refit, with a warning, when their
    AnnData come from different calls.

    Parameters
    ----------
    adata_real
        Real cells; they alone define the embedding. Expression is read from ``layer``.
    *others
        AnnData with the same genes projected into the embedding; expression is read from
        ``.X``, where the model writes its cells.
    basis
        "umap" (UMAP fitted on the real principal components, the others mapped by its
        ``transform``) or "pca" (first two principal components of the real cells). Without
        umap-learn, "umap" falls back to "pca" with a warning.
    key_added
        ``obsm`` key of the coordinates and ``uns`` key of the settings; defaults to
        ``f"X_{basis}_joint"``, the key the plots look for with that ``basis``. It does not
        overwrite scanpy's own ``X_umap``, and ``sc.pl.embedding(adata, basis="umap_joint")``
        draws it too.
    layer
        Layer of ``adata_real`` holding its expression (e.g. "counts"); None reads ``.X``.
    n_pcs
        Principal components of the real cells the embedding is built on.
    n_neighbors
        Neighbours of the UMAP (at most the number of real cells less one).
    seed
        Seed of the PCA and UMAP.

    Returns
    -------
    None. Writes into ``adata_real`` and each of ``others``:

    ``obsm[key_added]``
        Coordinates, shape ``(n_obs, 2)``.
    ``uns[key_added]``
        ``basis`` (the one fitted), ``fitted_on`` ("real" or "projected"), ``fit_id`` (the
        same in every AnnData of one call) and ``params``.

    Examples
    --------
    Held-out real cells stand in for generated ones:

    >>> import scbranchdiff as sbd
    >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=30, n_genes=300, seed=0)
    >>> real, held_out = adata[::2].copy(), adata[1::2].copy()
    >>> sbd.pl.embed_joint(real, held_out, layer="counts")
    >>> real.obsm["X_umap_joint"].shape, held_out.obsm["X_umap_joint"].shape
    ((120, 2), (120, 2))
    >>> axes = sbd.pl.generated_vs_real(real, held_out, "cell_type", show=False)
    """
    if basis not in BASES:
        raise ValueError(f"`basis` must be one of {BASES}, got {basis!r}.")
    key = joint_key(basis) if key_added is None else key_added
    embedding = embed_real_project_others(
        adata_real, others, basis=basis, layer=layer, n_pcs=n_pcs, n_neighbors=n_neighbors,
        seed=seed,
    )
    params = {"n_pcs": n_pcs, "n_neighbors": n_neighbors, "seed": seed}
    if layer is not None:
        params["layer"] = layer
    fit_id = uuid.uuid4().hex
    for adata, coords, fitted_on in [
        (adata_real, embedding.real, "real"),
        *((other, c, "projected") for other, c in zip(others, embedding.others, strict=True)),
    ]:
        adata.obsm[key] = np.asarray(coords, dtype=np.float32)
        adata.uns[key] = {
            "basis": embedding.basis, "fitted_on": fitted_on, "fit_id": fit_id,
            "params": dict(params),
        }


def joint_embedding(
    adata_real: AnnData,
    others: Sequence[AnnData],
    *,
    names: Sequence[str],
    basis: str = "umap",
    layer: str | None = None,
    n_pcs: int = 30,
    seed: int = 0,
) -> RealEmbedding:
    """The embedding a plot draws: stored by :func:`embed_joint` when possible, else fitted.

    ``basis`` "umap" or "pca" reads ``obsm[f"X_{basis}_joint"]`` when every AnnData holds it
    from one :func:`embed_joint` call, and fits otherwise (warning when only some hold it).
    Any other ``basis`` is an ``obsm`` key (with or without "X_") that every AnnData must hold.
    ``names`` name ``others`` in errors and warnings.
    """
    adatas = [adata_real, *others]
    all_names = ["adata_real", *names]
    if basis in BASES:
        key = joint_key(basis)
        problem = _stored_problem(adatas, all_names, key)
        if problem is None:
            return _read_stored(adatas, key)
        if any(key in adata.obsm for adata in adatas):
            warnings.warn(
                f"{problem}: fitting the embedding again. Run `sbd.pl.embed_joint` once on "
                "all AnnData plotted together to reuse it.",
                UserWarning,
                stacklevel=3,
            )
        return embed_real_project_others(
            adata_real, others, basis=basis, layer=layer, n_pcs=n_pcs, seed=seed
        )
    key = basis if basis in adata_real.obsm or basis.startswith("X_") else f"X_{basis}"
    problem = _stored_problem(adatas, all_names, key)
    if problem is None:
        return _read_stored(adatas, key)
    raise KeyError(
        f"`basis={basis!r}` is neither one of {BASES} nor usable stored coordinates: "
        f"{problem}. Store them with `sbd.pl.embed_joint(adata_real, ..., key_added={key!r})`."
    )


def _stored_problem(adatas: list[AnnData], names: list[str], key: str) -> str | None:
    """Why the coordinates in ``obsm[key]`` cannot be drawn together; None if they can."""
    missing = [name for adata, name in zip(adatas, names, strict=True) if key not in adata.obsm]
    if missing:
        verb = "lacks" if len(missing) == 1 else "lack"
        return f"{', '.join(f'`{name}`' for name in missing)} {verb} `obsm[{key!r}]`"
    narrow = [
        name for adata, name in zip(adatas, names, strict=True)
        if np.ndim(adata.obsm[key]) != 2 or np.shape(adata.obsm[key])[1] < 2
    ]
    if narrow:
        return f"`obsm[{key!r}]` of {', '.join(narrow)} is not an array with 2 or more columns"
    fit_ids = {_stored_info(adata, key).get("fit_id") for adata in adatas} - {None}
    if len(fit_ids) > 1:
        return f"`obsm[{key!r}]` comes from different `embed_joint` calls in these AnnData"
    return None


def _read_stored(adatas: list[AnnData], key: str) -> RealEmbedding:
    coords = [np.asarray(adata.obsm[key], dtype=float)[:, :2] for adata in adatas]
    basis = _stored_info(adatas[0], key).get("basis")
    if basis is None:
        basis = key.removeprefix("X_")
    name = AXIS_NAMES.get(basis, basis.upper())
    return RealEmbedding(coords[0], tuple(coords[1:]), basis, (f"{name}1", f"{name}2"))


def _stored_info(adata: AnnData, key: str) -> dict:
    info = adata.uns.get(key)
    return info if isinstance(info, dict) else {}
