"""What every commit record says in brief (key, fingerprint, committed_at), listed per part and
incrementally.

Status and planning need the fingerprint of every committed entry, i.e. one small JSON file
per window: at EgoDex scale (300k+ windows) reading them all on every `tj status` is the
dominant cost. For a local store a summary of each ``index/<part>/`` folder is kept in a
*listing cache* folder the caller owns (never inside the store, which may be read-only or
shared). A part whose folder mtime is unchanged is taken from its summary without touching
its records; a part that changed is re-listed and only records whose (inode, size, mtime)
changed are read again (a record is replaced by an atomic rename, so a new record always has
a new inode). Like git's index, a summary taken within ``RACY_S`` of the folder's mtime is not
trusted on its own (a commit in the same clock tick leaves the mtime unchanged): such a part
is re-listed next time. Remote stores are listed and read in full.

A part with a catalog (``catalog``: a Parquet table its writer keeps) is read from it instead,
checked against the records; the summaries serve caches written before catalogs existed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thinkjepa.cache_schema.schema import INDEX, RECORD_SUFFIX, unescape_key

RACY_S = 2.0
SUMMARY_VERSION = 1

Brief = tuple[str, float, str]
"""``(fingerprint, committed_at, part)`` of one commit record."""


def _brief(raw: bytes | None, part: str) -> tuple[str, Brief] | None:
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except ValueError:
        return None  # a torn or foreign file: the writer of that part redoes its key
    if not isinstance(rec, dict) or "key" not in rec:
        return None
    return rec["key"], (str(rec.get("fingerprint", "")), float(rec.get("committed_at", 0) or 0), part)


def _key_of(name: str) -> str | None:
    try:
        return unescape_key(name[: -len(RECORD_SUFFIX)])
    except (ValueError, IndexError):
        return None


def _summary_path(cache_dir: Path, root: Path, part: str) -> Path:
    tag = hashlib.sha256(f"{root}\0{part}".encode()).hexdigest()[:20]
    return cache_dir / f"records-{tag}.json"


def _files_path(summary: Path) -> Path:
    """Per-file identities, a separate file: a trusted summary is used without loading them."""
    return summary.with_name(summary.stem + ".files.json")


def _load_summary(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("version") == SUMMARY_VERSION else None


def record_files(folder: Path) -> Iterator[tuple[os.DirEntry, tuple[int, int, int]]]:
    """Each record file of a part's folder with its identity ``(inode, size, mtime_ns)``."""
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith(".") or not e.name.endswith(RECORD_SUFFIX):
                continue  # temp files of a writer in flight
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            yield e, (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_brief(path: Path, name: str) -> tuple[str, str | None, float, str] | None:
    """``(key, fingerprint, committed_at, path)`` of the record file ``path`` named ``name``;
    fingerprint None when the file is torn or foreign (listed, never counted as committed)."""
    key = _key_of(name)
    if key is None:
        return None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(raw) if raw else None
    except ValueError:
        rec = None
    if not isinstance(rec, dict) or rec.get("key") != key:
        return key, None, 0.0, ""
    return key, str(rec.get("fingerprint", "")), float(rec.get("committed_at", 0) or 0), str(rec.get("path", ""))


def catalog_briefs(backend: Any, part: str) -> dict[str, Brief] | None:
    """The part's briefs from its catalog (checked against the records), None without one."""
    from thinkjepa.cache_schema.catalog import part_entries

    got = part_entries(backend, part, _read_brief)
    if got is None:
        return None
    return {k: (fp, at, part) for k, (fp, at) in got.items() if fp is not None}


def catalog_keys(backend: Any, part: str) -> list[str] | None:
    """Every key with a record file in the part, torn ones included (``CacheReader.keys``)."""
    from thinkjepa.cache_schema.catalog import part_entries

    got = part_entries(backend, part, _read_brief)
    return None if got is None else list(got)


def _local_part(backend: Any, part: str, cache_dir: Path | None) -> dict[str, Brief]:
    got = catalog_briefs(backend, part)
    if got is not None:
        return got
    root = backend.root
    folder = root / INDEX / part
    try:
        folder_mtime = folder.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    spath = _summary_path(cache_dir, root, part) if cache_dir is not None else None
    old = _load_summary(spath) if spath is not None else None
    if old is not None and old["folder_mtime_ns"] == folder_mtime and old["trusted"]:
        return {k: tuple(v) for k, v in old["briefs"].items()}  # type: ignore[misc]

    old_files: dict[str, list] = {}
    if old is not None and spath is not None:
        files_doc = _load_summary(_files_path(spath))
        if files_doc is not None and files_doc.get("folder_mtime_ns") == old["folder_mtime_ns"]:
            old_files = files_doc["files"]
    listed_at = time.time_ns()
    files: dict[str, list] = {}
    briefs: dict[str, Brief] = {}
    for e, (ino, size, mtime) in record_files(folder):
        name = e.name
        ident = [ino, size, mtime]
        prev = old_files.get(name)
        if prev is not None and prev[:3] == ident:
            files[name] = prev
            briefs[prev[3]] = tuple(prev[4:])  # type: ignore[assignment]
            continue
        try:
            got = _brief(Path(e.path).read_bytes(), part)
        except FileNotFoundError:
            continue
        if got is None or got[0] != _key_of(name):
            continue
        key, brief = got
        files[name] = [*ident, key, *brief]
        briefs[key] = brief
    if spath is not None:
        from thinkjepa.cache_schema.fsio import atomic_write_json

        trusted = (listed_at - folder_mtime) / 1e9 > RACY_S
        head = {"version": SUMMARY_VERSION, "folder_mtime_ns": folder_mtime}
        try:
            # a cache: losing it to a power cut costs one re-listing, so no fsync; files first,
            # so a summary never points at identities of another listing
            atomic_write_json(_files_path(spath), {**head, "files": files}, durable=False, indent=None)
            atomic_write_json(spath, {**head, "trusted": trusted, "briefs": briefs}, durable=False, indent=None)
        except OSError:
            pass  # a read-only place for the cache only makes the next listing slower
    return briefs


def record_briefs(backend: Any, cache_dir: str | Path | None = None) -> dict[str, Brief]:
    """``{key: (fingerprint, committed_at, part)}`` of the newest commit of every key.

    ``cache_dir``: where the per-part summaries of a local store are kept (None: none kept,
    every record is read)."""
    newest: dict[str, Brief] = {}

    def merge(found: dict[str, Brief]) -> None:
        for key, brief in found.items():
            if key not in newest or brief[1] > newest[key][1]:
                newest[key] = brief

    if getattr(backend, "is_local", False):
        cdir = Path(cache_dir) if cache_dir is not None else None
        for part in backend.list_dirs(INDEX):
            merge(_local_part(backend, part, cdir))
        return newest
    from thinkjepa.cache_schema.schema import parse_record_path

    rels = [r for r in backend.list_files(INDEX) if parse_record_path(r)]
    by_part: dict[str, dict[str, Brief]] = {}
    for rel, raw in zip(rels, backend.get_many(rels)):
        part = rel.split("/")[1]
        got = _brief(raw, part)
        if got is not None:
            by_part.setdefault(part, {})[got[0]] = got[1]
    for found in by_part.values():
        merge(found)
    return newest


def folder_state(backend: Any) -> dict[str, int] | None:
    """The mtimes of the store's ``index``/``failures`` folders and of each part's folder in
    them: what changes whenever a record or failure is added, replaced or removed. None for a
    remote store (no folder mtimes there). With ``RACY_S`` this lets a caller reuse a result
    computed from the records while none of these changed."""
    from thinkjepa.cache_schema.schema import FAILURES

    if not getattr(backend, "is_local", False):
        return None
    out: dict[str, int] = {}
    for top in (INDEX, FAILURES):
        base = backend.root / top
        try:
            out[top] = base.stat().st_mtime_ns
        except FileNotFoundError:
            continue
        with os.scandir(base) as it:
            for e in it:
                if e.is_dir():
                    out[f"{top}/{e.name}"] = e.stat().st_mtime_ns
    return out
