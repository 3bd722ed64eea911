"""Atomic file writes: the one helper every writer of the project goes through.

`write_atomic(path, write)` calls `write(tmp)` on a temporary file beside `path` (same directory, so the final
rename is atomic), then renames it over `path`: a reader sees the old file or the new one, never half a file,
and a failed write leaves the destination as it was and no temporary behind. With `durable=True` the file's
bytes and the directory entry are fsynced before returning (checkpoints, cached stages: what a crash must
not lose); without, the rename is atomic but may be lost to a power cut (samples, reports, figures).

Temporary names are `.<name>.<8 hex>.tmp` (`keep_suffix`: `.<name>.<8 hex>.tmp<suffix>`, for writers that
choose a format by the file's suffix), so a directory's leftovers of killed writes can be told apart.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

__all__ = ["write_atomic", "write_text_atomic", "copy_atomic", "link_atomic", "fsync_dir"]


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _temp_name(path: Path, keep_suffix: bool) -> Path:
    suffix = path.suffix if keep_suffix else ""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], None], durable: bool = False,
                 keep_suffix: bool = True) -> Path:
    """Write `path` through `write(tmp)` and a rename (see the module docstring). Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, keep_suffix)
    while tmp.exists():
        tmp = _temp_name(path, keep_suffix)
    try:
        write(tmp)
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: str | Path, text: str, durable: bool = False) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=durable)


def copy_atomic(source: str | Path, target: str | Path, durable: bool = True) -> Path:
    """Copy `source` to `target` atomically (durable by default: a cached stage or a checkpoint)."""
    return write_atomic(target, lambda tmp: shutil.copyfile(source, tmp), durable=durable, keep_suffix=False)


def link_atomic(source: str | Path, target: str | Path) -> Path:
    """Make `target` another name of `source` (a hard link, no second write), replacing it atomically."""
    source, target = Path(source), Path(target)
    while True:
        tmp = _temp_name(target, keep_suffix=False)
        try:
            os.link(source, tmp)
            break
        except FileExistsError:
            continue
    try:
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
