"""Durable local file writes: the one home for "write, fsync, rename, fsync the folder".

A rename is atomic, but after a power cut only what was fsync'ed is guaranteed: the file's
bytes (fsync of the temp file) and the rename itself (fsync of the folder that holds the new
name). Temp names are unique per writer (pid + random suffix) so two writers never share one,
and they start with ``.`` and end with ``.tmp`` so ``clean_stale_temps`` can find leftovers of
a crashed writer.

``sync_filesystem`` is the batch form for many new files at once (a cache entry's chunks and
folders): one ``syncfs(2)`` makes every file and name on the filesystem durable, where an
fsync per file and folder (29 for a small entry) cost a cache commit more CPU than writing it.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def fsync_dir(path: str | Path) -> None:
    """fsync a folder so the names created, renamed or removed in it survive a power cut."""
    fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _syncfs():
    """libc's ``syncfs`` (Linux), or None where there is none. Looked up on first use, in the
    symbols the process already has (``find_library`` would run ``ldconfig`` at import time)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


def syncfs_available() -> bool:
    return _syncfs() is not None


def sync_filesystem(path: str | Path) -> None:
    """Make every write on the filesystem holding ``path`` durable: file data, new and renamed
    names in every folder (Linux ``syncfs(2)``; since 5.8 it reports writeback errors). It
    also flushes other processes' dirty data on that filesystem, so it takes longer while
    something else writes a lot there."""
    syncfs = _syncfs()
    if syncfs is None:
        raise OSError(f"syncfs is not available on {sys.platform}")
    fd = os.open(str(path), os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of the filesystem holding {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def temp_name(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one, never a
    torn one; with ``durable`` the new file also survives a power cut once this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode(), durable=durable)


def atomic_write_json(path: str | Path, obj: Any, *, durable: bool = True, **dumps: Any) -> Path:
    dumps.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, **dumps), durable=durable)


def clean_stale_temps(folder: str | Path, older_than_s: float = 3600.0) -> list[Path]:
    """Remove this module's temp files in ``folder`` older than ``older_than_s`` (a crashed
    writer's leftovers; a live writer's temp file is younger). Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file():
            try:
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                pass
    return removed
