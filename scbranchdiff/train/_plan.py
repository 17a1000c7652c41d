"""Denoising score matching for the branched network, as a Lightning module (METHOD.md section 3).

Each sample x_0 of class c gets a time t ~ U(t_min, 1), is noised with the VP kernel, and the
head of the branch holding (c, t) predicts the noise (noise-prediction MSE, the score-matching
loss with weight s(t)^2). Each sample therefore updates the trunk and exactly one head.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from ..diffusion import VPSDE
from ..hierarchy import Hierarchy
from ._network import BranchedScoreNetwork


class BranchLookup(torch.nn.Module):
    """Vectorised (class, t) -> branch index on tensors, from the hierarchy's class paths.

    For class c with path branches p_0 (root), ..., p_k (leaf) starting at s_0 > ... > s_k = 0,
    t lies in p_j with j = #{i : s_i > t}.
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        super().__init__()
        paths = [hierarchy.path(c) for c in hierarchy.classes]
        depth = max(len(p) for p in paths)
        starts = torch.full((len(paths), depth), -math.inf, dtype=torch.float64)
        ids = torch.zeros((len(paths), depth), dtype=torch.long)
        for k, path in enumerate(paths):
            for j, b in enumerate(path):
                starts[k, j] = hierarchy.branches[b].t_start
                ids[k, j] = b
            ids[k, len(path):] = path[-1]
        self.register_buffer("starts", starts, persistent=False)
        self.register_buffer("ids", ids, persistent=False)

    def forward(self, cell_type: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        depth = (self.starts[cell_type] > t[:, None].to(self.starts.dtype)).sum(dim=1)
        depth = depth.clamp(max=self.ids.shape[1] - 1)
        return self.ids[cell_type, depth]


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
    ) -> None:
        super().__init__()
        self.network = network
        self.sde = sde
        self.lookup = BranchLookup(hierarchy)
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.ema_decay = ema_decay
        # EMA shadows of the trainable parameters only: frozen ones must stay bit-identical
        self.ema = {
            name: p.detach().clone() for name, p in network.named_parameters() if p.requires_grad
        }

    def loss(self, x0: torch.Tensor, cell_type: torch.Tensor) -> torch.Tensor:
        """Noise-prediction MSE at random times."""
        t = torch.rand(x0.shape[0], device=x0.device) * (1 - self.sde.t_min) + self.sde.t_min
        z = torch.randn_like(x0)
        x_t = self.sde.marginal_sample(x0, t, z)
        branch = self.lookup(cell_type, t)
        conditional = cell_type if self.network.class_conditional else None
        z_hat = self.network(x_t, t, branch, conditional)
        return ((z_hat - z) ** 2).mean()

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


class LatentDataModule(pl.LightningDataModule):
    """Standardised latents and class indices in memory, served as shuffled batches.

    Batches are gathered with one tensor index per batch (no per-sample collation). The order of
    epoch e is a permutation seeded by (seed, e), so a run resumed from a checkpoint sees the
    same batches as an uninterrupted one. Under DDP each process gets its own shard.
    """

    def __init__(self, latent: np.ndarray, cell_type: np.ndarray, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.dataset = TensorDataset(
            torch.as_tensor(latent, dtype=torch.float32), torch.as_tensor(cell_type, dtype=torch.long)
        )
        self.batch_size = int(batch_size)
        self.seed = seed
        self.n_train = len(self.dataset)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        distributed = trainer is not None and trainer.world_size > 1
        # one process: a DistributedSampler of one replica is a permutation seeded per epoch
        sampler = DistributedSampler(
            self.dataset,
            num_replicas=trainer.world_size if distributed else 1,
            rank=trainer.global_rank if distributed else 0,
            seed=self.seed,
        )
        batches = _EpochBatchSampler(sampler, self.batch_size, drop_last=False)
        return DataLoader(self.dataset, sampler=batches, batch_size=None)


class _EpochBatchSampler(BatchSampler):
    """BatchSampler that passes Lightning's `set_epoch` on, so each DDP epoch reshuffles."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class EpochCheckpoint(pl.Callback):
    """Writes `last.ckpt` (weights, optimiser, EMA, RNG, epoch) at the end of every epoch.

    The file is written beside the target and renamed into place, so a job killed while saving
    keeps the previous checkpoint whole.
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str) -> None:
        super().__init__()
        self.dirpath = dirpath

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import os

        os.makedirs(self.dirpath, exist_ok=True)
        target = os.path.join(self.dirpath, self.FILENAME)
        tmp = f"{target}.tmp-{os.getpid()}"
        trainer.save_checkpoint(tmp)  # every rank calls it; only rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, target)
