"""Safe, atomic model files: JSON metadata + safetensors arrays, never a pickle.

A model directory holds `model.json` (plain settings, read with `json`) and
`model.safetensors` (named numeric arrays). Neither format can carry code, so loading a model
from someone else cannot run anything; other files (e.g. a pickled `model.pt`) are never read.

Integrity (format version 2): `model.json` records the SHA-256 of the arrays file, and the
arrays file's header records the SHA-256 of `model.json`'s content (canonical JSON without the
two checksums), so editing either file alone is refused. Files of format version 1 (whose
checksum covers the arrays only) are still read, with a warning. Whatever the version, every
field of `model.json` is checked against the arrays (:func:`validate_model_metadata`) before
the caller builds anything from it, so a bad file is one clear error, not a huge allocation or a
wrong model.

Writes (:func:`write_model_dir`, :func:`atomic_file`) go to temporaries beside the target
(``.<name>.tmp-<host>.<pid>.<token>``), flushed to disk and renamed into place only when
complete, with permissions from the umask; the overwrite check is made again at the moment of
the rename, and replacing a model never deletes a file that is not one of the model's own.
Temporaries left by a killed process are removed by the next write beside them
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import stat
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "scbranchdiff"
FORMAT_VERSION = 2
METADATA_FILE = "model.json"
TENSORS_FILE = "model.safetensors"
MODEL_FILES = (TENSORS_FILE, METADATA_FILE)  # the order they are put in place: JSON last
_REQUIRED_KEYS = ("format_version", "tensors_sha256")
# what BranchedDiffusion.load builds the model from
_MODEL_KEYS = ("init_params", "setup_args", "var_names", "classes", "hierarchy", "is_flat", "network", "latent")
_CHECKSUM_KEYS = ("tensors_sha256", "metadata_sha256")
# keys of the safetensors header's metadata (strings only)
_HEADER_FORMAT, _HEADER_VERSION, _HEADER_METADATA_SHA = "format", "format_version", "metadata_sha256"

_MAX_METADATA_BYTES = 64 << 20  # a model.json with 100,000 genes is a few MB
_MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit
_MAX_DEPTH = 32  # the deepest model.json value is 5 levels down
# a temporary whose process is gone (or that has not changed for this long) is stale
STALE_AFTER_S = 24 * 3600.0

# ---------------------------------------------------------------------------- low level
def _sha256(path: Path) -> str:
    fd = _open_regular(path)
    try:
        return _sha256_fd(fd)
    finally:
        os.close(fd)


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, 1 << 20):
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


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path) -> int:
    """Open `path` for reading, refusing anything but a regular file before reading a byte.

    Non-blocking, so a FIFO put in place of a model file cannot hang the open.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _NotRegular(path, _kind_of(st.st_mode))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped between the stat and the open
        os.close(fd)
        raise _NotRegular(path, _kind_of(st.st_mode))
    return fd


class _HeaderError(ValueError):
    pass


class _NotRegular(ValueError):
    def __init__(self, path: Path, kind: str) -> None:
        what = kind if kind.startswith("not") else f"{kind}, not a regular file"
        super().__init__(f"{path.parent} {path.name} is {what}; refusing to read it.")


def _read_fd(fd: int, limit: int) -> bytes:
    chunks, total = [], 0
    while block := os.read(fd, 1 << 20):
        chunks.append(block)
        total += len(block)
        if total > limit:
            raise OverflowError
    return b"".join(chunks)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


def _temp_name(target: Path, kind: str, suffix: str = "") -> str:
    """``.<name>.<kind>-<host>.<pid>.<token><suffix>``: whose it is, recognisable when stale."""
    name = f".{target.name}.{kind}-{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"
    _OWN_TEMPORARIES.add(name)
    return name


