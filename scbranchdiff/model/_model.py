"""`BranchedDiffusion`: the AnnData-facing scvi-tools model. It wires the parts, no maths here."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from .. import __version__
from ..diffusion import SAMPLERS, VPSDE, TreeSampler
from ..hierarchy import Hierarchy, Topology, discover_hierarchy, fit_split_times
from ..latent import BACKENDS, LatentBackend, ObsmLatent, PCALatent, SCVILatent
from ..module import BranchedScoreNetwork
from ..module._training_plan import DiffusionTrainingPlan, LatentDataModule
from . import _io
from ._continual import ContinualLearningMixin
from ._transmute import TransmutationMixin
from ._validation import (
    align_genes,
    check_anndata,
    check_counts,
    check_expression,
    check_in_memory,
    check_labels,
    expression_matrix,
    warn_small_types,
)

logger = logging.getLogger(__name__)

HierarchySpec = str | Sequence[str] | Mapping | Hierarchy | Topology

# Default training budget, in optimiser steps (see docs: measured on pbmc68k and pbmc_facs).
DEFAULT_TRAIN_STEPS = 8000
DEFAULT_SAMPLER = "sde"
# Measured (docs/concepts.md, "Choosing a sampler"): 200 SDE steps matched or beat 500 on
# pbmc68k and pbmc_facs at 2.5x the speed; the ODE scored a worse two-sample AUC.
DEFAULT_N_STEPS = {"sde": 200, "ode": 100}


class BranchedDiffusion(ContinualLearningMixin, TransmutationMixin, BaseModelClass):
    """Hierarchically branched diffusion model of single cells (Tseng et al., TMLR 2024).

    Learns a cell-type hierarchy from the data, trains one reverse-diffusion branch per part
    of it in a latent space (scVI by default) and generates, transmutes and interpolates cells.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    registry
        Registry of a saved model (used by :meth:`load`; leave None).
    latent
        Where the diffusion runs: "scvi" (an SCVI trained on the counts by :meth:`train`),
        an already trained :class:`scvi.model.SCVI` (reused as is), "pca" (PCA of
        log-normalised data) or the name of an ``adata.obsm`` key (a precomputed embedding;
        generation then returns latents only).
    n_latent
        Latent dimension for "scvi" and "pca".
    hierarchy
        "auto" (discovered from the data, in the scaled latent, with the training SDE),
        "flat" (one branch with a class embedding: the paper's label-guided baseline), a list
        of obs columns from coarse to fine (topology from the annotation, split times from the
        data), a nested dict or Newick string (topology by hand; Newick with branch lengths
        fixes the times too), or a :class:`~scbranchdiff.Hierarchy`.
    n_hidden
        Width of the score network.
    n_trunk_blocks
        Residual blocks shared by every branch.
    n_head_blocks
        Residual blocks in each branch's head before its per-branch affine map and output
        layer. 0 (default) evaluates all heads of a batch in one gathered operation, so
        branched training costs about as much as flat training; see
        :class:`~scbranchdiff.module.BranchedScoreNetwork`.
    latent_scaling
        "global" (centre, one scale for all dimensions: keeps the latent geometry) or
        "per_dimension" (standardise each dimension).
    beta_min, beta_max
        Linear noise schedule of the VP SDE (beta_max = 20 reaches the N(0, I) prior).
    discovery_kwargs
        Passed to :func:`~scbranchdiff.hierarchy.discover_hierarchy`.
    scvi_kwargs
        Passed to :class:`scvi.model.SCVI` when ``latent="scvi"``.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata = sbd.data.pbmc68k()
    >>> sbd.model.BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    >>> model = sbd.model.BranchedDiffusion(adata)
    >>> model.train()  # doctest: +SKIP
    >>> cells = model.generate(200, seed=0)  # doctest: +SKIP
    """

    _module_cls = BranchedScoreNetwork

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        latent: str | Any = "scvi",
        n_latent: int = 10,
        hierarchy: HierarchySpec = "auto",
        n_hidden: int = 256,
        n_trunk_blocks: int = 3,
        n_head_blocks: int = 0,
        latent_scaling: str = "global",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        discovery_kwargs: dict | None = None,
        scvi_kwargs: dict | None = None,
    ) -> None:
        super().__init__(adata, registry)
        if latent_scaling not in ("global", "per_dimension"):
            raise ValueError(
                f"`latent_scaling` must be 'global' or 'per_dimension', got {latent_scaling!r}."
            )
        self.sde = VPSDE(beta_min=beta_min, beta_max=beta_max)
        self.classes: tuple[str, ...] = self._registered_classes()
        self.latent_backend = self._make_backend(latent, n_latent, scvi_kwargs)
        self._hierarchy_spec = self._check_hierarchy_spec(hierarchy)
        self.hierarchy_: Hierarchy | None = None
        if isinstance(hierarchy, Hierarchy):
            # a given hierarchy fixes the class order (e.g. a saved model's, new types last)
            self.hierarchy_ = hierarchy
            self.classes = hierarchy.classes
        self.network_config = {
            "n_hidden": int(n_hidden),
            "n_trunk_blocks": int(n_trunk_blocks),
            "n_head_blocks": int(n_head_blocks),
        }
        self.latent_scaling = latent_scaling
        self.discovery_kwargs = dict(discovery_kwargs or {})
        self.latent_mean_: np.ndarray | None = None
        self.latent_scale_: np.ndarray | None = None
        self.module: BranchedScoreNetwork | None = None
        self.train_settings_: dict[str, Any] = {}
        self._model_summary_string = "BranchedDiffusion"
        self.init_params_ = self._get_init_params(locals())
        if not isinstance(latent, str):
            # an SCVI instance or backend is not a plain value: record what it is
            self.init_params_["non_kwargs"]["latent"] = self.latent_backend.kind

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str,
        layer: str | None = None,
        batch_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Register the AnnData fields the model uses (scvi-tools convention).

        Parameters
        ----------
        adata
            Cells x genes. Counts (for ``latent="scvi"``) or log-normalised values.
        labels_key
            obs column with the cell type of every cell (no missing values).
        layer
            Layer with the expression to use; None uses ``adata.X``.
        batch_key
            obs column with batches, passed to the internal scVI model.

        Notes
        -----
        Like every scvi-tools model, this writes the registry into ``adata.uns`` and scvi-tools'
        internal columns into ``adata.obs``. Bad input raises before anything is written.

        Examples
        --------
        >>> import scbranchdiff as sbd
        >>> adata = sbd.data.pbmc68k()
        >>> sbd.model.BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
        """
        check_anndata(adata)
        check_labels(adata, labels_key)
        expression_matrix(adata, layer)
        if batch_key is not None and batch_key not in adata.obs:
            raise KeyError(f"`batch_key={batch_key!r}` is not a column of adata.obs.")
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    @property
    def labels_key(self) -> str:
        """The obs column with cell types."""
        return self.adata_manager.registry["setup_args"]["labels_key"]

    @property
    def layer(self) -> str | None:
        """The layer with expression (None: X)."""
        return self.adata_manager.registry["setup_args"]["layer"]

    @property
    def batch_key(self) -> str | None:
        """The obs column with batches, if any."""
        return self.adata_manager.registry["setup_args"]["batch_key"]

    def _registered_classes(self) -> tuple[str, ...]:
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY).categorical_mapping
        present = set(self.adata.obs[self.labels_key].astype(str).unique())
        classes = tuple(str(c) for c in mapping if str(c) in present)
        unused = [str(c) for c in mapping if str(c) not in present]
        if unused:
            warnings.warn(f"Ignoring cell types with no cells: {unused}.", UserWarning, stacklevel=3)
        return classes

    def _make_backend(self, latent: Any, n_latent: int, scvi_kwargs: dict | None) -> LatentBackend:
        if isinstance(latent, LatentBackend):
            return latent
        if not isinstance(latent, str):
            return SCVILatent(model=latent)
        if latent in ("scvi", "pca"):
            check_in_memory(self.adata, f"latent={latent!r}")
        if latent == "scvi":
            check_counts(self.adata, self.layer, "latent='scvi'")
            return SCVILatent(n_latent=n_latent, scvi_kwargs=scvi_kwargs)
        if latent == "pca":
            check_expression(self.adata, self.layer, "latent='pca'")
            return PCALatent(n_latent=n_latent)
        if latent in self.adata.obsm:
            return ObsmLatent(latent)
        raise ValueError(
            f"`latent` must be 'scvi', 'pca', a trained scvi.model.SCVI or a key of adata.obsm "
            f"(keys: {list(self.adata.obsm)}), got {latent!r}."
        )

    def _check_hierarchy_spec(self, spec: HierarchySpec) -> HierarchySpec:
        if isinstance(spec, Hierarchy):
            unknown = sorted(set(self.classes) - set(spec.classes))
            if unknown:
                raise ValueError(
                    f"Cell types in adata.obs[{self.labels_key!r}] are missing from the given "
                    f"hierarchy: {unknown} (hierarchy classes: {list(spec.classes)})."
                )
            return spec
        if isinstance(spec, str) and spec in ("auto", "flat"):
            return spec
        if isinstance(spec, str):
            parsed = Topology.from_newick(spec) if not _has_lengths(spec) else Hierarchy.from_newick(spec)
        elif isinstance(spec, Mapping):
            parsed = Topology.from_nested(spec)
        elif isinstance(spec, Sequence) and all(isinstance(c, str) for c in spec):
            missing = [c for c in spec if c not in self.adata.obs]
            if missing:
                raise KeyError(f"`hierarchy` columns {missing} are not in adata.obs.")
            if spec[-1] != self.labels_key:
                raise ValueError(
                    f"The last (finest) `hierarchy` column must be the labels key "
                    f"{self.labels_key!r}, got {spec[-1]!r}."
                )
            parsed = Topology.from_annotation(self.adata.obs, list(spec))
        else:
            raise TypeError(
                "`hierarchy` must be 'auto', 'flat', a list of obs columns, a nested dict, a "
                f"Newick string or a Hierarchy, got {type(spec).__name__}."
            )
        if set(parsed.classes) != set(self.classes):
            raise ValueError(
                f"The hierarchy's classes {sorted(parsed.classes)} differ from the cell types in "
                f"adata.obs[{self.labels_key!r}]: {sorted(self.classes)}."
            )
        return parsed

    # ------------------------------------------------------------------ properties
    @property
    def hierarchy(self) -> Hierarchy:
        """The branches of the model (discovered or given)."""
        if self.hierarchy_ is None:
            raise RuntimeError("The hierarchy is not known yet: call `train()` first.")
        return self.hierarchy_

    @property
    def is_flat(self) -> bool:
        """Whether this is the flat, label-guided baseline."""
        return isinstance(self._hierarchy_spec, str) and self._hierarchy_spec == "flat"

    def __repr__(self) -> str:
        lines = [
            f"BranchedDiffusion of {len(self.classes)} cell types "
            f"({'flat, label-guided' if self.is_flat else 'branched'}), "
            f"latent: {self.latent_backend.kind} (n_latent={self._n_latent_or_none()}), "
            f"trained: {self.is_trained}",
        ]
        if self.module is not None:
            n_params = sum(p.numel() for p in self.module.parameters())
            lines.append(
                f"Score network: {n_params:,} parameters, {len(self.module.heads)} heads, "
                f"width {self.network_config['n_hidden']}."
            )
        if self.hierarchy_ is not None:
            lines.append(repr(self.hierarchy_))
        return "\n".join(lines)

    def _n_latent_or_none(self) -> int | None:
        try:
            return self.latent_backend.n_latent
        except RuntimeError:
            return None

    # ------------------------------------------------------------------ latent space
    def get_latent_representation(
        self, adata: AnnData | None = None, indices: Sequence[int] | None = None, batch_size: int | None = None
    ) -> np.ndarray:
        """Latent coordinates of cells (the backend's space, before scaling).

        Parameters
        ----------
        adata
            AnnData with the same genes; None uses the registered one.
        indices
            Cells to encode; None encodes all.
        batch_size
            Minibatch size for the encoder.

        Returns
        -------
        Array of shape (n_cells, n_latent).

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> z = model.get_latent_representation()  # cells x n_latent
        >>> z.shape == (model.adata.n_obs, model.latent_backend.n_latent)
        True
        """
        self._check_latent_ready()
        if adata is None:
            adata = self.adata
        else:
            # checked and reordered by gene name without registering it: nothing is written into
            # it, so views and never set-up AnnData are fine
            if not isinstance(adata, AnnData):
                raise TypeError(f"`adata` must be an AnnData or None, got {type(adata).__name__}.")
            adata = align_genes(adata, self.adata.var_names)
            expression_matrix(adata, self.layer)
        if indices is not None:
            adata = adata[np.asarray(indices)]
        return self.latent_backend.encode(adata, batch_size=batch_size)

    def _check_latent_ready(self) -> None:
        if not self.latent_backend.is_fitted:
            raise RuntimeError("The latent model is not trained yet: call `train()` first.")

    def _scale(self, z: np.ndarray) -> np.ndarray:
        return ((z - self.latent_mean_) / self.latent_scale_).astype(np.float32)

    def _unscale(self, z: np.ndarray) -> np.ndarray:
        return (z * self.latent_scale_ + self.latent_mean_).astype(np.float32)

    def _fit_scaling(self, z: np.ndarray) -> None:
        self.latent_mean_ = z.mean(axis=0).astype(np.float32)
        sd = z.std(axis=0).astype(np.float32)
        if self.latent_scaling == "global":
            # one scale for every dimension: the latent's geometry is kept (METHOD.md section 1)
            sd = np.full_like(sd, float(np.sqrt(np.mean(sd**2))))
        self.latent_scale_ = np.maximum(sd, 1e-6)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        *,
        latent_max_epochs: int | None = None,
        batch_size: int = 256,
        lr: float = 2e-3,
        ema_decay: float = 0.999,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        seed: int = 0,
        latent_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        checkpoint_dir: str | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train the latent model (if needed), find the hierarchy and train the diffusion.

        Parameters
        ----------
        max_epochs
            Passes over the cells for the diffusion stage. Default: enough epochs for about
            8,000 optimiser steps (at least 50 epochs).
        latent_max_epochs
            Epochs of the internal scVI (default: scvi-tools' heuristic).
        batch_size
            Minibatch size of the diffusion stage.
        lr
            Peak learning rate (AdamW, warm-up then cosine decay).
        ema_decay
            Decay of the exponential moving average of weights used for sampling.
        accelerator, devices
            Lightning settings; "auto" uses a GPU when there is one.
        seed
            Seed of every random number drawn in training.
        latent_kwargs
            Extra arguments of the scVI training (e.g. ``{"batch_size": 256}``).
        plan_kwargs
            Extra arguments of :class:`~scbranchdiff.module.DiffusionTrainingPlan`
            (``weight_decay``, ``warmup_steps``).
        checkpoint_dir
            Write a Lightning checkpoint of the diffusion stage (weights, optimiser, EMA, epoch)
            there after every epoch (``last.ckpt``). Resume an interrupted run by calling
            ``train`` again with the same data and arguments plus ``ckpt_path="last"``.
        **trainer_kwargs
            Passed to the Lightning trainer (e.g. ``enable_progress_bar=False``, ``strategy``,
            ``ckpt_path``). Several GPUs or nodes: ``devices=4, strategy="ddp"`` (see the
            installation page); the weights of rank 0 end up in the model.

        Raises
        ------
        FloatingPointError
            When the loss becomes NaN or infinite (the message names epoch and step) or the
            latent has non-finite values. The model is then left as it was before the call.

        Examples
        --------
        A short run (``model.train()`` trains properly):

        >>> import scbranchdiff as sbd
        >>> adata = sbd.data.pbmc68k()
        >>> sbd.model.BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
        >>> model = sbd.model.BranchedDiffusion(adata, n_hidden=64)
        >>> model.train(max_epochs=2, latent_max_epochs=2, enable_progress_bar=False)
        >>> model.hierarchy.n_classes
        10
        """
        import lightning.pytorch as pl

        if max_epochs is not None:
            _check_positive_int("max_epochs", max_epochs)
        _check_positive_int("batch_size", batch_size)
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"`lr` must be a positive finite number, got {lr!r}.")
        checkpoint_callbacks = _checkpoint_callbacks(checkpoint_dir, trainer_kwargs)
        pl.seed_everything(seed, verbose=False)
        adata = self.adata
        labels = adata.obs[self.labels_key].astype(str).to_numpy()
        warn_small_types(labels, self.labels_key)
        backend = self.latent_backend
        if isinstance(backend, SCVILatent) and not (backend.is_fitted and backend.library):
            # the latent model's trainer follows the same display settings
            shown = {k: trainer_kwargs[k] for k in ("enable_progress_bar",) if k in trainer_kwargs}
            backend.fit(
                adata,
                labels,
                layer=self.layer,
                batch_key=self.batch_key,
                max_epochs=latent_max_epochs,
                accelerator=accelerator,
                # scVI trains on one device: scvi-tools' own plan is not DDP-safe on CPU
                devices=_one_device(devices),
                **{**shown, **(latent_kwargs or {})},
            )
        elif not isinstance(backend, SCVILatent) and (not backend.is_fitted or isinstance(backend, ObsmLatent)):
            backend.fit(adata, labels, layer=self.layer, seed=seed)
        z = self.latent_backend.encode(adata)
        if not np.isfinite(z).all():
            n_bad = int((~np.isfinite(z).all(axis=1)).sum())
            raise FloatingPointError(
                f"The latent representation has non-finite values in {n_bad} cells; expected finite "
                "latents (check the embedding or the expression of those cells)."
            )
        # a failed run (NaN loss, interruption) rolls the diffusion stage back to this state
        before = (self.module, self.hierarchy_, self.latent_mean_, self.latent_scale_, self.is_trained_)
        weights = None if self.module is None else {k: v.clone() for k, v in self.module.state_dict().items()}
        if self.module is None:
            self._fit_scaling(z)
        z = self._scale(z)
        if self.hierarchy_ is None:
            self.hierarchy_ = self._resolve_hierarchy(z, labels, seed)
        cell_type = self.hierarchy_.class_index(labels)
        if self.module is None:
            self.module = BranchedScoreNetwork(
                n_latent=z.shape[1],
                n_branches=self.hierarchy_.n_branches,
                n_classes=len(self.classes) if self.is_flat else 0,
                **self.network_config,
            )
        data = LatentDataModule(z, cell_type, batch_size=batch_size, seed=seed)
        if max_epochs is None:
            steps_per_epoch = int(np.ceil(len(z) / batch_size))
            max_epochs = max(50, int(np.ceil(DEFAULT_TRAIN_STEPS / steps_per_epoch)))
        plan = DiffusionTrainingPlan(
            self.module, self.hierarchy_, self.sde, lr=lr, ema_decay=ema_decay, **(plan_kwargs or {})
        )
        trainer_kwargs.setdefault("use_distributed_sampler", False)
        trainer_kwargs.setdefault("log_every_n_steps", 1)
        if checkpoint_callbacks:
            trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), *checkpoint_callbacks]
        strategy = trainer_kwargs.get("strategy")
        if isinstance(strategy, str) and strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
            # a batch trains the trunk and only the heads of its samples' branches: DDP must
            # expect parameters without gradients
            trainer_kwargs["strategy"] = f"{strategy}_find_unused_parameters_true"
        runner = TrainRunner(
            self,
            training_plan=plan,
            data_splitter=data,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )
        try:
            runner()
            if not all(torch.isfinite(p).all() for p in self.module.parameters()):
                raise FloatingPointError("Training ended with non-finite weights; the model was not updated.")
        except BaseException:
            self.module, self.hierarchy_, self.latent_mean_, self.latent_scale_, self.is_trained_ = before
            if weights is not None:
                self.module.load_state_dict(weights)
            raise
        self.module.eval()
        self.train_settings_ = {
            "max_epochs": int(max_epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "ema_decay": float(ema_decay),
            "seed": int(seed),
            "n_cells": int(len(z)),
        }

    def _resolve_hierarchy(self, z: np.ndarray, labels: np.ndarray, seed: int) -> Hierarchy:
        spec = self._hierarchy_spec
        if isinstance(spec, str) and spec == "flat":
            return Hierarchy.flat(self.classes)
        if isinstance(spec, str) and spec == "auto":
            return discover_hierarchy(
                z, labels, sde=self.sde, classes=self.classes, seed=seed, **self.discovery_kwargs
            )
        if isinstance(spec, Hierarchy):
            return spec
        return fit_split_times(
            spec, z, labels, sde=self.sde, classes=self.classes, seed=seed, **self.discovery_kwargs
        )

    # ------------------------------------------------------------------ generation
    def _check_trained(self) -> None:
        if self.module is None or not self.is_trained:
            raise RuntimeError("The model is not trained: call `train()` before generating.")

    def _sampler(self, sampler: str, n_steps: int | None, seed: int) -> TreeSampler:
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
        n_steps = DEFAULT_N_STEPS[sampler] if n_steps is None else int(n_steps)
        network = self.module
        network.eval()

        def eps_model(x, t, branch, cell_type):
            return network(x, t, branch, cell_type)

        return TreeSampler(
            eps_model=eps_model,
            hierarchy=self.hierarchy,
            sde=self.sde,
            n_steps=n_steps,
            method=sampler,
            seed=seed,
            class_conditional=network.class_conditional,
            n_latent=network.n_latent,
            device=self.device,
        )

    def _requested_counts(self, n_cells: int | Mapping[str, int]) -> dict[int, int]:
        if isinstance(n_cells, Mapping):
            unknown = [c for c in n_cells if c not in self.classes]
            if unknown:
                raise KeyError(f"Unknown cell types {unknown}; the model knows {list(self.classes)}.")
            counts = {str(c): n for c, n in n_cells.items()}
        elif isinstance(n_cells, int | np.integer) and not isinstance(n_cells, bool):
            counts = {c: int(n_cells) for c in self.classes}
        else:
            raise TypeError(
                f"`n_cells` must be an int or a mapping of cell type -> int, got {type(n_cells).__name__}."
            )
        bad = {c: n for c, n in counts.items() if not isinstance(n, int | np.integer) or n <= 0}
        if bad:
            raise ValueError(f"`n_cells` must be positive integers, got {bad}.")
        if not counts:
            raise ValueError("`n_cells` requests no cells.")
        index = self.hierarchy.class_index(list(counts))
        return {int(k): int(n) for k, n in zip(index, counts.values(), strict=True)}

    def generate(
        self,
        n_cells: int | Mapping[str, int],
        *,
        sampler: str = DEFAULT_SAMPLER,
        n_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 10_000,
    ) -> AnnData:
        """Generate synthetic cells of the requested types.

        Cells of all requested types are sampled together: each branch segment is integrated
        once and its children start from its states (shared prefixes).

        Parameters
        ----------
        n_cells
            Cells per type: one int for every type, or a mapping ``{cell_type: n}``.
        sampler
            "sde" (Euler-Maruyama on the reverse SDE, default) or "ode" (Heun on the
            probability-flow ODE: deterministic, fewer steps).
        n_steps
            Steps from t = 1 to 0 (default 200 for "sde", 100 for "ode").
        seed
            Seed; the same seed gives the same cells. None draws one (recorded in ``uns``).
        batch_size
            At most this many cells per type are integrated at once.

        Returns
        -------
        AnnData with ``var`` of the training data: ``X`` sampled counts (scVI latent; decoded
        expression for PCA; no genes for an obsm latent), ``layers["expected"]`` the decoded
        mean expression, ``obs[labels_key]`` the type, ``obs["generated"] = True``,
        ``obsm["X_latent"]`` the latent and ``uns["scbranchdiff"]`` the settings and seed.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> cells = model.generate({"CD14+ Monocyte": 30, "CD19+ B": 20}, seed=0)
        >>> cells.obs["bulk_labels"].value_counts()[["CD14+ Monocyte", "CD19+ B"]].tolist()
        [30, 20]
        >>> cells.X.shape[1] == model.adata.n_vars
        True
        """
        self._check_trained()
        counts = self._requested_counts(n_cells)
        _check_positive_int("batch_size", batch_size)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        tree = self._sampler(sampler, n_steps, seed)
        latents: dict[int, list[np.ndarray]] = {k: [] for k in counts}
        for _, chunk_latents in self._latent_chunks(tree, counts, batch_size):
            for k, z in chunk_latents.items():
                latents[k].append(z)
        order = sorted(counts)
        z = np.concatenate([np.concatenate(latents[k]) for k in order])
        types = np.repeat([self.hierarchy.classes[k] for k in order], [counts[k] for k in order])
        out = self._to_anndata(z, types, seed)
        out.uns["scbranchdiff"] = self._provenance(sampler=sampler, n_steps=tree.n_steps, seed=seed)
        return out

    def _latent_chunks(
        self, tree: TreeSampler, counts: Mapping[int, int], batch_size: int
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """Latents (unscaled) in chunks of at most `batch_size` cells per type, chunk by chunk."""
        n_chunks = int(np.ceil(max(counts.values()) / batch_size))
        for chunk in range(n_chunks):
            chunk_counts = {
                k: min(batch_size, n - chunk * batch_size) for k, n in counts.items() if n > chunk * batch_size
            }
            latents = tree.generate(chunk_counts, chunk=chunk)
            yield chunk, {k: self._unscale(x.cpu().numpy()) for k, x in sorted(latents.items())}

    def generate_to_file(
        self,
        path: str | Path,
        n_cells: int | Mapping[str, int],
        *,
        sampler: str = DEFAULT_SAMPLER,
        n_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 10_000,
        expected: bool = False,
        overwrite: bool = False,
    ) -> Path:
        """Generate cells straight into an .h5ad file, chunk by chunk, with bounded memory.

        For populations too large to hold in memory (a million cells and more): each chunk of
        at most `batch_size` cells per type is sampled, decoded and appended to the file before
        the next starts. The file is written beside `path` and renamed when complete. Open it
        with ``anndata.read_h5ad(path, backed="r")`` to read it without loading X.

        Parameters
        ----------
        path
            Target file, ending in ".h5ad".
        n_cells, sampler, n_steps, seed
            As in :meth:`generate`. For a given seed, the latents of each type are those
            :meth:`generate` returns with the same `batch_size`; counts are drawn per chunk.
        batch_size
            Cells per type in one chunk: peak memory grows with it.
        expected
            Also write ``layers["expected"]`` (dense decoded means: 4 bytes per cell and gene).
        overwrite
            Replace an existing file.

        Returns
        -------
        The path of the file: ``X`` sampled counts (CSR; decoded expression for a PCA latent,
        absent for an obsm latent), ``obs[labels_key]``, ``obs["generated"]``, per-cell decoding
        values such as ``obs["library_size"]``, ``obsm["X_latent"]`` and ``uns["scbranchdiff"]``.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> import anndata as ad
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5ad")
        >>> _ = model.generate_to_file(path, 20, n_steps=50, seed=0)
        >>> ad.read_h5ad(path, backed="r").n_obs  # 20 cells of each of 10 types
        200
        """
        from ._streaming import write_generated

        self._check_trained()
        counts = self._requested_counts(n_cells)
        _check_positive_int("batch_size", batch_size)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        return write_generated(
            self, path, counts, sampler=sampler, n_steps=n_steps, seed=seed,
            batch_size=int(batch_size), expected=expected, overwrite=overwrite,
        )

    def _provenance(self, **settings: Any) -> dict[str, Any]:
        return {
            "version": __version__,
            "model": "flat" if self.is_flat else "branched",
            "latent": self.latent_backend.kind,
            "hierarchy_newick": self.hierarchy.to_newick(),
            **settings,
        }

    def _to_anndata(self, z: np.ndarray, types: np.ndarray, seed: int) -> AnnData:
        """Decode latents into a new AnnData with `var` of the training data."""
        rng = np.random.default_rng(seed)
        decoded = self.latent_backend.decode(z, types, rng)
        obs = pd.DataFrame(index=pd.Index([f"gen-{i}" for i in range(len(z))]))
        obs[self.labels_key] = pd.Categorical(types, categories=list(self.classes))
        obs["generated"] = True
        for key, value in decoded.obs.items():
            obs[key] = value
        if decoded.X is None:
            out = AnnData(obs=obs)
        else:
            out = AnnData(X=decoded.X, obs=obs, var=self.adata.var.copy())
            for key, value in decoded.layers.items():
                out.layers[key] = value
            if self.layer is not None and self.layer not in out.layers:
                # mirror the training data's layout: the registered layer holds the same values
                out.layers[self.layer] = out.X
        out.obsm["X_latent"] = z
        return out

    # ------------------------------------------------------------------ save / load
    def save(self, dir_path: str, overwrite: bool = False, save_anndata: bool = False, **_: Any) -> None:
        """Save the model (latent model, scaling, hierarchy, network) to a directory.

        The files are JSON and safetensors: loading them cannot run code. The save is atomic:
        it is written beside `dir_path` and renamed into place when complete.

        Parameters
        ----------
        dir_path
            Target directory.
        overwrite
            Replace an existing directory. Without it, an existing directory raises
            FileExistsError and is left as it was.
        save_anndata
            Not supported (AnnData is the user's to save); raises if True.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pbmc_model")
        >>> model.save(path)
        >>> sorted(os.listdir(path))
        ['model.json', 'model.safetensors']
        """
        self._check_trained()
        if save_anndata:
            raise ValueError("`save_anndata` is not supported: save the AnnData with `adata.write_h5ad`.")
        backend = self.latent_backend
        metadata = {
            "scbranchdiff_version": __version__,
            "init_params": _plain_init_params(self.init_params_),
            "setup_args": {"labels_key": self.labels_key, "layer": self.layer, "batch_key": self.batch_key},
            "var_names": [str(v) for v in self.adata.var_names],
            "classes": list(self.classes),
            "hierarchy": self.hierarchy.to_dict(),
            "is_flat": self.is_flat,
            "sde": self.sde.to_dict(),
            "network": {**self.network_config, "n_latent": self.module.n_latent,
                        "n_branches": len(self.module.heads),
                        "n_classes": len(self.classes) if self.is_flat else 0},
            "latent": {"kind": backend.kind, "config": backend.config()},
            "latent_scaling": self.latent_scaling,
            "train_settings": self.train_settings_,
            "extra": self._extra_metadata(),
        }
        tensors = {f"network.{k}": v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}
        tensors.update({f"latent.{k}": v for k, v in backend.tensors().items()})
        tensors["scaling.mean"] = self.latent_mean_
        tensors["scaling.scale"] = self.latent_scale_
        bad = [k for k, v in tensors.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise FloatingPointError(f"The model has non-finite values in {bad[:5]}; refusing to save it.")
        _io.write_model_dir(dir_path, metadata, tensors, overwrite=overwrite)

    def _extra_metadata(self) -> dict[str, Any]:
        """Hook for subclasses / mixins to save more plain values."""
        return {}

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        **_: Any,
    ) -> BranchedDiffusion:
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            The saved directory.
        adata
            AnnData with the model's genes and cell types known to the model; it is set up
            with the saved ``setup_anndata`` arguments. When only the gene order differs, a
            copy reordered to the model's order is set up instead (with a warning).
        accelerator, device
            Where to put the network ("auto": a GPU when there is one).

        Returns
        -------
        The model, ready to generate.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pbmc_model")
        >>> model.save(path)
        >>> loaded = sbd.model.BranchedDiffusion.load(path, adata=model.adata)
        >>> loaded.hierarchy == model.hierarchy
        True
        """
        from scvi.model._utils import parse_device_args

        metadata, tensors = _io.read_model_dir(dir_path)
        if adata is None:
            raise ValueError("`adata` is required to load a BranchedDiffusion model.")
        missing_keys = sorted(_MODEL_KEYS - set(metadata))
        if missing_keys:
            raise ValueError(f"{str(dir_path)!r} is corrupted: model.json lacks {missing_keys}.")
        check_anndata(adata)
        # same genes in another order: a reordered copy is set up (the given AnnData is untouched)
        adata = align_genes(adata, metadata["var_names"])
        setup = metadata["setup_args"]
        labels_key = setup["labels_key"]
        check_labels(adata, labels_key)
        unknown = sorted(set(adata.obs[labels_key].astype(str)) - set(metadata["classes"]))
        if unknown:
            raise ValueError(
                f"adata.obs[{labels_key!r}] has cell types the saved model does not know: {unknown}."
            )
        cls.setup_anndata(adata, **setup)
        kind = metadata["latent"]["kind"]
        sub = {k[len("latent."):]: v for k, v in tensors.items() if k.startswith("latent.")}
        backend = BACKENDS[kind].from_state(metadata["latent"]["config"], sub, adata)
        init = dict(metadata["init_params"])
        init["latent"] = backend
        hierarchy = Hierarchy.from_dict(metadata["hierarchy"])
        init["hierarchy"] = hierarchy
        model = cls(adata, **init)
        model._restore(metadata, tensors)
        _, _, device = parse_device_args(accelerator, device, return_device="torch", validate_single_device=True)
        model.to_device(device)
        return model

    def _restore(self, metadata: dict, tensors: dict) -> None:
        """Restore trained state saved by :meth:`save` (after `__init__`)."""
        self._hierarchy_spec = "flat" if metadata["is_flat"] else self.hierarchy_
        net = metadata["network"]
        self.module = BranchedScoreNetwork(
            n_latent=net["n_latent"], n_branches=net["n_branches"], n_classes=net["n_classes"],
            n_hidden=net["n_hidden"], n_trunk_blocks=net["n_trunk_blocks"], n_head_blocks=net["n_head_blocks"],
        )
        state = {k[len("network."):]: torch.as_tensor(v) for k, v in tensors.items() if k.startswith("network.")}
        self.module.load_state_dict(state)
        self.module.eval()
        self.latent_mean_ = tensors["scaling.mean"]
        self.latent_scale_ = tensors["scaling.scale"]
        self.train_settings_ = metadata.get("train_settings", {})
        self.is_trained_ = True
        self._load_extra_metadata(metadata.get("extra", {}))

    def _load_extra_metadata(self, extra: dict[str, Any]) -> None:
        """Hook for subclasses / mixins to restore what `_extra_metadata` saved."""


def _one_device(devices: Any) -> Any:
    """The first of several devices (for stages that run on one device only)."""
    if isinstance(devices, list | tuple) and len(devices) > 1:
        return [devices[0]]
    if isinstance(devices, int) and not isinstance(devices, bool) and (devices > 1 or devices == -1):
        return 1
    return devices


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


_MODEL_KEYS = frozenset(
    ("init_params", "setup_args", "var_names", "classes", "hierarchy", "is_flat", "network", "latent")
)


def _checkpoint_callbacks(checkpoint_dir: str | None, trainer_kwargs: dict) -> list:
    """The per-epoch checkpoint callback; resolves ``ckpt_path="last"`` in `trainer_kwargs`."""
    from ..module._training_plan import EpochCheckpoint

    ckpt_path = trainer_kwargs.get("ckpt_path")
    if ckpt_path == "last":
        if checkpoint_dir is None:
            raise ValueError('`ckpt_path="last"` needs `checkpoint_dir` (where the checkpoints were written).')
        last = Path(checkpoint_dir) / EpochCheckpoint.FILENAME
        # nothing to resume (the job had not finished an epoch): start from scratch
        trainer_kwargs["ckpt_path"] = str(last) if last.is_file() else None
    elif ckpt_path is not None and not Path(str(ckpt_path)).is_file():
        raise FileNotFoundError(f"`ckpt_path={ckpt_path!r}` is not a file; expected a Lightning checkpoint.")
    return [] if checkpoint_dir is None else [EpochCheckpoint(str(checkpoint_dir))]


def _has_lengths(newick: str) -> bool:
    return ":" in newick


def _plain_init_params(init_params: dict) -> dict:
    """Init arguments that are plain JSON values (hierarchy and latent are saved on their own)."""
    params = {**init_params["non_kwargs"], **init_params.get("kwargs", {}).get("kwargs", {})}
    params.pop("hierarchy", None)
    return {k: v for k, v in params.items() if isinstance(v, str | int | float | bool | dict | type(None))}
