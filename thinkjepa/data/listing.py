"""A brief listing of a dataset folder (names, sizes and mtimes of its ``.mp4`` / ``.hdf5``
files): the pipeline's ``index`` stamp and the extraction stage's episode-files digest both
read it, so it lives with the data, below the stages and the pipeline."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from thinkjepa.cache_schema.fsio import atomic_write_json


@dataclass(frozen=True)
class DatasetListing:
    """Names, sizes and mtimes of the dataset's video and annotation files, in brief."""

    digest: str
    newest_mtime_ns: int
    files: int
    problems: tuple[str, ...] = ()
    """Folders left out, each with why: a link back into the tree (a loop), an unreadable one."""
    identity: str = ""
    """Like ``digest``, with each file's inode too: a file replaced by another one of the same
    size and mtime (a rename over it) changes it. What derived results of the episodes (the
    window plans, the kept statuses) are keyed by; ``digest`` stays the index stamp's."""


def _b(text: str) -> bytes:
    # a folder name that is not valid UTF-8 arrives as surrogate escapes: hash its raw bytes
    return text.encode("utf-8", "surrogateescape")


def _scan_folder(folder: str) -> tuple[list[str], str, int, int, str]:
    """Subfolders, and digest / newest mtime / count / identity digest (with inodes) of the
    data files directly in ``folder``."""
    lines, inodes = [], []
    newest, count, subdirs = 0, 0, []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            if e.is_dir():
                subdirs.append(e.name)
            elif e.name.endswith((".mp4", ".hdf5")):
                st = e.stat()
                newest = max(newest, st.st_mtime_ns)
                count += 1
                lines.append(f"{e.name}:{st.st_size}:{st.st_mtime_ns}\n")
                inodes.append(f"{st.st_ino}\n")  # the target's, through a link: what a reader opens
        except OSError as err:  # a broken link, a loop, no permission: part of the digest, not an error
            lines.append(f"{e.name}:unreadable:{err.errno}\n")
            inodes.append("-\n")
    # hashed in one call per folder (one call per file was a third of a 340k-episode listing)
    text = _b("".join(lines))
    identity = hashlib.sha256(text + _b("".join(inodes)))
    return subdirs, hashlib.sha256(text).hexdigest(), newest, count, identity.hexdigest()


def dataset_listing(root: str | None, cache_dir: str | Path | None = None, *,
                    trust_folder_mtimes: bool = False) -> DatasetListing:
    """Names, sizes and mtimes of every ``.mp4``/``.hdf5`` under ``root``: edits to the data make
    ``index`` stale. Computed once per ``status``/``run`` call and shared by every stage.

    Every file is stat'ed by default, so a file rewritten *in place* (same name, no rename: the
    folder's mtime stays) is seen, and with it every stage that read it. With
    ``trust_folder_mtimes`` and ``cache_dir``, a folder whose mtime did not change since it was
    last scanned (and was scanned more than ``RACY_S`` after that change) is taken from the
    cache without a stat of its files: 100k episodes are then ~200 folder stats instead of
    200k file stats, for datasets known never to be edited in place. (A dataset-wide listing
    for the pipeline's stamps; the index's own incremental scan lives in data/manifest.py.)"""
    from thinkjepa.cache_schema.record_listing import RACY_S

    if not root or not Path(root).is_dir():
        return DatasetListing("missing", 0, 0, identity="missing")
    cache_path = None
    cached: dict[str, list] = {}
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"dataset-{hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]}.json"
        try:
            cached = json.loads(cache_path.read_text())["folders"]
        except (OSError, ValueError, KeyError, TypeError):
            cached = {}
    now = time.time_ns()
    folders: dict[str, list] = {}
    h, ident = hashlib.sha256(), hashlib.sha256()
    newest = count = 0
    stack = [""]
    seen: dict[tuple[int, int], str] = {}
    problems: list[str] = []
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else str(root)
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:  # a folder link back into the tree: a loop
                problems.append(f"{path}: the same folder as {os.path.join(root, seen[st.st_dev, st.st_ino])} "
                                "(a folder link loop or duplicate); listed once")
                h.update(_b(f"{rel}/:same-as:{seen[st.st_dev, st.st_ino]}\n"))
                ident.update(_b(f"{rel}/:same-as:{seen[st.st_dev, st.st_ino]}\n"))
                continue
            seen[st.st_dev, st.st_ino] = rel
            mtime = st.st_mtime_ns
            hit = cached.get(rel)
            if trust_folder_mtimes and hit is not None and len(hit) == 7 and hit[0] == mtime and hit[5]:
                entry = hit
            else:
                subdirs, digest, fnewest, fcount, fidentity = _scan_folder(path)
                entry = [mtime, digest, fnewest, fcount, subdirs, (now - mtime) / 1e9 > RACY_S, fidentity]
        except OSError as err:
            problems.append(f"{path}: unreadable folder, left out ({err.strerror or err})")
            h.update(_b(f"{rel}/:unreadable:{err.errno}\n"))
            ident.update(_b(f"{rel}/:unreadable:{err.errno}\n"))
            continue
        folders[rel] = entry
        _, digest, fnewest, fcount, subdirs, _, fidentity = entry
        h.update(_b(f"{rel}/:{digest}\n"))
        ident.update(_b(f"{rel}/:{fidentity}\n"))
        newest = max(newest, mtime, fnewest)
        count += fcount
        stack.extend(f"{rel}{d}/" for d in reversed(subdirs))
    if cache_path is not None and folders != cached:
        try:
            atomic_write_json(cache_path, {"root": str(root), "folders": folders}, durable=False, indent=None)
        except (OSError, ValueError):  # ValueError: a non-UTF-8 folder name JSON cannot hold
            pass
    return DatasetListing(h.hexdigest()[:16], newest, count, tuple(problems), ident.hexdigest()[:16])
