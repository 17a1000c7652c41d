"""The one training path of the diffusion stage, used by `train` and `add_cell_types` alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._data import LatentDataModule
from ._plan import DiffusionTrainingPlan

_DDP = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def fit_plan(
    model: Any,
    plan: DiffusionTrainingPlan,
    latent: np.ndarray,
    cell_type: np.ndarray,
    *,
    batch_size: int,
    max_epochs: int,
    seed: int,
    train_size: float = 1.0,
    validation_size: float | None = None,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    extra_callbacks: list | None = None,
    **trainer_kwargs: Any,
) -> None:
    """Train `plan` on scaled latents through scvi-tools' :class:`~scvi.train.TrainRunner`.

    Sets the trainer defaults the diffusion stage needs (our own per-epoch shuffling, a loss
    logged every step), makes DDP strategies accept parameters without gradients (a batch
    trains only the heads of its samples' branches) and checks the weights at the end.

    Parameters
    ----------
    model
        The scvi-tools model the runner records history and the trainer into.
    plan
        The training plan (network, routing, loss, optimiser, EMA).
    latent
        Scaled latents, cells x dimensions.
    cell_type
        Class index of every cell.
    batch_size, max_epochs, seed
        Minibatch size, passes over the cells, and the seed of the batch order.
    train_size, validation_size
        Shares of each cell type trained on and held out for the validation denoising loss
        (logged as ``validation_loss`` after every epoch; see :class:`LatentDataModule`).
        ``early_stopping=True`` (a trainer argument) stops when it no longer improves.
    accelerator, devices
        Lightning settings.
    extra_callbacks
        Extra Lightning callbacks (e.g. from :func:`checkpoint_callbacks`).
    **trainer_kwargs
        Passed to the Lightning trainer.

    Raises
    ------
    ValueError
        ``early_stopping=True`` without held-out cells.
    FloatingPointError
        When training ends with non-finite weights (a non-finite loss raises earlier, from
        the plan).

    Examples
    --------
    With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
    its example), one more epoch of a copy of its network:

    >>> import copy
    >>> import numpy as np
    >>> from scbranchdiff.train import DiffusionTrainingPlan, fit_plan
    >>> plan = DiffusionTrainingPlan(copy.deepcopy(model.module), model.hierarchy, model.sde)
    >>> z = np.random.default_rng(0).normal(size=(64, model.module.n_latent)).astype("float32")
    >>> fit_plan(model, plan, z, np.zeros(64, dtype=int), batch_size=32, max_epochs=1, seed=0,
    ...          enable_progress_bar=False, enable_model_summary=False)
    """
    from scvi.train import TrainRunner

    trainer_kwargs.setdefault("use_distributed_sampler", False)
    trainer_kwargs.setdefault("log_every_n_steps", 1)
    if extra_callbacks:
        trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), *extra_callbacks]
    strategy = trainer_kwargs.get("strategy")
    if isinstance(strategy, str) and strategy in _DDP:
        trainer_kwargs["strategy"] = f"{strategy}_find_unused_parameters_true"
    data = LatentDataModule(
        latent, cell_type, batch_size=batch_size, seed=seed, train_size=train_size,
        validation_size=validation_size,
    )
    if trainer_kwargs.get("early_stopping"):
        if data.n_val == 0:
            raise ValueError(
                "`early_stopping=True` needs held-out cells to monitor: pass `train_size` < 1 "
                "(e.g. 0.9)."
            )
        trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
    if data.n_val:
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
    runner = TrainRunner(
        model,
        training_plan=plan,
        data_splitter=data,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        **trainer_kwargs,
    )
    runner()
    if not all(torch.isfinite(p).all() for p in plan.network.parameters()):
        raise FloatingPointError("Training ended with non-finite weights; the model was not updated.")


def epochs_for_steps(n_cells: int, batch_size: int, steps: int, min_epochs: int) -> int:
    """Passes over `n_cells` that give about `steps` optimiser steps, and at least `min_epochs`.

    Examples
    --------
    >>> from scbranchdiff.train import epochs_for_steps
    >>> epochs_for_steps(700, 256, 8000, 50)  # 3 batches an epoch
    2667
    """
    steps_per_epoch = int(np.ceil(n_cells / batch_size))
    return max(min_epochs, int(np.ceil(steps / steps_per_epoch)))
