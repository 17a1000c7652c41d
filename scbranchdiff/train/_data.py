"""The diffusion stage's data: scaled latents and class indices, held in memory."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


class LatentDataModule(pl.LightningDataModule):
    """Standardised latents and class indices in memory, served as shuffled batches.

    Batches are gathered with one tensor index per batch (no per-sample collation). The order of
    epoch e is a permutation seeded by (seed, e), so a run resumed from a checkpoint sees the
    same batches as an uninterrupted one. Under DDP each process gets its own shard.

    Parameters
    ----------
    latent
        Scaled latents, cells x dimensions.
    cell_type
        Class index of every cell.
    batch_size
        Cells per batch.
    seed
        Seed of the per-epoch order.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.train import LatentDataModule
    >>> data = LatentDataModule(np.zeros((10, 3)), np.zeros(10, dtype=int), batch_size=4)
    >>> data.n_train
    10
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
