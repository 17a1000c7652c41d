"""The Lightning training plan of the score network (its loss: `scbranchdiff.diffusion`).

Each sample x_0 of class c gets a time t, is noised with the VP kernel, and the head of the
branch holding (c, t) predicts the noise (:class:`~scbranchdiff.diffusion.NoisePredictionLoss`).
Each sample therefore updates the trunk and exactly one head.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch

from ..diffusion import VPSDE, NoisePredictionLoss
from ..hierarchy import Hierarchy
from ..module import BranchedScoreNetwork, BranchLookup


class DiffusionTrainingPlan(pl.LightningModule):
    """Training plan: noise-prediction loss, AdamW with warm-up and cosine decay, EMA weights.

    Parameters
    ----------
    network
        The score network (trained in place; EMA weights are copied into it at the end).
    hierarchy
        Branches used to route each (class, t) to its head.
    sde
        Forward SDE.
    lr
        Peak learning rate.
    weight_decay
        AdamW weight decay.
    ema_decay
        Exponential moving average of the weights used for sampling (0 disables it).
    warmup_steps
        Linear warm-up of the learning rate.
    t_max
        Per class index, the largest time drawn for its cells (None: 1 for every class).
        Continual learning passes each new class's join time: above it frozen heads serve it.
        Freeze what must not train (``requires_grad = False``) before building the plan.

    Examples
    --------
    With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
    its example):

    >>> import torch
    >>> from scbranchdiff.train import DiffusionTrainingPlan
    >>> plan = DiffusionTrainingPlan(model.module, model.hierarchy, model.sde)
    >>> z = torch.randn(8, model.module.n_latent)
    >>> bool(torch.isfinite(plan.loss(z, torch.zeros(8, dtype=torch.long))))
    True
    """

    def __init__(
        self,
        network: BranchedScoreNetwork,
        hierarchy: Hierarchy,
        sde: VPSDE,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        ema_decay: float = 0.999,
        warmup_steps: int = 200,
        t_max: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.sde = sde
        self.objective = NoisePredictionLoss(sde)
        self.lookup = BranchLookup(hierarchy)
        t_max = None if t_max is None else torch.as_tensor(t_max, dtype=torch.float32)
        self.register_buffer("t_max", t_max, persistent=False)
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.ema_decay = ema_decay
        # EMA shadows of the trainable parameters only: frozen ones must stay bit-identical
        self.ema = {
            name: p.detach().clone() for name, p in network.named_parameters() if p.requires_grad
        }

    def denoiser(self, x_t: torch.Tensor, t: torch.Tensor, cell_type: torch.Tensor) -> torch.Tensor:
        """Predicted noise, each row through the head of the branch holding (its class, t)."""
        conditional = cell_type if self.network.class_conditional else None
        return self.network(x_t, t, self.lookup(cell_type, t), conditional)

    def loss(self, x0: torch.Tensor, cell_type: torch.Tensor) -> torch.Tensor:
        """Noise-prediction MSE at random times (capped per class by `t_max`)."""
        t_max = None if self.t_max is None else self.t_max[cell_type]
        return self.objective(self.denoiser, x0, cell_type, t_max)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, cell_type = batch
        loss = self.loss(x0, cell_type)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Training loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step}: stopping (the model was not updated with it). Try a lower "
                "`lr`, or check the latent for extreme values."
            )
        distributed = self._trainer is not None and self.trainer.world_size > 1
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x0.shape[0],
            sync_dist=distributed,
        )
        return loss

    def on_train_start(self) -> None:
        if self.trainer.world_size > 1:
            # Lightning seeds every rank alike: without an offset all ranks would draw the same
            # times and noises for their different cells
            torch.manual_seed(torch.initial_seed() + self.trainer.global_rank)
        params = dict(self.network.named_parameters())
        self.ema = {name: shadow.to(params[name].device) for name, shadow in self.ema.items()}
        self._ema_pairs = ([self.ema[n] for n in self.ema], [params[n] for n in self.ema])

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema_decay <= 0 or not self.ema:
            return
        shadows, params = self._ema_pairs
        # warm-up of the decay, so that short runs are not averaged with their first steps
        step = self.global_step
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            # EMA: shadow <- shadow + (1 - decay) (param - shadow), one fused call for all
            torch._foreach_lerp_(shadows, [p.detach() for p in params], 1 - decay)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Denoising loss of held-out cells at their fixed (time, noise) draws."""
        x0, cell_type, u, z = batch
        t_max = None if self.t_max is None else self.t_max[cell_type]
        loss = self.objective(self.denoiser, x0, cell_type, t_max, u=u, z=z)
        distributed = self._trainer is not None and self.trainer.world_size > 1
        self.log(
            "validation_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
            batch_size=x0.shape[0], sync_dist=distributed,
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        # the validation loss is that of the weights generation uses: the EMA
        self._swap_ema()

    def on_validation_epoch_end(self) -> None:
        self._swap_ema()

    def _swap_ema(self) -> None:
        if self.ema_decay <= 0 or not self.ema:
            return
        params = dict(self.network.named_parameters())
        with torch.no_grad():
            for name, shadow in self.ema.items():
                p = params[name]
                current = p.detach().clone()
                p.copy_(shadow.to(p.device))
                shadow.copy_(current.to(shadow.device))

    def on_train_end(self) -> None:
        if self.ema_decay <= 0:
            return
        with torch.no_grad():
            for name, p in self.network.named_parameters():
                if name in self.ema:
                    p.copy_(self.ema[name].to(p.device))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema"] = {k: v.cpu() for k, v in self.ema.items()}
        # the noise of the loss comes from torch's generator: a resumed run continues its stream
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "ema" in checkpoint:
            self.ema = {k: v.clone() for k, v in checkpoint["ema"].items()}
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def configure_optimizers(self):
        params = [p for p in self.network.parameters() if p.requires_grad]
        try:  # the fused kernel is several times faster on CPU as well as on GPU
            optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, fused=True)
        except (RuntimeError, TypeError):  # pragma: no cover - devices without a fused kernel
            optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(self.warmup_steps, max(total // 10, 1))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
