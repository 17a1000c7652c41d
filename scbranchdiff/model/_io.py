"""Safe, atomic model files: JSON metadata + safetensors arrays, never a pickle.

A model directory holds `model.json` (plain settings, read with `json`) and
`model.safetensors` (named numeric arrays). Neither format can carry code, so loading a model
from someone else cannot run anything; other files (e.g. a pickled `model.pt`) are never read.
`model.json` records the format version and the SHA-256 of the arrays file, so a truncated,
mismatched or tampered file is refused with a clear error.

Saves go to a temporary directory beside the target, are flushed to disk, and are renamed into
place only when complete, so an interrupted save never leaves a half-written model where the
old one was. Replacing a directory takes two renames (old -> backup, new -> target); should the
process die between them, loading names the backup that holds the previous model.
"""

from __future__ import annotations

import hashlib
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
_REQUIRED_KEYS = ("format_version", "tensors_sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - directories cannot be fsynced on some filesystems
        pass
    finally:
        os.close(fd)


def write_model_dir(
    dir_path: str | os.PathLike, metadata: dict[str, Any], tensors: dict[str, np.ndarray], overwrite: bool
) -> None:
    """Write a model directory atomically (see the module docstring)."""
    from safetensors.numpy import save_file

    target = Path(dir_path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{str(target)!r} already exists; pass `overwrite=True` to replace it.")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{str(target)!r} exists and is not a directory; it is not replaced.")
    bad = [k for k, v in tensors.items() if np.asarray(v).dtype.kind not in "biuf"]
    if bad:
        raise TypeError(f"Only numeric arrays can be saved; {bad} are not numeric.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(arrays, str(tmp / TENSORS_FILE))
        _fsync(tmp / TENSORS_FILE)
        body = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tensors_sha256": _sha256(tmp / TENSORS_FILE),
            **metadata,
        }
        with open(tmp / METADATA_FILE, "w") as f:
            json.dump(body, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        _fsync(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _interrupted_backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []


def read_model_dir(dir_path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a model directory written by `write_model_dir`, refusing anything else.

    Only `json` and `safetensors` parsers ever touch the files: nothing is unpickled.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(dir_path)
    if not path.is_dir():
        backups = _interrupted_backups(path)
        hint = (
            f" A save into it was interrupted; the previous model is intact at {str(backups[-1])!r}"
            " (rename it back to load it)."
            if backups
            else ""
        )
        raise FileNotFoundError(f"No model directory at {str(path)!r}.{hint}")
    meta_file, tensor_file = path / METADATA_FILE, path / TENSORS_FILE
    if not meta_file.is_file() or not tensor_file.is_file():
        found = sorted(p.name for p in path.iterdir())
        raise ValueError(
            f"{str(path)!r} is not a scbranchdiff model directory: expected {METADATA_FILE!r} "
            f"and {TENSORS_FILE!r}, found {found}. Pickled model files (e.g. scvi-tools' "
            "model.pt) are refused because loading them can run arbitrary code."
        )
    try:
        with open(meta_file, encoding="utf-8") as f:
            metadata = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(meta_file)!r} is corrupted (not valid JSON): {e}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(
            f"{str(meta_file)!r} is not a scbranchdiff model file (expected 'format': {FORMAT!r})."
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{str(meta_file)!r} is corrupted: format_version is {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was saved in model format version {version}; this scbranchdiff "
            f"reads versions up to {FORMAT_VERSION}. Upgrade scbranchdiff to load it."
        )
    missing = [k for k in _REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"{str(meta_file)!r} is corrupted: it lacks {missing}.")
    if _sha256(tensor_file) != metadata["tensors_sha256"]:
        raise ValueError(
            f"{str(tensor_file)!r} does not match its checksum in {METADATA_FILE!r}: the file is "
            "truncated, corrupted or was replaced. Refusing to load it."
        )
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{str(tensor_file)!r} is corrupted: {e}") from None
    return metadata, tensors
