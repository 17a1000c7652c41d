"""Safe, atomic model files: JSON metadata + safetensors arrays, never a pickle.

A model directory holds `model.json` (plain settings, read with `json`) and
`model.safetensors` (named numeric arrays). Neither format can carry code, so loading a model
from someone else cannot run anything. Saves go to a temporary directory beside the target and
are renamed into place only when complete, so an interrupted save never leaves a half-written
model where the old one was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "scbranchdiff"
FORMAT_VERSION = 1
METADATA_FILE = "model.json"
TENSORS_FILE = "model.safetensors"


def write_model_dir(
    dir_path: str | os.PathLike, metadata: dict[str, Any], tensors: dict[str, np.ndarray], overwrite: bool
) -> None:
    """Write a model directory atomically."""
    from safetensors.numpy import save_file

    target = Path(dir_path)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{str(target)!r} already exists; pass `overwrite=True` to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        body = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
        with open(tmp / METADATA_FILE, "w") as f:
            json.dump(body, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(arrays, str(tmp / TENSORS_FILE))
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_model_dir(dir_path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a model directory written by `write_model_dir`, refusing anything else."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(dir_path)
    if not path.is_dir():
        raise FileNotFoundError(f"No model directory at {str(path)!r}.")
    meta_file, tensor_file = path / METADATA_FILE, path / TENSORS_FILE
    if not meta_file.exists() or not tensor_file.exists():
        found = sorted(p.name for p in path.iterdir())
        raise ValueError(
            f"{str(path)!r} is not a scbranchdiff model directory: expected {METADATA_FILE!r} "
            f"and {TENSORS_FILE!r}, found {found}. Pickled model files (e.g. scvi-tools' "
            "model.pt) are refused because loading them can run arbitrary code."
        )
    try:
        with open(meta_file) as f:
            metadata = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(meta_file)!r} is corrupted (not valid JSON): {e}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{str(meta_file)!r} is not a scbranchdiff model file.")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was saved in model format version {version!r}; this scbranchdiff "
            f"reads versions up to {FORMAT_VERSION}. Upgrade scbranchdiff to load it."
        )
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{str(tensor_file)!r} is corrupted: {e}") from None
    return metadata, tensors
