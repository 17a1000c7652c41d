"""Continual learning: add cell types to a trained model without changing the old ones.

See docs/concepts.md ("What the branches make possible") and the paper's continual-learning
experiments (Tseng et al., TMLR 2024). The new types are inserted into the existing hierarchy
(:func:`~scbranchdiff.hierarchy.insert_classes`: old split times stay, an old branch may be cut
in two at a join time), every new branch that serves old classes where an old branch did gets a
bit-identical, frozen copy of that branch's head, and only the heads of branches serving new
types alone are trained, on the new cells, at the times those branches hold. The trunk, the old
heads, the latent model and the latent scaling stay frozen.

Why old types do not change: the class order only grows at the end, so old classes keep their
indices; the sampler draws its random numbers per (seed, branch key = first class of the branch,
global step) and steps on one global time grid, so a branch cut in two at a join time takes the
same steps with the same noise and the same (copied) head as before. Generated cells of old types
for a fixed seed are therefore identical before and after (tested bit for bit).

Heads are copied, not shared: when the join time cuts an old branch, both pieces get their own
copy of the old head. Two identical frozen tensors cost a little memory but keep the network a
plain ModuleList, so ``state_dict``, save and load need nothing special.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from .._checks import check_labels, check_non_negative_int, check_training_arguments
from ..diffusion._transport import class_moments
from ..hierarchy import Hierarchy, insert_classes
from ..module import BranchedScoreNetwork
from ..train import DiffusionTrainingPlan, checkpoint_callbacks, epochs_for_steps, fit_plan

logger = logging.getLogger(__name__)

# Default budget of an addition, in optimiser steps (a full training takes DEFAULT_TRAIN_STEPS).
DEFAULT_CONTINUAL_STEPS = 400
# discovery_kwargs that insert_classes does not take (fit_split_times' reduction)
_NOT_FOR_INSERT = ("reduce",)


class ContinualLearningMixin:
    """Adds :meth:`add_cell_types` to :class:`~scbranchdiff.model.BranchedDiffusion`."""

    def add_cell_types(
        self,
        adata_new: AnnData,
        max_epochs: int | None = None,
        *,
        cell_types: Sequence[str] | None = None,
        batch_size: int = 256,
        lr: float = 2e-3,
        ema_decay: float = 0.999,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        seed: int = 0,
        plan_kwargs: dict | None = None,
        checkpoint_dir: str | None = None,
        residual: str | None = None,
        n_residual: int | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Learn new cell types while every old type stays exactly as it was.

        The new types are inserted into the hierarchy with the criterion that built it
        (:func:`~scbranchdiff.hierarchy.insert_classes`, reference cells: the registered
        AnnData); old split times do not move. Heads of branches that serve old types are
        frozen copies of the old heads; heads of branches serving new types only are added,
        warm-started from the head of the branch they split off, and trained on the new cells
        at the times they hold. The trunk, the latent model and the latent scaling are frozen:
        the new cells are encoded with the trained latent model.

        Parameters
        ----------
        adata_new
            Cells of one or more unseen types: same genes as the model (reordered by name when
            only the order differs), expression in the registered layer, types in
            ``obs[labels_key]`` (and batches in ``obs[batch_key]``, of known batches). Cells of
            types the model knows are ignored: their branches are frozen. Not modified.
        max_epochs
            Passes over the new cells. Default: enough for about 400 optimiser steps (at
            least 20 epochs).
        cell_types
            Which types of `adata_new` to add (appended in this order). Default: every type
            the model does not know, in category order (order of appearance if not categorical).
        batch_size, lr, ema_decay, accelerator, devices, seed, plan_kwargs, checkpoint_dir, **trainer_kwargs
            As in :meth:`train` (the same training path: trainer settings, DDP strategies,
            checkpoints and resuming with ``ckpt_path="last"``).
        residual
            What each new type gets beyond the frozen latent model (latents that decode only):

            - ``"offset"`` (default): a per-type correction of the frozen decoder, fitted on the
              type's cells (scVI: :class:`~scbranchdiff.latent.CountOffset`, offsets of the log
              expression frequencies, zero-inflation and dispersion; PCA: the type's mean in the
              space the frozen components leave). The type varies through its latents, like
              every other type.
            - ``"codes"``: residual codes of `n_residual` dimensions with decoder weights of
              their own (scVI: :class:`~scbranchdiff.latent.CountResidual`; PCA: the type's
              own principal components beyond the frozen ones), drawn at random per cell.
              Measured to make cells easier to tell from real ones than the offset (docs:
              benchmarks); kept for types the offset cannot describe.
            - ``"none"``: the frozen latent model alone (the behaviour before 0.4).

            Default for a given embedding (nothing to decode): ``"none"``. For compatibility
            with 0.4, ``n_residual=0`` alone means ``"none"`` and ``n_residual > 0`` alone
            means ``"codes"``.
        n_residual
            Dimensions of the residual codes with ``residual="codes"`` (default: the latent's
            dimension, ``n_latent``).

        Raises
        ------
        ValueError
            Genes differ from the model's, a type in `cell_types` is already known or has no
            cells, `adata_new` holds no unseen type, or the model is the flat baseline (all its
            weights serve every type: retrain it instead). Nothing is changed then; a failure
            during training also restores the model.

        Notes
        -----
        After the call the new types are last in :attr:`classes` and in the hierarchy; they can
        be generated, transmuted and saved like the others. Generated cells of old types are
        bit-identical to those of the model before the call for the same seed and settings.
        ``train_settings_["added_cell_types"]`` records each addition (saved with the model);
        ``history_`` then holds the addition's training history.

        The latent model is frozen. A latent fitted without a type cannot express what only
        that type does (the genes only it uses): with ``residual="none"`` its generated cells
        look like their nearest old relative. The residual gives it room: a generated cell of a
        new type is the diffusion's latent (in the frozen latent, placed in the hierarchy like
        any type), decoded by the frozen decoder corrected by the type's residual. Old types
        never pass through a residual, so their decoded cells cannot change; the residuals of
        earlier additions stay frozen like everything else. The join points are found from the
        registered AnnData's cells of the old types (a model loaded with an AnnData lacking
        some old types uses the types present).

        Examples
        --------
        Train on seven simulated types, then learn the eighth:

        >>> import scanpy as sc
        >>> import scbranchdiff as sbd
        >>> adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
        >>> sc.pp.normalize_total(adata, target_sum=1e4)
        >>> sc.pp.log1p(adata)
        >>> is_new = (adata.obs["cell_type"] == "T_CD8").to_numpy()
        >>> old = adata[~is_new].copy()
        >>> old.obs["cell_type"] = old.obs["cell_type"].cat.remove_unused_categories()
        >>> sbd.model.BranchedDiffusion.setup_anndata(old, labels_key="cell_type")
        >>> model = sbd.model.BranchedDiffusion(old, latent="pca", n_hidden=64)
        >>> model.train(max_epochs=20, enable_progress_bar=False)
        >>> before = model.generate(10, seed=0)
        >>> model.add_cell_types(adata[is_new].copy(), max_epochs=20, enable_progress_bar=False)
        >>> model.classes[-1]
        'T_CD8'
        >>> after = model.generate(10, seed=0)
        >>> bool((after.obsm["X_latent"][:70] == before.obsm["X_latent"]).all())  # old types unchanged
        True
        """
        import lightning.pytorch as pl

        self._check_trained()
        if self.is_label_guided:
            raise ValueError(
                "`add_cell_types` needs a branched model: the flat baseline shares every weight "
                "between cell types, so learning a new type would change the old ones. Retrain "
                "the flat model on all cells instead."
            )
        check_training_arguments(max_epochs, batch_size, lr, ema_decay, seed)
        residual, n_residual = self._residual_choice(residual, n_residual)
        self._check_real_cells("`add_cell_types` (the old types' cells place the new ones)")
        callbacks = checkpoint_callbacks(checkpoint_dir, trainer_kwargs)
        pl.seed_everything(seed, verbose=False)
        cells, labels, new_types = self._new_type_cells(adata_new, cell_types)
        z_new = self._encode_new(cells)
        z_ref = self._scale(self.latent_backend.encode(self.adata))
        ref_labels = self.adata.obs[self.labels_key].astype(str).to_numpy()
        old = self.hierarchy
        kwargs = {k: v for k, v in self.discovery_kwargs.items() if k not in _NOT_FOR_INSERT}
        kwargs.setdefault("seed", seed)
        new = insert_classes(
            old,
            np.concatenate([z_ref, z_new]),
            np.concatenate([ref_labels, labels]),
            sde=self.sde,
            new_classes=new_types,
            **kwargs,
        )
        mapping = Hierarchy.map_branches(old, new)
        network, trained = _grow_network(self.module, new, mapping)
        cell_type = new.class_index(labels)
        if max_epochs is None:
            max_epochs = epochs_for_steps(len(z_new), batch_size, DEFAULT_CONTINUAL_STEPS, min_epochs=20)

        with self._rollback_on_failure():
            self.module = network
            plan = DiffusionTrainingPlan(
                network, new, self.sde, lr=lr, ema_decay=ema_decay, t_max=_join_times(new, mapping),
                **(plan_kwargs or {}),
            )
            fit_plan(
                self, plan, z_new, cell_type, batch_size=batch_size, max_epochs=max_epochs, seed=seed,
                accelerator=accelerator, devices=devices, extra_callbacks=callbacks, **trainer_kwargs,
            )
            # what decoding the new types needs (e.g. scVI library sizes); all or nothing
            self.latent_backend.add_cell_types(cells, labels, self.layer, n_residual=n_residual, seed=seed)
        for p in network.parameters():
            p.requires_grad_(True)
        network.eval()
        if self.class_mean_ is None:  # a model saved before class moments were kept
            self.class_mean_, self.class_cov_ = class_moments(z_ref, ref_labels, old.classes)
        added_mean, added_cov = class_moments(z_new, labels, new.classes[len(old.classes):])
        self.class_mean_ = np.concatenate([self.class_mean_, added_mean])
        self.class_cov_ = np.concatenate([self.class_cov_, added_cov])
        self.hierarchy_ = new
        self._hierarchy_spec = new
        self.classes = new.classes
        self._sync_label_registry()
        self.train_settings_.setdefault("added_cell_types", []).append(
            {
                "cell_types": list(new_types),
                "n_cells": int(len(z_new)),
                "trained_heads": [int(b) for b in trained],
                "max_epochs": int(max_epochs),
                "batch_size": int(batch_size),
                "lr": float(lr),
                "ema_decay": float(ema_decay),
                "seed": int(seed),
                "residual": residual,
                "n_residual": n_residual,
            }
        )

    # ------------------------------------------------------------------ helpers
    def _residual_choice(self, residual: str | None, n_residual: int | None) -> tuple[str, int | None]:
        """(residual kind, what the backend gets: None = none, 0 = offset, k = k code dimensions)."""
        if n_residual is not None:
            n_residual = check_non_negative_int("n_residual", n_residual)
        if residual is None:
            if n_residual is None:
                residual = "offset" if self.latent_backend.can_decode else "none"
            else:  # the meaning of n_residual alone in 0.4
                residual = "codes" if n_residual > 0 else "none"
        if residual not in ("offset", "codes", "none"):
            raise ValueError(f"`residual` must be 'offset', 'codes' or 'none', got {residual!r}.")
        if residual != "none" and not self.latent_backend.can_decode:
            raise ValueError(
                f"`residual={residual!r}` needs a latent that decodes (scVI or PCA); the model's latent "
                "is a given embedding: pass residual='none'."
            )
        if residual == "codes":
            n_residual = int(self.latent_backend.n_latent if n_residual is None else n_residual)
            if n_residual < 1:
                raise ValueError("`residual='codes'` needs `n_residual` >= 1.")
            return residual, n_residual
        if n_residual is not None and not (residual == "none" and n_residual == 0):
            raise ValueError(f"`n_residual` is for residual='codes', got residual={residual!r} and "
                             f"n_residual={n_residual!r}.")
        return residual, (0 if residual == "offset" else None)

    def _new_type_cells(
        self, adata_new: AnnData, cell_types: Sequence[str] | None
    ) -> tuple[AnnData, np.ndarray, list[str]]:
        """Validate `adata_new`; return a copy of its new-type cells, their labels and the types."""
        if not isinstance(adata_new, AnnData):
            raise TypeError(f"`adata_new` must be an AnnData, got {type(adata_new).__name__}.")
        labels_key = self.labels_key
        check_labels(adata_new, labels_key)
        # genes (or the embedding) first: a wrong AnnData is reported as such
        aligned = self.latent_backend.check_compatible(
            adata_new, var_names=self.adata.var_names, layer=self.layer, argument="adata_new"
        )
        names = adata_new.obs[labels_key]
        labels = names.astype(str).to_numpy()
        present = (
            [str(c) for c in names.cat.categories if str(c) in set(labels)]
            if isinstance(names.dtype, pd.CategoricalDtype)
            else list(pd.unique(labels))
        )
        if cell_types is None:
            new_types = [c for c in present if c not in self.classes]
            if not new_types:
                raise ValueError(
                    f"adata_new.obs[{labels_key!r}] holds no new cell type: its types "
                    f"{present} are all known to the model ({list(self.classes)})."
                )
        else:
            if isinstance(cell_types, str):
                cell_types = [cell_types]
            new_types = [str(c) for c in cell_types]
            known = [c for c in new_types if c in self.classes]
            if known:
                raise ValueError(
                    f"`cell_types` {known} already exist in the model; only unseen types can be "
                    f"added (known: {list(self.classes)})."
                )
            absent = [c for c in new_types if c not in present]
            if absent:
                raise ValueError(
                    f"`cell_types` {absent} have no cells in adata_new.obs[{labels_key!r}] "
                    f"(types there: {present})."
                )
            if len(set(new_types)) != len(new_types):
                raise ValueError(f"`cell_types` must be unique, got {new_types}.")
        mask = np.isin(labels, new_types)
        cells = aligned[mask].copy()
        self.latent_backend.check_values(cells, self.layer, "add_cell_types")
        if self.batch_key is not None:
            self._check_new_batches(cells)
        return cells, labels[mask], new_types

    def _check_new_batches(self, cells: AnnData) -> None:
        key = self.batch_key
        if key not in cells.obs:
            raise KeyError(f"`batch_key={key!r}` is not a column of adata_new.obs.")
        registry = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
        known = {str(b) for b in registry.categorical_mapping}
        unknown = sorted(set(cells.obs[key].astype(str)) - known)
        if unknown:
            raise ValueError(
                f"adata_new.obs[{key!r}] has batches the latent model was not trained on: "
                f"{unknown} (known: {sorted(known)})."
            )

    def _encode_new(self, cells: AnnData) -> np.ndarray:
        z = self.latent_backend.encode(cells)
        if not np.isfinite(z).all():
            raise ValueError(
                "The new cells have non-finite latent coordinates: check their expression values."
            )
        return self._scale(z)

    def _sync_label_registry(self) -> None:
        """Append model classes missing from the registered label categories (codes unchanged).

        Lets AnnData holding added types be transferred to the model's setup (e.g. by
        `get_latent_representation` or transmutation) after `add_cell_types` or a load with an
        AnnData lacking some types. The registered AnnData's codes stay as they are.
        """
        manager = getattr(self, "adata_manager", None)
        classes = getattr(self, "classes", None)
        if manager is None or not classes:
            return
        field = manager.registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]
        state = field["state_registry"]
        mapping = np.asarray(state["categorical_mapping"])
        missing = [c for c in classes if c not in set(map(str, mapping))]
        if not missing:
            return
        extended = np.concatenate([mapping, np.asarray(missing, dtype=mapping.dtype)])
        state["categorical_mapping"] = extended
        stats = field.get("summary_stats", {})
        for key in stats:
            stats[key] = len(state["categorical_mapping"])

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData:
        self._sync_label_registry()
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)


