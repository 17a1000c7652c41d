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

    With ``train_size < 1`` (or a `validation_size`), a stratified share of each cell type is
    held out for a validation denoising loss; every held-out cell gets one fixed time and
    noise draw, so the loss is comparable from epoch to epoch (early stopping reads it).

    Parameters
    ----------
    latent
        Scaled latents, cells x dimensions.
    cell_type
        Class index of every cell.
    batch_size
        Cells per batch.
    seed
        Seed of the per-epoch order, of the split and of the validation draws.
    train_size
        Share of each cell type trained on (scvi-tools' meaning). 1 holds out nothing.
    validation_size
        Share of each cell type held out for validation (default: the rest). A type keeps
        at least one training cell.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.train import LatentDataModule
    >>> data = LatentDataModule(np.zeros((10, 3)), np.zeros(10, dtype=int), batch_size=4)
    >>> data.n_train
    10
    >>> LatentDataModule(np.zeros((10, 3)), np.zeros(10, dtype=int), 4, train_size=0.8).n_val
    2
    """

    def __init__(
        self,
        latent: np.ndarray,
        cell_type: np.ndarray,
        batch_size: int,
        seed: int = 0,
        train_size: float = 1.0,
        validation_size: float | None = None,
    ) -> None:
        super().__init__()
        latent = torch.as_tensor(latent, dtype=torch.float32)
        cell_type = torch.as_tensor(cell_type, dtype=torch.long)
        self.train_idx, self.val_idx = stratified_split(
            cell_type.numpy(), train_size, validation_size, seed
        )
        if len(self.val_idx) == 0:
            self.dataset = TensorDataset(latent, cell_type)
        else:
            train, val = torch.as_tensor(self.train_idx), torch.as_tensor(self.val_idx)
            self.dataset = TensorDataset(latent[train], cell_type[train])
            # one fixed (time, noise) draw per held-out cell: a loss comparable across epochs
            generator = torch.Generator().manual_seed(int(seed) + 1)
            u = torch.rand(len(val), generator=generator)
            z = torch.randn(len(val), latent.shape[1], generator=generator)
            self.validation = TensorDataset(latent[val], cell_type[val], u, z)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.n_train = len(self.train_idx)
        self.n_val = len(self.val_idx)

    def _shard(self, dataset: TensorDataset, shuffle: bool) -> DistributedSampler:
        """This process's share of `dataset` (one process: all of it), reshuffled per epoch."""
        trainer = self.trainer
        distributed = trainer is not None and trainer.world_size > 1
        return DistributedSampler(
            dataset,
            num_replicas=trainer.world_size if distributed else 1,
            rank=trainer.global_rank if distributed else 0,
            shuffle=shuffle,
            seed=self.seed,
        )

    def train_dataloader(self) -> DataLoader:
        # one process: a DistributedSampler of one replica is a permutation seeded per epoch
        batches = _EpochBatchSampler(self._shard(self.dataset, shuffle=True), self.batch_size, drop_last=False)
        return DataLoader(self.dataset, sampler=batches, batch_size=None)

    def val_dataloader(self) -> DataLoader | list:
        if self.n_val == 0:
            return []
        batches = BatchSampler(self._shard(self.validation, shuffle=False), 4096, drop_last=False)
        return DataLoader(self.validation, sampler=batches, batch_size=None)


def stratified_split(
    cell_type: np.ndarray, train_size: float, validation_size: float | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation cell indices, the same share of every cell type held out.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.train import stratified_split
    >>> train, val = stratified_split(np.repeat([0, 1], [10, 1]), 0.8, None, seed=0)
    >>> len(train), len(val)  # the one-cell type keeps its cell
    (9, 2)
    """
    if not 0.0 < float(train_size) <= 1.0:
        raise ValueError(f"`train_size` must lie in (0, 1], got {train_size!r}.")
    held = 1.0 - float(train_size) if validation_size is None else float(validation_size)
    if not 0.0 <= held < 1.0 or float(train_size) + held > 1.0 + 1e-9:
        raise ValueError(
            f"`validation_size` must lie in [0, 1) with train_size + validation_size <= 1, "
            f"got {validation_size!r}."
        )
    n = len(cell_type)
    if held == 0.0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(cell_type):
        rows = np.flatnonzero(cell_type == c)
        n_val = min(int(np.floor(held * len(rows) + 0.5)), len(rows) - 1)
        val.append(rng.choice(rows, size=n_val, replace=False))
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    return np.setdiff1d(np.arange(n), val_idx), val_idx


class _EpochBatchSampler(BatchSampler):
    """BatchSampler that passes Lightning's `set_epoch` on, so each DDP epoch reshuffles."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
