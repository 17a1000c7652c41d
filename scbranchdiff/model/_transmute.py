"""Transmutation and branch-point intermediates.

Both are described in docs/concepts.md ("What the branches make possible").

A mixin of :class:`~scbranchdiff.model.BranchedDiffusion`: it uses the model's latent backend,
scaling, hierarchy and :class:`~scbranchdiff.diffusion.TreeSampler`, and adds no state.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._checks import check_positive_int, check_time, gene_indexer
from .._frames import plain_strings
from ..diffusion import SAMPLERS
from ..diffusion._transport import class_moments
from ._generation import DEFAULT_SAMPLER, _resolve_seed, cells_bar

if TYPE_CHECKING:  # pragma: no cover
    pass

INTERMEDIATE = "intermediate"
LEAF = "leaf"


class TransmutationMixin:
    """Transmutation and intermediates for :class:`~scbranchdiff.model.BranchedDiffusion`."""

    # ------------------------------------------------------------------ transmutation
    def transmute(
        self,
        adata: AnnData | None = None,
        target: str | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        t: float | None = None,
        sampler: str = "ode",
        *,
        n_steps: int | None = None,
        seed: int | None = 0,
        batch_size: int = 10_000,
        progress_bar: bool | None = None,
        match: bool = True,
        method: str | None = None,
    ) -> AnnData:
        """Turn cells of any type into cells of `target`, keeping what they share with it.

        Each cell's latent is taken up to ``t_split``, the time at which its type and `target`
        stop sharing a branch of the hierarchy (the start of the smallest branch holding both),
        and brought back down to t = 0 along `target`'s path. Above ``t_split`` the model does
        not tell the two types apart, so what the cell has there (cell state, donor, ...) is
        kept and the type-specific part is regenerated as `target`.

        Parameters
        ----------
        adata
            Cells to transmute: the registered AnnData (None) or a new one with the same genes
            (same names; another order is reordered by name), the registered layer and
            ``obs[labels_key]`` holding each cell's type (a type the model knows); the batch
            column too if the model was set up with one. Nothing is written into it.
        target
            Cell type to turn the cells into (a type the model knows).
        indices
            Cells of `adata` to use (integer positions or a boolean mask); None uses all.
        t
            Time to noise every cell to instead of its split time, in (0, 1]. Larger keeps less
            of the cell. Required for the flat (label-guided) model, which has no split times,
            unless every cell is already of type `target`.
        sampler
            "ode" (default): deterministic; the cell is encoded up the probability-flow ODE of
            its own type's path to ``t_split`` and decoded down `target`'s path. "sde": the
            paper's version; the cell is noised to ``t_split`` with the forward kernel
            ``x_t = a(t) x_0 + s(t) z`` and the reverse SDE is integrated down `target`'s path
            ("ancestral": the same forward noising, then ancestral steps). See Notes for which
            to use.
        n_steps
            Steps of a full path from t = 1 to 0 (the defaults of :meth:`generate`); a path
            from ``t_split`` takes that fraction of them.
        seed
            Seed of the forward noise and the reverse SDE ("sde"); "ode" is deterministic.
            None draws one (recorded in ``uns``).
        batch_size
            At most this many cells are integrated at once.
        progress_bar
            As in :meth:`generate`.
        match
            Move each cell's state at ``t_split`` onto `target`'s noised distribution before
            going down (default): the optimal-transport map between Gaussian approximations of
            the two types' latents noised to ``t_split``
            (:func:`~scbranchdiff.diffusion.noised_gaussian_map`). It is affine, so differences
            between cells are kept. False: the state is used as it is (the paper's version).
            See Notes.
        method
            Former name of `sampler` (deprecated).

        Returns
        -------
        AnnData like :meth:`generate`'s (one row per input cell, in input order, of type
        `target`) with ``obs`` columns "source_cell" (``obs_name`` of the input cell),
        "source_type", "target_type" and "t_split" (the time the cell was taken to),
        ``obsm["X_latent"]`` the transmuted latent and ``uns["scbranchdiff"]`` the settings.

        Notes
        -----
        **ODE or SDE.** The ODE version keeps much more of each cell. On simulated data (8
        types, PCA latent) with a continuous cell state independent of the type, the Pearson
        correlation between the state of source and transmuted cells was 0.95-0.97 with "ode"
        and -0.35 to 0.41 with "sde" (5 source/target pairs, split times 0.55-0.70); on
        pbmc68k (scVI latent) the within-type correlation of source and transmuted latents was
        0.69-0.80 with "ode" and about 0 with "sde". At these split times the forward kernel
        keeps only a(t) = 0.08-0.22 of the cell, so "sde" draws nearly fresh cells. Turning
        every held-out cell into each other type (``benchmarks/transmutation.py``, package
        defaults), transmuted cells were recognised as their target 0.97-1.12 ("ode") and
        0.76-1.09 ("sde") times as often as held-out real cells of the target on pbmc68k, and
        at least 0.9 times as often as the model's own generated cells of the target (same
        sampler) or decoded real cells, whichever is higher, for 31 of 31 targets ("ode") and
        29 of 31 ("sde") on pbmc68k, paul15, pbmc_facs and the simulated tree. Use "ode"
        (the default) to follow individual cells (which cell became which, what it kept); use
        "sde", the paper's version, for fresh target cells that share only the coarsest
        features of the sources (e.g. resampled with several seeds).

        **Moment matching at the split** (`match`). A split is placed where the two types'
        noised distributions become hard to tell apart, not where they are equal, so a state
        taken up from a cell still carries its type's side of the split; the ODE keeps it all
        the way down. Cells turned into a type that splits late from their own were then often
        recognised as neither: on pbmc_facs, naive into cytotoxic CD8 T cells 0.84 ("ode") and
        0.88 ("sde") times as often as real cytotoxic T cells; with the matching 1.10 and 0.96
        (``benchmarks/transmutation.py``; on a simulated late split, tests/test_transmute.py,
        the ODE went from 0.83-1.06 to 1.00-1.19). The map is affine, so what differs between
        the cells is kept (within-type correlation of source and transmuted latents 0.77-0.98
        in that benchmark, as without the map). Where transmuted cells of a type still fall
        short of real ones, the model's own cells of that type fall short as well
        (docs/benchmarks.md, "Transmutation into late-splitting siblings").

        **Cells already of type `target`** have ``t_split = 0``: they are returned unchanged
        (their latent is decoded again, so counts are re-sampled for an scVI latent) unless a
        `t` is given.

        **Flat model.** The flat (label-guided) model has one branch for every type, so no
        split time: pass `t` (e.g. the split time of the branched model for the same types).
        Its states at ``t`` are then decoded with the class label switched to `target`.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> adata = model.adata
        >>> monocytes = (adata.obs["bulk_labels"] == "CD14+ Monocyte").to_numpy()
        >>> b_cells = model.transmute(adata, target="CD19+ B", indices=monocytes)
        >>> b_cells.obs[["source_type", "target_type"]].drop_duplicates().values.tolist()
        [['CD14+ Monocyte', 'CD19+ B']]
        """
        self._check_trained()
        if method is not None:
            warnings.warn(
                "`method` is deprecated: use `sampler` (the same name as in `generate`).",
                FutureWarning,
                stacklevel=2,
            )
            sampler = method
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
        check_positive_int("batch_size", batch_size)
        if not isinstance(match, bool | np.bool_):
            raise TypeError(f"`match` must be True or False, got {match!r}.")
        seed = _resolve_seed(seed)
        hierarchy = self.hierarchy
        if target is None or not isinstance(target, str):
            raise TypeError(f"`target` must be a cell type name (str), got {target!r}.")
        if target not in hierarchy.classes:
            raise KeyError(
                f"Unknown `target` {target!r}; the model knows {list(hierarchy.classes)}."
            )
        if t is not None:
            t = self._check_diffusion_time(t)
        cells, source_names = self._transmutation_input(adata, indices)
        if len(source_names) == 0:
            raise ValueError("No cells to transmute: `indices` selects none.")
        source_types = cells.obs[self.labels_key].astype(str).to_numpy()
        if t is None and self.is_label_guided and (source_types != target).any():
            raise ValueError(
                "The flat model has no split times between cell types: pass `t` (in (0, 1]) "
                "to transmute cells of another type."
            )

        self._check_latent_ready()
        z0 = self._scale(self.latent_backend.encode(cells))
        moments = self._class_moments() if match else None
        target_idx = int(hierarchy.class_index([target])[0])
        out_z = np.empty_like(z0)
        t_split = np.zeros(len(z0))
        with cells_bar(len(z0), "Transmuting", progress_bar) as update:
            tree = self._sampler(sampler, n_steps, seed, progress=update)
            for source in dict.fromkeys(source_types):
                rows = np.flatnonzero(source_types == source)
                source_idx = int(hierarchy.class_index([source])[0])
                t_s = hierarchy.split_time(source, target) if t is None else t
                t_split[rows] = t_s
                if t_s <= 0.0:
                    out_z[rows] = z0[rows]
                    update(len(rows))
                    continue
                pair = None
                if moments is not None:
                    mean, cov = moments
                    pair = (mean[source_idx], cov[source_idx], mean[target_idx], cov[target_idx])
                for b, start in enumerate(range(0, len(rows), batch_size)):
                    part = rows[start : start + batch_size]
                    x0 = torch.as_tensor(z0[part], dtype=tree.dtype, device=tree.device)
                    out_z[part] = tree.transmute(x0, source_idx, target_idx, t_s, chunk=b, moments=pair).cpu().numpy()
        z = self._unscale(out_z)
        out = self._to_anndata(z, np.full(len(z), target, dtype=object), seed)
        out.obs["source_cell"] = np.asarray(source_names, dtype=str)
        out.obs["source_type"] = pd.Categorical(source_types, categories=list(self.classes))
        out.obs["target_type"] = pd.Categorical([target] * len(z), categories=list(self.classes))
        out.obs["t_split"] = t_split
        out.obs_names = [f"{name}->{target}" for name in source_names]
        out.obs_names_make_unique()
        out.obs = plain_strings(out.obs)
        out.uns["scbranchdiff"] = self._provenance(
            operation="transmute", target=target, sampler=sampler, t=t, n_steps=tree.n_steps,
            seed=seed, match=bool(match and moments is not None),
        )
        return out

    def _class_moments(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-type latent means and covariances (scaled latent), or None where none can be had.

        Kept since training; a model saved by 0.5 or earlier has none, so they are computed
        from the registered cells (and kept). Loaded without cells, such a model transmutes
        without moment matching (with a warning).
        """
        if self.class_mean_ is None:
            if self.has_placeholder_adata:
                warnings.warn(
                    "This model was saved by scbranchdiff 0.5 or earlier, without the cell types' "
                    "latent moments, and was loaded without cells: transmuting without moment "
                    "matching (as with match=False). Load it with its training AnnData to match.",
                    UserWarning,
                    stacklevel=3,
                )
                return None
            labels = self.adata.obs[self.labels_key].astype(str).to_numpy()
            absent = sorted(set(self.classes) - set(labels))
            if absent:
                warnings.warn(
                    "This model was saved by scbranchdiff 0.5 or earlier, without the cell types' "
                    f"latent moments, and its AnnData has no cells of {absent}: transmuting without "
                    "moment matching (as with match=False). Load it with cells of every type to match.",
                    UserWarning,
                    stacklevel=3,
                )
                return None
            z = self._scale(self.latent_backend.encode(self.adata))
            self.class_mean_, self.class_cov_ = class_moments(z, labels, self.classes)
        return self.class_mean_, self.class_cov_

    def _check_diffusion_time(self, t: float) -> float:
        """`t` checked to lie in [t_min, 1], the times the model was trained on."""
        t = check_time(t, "t")
        if t < self.sde.t_min:
            raise ValueError(
                f"`t` must lie in [{self.sde.t_min}, 1] (the smallest time the model was trained "
                f"on is t_min = {self.sde.t_min}), got {t}."
            )
        return t

    def _transmutation_input(
        self, adata: AnnData | None, indices: Sequence[int] | np.ndarray | None
    ) -> tuple[AnnData, np.ndarray]:
        """A view of the cells to transmute with the model's genes in its order, and their names.

        Checks everything the encoder and the source types need; writes nothing into `adata`.
        """
        labels_key, layer = self.labels_key, self.layer
        if adata is None:
            self._check_real_cells("`transmute` without `adata`")
            adata = self.adata
        elif not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData or None, got {type(adata).__name__}.")
        elif adata is not self.adata:
            positions = gene_indexer(self.adata.var_names, adata.var_names)
            if positions is not None:
                # same set, other order: a view in the model's order
                adata = adata[:, positions]
            if labels_key not in adata.obs:
                raise KeyError(
                    f"`adata.obs` has no column {labels_key!r} (the model's labels key): "
                    "transmutation needs each cell's type. Set it up like the training data."
                )
            if layer is not None and layer not in adata.layers:
                raise KeyError(
                    f"`adata.layers` has no {layer!r} (the layer the model was set up with); "
                    f"found {list(adata.layers)}."
                )
            if self.batch_key is not None and self.batch_key not in adata.obs:
                raise KeyError(f"`adata.obs` has no batch column {self.batch_key!r}.")
        if indices is not None:
            idx = np.asarray(indices)
            if idx.dtype == bool:
                if idx.shape != (adata.n_obs,):
                    raise ValueError(
                        f"A boolean `indices` must have one entry per cell ({adata.n_obs}), "
                        f"got shape {idx.shape}."
                    )
                idx = np.flatnonzero(idx)
            elif idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(
                    f"`indices` must hold integer positions or booleans, got {idx.dtype}."
                )
            idx = idx.astype(np.int64).ravel()
            if idx.size and (idx.min() < -adata.n_obs or idx.max() >= adata.n_obs):
                raise IndexError(f"`indices` must lie in [0, {adata.n_obs - 1}].")
            adata = adata[idx]
        self.latent_backend.check_values(adata, layer, "transmute")
        labels = adata.obs[labels_key]
        if labels.isna().any():
            raise ValueError(f"`adata.obs[{labels_key!r}]` has missing cell types.")
        unknown = sorted(set(labels.astype(str)) - set(self.hierarchy.classes))
        if unknown:
            raise ValueError(
                f"`adata.obs[{labels_key!r}]` has cell types the model does not know: {unknown} "
                f"(known: {list(self.hierarchy.classes)})."
            )
        return adata, adata.obs_names.astype(str).to_numpy()

    # ------------------------------------------------------------------ intermediates
    def sample_intermediates(
        self,
        cell_types: Sequence[str],
        n_cells: int = 100,
        *,
        t: float | None = None,
        sampler: str = DEFAULT_SAMPLER,
        n_steps: int | None = None,
        seed: int | None = 0,
        progress_bar: bool | None = None,
    ) -> AnnData:
        """Sample states shared by several cell types, and what each becomes in every type.

        States are sampled from t = 1 down to `t` (default: the branch point where
        `cell_types` split); each state is then continued down the path of every type in
        `cell_types`. Each state thus has one intermediate row and one leaf row per type,
        linked by ``obs["state_id"]``: one shared state followed into each type.

        Parameters
        ----------
        cell_types
            Two or more cell types known to the model.
        n_cells
            Number of shared states (each gives one cell of every type).
        t
            Time of the intermediate states, between the split time of `cell_types` (the
            default) and 1.
        sampler
            "ancestral" (default), "sde" or "ode"; see :meth:`generate`.
        n_steps
            Steps of a full path from t = 1 to 0 (the defaults of :meth:`generate`).
        seed
            Seed. The leaf cells equal ``generate({type: n_cells for type in cell_types},
            seed=seed)`` with the same `sampler` and `n_steps`. None draws one.
        progress_bar
            As in :meth:`generate`.

        Returns
        -------
        AnnData like :meth:`generate`'s with ``n_cells * (1 + len(cell_types))`` rows and
        ``obs`` columns "stage" ("intermediate" or "leaf"), "state_id", "t" (the time of the
        state: the first grid time at or below `t` for intermediates, 0 for leaves), "branch"
        (index in ``model.hierarchy.branches`` of the branch that produced the row) and
        ``obs[labels_key]`` (the leaf type; missing for intermediates, so scanpy draws them
        grey). ``obsm["X_state"]`` holds the diffusion state in the scaled latent (the noisy
        state for intermediates, the final latent for leaves); ``uns["scbranchdiff"]`` has
        the settings and "cell_types". Plot it with :func:`scbranchdiff.pl.intermediates`.

        Notes
        -----
        A noisy state at ``t > 0`` is not a cell. Intermediate rows decode its denoised
        estimate (Tweedie's formula, ``x0_hat = (x_t - s(t) eps_hat) / a(t)`` with the head of
        the branch shared by `cell_types`), the mean of the cells the state can still become:
        a hybrid of the types. ``obsm["X_latent"]`` is that estimate. With an scVI latent the
        library sizes of intermediates are drawn from the cells of `cell_types`.
        The flat model shares no states between types and raises ValueError.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> states = model.sample_intermediates(["CD14+ Monocyte", "Dendritic"], n_cells=20)
        >>> states.obs["stage"].value_counts().to_dict()
        {'leaf': 40, 'intermediate': 20}
        """
        self._check_trained()
        if self.is_label_guided:
            raise ValueError(
                "The flat (label-guided) model shares no states between cell types: intermediates "
                "need a branched hierarchy."
            )
        hierarchy = self.hierarchy
        if isinstance(cell_types, str) or not isinstance(cell_types, Sequence):
            raise TypeError(f"`cell_types` must be a list of cell type names, got {cell_types!r}.")
        cell_types = [str(c) for c in cell_types]
        unknown = [c for c in cell_types if c not in hierarchy.classes]
        if unknown:
            raise KeyError(
                f"Unknown cell types {unknown}; the model knows {list(hierarchy.classes)}."
            )
        if len(set(cell_types)) < 2 or len(set(cell_types)) != len(cell_types):
            raise ValueError(
                f"`cell_types` must name two or more distinct types, got {cell_types}."
            )
        n_cells = check_positive_int("n_cells", n_cells)
        common = hierarchy.common_branch(*cell_types)
        t_split = hierarchy.branches[common].t_start
        if t is None:
            t = t_split
        else:
            t = self._check_diffusion_time(t)
            if t < t_split:
                raise ValueError(
                    f"`t={t}` lies below the split time {t_split:.3f} of {cell_types}: their "
                    "states are no longer shared there."
                )
        if t_split <= 0.0:  # pragma: no cover - two distinct types always split above 0
            raise ValueError(f"{cell_types} share a branch down to t = 0.")

        seed = _resolve_seed(seed)
        idx = [int(k) for k in hierarchy.class_index(cell_types)]
        counts = {k: n_cells for k in idx}
        with cells_bar(n_cells * len(idx), "Sampling", progress_bar) as update:
            tree = self._sampler(sampler, n_steps, seed, progress=update)
            x, _ = tree.prior(counts)
            state = tree.descend_to(t, x, counts)
            x_t, branch, t_state = state.x, state.branch, state.t
            x0_hat = tree.denoise(state).cpu().numpy()
            # continue the same states down each child branch (types sharing one go together)
            child_of = hierarchy.branch_index(np.asarray(idx), t_state)
            leaves: dict[int, np.ndarray] = {}
            for child in dict.fromkeys(int(c) for c in child_of):
                group = {k: n_cells for k, c in zip(idx, child_of, strict=True) if c == child}
                for k, z in tree.descend(child, x_t, t_state, group, memory=state.memory).items():
                    leaves[k] = z.cpu().numpy()

        rng = np.random.default_rng(seed)
        state_ids = np.arange(n_cells)
        pick = rng.integers(len(cell_types), size=n_cells)
        hybrid_types = np.asarray(cell_types, dtype=object)[pick]
        inter = self._to_anndata(self._unscale(x0_hat), hybrid_types, seed)
        inter.obs[self.labels_key] = pd.Categorical([None] * n_cells, categories=list(self.classes))
        inter.obs["stage"] = INTERMEDIATE
        inter.obs["state_id"] = state_ids
        inter.obs["t"] = float(t_state)
        inter.obs["branch"] = int(branch)
        inter.obsm["X_state"] = x_t.cpu().numpy()
        inter.obs_names = [f"intermediate-{i}" for i in state_ids]
        parts = [inter]
        for k, name in zip(idx, cell_types, strict=True):
            types = np.full(n_cells, name, dtype=object)
            leaf = self._to_anndata(self._unscale(leaves[k]), types, seed + 1 + k)
            leaf.obs["stage"] = LEAF
            leaf.obs["state_id"] = state_ids
            leaf.obs["t"] = 0.0
            leaf.obs["branch"] = int(hierarchy.leaf(name))
            leaf.obsm["X_state"] = leaves[k]
            leaf.obs_names = [f"{name}-{i}" for i in state_ids]
            parts.append(leaf)
        out = ad.concat(parts, join="outer", merge="first")
        out.obs["stage"] = pd.Categorical(out.obs["stage"], categories=[INTERMEDIATE, LEAF])
        out.obs[self.labels_key] = pd.Categorical(
            out.obs[self.labels_key].astype(object), categories=list(self.classes)
        )
        out.obs = plain_strings(out.obs)
        out.var = plain_strings(out.var)
        out.uns["scbranchdiff"] = self._provenance(
            operation="sample_intermediates", cell_types=cell_types, t=float(t_state),
            sampler=sampler, n_steps=tree.n_steps, seed=seed,
        )
        return out
