"""Byte-level access to a cache location: a local folder or any fsspec URL.

Two backends share one small interface. The local one makes small objects atomic with a temp
file + ``os.replace`` and guards each part with an ``flock`` (released by the kernel when the
writer dies, even by SIGKILL). The fsspec one relies on a single put being atomic, which holds
for object stores (S3, GCS, Azure) and ``memory://``; it has no lock, so "one writer per part"
is then the caller's promise (extraction shards are disjoint by construction).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from thinkjepa.cache_schema.schema import LOCKS, ROOT_ATTR, TMP_MARK, ZARR_JSON, CacheError, StoreMeta

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _tmp_name(name: str) -> str:
    return f".{name}{TMP_MARK}{uuid.uuid4().hex[:12]}"


class PartLock:
    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


class LocalBackend:
    is_local = True

    def __init__(self, url: str) -> None:
        path = url[len("file://"):] if url.startswith("file://") else url
        self.root = Path(path).expanduser().absolute()
        self.url = str(self.root)
        self._made_dirs: set[Path] = set()

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _mkdir(self, d: Path) -> None:
        if d not in self._made_dirs:
            d.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(d)

    def get(self, rel: str) -> bytes | None:
        try:
            return self._p(rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def get_many(self, rels: Sequence[str]) -> list[bytes | None]:
        return [self.get(r) for r in rels]

    def get_ranges(self, rel: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Byte ranges ``[start, end)`` of one object; negative starts count from its end."""
        fd = os.open(self._p(rel), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            out = []
            for start, end in ranges:
                start, end = (size + start, size + end) if start < 0 else (start, end)
                out.append(os.pread(fd, end - start, start))
            return out
        finally:
            os.close(fd)

    def exists(self, rel: str) -> bool:
        return self._p(rel).exists()

    def put_atomic(self, rel: str, data: bytes) -> None:
        dst = self._p(rel)
        self._mkdir(dst.parent)
        tmp = dst.parent / _tmp_name(dst.name)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` unless it exists (atomic: a hard link cannot overwrite)."""
        dst = self._p(rel)
        self._mkdir(dst.parent)
        tmp = dst.parent / _tmp_name(dst.name)
        tmp.write_bytes(data)
        try:
            os.link(tmp, dst)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network filesystems): check, then replace
            if dst.exists():
                return False
            os.replace(tmp, dst)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def write_objects(self, items: Iterable[tuple[str, Sequence[Any]]]) -> int:
        """Write data objects (not atomically: they only become visible through a later record)."""
        total = 0
        for rel, bufs in items:
            dst = self._p(rel)
            self._mkdir(dst.parent)
            with open(dst, "wb") as f:
                for b in bufs:
                    total += f.write(b)
        return total

    def list_files(self, prefix: str) -> list[str]:
        base = self._p(prefix)
        out = []
        for dirpath, _dirs, files in os.walk(base):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            out.extend(f"{rel_dir}/{f}" for f in files)
        return out

    def list_dirs(self, prefix: str) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self._p(prefix)) if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, rel: str) -> None:
        self._p(rel).unlink(missing_ok=True)

    def delete_tree(self, rel: str) -> None:
        shutil.rmtree(self._p(rel), ignore_errors=True)
        self._made_dirs = {d for d in self._made_dirs if not d.is_relative_to(self._p(rel))}

    def zarr_store(self, read_only: bool = True):
        from zarr.storage import LocalStore

        return LocalStore(self.root, read_only=read_only)

    def lock(self, part: str) -> PartLock:
        if fcntl is None:  # pragma: no cover
            return PartLock(None)
        path = self._p(f"{LOCKS}/{part}.lock")
        self._mkdir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise CacheError(f"part {part!r} of cache {self.url} is being written by another live process "
                             "(one writer per part)") from e
        return PartLock(fd)


class FsspecBackend:
    is_local = False

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        from fsspec.core import url_to_fs

        self.url = url.rstrip("/")
        self.fs, root = url_to_fs(self.url, **(storage_options or {}))
        self.root = root.rstrip("/")

    def _p(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def get(self, rel: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._p(rel))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def get_many(self, rels: Sequence[str]) -> list[bytes | None]:
        if not rels:
            return []
        paths = [self._p(r) for r in rels]
        got = self.fs.cat(paths, on_error="omit")
        norm = {self.fs._strip_protocol(k): v for k, v in got.items()}
        return [norm.get(self.fs._strip_protocol(p)) for p in paths]

    def get_ranges(self, rel: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        p = self._p(rel)
        if any(start < 0 for start, _ in ranges):
            size = self.fs.size(p)
            ranges = [(size + s, size + e) if s < 0 else (s, e) for s, e in ranges]
        return self.fs.cat_ranges([p] * len(ranges), [s for s, _ in ranges], [e for _, e in ranges])

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._p(rel))

    def put_atomic(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(rel), data)

    def put_exclusive(self, rel: str, data: bytes) -> bool:
        # Check-then-put: object stores without conditional writes cannot do better. The writer
        # re-reads the root after creating it, so a lost race is still detected as a mismatch.
        if self.fs.exists(self._p(rel)):
            return False
        self.fs.pipe_file(self._p(rel), data)
        return True

    def write_objects(self, items: Iterable[tuple[str, Sequence[Any]]]) -> int:
        batch = {self._p(rel): b"".join(memoryview(b).cast("B") for b in bufs) for rel, bufs in items}
        self.fs.pipe(batch)
        return sum(len(v) for v in batch.values())

    def list_files(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache(self._p(prefix))
        try:
            found = self.fs.find(self._p(prefix))
        except FileNotFoundError:
            return []
        root = self.fs._strip_protocol(self.root)
        return [self.fs._strip_protocol(p)[len(root) + 1:] for p in found]

    def list_dirs(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache(self._p(prefix))
        try:
            entries = self.fs.ls(self._p(prefix), detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory")

    def delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self._p(rel))
        except FileNotFoundError:
            pass

    def delete_tree(self, rel: str) -> None:
        try:
            self.fs.rm(self._p(rel), recursive=True)
        except FileNotFoundError:
            pass

    def zarr_store(self, read_only: bool = True):
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url, read_only=read_only)

    def lock(self, part: str) -> PartLock:
        return PartLock(None)


Backend = LocalBackend | FsspecBackend


def read_meta(backend: Backend) -> StoreMeta:
    """The store-level attributes; CacheError when ``backend`` holds no cache."""
    raw = backend.get(ZARR_JSON)
    if raw is None:
        raise CacheError(f"no cache at {backend.url} (no {ZARR_JSON})")
    try:
        doc = json.loads(raw)
        attrs = doc["attributes"][ROOT_ATTR]
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{backend.url} is not a thinkjepa cache (root {ZARR_JSON} lacks attributes.{ROOT_ATTR})") from e
    return StoreMeta.from_dict(attrs)


def store_exists(url: str | os.PathLike) -> bool:
    """True when ``url`` holds a cache root (whatever its settings)."""
    return open_backend(url).get(ZARR_JSON) is not None


def open_backend(url: str | os.PathLike) -> Backend:
    url = os.fspath(url)
    if not url:
        raise CacheError("empty cache URL")
    return LocalBackend(url) if _is_local(url) else FsspecBackend(url)