_TEMP = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9_]+)\.(?P<pid>\d+)\.[0-9a-f]{8}(?:\.[A-Za-z0-9]+)?$"
)
# left by earlier versions: tempfile.mkdtemp names (no pid) and the streaming writer's `.tmp-<pid>`
_LEGACY_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)|[a-z0-9_]{8})$")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there: keep it (age decides)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _last_change(path: Path) -> float:
    """Newest mtime of `path` and (for a directory) the entries in it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            try:
                newest = max(newest, child.lstat().st_mtime)
            except OSError:
                pass
    return newest


# temporaries this process is writing now (a dead process may have had the same pid)
_OWN_TEMPORARIES: set[str] = set()


def _is_stale(entry: Path, host: str | None, pid: int | None, legacy: bool) -> bool:
    if pid is not None and (host is None or host == _host_tag()):
        if pid == os.getpid():  # ours, unless an earlier process had this pid
            return not (legacy or entry.name in _OWN_TEMPORARIES)
        if not _pid_alive(pid):
            return True
    return time.time() - _last_change(entry) > STALE_AFTER_S


def remove_stale_temporaries(path: str | os.PathLike, *, backups: bool = False) -> list[Path]:
    """Remove temporaries beside `path` left by a killed or crashed write.

    A temporary is ours when its name is ``.<name>.tmp-<host>.<pid>.<token>`` (or a name of an
    earlier version for `path`'s own name); it is stale when its process has ended (same host)
    or it has not changed for :data:`STALE_AFTER_S` seconds. Temporaries of every name in the
    folder are removed; backups of a replaced model (``.<name>.old-...``, which hold the
    previous model after an interrupted save) only for `path` itself, only when `backups` is
    True (the caller is replacing that model) and only when they hold nothing but model files.

    Returns
    -------
    The removed paths.

    Examples
    --------
    >>> import os, tempfile
    >>> from pathlib import Path
    >>> from scbranchdiff._io import remove_stale_temporaries
    >>> folder = Path(tempfile.mkdtemp())
    >>> stale = folder / ".cells.h5ad.tmp-node7.4242.0123abcd"  # another host, untouched for years
    >>> _ = stale.write_bytes(b"half a file")
    >>> os.utime(stale, (0, 0))
    >>> [p.name for p in remove_stale_temporaries(folder / "cells.h5ad")]
    ['.cells.h5ad.tmp-node7.4242.0123abcd']
    """
    path = Path(path)
    parent = path.parent
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        legacy = match is None
        if legacy:
            match = _LEGACY_TEMP.match(entry.name)
            if match is None or match["name"] != path.name:
                continue
        host = None if legacy else match["host"]
        if match["kind"] == "old" and not (backups and match["name"] == path.name):
            continue
        candidate = Path(entry.path)
        pid = int(match["pid"]) if match["pid"] else None
        try:
            if not _is_stale(candidate, host, pid, legacy):
                continue
            if entry.is_dir(follow_symlinks=False):
                if match["kind"] == "old" and not set(os.listdir(candidate)) <= set(MODEL_FILES):
                    continue  # not only a model: someone's files, keep them
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
        except OSError:
            continue
        removed.append(candidate)
    return removed


def _link_or_move(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, refusing to replace an existing `dst` (hard link, then unlink)."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network or FAT filesystems)
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "File exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


# ---------------------------------------------------------------------------- .h5ad and other files
@contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path beside `path`, moved into place on success.

    The temporary is created here (so its permissions follow the umask) and the writer
    fills it (e.g. ``adata.write_h5ad(tmp)``). When the block ends without error it is flushed
    to disk and renamed onto `path`; the overwrite check is made again at that moment (without
    `overwrite`, a file that appeared meanwhile is left alone and FileExistsError raised). On
    any error the temporary is removed and a file already at `path` is left as it was.

    Parameters
    ----------
    path
        The file to write.
    overwrite
        Replace an existing file (never a directory).

    Examples
    --------
    >>> import anndata as ad, numpy as np, os, tempfile
    >>> from scbranchdiff._io import atomic_file
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5ad")
    >>> with atomic_file(path, overwrite=False) as tmp:
    ...     ad.AnnData(np.ones((2, 3), dtype=np.float32)).write_h5ad(tmp)
    >>> ad.read_h5ad(path).shape
    (2, 3)
    """
    path = Path(path)
    check_file_target(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / _temp_name(path, "tmp", path.suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"The writer removed the temporary file {str(tmp)!r}; nothing was written.")
        os.chmod(tmp, mode)  # a writer that recreated the file may have used other permissions
        _fsync(tmp)
        if overwrite:
            check_file_target(path, overwrite=True)
            os.replace(tmp, path)
        else:
            try:
                _link_or_move(tmp, path)
            except FileExistsError:
                raise FileExistsError(
                    f"{str(path)!r} was created while it was being written; it is left as it was."
                ) from None
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
        _OWN_TEMPORARIES.discard(tmp.name)


def check_file_target(path: str | os.PathLike, *, overwrite: bool) -> None:
    """Raise unless a file may be written at `path`: absent, or a regular file and `overwrite`.

    Examples
    --------
    >>> import os, tempfile
    >>> from scbranchdiff._io import check_file_target
    >>> check_file_target(os.path.join(tempfile.mkdtemp(), "new.h5ad"), overwrite=False)
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileExistsError(f"{str(path)!r} is a dangling symbolic link; it is not replaced.") from None
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{str(path)!r} is a directory; it is not replaced by a file.")
    if not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; pass `overwrite=True` to replace it.")
    if not stat.S_ISREG(st.st_mode):
        raise FileExistsError(f"{str(path)!r} is {_kind_of(st.st_mode)}, not a regular file; it is not replaced.")


# ---------------------------------------------------------------------------- model directories
@dataclass
class TargetState:
    """What is at a model directory's path now (see :func:`inspect_model_target`)."""

    path: Path
    exists: bool = False
    is_dir: bool = False
    is_symlink: bool = False
    model_files: list[str] = field(default_factory=list)  # ours
    foreign_model_files: list[str] = field(default_factory=list)  # model.json etc. of something else
    other_entries: list[str] = field(default_factory=list)

    @property
    def only_model_files(self) -> bool:
        return not self.other_entries and not self.foreign_model_files


def _is_our_metadata(path: Path) -> bool:
    try:
        fd = _open_regular(path)
    except (OSError, ValueError):
        return False
    try:
        head = os.read(fd, 4096)
    except OSError:
        return False
    finally:
        os.close(fd)
    return re.search(rb'"format"\s*:\s*"scbranchdiff"', head) is not None


def _is_our_tensors(path: Path) -> bool:
    try:
        return _read_header(path).get("__metadata__", {}).get(_HEADER_FORMAT) == FORMAT
    except (OSError, ValueError):
        return False


def inspect_model_target(dir_path: str | os.PathLike) -> TargetState:
    """Look at `dir_path` before a model is written there: which entries are ours, which not.

    Examples
    --------
    >>> import os, tempfile
    >>> from scbranchdiff._io import inspect_model_target
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "notes.txt"), "w").write("mine")
    >>> inspect_model_target(folder).other_entries
    ['notes.txt']
    """
    path = Path(dir_path)
    state = TargetState(path=path, is_symlink=path.is_symlink())
    if not os.path.lexists(path):
        return state
    state.exists = True
    state.is_dir = path.is_dir()
    if not state.is_dir:
        return state
    names = sorted(os.listdir(path))
    ours_json = METADATA_FILE in names and _is_our_metadata(path / METADATA_FILE)
    for name in names:
        if name == METADATA_FILE:
            (state.model_files if ours_json else state.foreign_model_files).append(name)
        elif name == TENSORS_FILE:
            # older saves carry no header mark: a tensors file beside our model.json is ours
            ours = _is_our_tensors(path / name) or (ours_json and (path / name).is_file())
            (state.model_files if ours else state.foreign_model_files).append(name)
        else:
            state.other_entries.append(name)
    return state


def _list(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def check_model_target(
    dir_path: str | os.PathLike, *, overwrite: bool, allow_other_files: bool = False
) -> TargetState:
    """Raise FileExistsError unless a model may be written at `dir_path` now.

    Absent: fine. Present: only with `overwrite`, only a directory, never one holding a
    ``model.json`` / ``model.safetensors`` that is not a scbranchdiff model, and, unless
    `allow_other_files`, none holding anything but a model's own files.

    Examples
    --------
    >>> import os, tempfile
    >>> from scbranchdiff._io import check_model_target
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "data.h5ad"), "w").write("precious")
    >>> check_model_target(folder, overwrite=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: ... holds files that are not part of a scbranchdiff model (data.h5ad)...
    """
    state = inspect_model_target(dir_path)
    where = str(state.path)
    if not state.exists:
        return state
    if not state.is_dir:
        raise FileExistsError(f"{where!r} exists and is not a directory; it is not replaced.")
    if not overwrite:
        raise FileExistsError(f"{where!r} already exists; pass `overwrite=True` to replace it.")
    if state.foreign_model_files:
        raise FileExistsError(
            f"{where!r} holds {_list(state.foreign_model_files)} that is not part of a scbranchdiff "
            "model; it is not replaced. Remove it or save to another directory."
        )
    if state.other_entries and not allow_other_files:
        raise FileExistsError(
            f"{where!r} holds files that are not part of a scbranchdiff model "
            f"({_list(state.other_entries)}); `overwrite=True` replaces only a saved model's own "
            "files. Save to another directory, or pass `allow_other_files=True` to write the model "
            "files into it and keep the others."
        )
    return state


def _canonical_metadata_sha256(metadata: Mapping[str, Any]) -> str:
    body = {k: v for k, v in metadata.items() if k not in _CHECKSUM_KEYS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_prefix(prefix: str) -> None:
    """Raise unless `prefix` is a plain file-name prefix (scvi-tools' `prefix=`)."""
    if not isinstance(prefix, str):
        raise TypeError(f"`prefix` must be a string, got {type(prefix).__name__}.")
    if prefix.startswith(".") or any(sep in prefix for sep in ("/", "\\", os.sep, "\0")):
        raise ValueError(
            f"`prefix` must be a file-name prefix (no path separator, not starting with '.'), "
            f"got {prefix!r}."
        )


def write_model_dir(
    dir_path: str | os.PathLike,
    metadata: dict[str, Any],
    tensors: dict[str, np.ndarray],
    overwrite: bool,
    *,
    allow_other_files: bool = False,
    prefix: str = "",
) -> None:
    """Write a model directory atomically (see the module docstring).

    Parameters
    ----------
    dir_path
        The model directory.
    metadata
        Plain JSON values (``format``, ``format_version`` and the checksums are added).
    tensors
        Numeric arrays.
    overwrite
        Replace an existing model. Only its ``model.json`` and ``model.safetensors`` are
        replaced; a directory that holds anything else is refused (see `allow_other_files`).
    allow_other_files
        With `overwrite`, write the model files into an existing directory that holds other
        files too; those files are kept.
    prefix
        Name the files ``<prefix>model.json`` and ``<prefix>model.safetensors`` (scvi-tools'
        `prefix`): several models can share `dir_path`, which may then hold other files; only
        the two files of this prefix are ever replaced (with `overwrite`).

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from scbranchdiff._io import write_model_dir, read_model_dir
    >>> path = os.path.join(tempfile.mkdtemp(), "arrays")
    >>> write_model_dir(path, {"note": "hi"}, {"w": np.ones(3, dtype=np.float32)}, overwrite=False)
    >>> sorted(os.listdir(path))
    ['model.json', 'model.safetensors']
    """
    from safetensors.numpy import save_file

    check_prefix(prefix)
    if prefix:
        _write_prefixed(Path(dir_path), prefix, metadata, tensors, overwrite=overwrite)
        return
    target = Path(dir_path)
    reserved = sorted({"format", "format_version", *_CHECKSUM_KEYS} & set(metadata))
    if reserved:
        raise ValueError(f"`metadata` must not set {reserved}: they are written by the file format.")
    bad = [k for k, v in tensors.items() if np.asarray(v).dtype.kind not in "biuf"]
    if bad:
        raise TypeError(f"Only numeric arrays can be saved; {bad} are not numeric.")
    # round trip first: the checksum is of what a reader will parse (tuples become lists, ...)
    doc = json.loads(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}, allow_nan=False))
    metadata_sha256 = _canonical_metadata_sha256(doc)
    check_model_target(target, overwrite=overwrite, allow_other_files=allow_other_files)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target, backups=overwrite)
    tmp = target.parent / _temp_name(target, "tmp")
    os.mkdir(tmp, 0o777)  # not mkdtemp (0700): the saved directory's permissions follow the umask
    try:
        try:
            save_file(
                {k: np.asarray(v, order="C") for k, v in tensors.items()}, str(tmp / TENSORS_FILE),
                metadata={_HEADER_FORMAT: FORMAT, _HEADER_VERSION: str(FORMAT_VERSION),
                          _HEADER_METADATA_SHA: metadata_sha256},
            )
            _fsync(tmp / TENSORS_FILE)
            body = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "tensors_sha256": _sha256(tmp / TENSORS_FILE),
                "metadata_sha256": metadata_sha256,
                **{k: v for k, v in doc.items() if k not in ("format", "format_version")},
            }
            fd = os.open(tmp / METADATA_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(body, f, indent=1, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())
            # safetensors creates its file 0600: give it the mode the umask gave model.json
            os.chmod(tmp / TENSORS_FILE, stat.S_IMODE(os.stat(tmp / METADATA_FILE).st_mode))
            _fsync(tmp)
        except Exception as e:
            if isinstance(e, OSError) or type(e).__name__ == "SafetensorError":  # e.g. a full disk
                error = OSError(f"Could not write the model to {str(target)!r} ({e}); nothing there was changed.")
                error.errno = getattr(e, "errno", None)
                raise error from e
            raise
        _commit_model_dir(tmp, target, overwrite=overwrite, allow_other_files=allow_other_files)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _OWN_TEMPORARIES.discard(tmp.name)


def _write_prefixed(
    target: Path, prefix: str, metadata: dict[str, Any], tensors: dict[str, np.ndarray], *, overwrite: bool
) -> None:
    """Write a model as two prefixed files into a directory that may hold anything else.

    The model is written complete into a hidden staging directory first, then its two files
    are renamed into `target` (tensors first, JSON last). Their cross-checksums make a pair
    from two different saves (a crash between the renames) fail to load instead of loading
    mismatched; other files in `target` are never touched.
    """
    names = {TENSORS_FILE: f"{prefix}{TENSORS_FILE}", METADATA_FILE: f"{prefix}{METADATA_FILE}"}
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{str(target)!r} exists and is not a directory; it is not replaced.")
    for kind, ours in ((METADATA_FILE, _is_our_metadata), (TENSORS_FILE, _is_our_tensors)):
        existing = target / names[kind]
        if os.path.lexists(existing):
            if not overwrite:
                raise FileExistsError(f"{str(existing)!r} already exists; pass `overwrite=True` to replace it.")
            if not existing.is_file() or not ours(existing):
                raise FileExistsError(
                    f"{str(existing)!r} is not part of a scbranchdiff model; it is not replaced."
                )
    target.mkdir(parents=True, exist_ok=True)
    staging = target / _temp_name(target / prefix, "tmp")
    write_model_dir(staging, metadata, tensors, overwrite=False)
    try:
        for kind in MODEL_FILES:  # JSON last
            if overwrite:
                os.replace(staging / kind, target / names[kind])
            else:
                try:
                    _link_or_move(staging / kind, target / names[kind])
                except FileExistsError:
                    raise FileExistsError(
                        f"{str(target / names[kind])!r} was created while the model was being "
                        "saved; it is left as it was."
                    ) from None
        _fsync(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _commit_model_dir(tmp: Path, target: Path, *, overwrite: bool, allow_other_files: bool) -> None:
    """Put the complete model in `tmp` at `target`, checking `target` again at this moment."""
    for _ in range(3):
        state = check_model_target(target, overwrite=overwrite, allow_other_files=allow_other_files)
        if not state.exists:
            try:
                os.mkdir(target, 0o777)  # exclusive: the no-overwrite check that holds
            except FileExistsError:
                continue  # created meanwhile: look again
            try:
                os.rename(tmp, target)  # replaces the empty directory just made
            except OSError:
                if os.listdir(target):
                    raise FileExistsError(
                        f"{str(target)!r} was created while the model was being saved; it is left as it was."
                    ) from None
                _move_files_into(tmp, target, replace=False)  # renaming onto a directory fails on Windows
            _fsync(target.parent)
            return
        if state.is_dir and not state.is_symlink and state.model_files and state.only_model_files:
            _swap_model_dir(tmp, target, allow_other_files=allow_other_files)
        else:
            _replace_model_files(tmp, target)
        return
    raise FileExistsError(f"{str(target)!r} keeps changing while the model is saved; nothing was written.")


def _swap_model_dir(tmp: Path, target: Path, *, allow_other_files: bool) -> None:
    """Replace a directory holding only a model by `tmp`: one rename puts the new model in place.

    The old directory is moved aside first; what it holds is checked then (a file put there
    during the save is not a model file): such files are moved into the new directory (or,
    without `allow_other_files`, the old directory is put back and the save refused). Should the
    process die between the two renames, the old model is intact in the backup directory, which
    loading names.
    """
    backup = target.parent / _temp_name(target, "old")
    os.replace(target, backup)
    others = sorted(set(os.listdir(backup)) - set(MODEL_FILES))
    if others and not allow_other_files:
        os.rename(backup, target)
        raise FileExistsError(
            f"{str(target)!r} got files that are not part of a scbranchdiff model while the model "
            f"was being saved ({_list(others)}); it was left as it was."
        )
    try:
        os.replace(tmp, target)
    except Exception:
        if not os.path.lexists(target):
            os.rename(backup, target)
        raise
    for name in others:  # files that are not the model's stay where their owner put them
        os.rename(backup / name, target / name)
    _fsync(target.parent)
    for name in MODEL_FILES:
        (backup / name).unlink(missing_ok=True)
    try:
        os.rmdir(backup)
    except OSError:  # pragma: no cover - something was written into the hidden backup meanwhile
        return
    _OWN_TEMPORARIES.discard(backup.name)


def _replace_model_files(tmp: Path, target: Path) -> None:
    """Put the model files into an existing directory that holds other files, one by one.

    The previous model files are first linked into a backup directory beside the target, so a
    crash between the two renames leaves the previous model whole there (loading names it).
    """
    existing = [name for name in MODEL_FILES if os.path.lexists(target / name)]
    backup = None
    if existing:
        backup = target.parent / _temp_name(target, "old")
        os.mkdir(backup, 0o777)
        for name in existing:
            try:
                os.link(target / name, backup / name)
            except OSError:
                shutil.copy2(target / name, backup / name)
        _fsync(backup)
    _move_files_into(tmp, target, replace=True)
    _fsync(target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
        _OWN_TEMPORARIES.discard(backup.name)


def _move_files_into(src_dir: Path, dst_dir: Path, *, replace: bool) -> None:
    for name in MODEL_FILES:  # JSON last: a directory is a model once its model.json is there
        if replace:
            os.replace(src_dir / name, dst_dir / name)
        else:
            _link_or_move(src_dir / name, dst_dir / name)


# ---------------------------------------------------------------------------- reading
def _interrupted_backups(path: Path) -> list[Path]:
    if not path.parent.is_dir():
        return []
    return sorted(
        (p for p in path.parent.glob(f".{_glob_escape(path.name)}.old-*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
    )


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _backup_hint(path: Path) -> str:
    backups = _interrupted_backups(path)
    if not backups:
        return ""
    return (
        f" A save into it was interrupted; the previous model is intact at {str(backups[-1])!r}"
        " (rename it back to load it)."
    )


def _parse_json(text: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            repeated = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
            raise ValueError(f"repeated keys {repeated}")
        return out

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"the number {text} is out of range")
        return value

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_float=finite, parse_constant=no_constant)


def _nesting_too_deep(doc: Any) -> bool:
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def _read_header(path: Path, fd: int | None = None) -> dict[str, Any]:
    """The JSON header of a safetensors file (names, dtypes, shapes, offsets, metadata)."""
    own = fd is None
    if own:
        fd = _open_regular(path)
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, 0, os.SEEK_SET)
        prefix = os.read(fd, 8)
        if len(prefix) < 8:
            raise _HeaderError("shorter than a safetensors header")
        n = int.from_bytes(prefix, "little")
        if n > min(size - 8, _MAX_HEADER_BYTES):
            raise _HeaderError(f"its header length ({n} bytes) is larger than the file")
        raw = b""
        while len(raw) < n and (block := os.read(fd, n - len(raw))):
            raw += block
        try:
            header = _parse_json(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise _HeaderError(f"its header is not valid JSON ({e})") from None
        if not isinstance(header, dict) or _nesting_too_deep(header):
            raise _HeaderError("its header is not a safetensors header")
        meta = header.get("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise _HeaderError("its header metadata is not a mapping of strings")
        return header
    finally:
        if own:
            os.close(fd)


def _read_tensors(path: Path, sha256: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of the safetensors file at `path`, checked against `sha256`.

    The checksum, the header and the arrays are all of one and the same file: it is opened
    once, and a file replaced or changed while it was read is refused.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    fd = _open_regular(path)
    try:
        before = os.fstat(fd)
        if _sha256_fd(fd) != sha256:
            raise ValueError(
                f"{str(path)!r} does not match its checksum in {METADATA_FILE!r}: the file is "
                f"truncated, corrupted or was replaced. Refusing to load it.{_backup_hint(path.parent)}"
            )
        try:
            header = _read_header(path, fd)
            tensors = load_file(str(path))
        except (_HeaderError, SafetensorError, OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path.parent} {path.name} is corrupted: {e}") from None
        after, now = os.fstat(fd), os.stat(path)
        same = (now.st_dev, now.st_ino) == (before.st_dev, before.st_ino)
        unchanged = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        if not (same and unchanged):
            raise ValueError(f"{path.parent} {path.name} changed while it was being read; load it again.")
    finally:
        os.close(fd)
    return header, tensors


def _corrupted(path: Path, name: str, field_: str, why: str) -> ValueError:
    return ValueError(f"{path} {name} is corrupted: {field_}: {why}")


def read_model_dir(
    dir_path: str | os.PathLike, prefix: str = ""
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a model directory written by `write_model_dir`, refusing anything else.

    Only `json` and `safetensors` parsers ever touch the files: nothing is unpickled. Both
    files must be regular files; the checksums must match (see the module docstring) and every
    field of ``model.json`` must agree with the arrays (:func:`validate_model_metadata`).

    Raises
    ------
    FileNotFoundError
        No directory at `dir_path` (naming the previous model when a save was interrupted).
    ValueError
        Anything else wrong with the files, as one line naming the file, the field and why.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from scbranchdiff._io import read_model_dir
    >>> read_model_dir(os.path.join(tempfile.mkdtemp(), "absent"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: No model directory at '...absent'.
    """
    path = Path(dir_path)
    if not path.is_dir():
        raise FileNotFoundError(f"No model directory at {str(path)!r}.{_backup_hint(path)}")
    check_prefix(prefix)
    meta_file, tensor_file = path / f"{prefix}{METADATA_FILE}", path / f"{prefix}{TENSORS_FILE}"
    if not os.path.lexists(meta_file) or not os.path.lexists(tensor_file):
        found = sorted(p.name for p in path.iterdir())
        raise ValueError(
            f"{str(path)!r} is not a scbranchdiff model directory: expected {meta_file.name!r} "
            f"and {tensor_file.name!r}, found {found}. Pickled model files (e.g. scvi-tools' "
            f"model.pt) are refused because loading them can run arbitrary code.{_backup_hint(path)}"
        )
    try:
        fd = _open_regular(meta_file)
    except FileNotFoundError:  # a dangling link
        raise ValueError(f"{path} {METADATA_FILE} is a broken link; refusing to read it.") from None
    try:
        raw = _read_fd(fd, _MAX_METADATA_BYTES)
    except OverflowError:
        raise _corrupted(path, METADATA_FILE, "(file)", f"larger than {_MAX_METADATA_BYTES >> 20} MB") from None
    finally:
        os.close(fd)
    try:
        metadata = _parse_json(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _corrupted(path, METADATA_FILE, "(file)", f"not valid JSON: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise _corrupted(path, METADATA_FILE, "(file)", "not valid JSON: nested too deeply") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(
            f"{str(meta_file)!r} is not a scbranchdiff model file (expected 'format': {FORMAT!r})."
        )
    if _nesting_too_deep(metadata):
        raise _corrupted(path, METADATA_FILE, "(file)", f"values nested more than {_MAX_DEPTH} levels deep")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _corrupted(path, METADATA_FILE, "format_version", f"{version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was saved in model format version {version}; this scbranchdiff "
            f"reads versions up to {FORMAT_VERSION}. Upgrade scbranchdiff to load it."
        )
    required = [*_REQUIRED_KEYS, *(("metadata_sha256",) if version >= 2 else ()), *_MODEL_KEYS]
    missing = [k for k in required if k not in metadata]
    if missing:
        raise _corrupted(path, METADATA_FILE, missing[0], f"missing (model.json lacks {missing})")
    try:
        header, tensors = _read_tensors(tensor_file, metadata["tensors_sha256"])
    except FileNotFoundError:
        raise ValueError(f"{path} {TENSORS_FILE} is a broken link; refusing to read it.") from None
    header_meta = header.get("__metadata__", {})
    claimed = header_meta.get(_HEADER_METADATA_SHA)
    if version >= 2 or claimed is not None:
        # the arrays file says which model.json belongs to it; an edited or downgraded one does not
        actual = _canonical_metadata_sha256(metadata)
        if claimed != actual or metadata.get("metadata_sha256") != actual or version < 2:
            raise ValueError(
                f"{path} {METADATA_FILE} does not match its checksum: it was edited, or belongs to "
                f"another model. Refusing to load it.{_backup_hint(path)}"
            )
    else:
        warnings.warn(
            f"{str(path)!r} was saved in model format version {version}, whose checksum covers "
            f"{TENSORS_FILE} only: edits of {METADATA_FILE} cannot all be detected. Save the model "
            "again to protect both files.",
            UserWarning,
            stacklevel=3,  # the caller of BranchedDiffusion.load
        )
    validate_model_metadata(metadata, tensors, where=path)
    return metadata, tensors


# ---------------------------------------------------------------------------- validation
class _Corrupt(Exception):
    def __init__(self, field_: str, why: str, file: str = METADATA_FILE) -> None:
        super().__init__(field_, why, file)
        self.field, self.why, self.file = field_, why, file


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, name: str, minimum: int = 0) -> int:
    if not _is_int(value):
        raise _Corrupt(name, f"{_show(value)} is not an integer")
    if value < minimum:
        raise _Corrupt(name, f"{value} is less than {minimum}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Corrupt(name, f"{_show(value)} is not a finite number")
    return float(value)


def _str(value: Any, name: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Corrupt(name, f"{_show(value)} is not a string" + (" or null" if optional else ""))
    return value


def _dict(value: Any, name: str, *, optional: bool = False) -> dict:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise _Corrupt(name, f"{_show(value)} is not a mapping" + (" or null" if optional else ""))
    return value


def _unique_strings(value: Any, name: str, *, nonempty: bool = True) -> list[str]:
    if not isinstance(value, list):
        raise _Corrupt(name, f"{_show(value)} is not a list of strings")
    bad = [i for i, v in enumerate(value) if not isinstance(v, str)]
    if bad:
        raise _Corrupt(f"{name}[{bad[0]}]", f"{_show(value[bad[0]])} is not a string")
    if nonempty and not value:
        raise _Corrupt(name, "is empty")
    if len(set(value)) != len(value):
        seen: set[str] = set()
        repeated = [v for v in value if v in seen or seen.add(v)]
        raise _Corrupt(name, f"repeats {_list(sorted(set(repeated)), 3)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _shape(tensors: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    if name not in tensors:
        raise _Corrupt(name, "missing from the tensors", TENSORS_FILE)
    return tuple(int(s) for s in np.shape(tensors[name]))


def _dim(tensors: Mapping[str, np.ndarray], name: str, axis: int) -> int:
    shape = _shape(tensors, name)
    if len(shape) <= axis:
        raise _Corrupt(name, f"has shape {shape}, expected at least {axis + 1} dimensions", TENSORS_FILE)
    return shape[axis]


def _indices(names: list[str], prefix: str) -> list[int]:
    """The integers i of names ``<prefix><i>.<rest>``, sorted and unique."""
    found = set()
    for name in names:
        if name.startswith(prefix):
            head = name[len(prefix):].split(".", 1)[0]
            if not head.isdigit():
                raise _Corrupt(name, "is not a tensor of the model", TENSORS_FILE)
            found.add(int(head))
    return sorted(found)


def _consecutive(found: list[int], name: str) -> int:
    if found != list(range(len(found))):
        raise _Corrupt(name, f"numbered {found[:5]}..., not 0, 1, 2, ...", TENSORS_FILE)
    return len(found)


def validate_model_metadata(
    metadata: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *, where: str | os.PathLike | None = None
) -> None:
    """Check every field of a model's metadata against its tensors, before anything is built.

    Types, allowed values and sizes: every size the loader allocates (branches, widths, genes,
    classes, batches, scVI layers) must equal the size of the tensors that fill it, so a bad
    file cannot make the loader allocate more than the tensors hold; float tensors must be
    finite and the latent scaling positive.

    Parameters
    ----------
    metadata
        The parsed ``model.json``.
    tensors
        The arrays of ``model.safetensors``.
    where
        The model directory, for the message.

    Raises
    ------
    ValueError
        ``"<where> model.json is corrupted: <field>: <why>"`` for the first bad field
        (``model.safetensors`` when a tensor itself is bad).

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff._io import validate_model_metadata
    >>> validate_model_metadata({"classes": 5}, {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: model.json is corrupted: ...
    """
    try:
        _validate(metadata, tensors)
    except _Corrupt as e:
        prefix = f"{where} " if where is not None else ""
        raise ValueError(f"{prefix}{e.file} is corrupted: {e.field}: {e.why}") from None


def _validate(metadata: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
    if not isinstance(metadata, Mapping):
        raise _Corrupt("(file)", "is not a JSON object")
    if _nesting_too_deep(dict(metadata)):
        raise _Corrupt("(file)", f"values nested more than {_MAX_DEPTH} levels deep")
    for key in _MODEL_KEYS:
        if key not in metadata:
            raise _Corrupt(key, "missing")
    _check_tensors(tensors)
    classes = _unique_strings(metadata["classes"], "classes")
    var_names = _unique_strings(metadata["var_names"], "var_names")
    is_flat = metadata["is_flat"]
    if not isinstance(is_flat, bool):
        raise _Corrupt("is_flat", f"{_show(is_flat)} is not true or false")
    net = _check_network(_dict(metadata["network"], "network"), tensors, classes, is_flat)
    _check_hierarchy(metadata["hierarchy"], classes, net["n_branches"])
    _check_scaling(tensors, net["n_latent"], len(classes))
    _check_latent(_dict(metadata["latent"], "latent"), tensors, net["n_latent"], classes, var_names)
    setup = _dict(metadata["setup_args"], "setup_args")
    if set(setup) != {"labels_key", "layer", "batch_key"}:
        raise _Corrupt("setup_args", f"has keys {sorted(setup)}, expected ['batch_key', 'labels_key', 'layer']")
    _str(setup["labels_key"], "setup_args.labels_key")
    _str(setup["layer"], "setup_args.layer", optional=True)
    _str(setup["batch_key"], "setup_args.batch_key", optional=True)
    if metadata["latent"]["kind"] == "pca" and metadata["latent"]["config"]["layer"] != setup["layer"]:
        raise _Corrupt("latent.config.layer", f"{_show(metadata['latent']['config']['layer'])}, but the model's "
                       f"layer is {_show(setup['layer'])}")
    init = _dict(metadata["init_params"], "init_params")
    _check_init_params(init, net)
    if "sde" in metadata:  # a record of init_params' schedule
        sde = _dict(metadata["sde"], "sde")
        _expect_keys(sde, "sde", {"beta_min", "beta_max", "t_min"})
        for key in ("beta_min", "beta_max"):
            if _number(sde[key], f"sde.{key}") != init[key]:
                raise _Corrupt(f"sde.{key}", f"{sde[key]}, but init_params.{key} is {init[key]}")
        if not 0 < _number(sde["t_min"], "sde.t_min") < 1:
            raise _Corrupt("sde.t_min", f"{sde['t_min']} is not in (0, 1)")
    if "latent_scaling" in metadata and metadata["latent_scaling"] != init["latent_scaling"]:
        raise _Corrupt("latent_scaling", f"{_show(metadata['latent_scaling'])}, but init_params.latent_scaling is "
                       f"{_show(init['latent_scaling'])}")
    if "train_settings" in metadata:
        _check_train_settings(_dict(metadata["train_settings"], "train_settings"))
    if "extra" in metadata:
        _dict(metadata["extra"], "extra")
    if "history" in metadata:
        _check_history(_dict(metadata["history"], "history"))
    if "scbranchdiff_version" in metadata:
        _str(metadata["scbranchdiff_version"], "scbranchdiff_version")


def _check_history(history: dict) -> None:
    """Per logged value: epochs (ints) and values (numbers or null) of one length."""
    for key, record in history.items():
        name = f"history.{key}"
        record = _dict(record, name)
        epochs, values = record.get("epoch"), record.get("value")
        if not isinstance(epochs, list) or not isinstance(values, list) or len(epochs) != len(values):
            raise _Corrupt(name, "needs lists 'epoch' and 'value' of one length")
        for epoch in epochs:
            _int(epoch, f"{name}.epoch")
        for value in values:
            if value is not None:
                _number(value, f"{name}.value")


def _check_train_settings(settings: dict) -> None:
    """A record of the training run; continual learning appends to `added_cell_types`."""
    for key, value in settings.items():
        name = f"train_settings.{key}"
        if key in ("max_epochs", "batch_size", "seed", "n_cells", "epochs_run") and value is not None:
            _int(value, name)
        elif key in ("lr", "ema_decay", "train_size", "validation_size") and value is not None:
            _number(value, name)
        elif key == "added_cell_types" and (
            not isinstance(value, list) or not all(isinstance(v, dict) for v in value)
        ):
            raise _Corrupt(name, f"{_show(value)} is not a list of records")


def _check_tensors(tensors: Mapping[str, np.ndarray]) -> None:
    for name, value in tensors.items():
        if not isinstance(name, str) or not name.startswith(("network.", "latent.", "scaling.")):
            raise _Corrupt(str(name), "is not a tensor of the model", TENSORS_FILE)
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise _Corrupt(name, f"has dtype {array.dtype}, not a number", TENSORS_FILE)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise _Corrupt(name, "holds NaN or infinite values", TENSORS_FILE)


def _check_network(net: dict, tensors: Mapping[str, np.ndarray], classes: list[str], is_flat: bool) -> dict:
    import torch

    from .module import BranchedScoreNetwork

    keys = ("n_hidden", "n_trunk_blocks", "n_head_blocks", "n_latent", "n_branches", "n_classes")
    for key in keys:
        if key not in net:
            raise _Corrupt(f"network.{key}", "missing")
        _int(net[key], f"network.{key}", minimum=1 if key in ("n_hidden", "n_latent", "n_branches") else 0)
    names = [k for k in tensors if k.startswith("network.")]
    # sizes from the tensors first: nothing below is allocated from a number in the JSON alone
    input_shape = _shape(tensors, "network.input.weight")
    if len(input_shape) != 2 or min(input_shape) < 1:
        raise _Corrupt("network.input.weight", f"has shape {input_shape}, not (n_hidden, n_latent)", TENSORS_FILE)
    n_hidden, n_latent = input_shape
    found = {
        "n_hidden": n_hidden,
        "n_latent": n_latent,
        "n_branches": _consecutive(_indices(names, "network.heads."), "network.heads"),
        "n_trunk_blocks": _consecutive(_indices(names, "network.trunk."), "network.trunk"),
        "n_head_blocks": _consecutive(_indices(names, "network.heads.0.blocks."), "network.heads.0.blocks"),
        "n_classes": _dim(tensors, "network.class_embedding.weight", 0)
        if "network.class_embedding.weight" in tensors else 0,
    }
    for key in keys:
        if net[key] != found[key]:
            raise _Corrupt(f"network.{key}", f"{net[key]}, but the tensors hold {found[key]}")
    if is_flat and (net["n_branches"] != 1 or net["n_classes"] != len(classes)):
        raise _Corrupt(
            "network", f"a flat model has 1 branch and {len(classes)} classes, not "
            f"{net['n_branches']} and {net['n_classes']}"
        )
    if not is_flat and net["n_classes"] != 0:
        raise _Corrupt("network.n_classes", f"{net['n_classes']}, but a branched model takes no class input")
    # every tensor name and shape, from the network the loader will build (on the meta device)
    with torch.device("meta"):
        expected = BranchedScoreNetwork(
            n_latent=n_latent, n_branches=net["n_branches"], n_classes=net["n_classes"], n_hidden=n_hidden,
            n_trunk_blocks=net["n_trunk_blocks"], n_head_blocks=net["n_head_blocks"],
        ).state_dict()
    shapes = {f"network.{k}": tuple(v.shape) for k, v in expected.items()}
    for name in sorted(set(shapes) | set(names)):
        if name not in shapes:
            raise _Corrupt(name, "is not a tensor of this network", TENSORS_FILE)
        if name not in tensors:
            raise _Corrupt(name, "missing from the tensors", TENSORS_FILE)
        if _shape(tensors, name) != shapes[name]:
            raise _Corrupt(name, f"has shape {_shape(tensors, name)}, the network needs {shapes[name]}", TENSORS_FILE)
    return net


def _check_hierarchy(hierarchy: Any, classes: list[str], n_branches: int) -> None:
    from .hierarchy import Hierarchy

    tree = _dict(hierarchy, "hierarchy")
    if set(tree) != {"classes", "branches"}:
        raise _Corrupt("hierarchy", f"has keys {sorted(tree)}, expected ['branches', 'classes']")
    if tree["classes"] != classes:
        raise _Corrupt("hierarchy.classes", "differ from `classes` (names or order)")
    branches = tree["branches"]
    if not isinstance(branches, list):
        raise _Corrupt("hierarchy.branches", f"{_show(branches)} is not a list")
    if len(branches) != n_branches:
        raise _Corrupt("hierarchy.branches", f"{len(branches)} branches, but the network has {n_branches} heads")
    known = set(classes)
    for i, branch in enumerate(branches):
        name = f"hierarchy.branches[{i}]"
        branch = _dict(branch, name)
        if set(branch) != {"classes", "t_start", "t_end"}:
            raise _Corrupt(name, f"has keys {sorted(branch)}, expected ['classes', 't_end', 't_start']")
        members = _unique_strings(branch["classes"], f"{name}.classes")
        unknown = sorted(set(members) - known)
        if unknown:
            raise _Corrupt(f"{name}.classes", f"{_list(unknown, 3)} not in `classes`")
        t_start, t_end = _number(branch["t_start"], f"{name}.t_start"), _number(branch["t_end"], f"{name}.t_end")
        if not 0.0 <= t_start < t_end <= 1.0:
            raise _Corrupt(name, f"times [{t_start}, {t_end}] are not 0 <= t_start < t_end <= 1")
    try:
        Hierarchy.from_dict(tree)
    except (ValueError, KeyError, TypeError) as e:
        raise _Corrupt("hierarchy", " ".join(str(e).split())) from None


def _check_scaling(tensors: Mapping[str, np.ndarray], n_latent: int, n_classes: int) -> None:
    for name in ("scaling.mean", "scaling.scale"):
        if _shape(tensors, name) != (n_latent,):
            raise _Corrupt(name, f"has shape {_shape(tensors, name)}, expected ({n_latent},)", TENSORS_FILE)
        if np.asarray(tensors[name]).dtype.kind != "f":
            raise _Corrupt(name, "is not a float tensor", TENSORS_FILE)
    if not (np.asarray(tensors["scaling.scale"]) > 0).all():
        raise _Corrupt("scaling.scale", "has values <= 0; the latent scale must be positive", TENSORS_FILE)
    moments = ("scaling.class_mean", "scaling.class_cov")
    extra = sorted(k for k in tensors if k.startswith("scaling.") and k not in ("scaling.mean", "scaling.scale", *moments))
    if extra:
        raise _Corrupt(extra[0], "is not a tensor of the model", TENSORS_FILE)
    present = [name for name in moments if name in tensors]
    if len(present) == 1:
        missing = next(name for name in moments if name not in tensors)
        raise _Corrupt(missing, f"missing (the file has {present[0]})", TENSORS_FILE)
    if present:
        expected = {"scaling.class_mean": (n_classes, n_latent), "scaling.class_cov": (n_classes, n_latent, n_latent)}
        for name, shape in expected.items():
            if _shape(tensors, name) != shape:
                raise _Corrupt(name, f"has shape {_shape(tensors, name)}, expected {shape}", TENSORS_FILE)
            if np.asarray(tensors[name]).dtype.kind != "f":
                raise _Corrupt(name, "is not a float tensor", TENSORS_FILE)
        cov = np.asarray(tensors["scaling.class_cov"], dtype=np.float64)
        scale = max(1.0, float(np.abs(cov).max()))
        if not np.allclose(cov, cov.transpose(0, 2, 1), atol=1e-5 * scale) or (
            np.linalg.eigvalsh((cov + cov.transpose(0, 2, 1)) / 2).min() < -1e-4 * scale
        ):
            raise _Corrupt("scaling.class_cov", "is not a set of covariance matrices (symmetric, "
                           "positive semi-definite)", TENSORS_FILE)


_LATENT_KINDS = ("scvi", "pca", "obsm")


def _check_latent(
    latent: dict, tensors: Mapping[str, np.ndarray], n_latent: int, classes: list[str], var_names: list[str]
) -> None:
    from .latent import BACKENDS

    kind = latent.get("kind")
    known = [k for k in _LATENT_KINDS if k in BACKENDS]
    if not isinstance(kind, str) or kind not in known:
        raise _Corrupt("latent.kind", f"{_show(kind)} is not one of {known}")
    _expect_keys(latent, "latent", {"kind", "config"})
    config = _dict(latent["config"], "latent.config")
    if "n_latent" not in config:
        raise _Corrupt("latent.config.n_latent", "missing")
    if _int(config["n_latent"], "latent.config.n_latent", minimum=1) != n_latent:
        raise _Corrupt("latent.config.n_latent", f"{config['n_latent']}, but the network takes {n_latent}")
    residual_names = _check_residuals(config, tensors, kind, classes, var_names)
    names = sorted(k for k in tensors if k.startswith("latent.") and k not in residual_names)
    if kind == "pca":
        _expect_keys(config, "latent.config", {"n_latent", "layer"} | ({"residual_types"} & set(config)))
        _str(config["layer"], "latent.config.layer", optional=True)
        _expect_tensors(names, {"latent.mean", "latent.components"})
        _check_n_genes(var_names, _shape(tensors, "latent.mean"), "latent.mean", axis=0)
        if _shape(tensors, "latent.components") != (n_latent, len(var_names)):
            raise _Corrupt("latent.components", f"has shape {_shape(tensors, 'latent.components')}, "
                           f"expected ({n_latent}, {len(var_names)})", TENSORS_FILE)
    elif kind == "obsm":
        _expect_keys(config, "latent.config", {"n_latent", "key"})
        _str(config["key"], "latent.config.key")
        _expect_tensors(names, set())
    else:
        _check_scvi(config, tensors, n_latent, classes, var_names)


def _check_residuals(
    config: dict, tensors: Mapping[str, np.ndarray], kind: str, classes: list[str], var_names: list[str]
) -> set[str]:
    """Check the residual latents of added types (if any); return their tensor names."""
    names: set[str] = set()
    if "residual_types" in config:
        names = _residual_tensors(config, tensors, kind, classes, var_names)
    stray = sorted(k for k in tensors if k.startswith("latent.residual.") and k not in names)
    if stray:
        raise _Corrupt(stray[0], "is not a tensor of the model", TENSORS_FILE)
    return names


def _residual_tensors(
    config: dict, tensors: Mapping[str, np.ndarray], kind: str, classes: list[str], var_names: list[str]
) -> set[str]:
    from .latent import CountOffset, CountResidual

    if kind == "obsm":
        raise _Corrupt("latent.config.residual_types", "given for an embedding, which does not decode")
    types = _unique_strings(config["residual_types"], "latent.config.residual_types")
    if not set(types) <= set(classes):
        raise _Corrupt("latent.config.residual_types", "are not among the model's `classes`")
    n_genes = len(var_names)
    names: set[str] = set()
    for i, cell_type in enumerate(types):
        prefix = f"latent.residual.{i}."
        found = {k[len(prefix):] for k in tensors if k.startswith(prefix)}
        if kind == "pca":
            n_dims = _dim(tensors, f"{prefix}components", 0) if f"{prefix}components" in tensors else 0
            shapes = {"offset": (n_genes,), "components": (n_dims, n_genes), "std": (n_dims,)}
        else:
            init = config.get("init_params")
            zinb = (init.get("gene_likelihood", "zinb") if isinstance(init, dict) else "zinb") == "zinb"
            if "hidden.weight" in found:  # a CountResidual (codes)
                hidden = _shape(tensors, f"{prefix}hidden.weight")
                n_hidden, n_dims = hidden if len(hidden) == 2 else (0, 0)
                if n_hidden < 1 or n_dims < 1:
                    raise _Corrupt(f"{prefix}hidden.weight", f"of {cell_type!r}: empty", TENSORS_FILE)
                zi = "zi.weight"
                shapes = CountResidual.shapes(n_genes, n_dims, n_hidden, zi in found)
            else:  # a CountOffset
                zi = "zi"
                shapes = CountOffset.shapes(n_genes, zi in found)
            if (zi in found) != zinb:
                raise _Corrupt(f"{prefix}{zi}", f"of {cell_type!r}: {'given' if not zinb else 'missing'}, "
                               "but the scVI likelihood is " + ("" if zinb else "not ") + "zero-inflated",
                               TENSORS_FILE)
        _expect_tensors(sorted(prefix + k for k in found), {prefix + k for k in shapes})
        for k, shape in shapes.items():
            if _shape(tensors, prefix + k) != shape:
                raise _Corrupt(prefix + k, f"of {cell_type!r} has shape {_shape(tensors, prefix + k)}, "
                               f"expected {shape}", TENSORS_FILE)
        names |= {prefix + k for k in shapes}
    return names


def _expect_keys(mapping: Mapping, name: str, keys: set[str]) -> None:
    if set(mapping) != keys:
        raise _Corrupt(name, f"has keys {sorted(mapping)}, expected {sorted(keys)}")


def _expect_tensors(found: list[str], expected: set[str]) -> None:
    for name in sorted(set(found) ^ expected):
        raise _Corrupt(name, "missing from the tensors" if name in expected else "is not a tensor of the model",
                       TENSORS_FILE)


def _check_n_genes(var_names: list[str], shape: tuple[int, ...], tensor: str, axis: int) -> None:
    if len(shape) <= axis or shape[axis] != len(var_names):
        raise _Corrupt("var_names", f"{len(var_names)} genes, but {tensor} has shape {shape}")


_SCVI_CHOICES = {
    "dispersion": ("gene", "gene-batch", "gene-label", "gene-cell"),
    "gene_likelihood": ("zinb", "nb", "poisson", "normal"),
    "latent_distribution": ("normal", "ln"),
}
_SCVI_DEFAULTS = {"n_hidden": 128, "n_layers": 1}
_SCVI_FLAGS = ("use_observed_lib_size", "encode_covariates", "deeply_inject_covariates", "log_variational")


def _check_scvi(
    config: dict, tensors: Mapping[str, np.ndarray], n_latent: int, classes: list[str], var_names: list[str]
) -> None:
    _expect_keys(config, "latent.config", {"n_latent", "init_params", "setup_args", "batch_categories", "cell_types"}
                 | ({"residual_types"} & set(config)))
    setup = _dict(config["setup_args"], "latent.config.setup_args")
    _expect_keys(setup, "latent.config.setup_args", {"layer", "batch_key"})
    _str(setup["layer"], "latent.config.setup_args.layer", optional=True)
    batch_key = _str(setup["batch_key"], "latent.config.setup_args.batch_key", optional=True)
    categories = config["batch_categories"]
    if categories is not None:
        categories = _unique_strings(categories, "latent.config.batch_categories")
        if batch_key is None:
            raise _Corrupt("latent.config.batch_categories", "given, but setup_args.batch_key is null")
    n_batch = len(categories) if categories else 1
    # library sizes (and batches) per cell type, in the order of cell_types
    cell_types = _unique_strings(config["cell_types"], "latent.config.cell_types")
    if set(cell_types) != set(classes):
        raise _Corrupt("latent.config.cell_types", "are not the model's `classes`")
    names = sorted(k for k in tensors if k.startswith("latent.")
                   and not k.startswith(("latent.module.", "latent.residual.")))
    _expect_tensors(names, {f"latent.{p}.{i}" for p in ("library", "library_batch") for i in range(len(cell_types))})
    for i, cell_type in enumerate(cell_types):
        library, batch = np.asarray(tensors[f"latent.library.{i}"]), np.asarray(tensors[f"latent.library_batch.{i}"])
        if library.ndim != 1 or library.size == 0 or batch.shape != library.shape or library.dtype.kind != "f":
            raise _Corrupt(f"latent.library.{i}", f"library sizes of {cell_type!r}: shapes {library.shape} and "
                           f"{batch.shape}, expected two equal non-empty vectors", TENSORS_FILE)
        if batch.dtype.kind not in "iu" or batch.min() < 0 or batch.max() >= n_batch:
            raise _Corrupt(f"latent.library_batch.{i}", f"batch codes outside 0..{n_batch - 1}", TENSORS_FILE)
    # the sizes scVI is built with, from its tensors
    module = "latent.module."
    _check_n_genes(var_names, _shape(tensors, f"{module}decoder.px_scale_decoder.0.weight"),
                   f"{module}decoder.px_scale_decoder.0.weight", axis=0)
    encoded = _dim(tensors, f"{module}z_encoder.mean_encoder.weight", 0)
    if encoded != n_latent:
        raise _Corrupt("latent.config.n_latent", f"{n_latent}, but the scVI encoder outputs {encoded}")
    decoder_in = _shape(tensors, f"{module}decoder.px_decoder.fc_layers.Layer 0.0.weight")
    if len(decoder_in) != 2 or decoder_in[1] < n_latent + (n_batch if n_batch > 1 else 0):
        raise _Corrupt("latent.config.batch_categories",
                       f"{n_batch} batches do not fit the scVI decoder's input of {decoder_in[1:]} values")
    layers = _indices([k for k in tensors if k.startswith(module)], f"{module}z_encoder.encoder.fc_layers.Layer ")
    found = {
        "n_hidden": _dim(tensors, f"{module}z_encoder.encoder.fc_layers.Layer 0.0.weight", 0),
        "n_latent": n_latent,
        "n_layers": _consecutive(layers, f"{module}z_encoder.encoder.fc_layers"),
    }
    init = _dict(config["init_params"], "latent.config.init_params")
    largest = max(max(np.shape(v), default=1) for k, v in tensors.items() if k.startswith(module))
    for key, value in init.items():
        name = f"latent.config.init_params.{key}"
        if key in found:
            if _int(value, name, minimum=1) != found[key]:
                raise _Corrupt(name, f"{value}, but the scVI tensors have {found[key]}")
        elif key in _SCVI_CHOICES:
            if value not in _SCVI_CHOICES[key]:
                raise _Corrupt(name, f"{_show(value)} is not one of {list(_SCVI_CHOICES[key])}")
        elif key == "dropout_rate":
            if not 0 <= _number(value, name) < 1:
                raise _Corrupt(name, f"{value} is not in [0, 1)")
        elif key in _SCVI_FLAGS:
            if not isinstance(value, bool):
                raise _Corrupt(name, f"{_show(value)} is not true or false")
        elif _is_int(value) and not 0 <= value <= largest:
            # any other size scVI might allocate is bounded by the tensors it must fill
            raise _Corrupt(name, f"{value} is larger than any scVI tensor ({largest})")
        elif isinstance(value, float):
            _number(value, name)
    for key, default in _SCVI_DEFAULTS.items():
        if key not in init and found[key] != default:
            raise _Corrupt(f"latent.config.init_params.{key}", f"missing, and the scVI tensors have {found[key]}")
    # without observed library sizes scVI keeps their prior as buffers
    observed = init.get("use_observed_lib_size", True)
    if observed == (f"{module}library_log_means" in tensors):
        raise _Corrupt("latent.config.init_params.use_observed_lib_size",
                       f"{_show(observed)}, but the scVI tensors {'do' if observed else 'do not'} hold library priors")


def _check_init_params(init: dict, net: dict) -> None:
    import inspect

    from scbranchdiff.model import BranchedDiffusion

    parameters = inspect.signature(BranchedDiffusion.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(init) - set(parameters) - {"self", "adata", "registry"})
        if unknown or {"self", "adata", "registry"} & set(init):
            bad = unknown or sorted({"self", "adata", "registry"} & set(init))
            raise _Corrupt("init_params", f"{_list(bad, 3)} is not an argument of BranchedDiffusion")
    # what the model is rebuilt with (the network's sizes are also in `network`)
    for key in ("latent", "n_latent", "n_hidden", "n_trunk_blocks", "n_head_blocks", "latent_scaling",
                "beta_min", "beta_max"):
        if key not in init:
            raise _Corrupt(f"init_params.{key}", "missing")
    for key in ("n_hidden", "n_trunk_blocks", "n_head_blocks"):
        if _int(init[key], f"init_params.{key}") != net[key]:
            raise _Corrupt(f"init_params.{key}", f"{init[key]}, but network.{key} is {net[key]}")
    _int(init["n_latent"], "init_params.n_latent", minimum=1)
    _str(init["latent"], "init_params.latent")
    if init["latent_scaling"] not in ("global", "per_dimension"):
        raise _Corrupt("init_params.latent_scaling", f"{_show(init['latent_scaling'])} is not 'global' or 'per_dimension'")
    betas = [_number(init[k], f"init_params.{k}") for k in ("beta_min", "beta_max")]
    if not 0 < betas[0] < betas[1]:
        raise _Corrupt("init_params.beta_max", f"beta_min {betas[0]} and beta_max {betas[1]} are not 0 < min < max")
    for key in ("discovery_kwargs", "scvi_kwargs"):
        if key in init:
            _dict(init[key], f"init_params.{key}", optional=True)
