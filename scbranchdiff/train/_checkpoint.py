"""Per-epoch checkpoints of the diffusion stage, written atomically, and resuming from them."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl

from .._io import _temp_name, remove_stale_temporaries


class EpochCheckpoint(pl.Callback):
    """Writes `last.ckpt` (weights, optimiser, EMA, RNG, epoch) at the end of every epoch.

    The file is written beside the target and renamed into place, so a job killed while saving
    keeps the previous checkpoint whole.

    Parameters
    ----------
    dirpath
        Directory of the checkpoint (created when missing).

    Examples
    --------
    >>> from scbranchdiff.train import EpochCheckpoint
    >>> EpochCheckpoint("checkpoints").FILENAME
    'last.ckpt'
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str) -> None:
        super().__init__()
        self.dirpath = dirpath

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        os.makedirs(self.dirpath, exist_ok=True)
        target = Path(self.dirpath) / self.FILENAME
        if trainer.is_global_zero:
            remove_stale_temporaries(target)  # left by a job killed while saving
        # a hidden temporary named like every other temporary of ours (recognised when stale)
        tmp = target.parent / _temp_name(target, "tmp", ".ckpt")
        trainer.save_checkpoint(str(tmp))  # every rank calls it; only rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, target)


def checkpoint_callbacks(checkpoint_dir: str | None, trainer_kwargs: dict) -> list[pl.Callback]:
    """The per-epoch checkpoint callback; resolves ``ckpt_path="last"`` in `trainer_kwargs`.

    Called before any training, so that a bad `ckpt_path` is reported at once.

    Parameters
    ----------
    checkpoint_dir
        Where checkpoints are written (None: no checkpoints).
    trainer_kwargs
        Lightning trainer arguments; ``ckpt_path="last"`` is replaced by the path of the last
        checkpoint in `checkpoint_dir` (or None when there is none yet: training starts afresh).

    Returns
    -------
    The callbacks to pass to the trainer.

    Examples
    --------
    >>> from scbranchdiff.train import checkpoint_callbacks
    >>> kwargs = {"ckpt_path": "last"}
    >>> callbacks = checkpoint_callbacks("no_checkpoint_yet", kwargs)
    >>> kwargs["ckpt_path"] is None, type(callbacks[0]).__name__
    (True, 'EpochCheckpoint')
    """
    ckpt_path = trainer_kwargs.get("ckpt_path")
    if ckpt_path == "last":
        if checkpoint_dir is None:
            raise ValueError('`ckpt_path="last"` needs `checkpoint_dir` (where the checkpoints were written).')
        last = Path(checkpoint_dir) / EpochCheckpoint.FILENAME
        # nothing to resume (the job had not finished an epoch): start from scratch
        trainer_kwargs["ckpt_path"] = str(last) if last.is_file() else None
    elif ckpt_path is not None and not Path(str(ckpt_path)).is_file():
        raise FileNotFoundError(f"`ckpt_path={ckpt_path!r}` is not a file; expected a Lightning checkpoint.")
    if checkpoint_dir is None:
        return []
    _check_writable_dir(Path(checkpoint_dir))
    return [EpochCheckpoint(str(checkpoint_dir))]


def _check_writable_dir(path: Path) -> None:
    """Raise now, before any training, if checkpoints could not be written into `path`."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"`checkpoint_dir={str(path)!r}` exists and is not a directory.")
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"`checkpoint_dir={str(path)!r}` cannot be written ({str(probe)!r} is not writable).")
