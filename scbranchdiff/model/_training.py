"""Training: the latent model (if needed), the hierarchy, then the diffusion stage.

A mixin of :class:`~scbranchdiff.model.BranchedDiffusion`. The diffusion stage is fitted by
:func:`~scbranchdiff.train.fit_plan`, the path continual learning uses too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .._checks import check_training_arguments, warn_small_types
from ..diffusion._transport import class_moments
from ..hierarchy import Hierarchy, discover_hierarchy, fit_split_times
from ..module import BranchedScoreNetwork
from ..train import DiffusionTrainingPlan, checkpoint_callbacks, epochs_for_steps, fit_plan

# Default budget of the diffusion stage, in optimiser steps, and the fewest epochs (large data):
# on the same scVI, 800 steps at lr 4e-3 scored about as 8,000 at 2e-3 did (version 0.2) in
# benchmarks/defaults.py (docs: Benchmarks, "Default budget").
DEFAULT_TRAIN_STEPS = 800
DEFAULT_MIN_EPOCHS = 20
DEFAULT_LR = 4e-3
# What a failed training call puts back (with the network's weights).
_TRAINED_STATE = (
    "module", "hierarchy_", "latent_mean_", "latent_scale_", "class_mean_", "class_cov_", "is_trained_",
    "history_", "trainer",
)


class TrainingMixin:
    """:meth:`train` for :class:`~scbranchdiff.model.BranchedDiffusion`."""

    def train(
        self,
        max_epochs: int | None = None,
        *,
        latent_max_epochs: int | None = None,
        batch_size: int = 256,
        lr: float = DEFAULT_LR,
        ema_decay: float = 0.999,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        seed: int = 0,
        train_size: float | None = 1.0,
        validation_size: float | None = None,
        early_stopping: bool = False,
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
            800 optimiser steps (``DEFAULT_TRAIN_STEPS``), at least 20 epochs.
        latent_max_epochs
            Epochs of the internal scVI (default: scvi-tools' heuristic, 400 below 20,000
            cells). Fewer epochs, even at a higher learning rate, made generated expression
            less realistic in benchmarks/defaults.py (docs: Benchmarks, "Default budget").
        batch_size
            Minibatch size of the diffusion stage.
        lr
            Peak learning rate (AdamW, warm-up then cosine decay). With the default budget,
            4e-3 scored better than 2e-3 on held-out cells (docs: Benchmarks, "Default budget").
        ema_decay
            Decay of the exponential moving average of weights used for sampling.
        accelerator, devices
            Lightning settings; "auto" uses a GPU when there is one.
        seed
            Seed of every random number drawn in training.
        train_size, validation_size
            Shares of each cell type the diffusion stage trains on and holds out (scvi-tools'
            meaning; default: train on every cell). With held-out cells a validation denoising
            loss (of the EMA weights, at one fixed time and noise per cell) is computed after
            every epoch: ``history["validation_loss"]``. The scVI stage splits its cells on
            its own (``latent_kwargs={"train_size": ...}``), from the same `seed`.
        early_stopping
            Stop each stage when its validation loss stops improving: the diffusion stage
            monitors ``validation_loss`` (needs ``train_size < 1``; patience and minimum
            change through ``early_stopping_patience`` / ``early_stopping_min_delta``), the
            scVI stage its ELBO (scvi-tools' early stopping). Disabled under DDP.
        latent_kwargs
            Extra arguments of the scVI training (e.g. ``{"batch_size": 256}``).
        plan_kwargs
            Extra arguments of :class:`~scbranchdiff.train.DiffusionTrainingPlan`
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

        check_training_arguments(max_epochs, batch_size, lr, ema_decay, seed)
        train_size = 1.0 if train_size is None else train_size
        if isinstance(train_size, bool) or not isinstance(train_size, int | float) or not 0 < train_size <= 1:
            raise ValueError(f"`train_size` must lie in (0, 1], got {train_size!r}.")
        if early_stopping and train_size >= 1.0 and not validation_size:
            raise ValueError(
                "`early_stopping=True` needs held-out cells to monitor: pass `train_size` < 1 "
                "(e.g. 0.9)."
            )
        self._check_real_cells("`train`")
        callbacks = checkpoint_callbacks(checkpoint_dir, trainer_kwargs)
        pl.seed_everything(seed, verbose=False)
        adata = self.adata
        if adata.n_obs < 2:
            raise ValueError(
                f"Training needs at least two cells (the latent is centred and scaled by their "
                f"spread); the registered AnnData has {adata.n_obs}."
            )
        labels = adata.obs[self.labels_key].astype(str).to_numpy()
        warn_small_types(labels, self.labels_key)
        backend = self.latent_backend
        if backend.needs_fit:
            # the latent model's trainer follows the same display settings
            shown = {k: trainer_kwargs[k] for k in ("enable_progress_bar",) if k in trainer_kwargs}
            if early_stopping:
                shown["early_stopping"] = True
            backend.fit(
                adata,
                labels,
                layer=self.layer,
                batch_key=self.batch_key,
                seed=seed,
                max_epochs=latent_max_epochs,
                accelerator=accelerator,
                # the latent model trains on one device: scvi-tools' own plan is not DDP-safe on CPU
                devices=_one_device(devices),
                **{**shown, **(latent_kwargs or {})},
            )
        z = backend.encode(adata)
        if not np.isfinite(z).all():
            n_bad = int((~np.isfinite(z).all(axis=1)).sum())
            raise FloatingPointError(
                f"The latent representation has non-finite values in {n_bad} cells; expected finite "
                "latents (check the embedding or the expression of those cells)."
            )
        # a failed run (NaN loss, interruption) rolls the diffusion stage back to this state
        with self._rollback_on_failure():
            if self.module is None:
                self._fit_scaling(z)
            z = self._scale(z)
            if self.hierarchy_ is None:
                self.hierarchy_ = self._resolve_hierarchy(z, labels, seed)
            cell_type = self.hierarchy_.class_index(labels)
            self.class_mean_, self.class_cov_ = class_moments(z, labels, self.classes)
            if self.module is None:
                self.module = BranchedScoreNetwork(
                    n_latent=z.shape[1],
                    n_branches=self.hierarchy_.n_branches,
                    n_classes=len(self.classes) if self.is_label_guided else 0,
                    **self.network_config,
                )
            if max_epochs is None:
                max_epochs = epochs_for_steps(len(z), batch_size, DEFAULT_TRAIN_STEPS, DEFAULT_MIN_EPOCHS)
            plan = DiffusionTrainingPlan(
                self.module, self.hierarchy_, self.sde, lr=lr, ema_decay=ema_decay, **(plan_kwargs or {})
            )
            if early_stopping:
                trainer_kwargs["early_stopping"] = True
            fit_plan(
                self, plan, z, cell_type, batch_size=batch_size, max_epochs=max_epochs, seed=seed,
                train_size=train_size, validation_size=validation_size, accelerator=accelerator,
                devices=devices, extra_callbacks=callbacks, **trainer_kwargs,
            )
        self.module.eval()
        self.train_settings_ = {
            "max_epochs": int(max_epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "ema_decay": float(ema_decay),
            "seed": int(seed),
            "n_cells": int(len(z)),
            "train_size": float(train_size),
            "validation_size": None if validation_size is None else float(validation_size),
            "epochs_run": int(self.trainer.current_epoch) if getattr(self, "trainer", None) else int(max_epochs),
        }

    @contextmanager
    def _rollback_on_failure(self) -> Iterator[None]:
        """On any error in the block, put the trained state (and the weights) back as they were."""
        saved = {name: getattr(self, name, None) for name in _TRAINED_STATE}
        weights = None if self.module is None else {k: v.clone() for k, v in self.module.state_dict().items()}
        try:
            yield
        except BaseException:
            for name, value in saved.items():
                setattr(self, name, value)
            if weights is not None:
                self.module.load_state_dict(weights)
            raise

    def _resolve_hierarchy(self, z: np.ndarray, labels: np.ndarray, seed: int) -> Hierarchy:
        spec = self._hierarchy_spec
        if self.is_label_guided:
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


def _one_device(devices: Any) -> Any:
    """The first of several devices (for stages that run on one device only)."""
    if isinstance(devices, list | tuple) and len(devices) > 1:
        return [devices[0]]
    if isinstance(devices, int) and not isinstance(devices, bool) and (devices > 1 or devices == -1):
        return 1
    return devices