# ---------------------------------------------------------------------- network surgery
def _grow_network(
    network: BranchedScoreNetwork, new: Hierarchy, mapping: dict[int, int]
) -> tuple[BranchedScoreNetwork, list[int]]:
    """A copy of `network` with one head per branch of `new`; only the new heads train.

    Branch j of `new` gets a copy of old head ``mapping[j]`` when mapped, else a new head
    warm-started from the head of its nearest mapped ancestor. Returns the network and the
    indices of the trainable heads.
    """
    grown = copy.deepcopy(network)
    n_old = len(grown.heads)
    unmapped = [j for j in range(new.n_branches) if j not in mapping]
    sources = [mapping[_nearest_mapped_ancestor(new, j, mapping)] for j in unmapped]
    added = grown.add_heads(len(unmapped), warm_start_from=sources)
    appended = dict(zip(unmapped, added, strict=True))
    used: set[int] = set()
    heads = []
    for j in range(new.n_branches):
        if j in appended:
            heads.append(grown.heads[appended[j]])
            continue
        head = grown.heads[mapping[j]]
        # an old branch cut in two by a join time: each piece gets its own (identical) copy
        heads.append(copy.deepcopy(head) if mapping[j] in used else head)
        used.add(mapping[j])
    assert len(heads) == new.n_branches and n_old >= len(used)
    grown.heads = torch.nn.ModuleList(heads)
    grown.requires_grad_(False)
    for j in unmapped:
        grown.heads[j].requires_grad_(True)
    return grown, unmapped


def _nearest_mapped_ancestor(hierarchy: Hierarchy, branch: int, mapping: dict[int, int]) -> int:
    b = hierarchy.parent(branch)
    while b is not None and b not in mapping:
        b = hierarchy.parent(b)
    if b is None:  # pragma: no cover - the root always maps (it holds every old class)
        raise RuntimeError("The root of the grown hierarchy does not map to the old root.")
    return b


def _join_times(hierarchy: Hierarchy, mapping: dict[int, int]) -> np.ndarray:
    """Per class: the lowest start of a frozen (mapped) branch on its path (0 for old classes)."""
    t_max = np.zeros(hierarchy.n_classes, dtype=np.float32)
    for k, c in enumerate(hierarchy.classes):
        path = hierarchy.path(c)
        if path[-1] not in mapping:
            t_max[k] = min(hierarchy.branches[b].t_start for b in path if b in mapping)
    return t_max
