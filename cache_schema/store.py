"""Byte-level access to a cache location: a local folder or any fsspec URL.

Two backends share one small interface. The local one makes small objects atomic with a temp
file + ``os.replace`` (``thinkjepa.cache_schema.fsio``), fsyncs data files, folders and records when
``durable`` (the default; see the power-cut guarantees in ``schema``), and guards each part
with an ``flock`` (released by the kernel when the writer dies, even by SIGKILL). The fsspec
one relies on a single put being atomic, which holds for object stores (S3, GCS, Azure) and
``memory://``, and guards each part with a *lease*: an object created with a conditional put
(``If-None-Match: *``), renewed in the background and taken over only once it has expired. A
store that cannot do a conditional put is refused for writing, with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from thinkjepa.cache_schema import fsio
from thinkjepa.cache_schema.fsio import atomic_write_bytes, fsync_dir
from thinkjepa.cache_schema.schema import LOCKS, ROOT_ATTR, TMP_MARK, ZARR_JSON, CacheError, StoreMeta, dumps

log = logging.getLogger(__name__)

LEASE_S = 120.0
"""Lifetime of an object-store writer lease; it is renewed every third of it while the writer lives."""

FSYNC_ENV = "THINKJEPA_CACHE_FSYNC"
"""Local stores: ``0`` skips fsync (scratch caches that need not survive a power cut);
``files`` makes an entry's data durable by an fsync per file and folder instead of one
``syncfs`` of the filesystem (the default on Linux), for a filesystem that something else
writes a lot to at the same time (syncfs flushes that too)."""


def _fsync_setting() -> str:
    return os.environ.get(FSYNC_ENV, "1").strip().lower()


def durable_default() -> bool:
    return _fsync_setting() not in ("0", "false", "no", "off")


def data_sync_method() -> str:
    """How a durable local store makes an entry's data files and folders durable before its
    record names them: ``syncfs`` (one call) where Linux has it, unless ``FSYNC_ENV=files``."""
    return "files" if _fsync_setting() == "files" or not fsio.syncfs_available() else "syncfs"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _tmp_name(name: str) -> str:
    return f".{name}{TMP_MARK}{uuid.uuid4().hex[:12]}"


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _describe_holder(raw: bytes | None) -> str:
    try:
        h = json.loads(raw) if raw else {}
        return f" (held by pid {h['pid']} on {h['host']})"
    except (ValueError, KeyError, TypeError):
        return ""


class PartLock:
    """The right to write one part: an flock (local) or a lease (object stores)."""

    url: str = ""
    part: str = ""

    def check(self) -> None:
        """Raise CacheError when the right was lost (a lease that could not be renewed in time)."""

    def release(self) -> None:
        pass

    def __enter__(self) -> PartLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class FlockLock(PartLock):
    def __init__(self, fd: int | None, url: str, part: str) -> None:
        self._fd, self.url, self.part = fd, url, part

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


class Lease(PartLock):
    """A lease object ``locks/<part>.lock`` = {owner, host, pid, expires}.

    Created only if absent (conditional put), so of several writers starting at once exactly
    one gets it. A thread rewrites ``expires`` every ``ttl / 3``; a lease whose ``expires`` has
    passed (its writer died) may be taken over. ``check()`` -- called before every commit
    record -- refuses once our own view of the lease has lapsed or another owner was seen, so
    a writer that lost its lease (paused, partitioned) never commits over its successor.
    """

    def __init__(self, backend: FsspecBackend, part: str, ttl: float) -> None:
        self._b, self.part, self.url, self.ttl = backend, part, backend.url, float(ttl)
        self.rel = f"{LOCKS}/{part}.lock"
        self.owner = uuid.uuid4().hex
        self._lost: str | None = None
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._acquire()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{part}", daemon=True)
        self._thread.start()

    def _doc(self) -> bytes:
        return dumps({"owner": self.owner, **_holder(), "expires": time.time() + self.ttl})

    def _create(self) -> bool:
        t = time.time()
        try:
            self._b.fs.pipe_file(self._b._p(self.rel), self._doc(), mode="create")
        except FileExistsError:
            return False
        except Exception as e:  # noqa: BLE001 - a store without conditional puts
            if "precondition" in str(e).lower() or "PreconditionFailed" in type(e).__name__:
                return False
            raise CacheError(
                f"cache {self.url} cannot hold a writer lease for part {self.part!r}: the store does not support "
                f"conditional (create-only) puts ({type(e).__name__}: {e}); refusing to write, because two writers "
                "of one part would delete each other's work") from e
        self._valid_until = t + self.ttl
        return True

    def _read(self) -> dict | None:
        raw = self._b.get(self.rel)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _acquire(self) -> None:
        if self._create():
            self._confirm()
            return
        cur = self._read()
        if cur is not None and float(cur.get("expires", 0)) > time.time():
            raise CacheError(
                f"part {self.part!r} of cache {self.url} is being written by another live process "
                f"(one writer per part; lease held by pid {cur.get('pid')} on {cur.get('host')} until "
                f"{time.strftime('%H:%M:%S', time.localtime(float(cur['expires'])))})")
        # expired (its writer died) or unreadable: take it over; of several that try, one creates it
        self._b.delete(self.rel)
        if not self._create():
            raise CacheError(f"part {self.part!r} of cache {self.url} is being written by another live process "
                             "(one writer per part; it took over the expired lease first)")
        self._confirm()

    def _confirm(self) -> None:
        # A store that silently ignores the condition would let a second creator overwrite us.
        cur = self._read()
        if cur is None or cur.get("owner") != self.owner:
            raise CacheError(f"part {self.part!r} of cache {self.url}: another writer took the lease "
                             "at the same moment (one writer per part)")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                cur = self._read()
                if cur is None or cur.get("owner") != self.owner:
                    self._lost = "another writer holds it now"
                    return
                t = time.time()
                self._b.put_atomic(self.rel, self._doc())
                self._valid_until = t + self.ttl
            except Exception as e:  # noqa: BLE001 - keep trying until the lease lapses
                log.warning("cache %s: renewing the lease of part %s failed: %s", self.url, self.part, e)

    def check(self) -> None:
        if self._lost is None and time.time() >= self._valid_until:
            self._lost = "it expired before it could be renewed"
        if self._lost is not None:
            raise CacheError(f"part {self.part!r} of cache {self.url}: this writer lost its lease "
                             f"({self._lost}); nothing more is committed")

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            cur = self._read()
            if cur is not None and cur.get("owner") == self.owner:
                self._b.delete(self.rel)
        except Exception as e:  # noqa: BLE001 - an expired lease frees the part anyway
            log.warning("cache %s: releasing the lease of part %s failed: %s", self.url, self.part, e)


class LocalBackend:
    is_local = True

    def __init__(self, url: str, durable: bool | None = None) -> None:
        path = url[len("file://"):] if url.startswith("file://") else url
        self.root = Path(path).expanduser().absolute()
        self.url = str(self.root)
        self.durable = durable_default() if durable is None else bool(durable)
        self.data_sync = data_sync_method() if self.durable else None
        self._made_dirs: set[Path] = set()
        # folders that gained a child whose name is not yet fsync'ed (see ``_mkdir``): paid before
        # any record is written, so a record on disk still implies its data's folders
        self._owed_dir_syncs: set[Path] = set()

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _mkdir(self, d: Path, defer: bool = False) -> None:
        """Create ``d`` and its missing parents. With ``durable``, each new folder's name must be
        fsync'ed in its parent; ``defer`` owes those fsyncs to the next ``sync_tree`` or record
        write (data folders: ``sync_tree`` fsyncs the entry's folders anyway, so doing it here too
        was a quarter of a commit's fsyncs)."""
        if d in self._made_dirs:
            return
        new = []
        p = d
        while not p.exists():
            new.append(p)
            p = p.parent
        d.mkdir(parents=True, exist_ok=True)
        if self.durable:
            parents = [q.parent for q in reversed(new)]  # top-down
            if defer:
                self._owed_dir_syncs.update(parents)
            else:
                for q in parents:
                    fsync_dir(q)
        self._made_dirs.add(d)

    def _pay_dir_syncs(self, done: frozenset[Path] | set[Path] = frozenset()) -> None:
        """fsync the folders whose new children's names are still owed (``done``: already synced)."""
        for q in sorted(self._owed_dir_syncs - done, key=lambda x: len(x.parts), reverse=True):
            fsync_dir(q)
        self._owed_dir_syncs.clear()

    def sync_tree(self, rel: str) -> None:
        """After this, the files written under ``rel`` and every folder owed a sync survive a
        power cut. ``syncfs``: one call for the whole filesystem. ``files``: fsync every folder
        under ``rel`` (bottom-up), ``rel``'s parent and the owed ones (``write_objects`` has
        fsync'ed each file)."""
        if not self.durable:
            return
        if self.data_sync == "syncfs":
            fsio.sync_filesystem(self.root)
            self._owed_dir_syncs.clear()
            return
        base = self._p(rel)
        done: set[Path] = set()
        for dirpath, _dirs, _files in os.walk(base, topdown=False):
            fsync_dir(dirpath)
            done.add(Path(dirpath))
        fsync_dir(base.parent)
        done.add(base.parent)
        self._pay_dir_syncs(done)

    def get(self, rel: str) -> bytes | None:
        try:
            # os.path, not pathlib: on the means path (a few KB per read) pathlib's parsing was a third of the time
            with open(os.path.join(self.url, rel) if rel else self.url, "rb") as f:
                return f.read()
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
        """Atomic; with ``durable``, the new object and its name survive a power cut on return."""
        dst = self._p(rel)
        self._mkdir(dst.parent)
        self._pay_dir_syncs()
        atomic_write_bytes(dst, data, durable=self.durable)

    def put_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` unless it exists (atomic: a hard link cannot overwrite)."""
        dst = self._p(rel)
        self._mkdir(dst.parent)
        self._pay_dir_syncs()
        tmp = dst.parent / _tmp_name(dst.name)
        with open(tmp, "wb") as f:
            f.write(data)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        try:
            os.link(tmp, dst)
            if self.durable:
                fsync_dir(dst.parent)
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
        """Write data objects (not atomically: they only become visible through a later record,
        after ``sync_tree``)."""
        fsync_each = self.data_sync == "files"
        total = 0
        for rel, bufs in items:
            dst = self._p(rel)
            self._mkdir(dst.parent, defer=True)
            with open(dst, "wb") as f:
                for b in bufs:
                    total += f.write(b)
                if fsync_each:
                    f.flush()
                    os.fsync(f.fileno())
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

    def delete(self, rel: str, durable: bool = False) -> None:
        """Remove ``rel``; ``durable``: the removal itself survives a power cut (un-commits)."""
        p = self._p(rel)
        try:
            p.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        if durable and self.durable:
            fsync_dir(p.parent)

    def delete_tree(self, rel: str) -> None:
        """Remove folder ``rel``; a link there is removed itself, never followed. Raises OSError
        naming the path when something is left (callers report it as removed otherwise)."""
        p = self._p(rel)
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
        else:
            shutil.rmtree(p, ignore_errors=True)
        if os.path.lexists(p):
            raise OSError(f"could not remove {p} (check its permissions, or remove it by hand)")
        self._made_dirs = {d for d in self._made_dirs if not d.is_relative_to(self._p(rel))}
        self._owed_dir_syncs = {d for d in self._owed_dir_syncs if not d.is_relative_to(self._p(rel))}

    def zarr_store(self, read_only: bool = True):
        from zarr.storage import LocalStore

        return LocalStore(self.root, read_only=read_only)

    def lock(self, part: str, lease_s: float = LEASE_S) -> PartLock:
        if fcntl is None:  # pragma: no cover
            return FlockLock(None, self.url, part)
        path = self._p(f"{LOCKS}/{part}.lock")
        self._mkdir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise CacheError(f"part {part!r} of cache {self.url} is being written by another live process "
                             f"(one writer per part){_describe_holder(path.read_bytes())}") from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, dumps(_holder()), 0)  # who holds it, for the refusal above; the flock is the lock
        return FlockLock(fd, self.url, part)


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

    def sync_tree(self, rel: str) -> None:
        """Nothing to do: an object store makes each completed put durable by itself."""

    def put_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` unless it exists: a conditional put where the store has one, else
        check-then-put (the writer re-reads the root, so a lost race is still a mismatch)."""
        try:
            self.fs.pipe_file(self._p(rel), data, mode="create")
            return True
        except FileExistsError:
            return False
        except Exception as e:  # noqa: BLE001
            if "precondition" in str(e).lower():
                return False
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

    def delete(self, rel: str, durable: bool = False) -> None:
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

    def lock(self, part: str, lease_s: float = LEASE_S) -> PartLock:
        return Lease(self, part, lease_s)


Backend = LocalBackend | FsspecBackend


def read_meta(backend: Backend) -> StoreMeta:
    """The store-level attributes; CacheError when ``backend`` holds no cache."""
    raw = backend.get(ZARR_JSON)
    if raw is None:
        raise CacheError(f"no cache at {backend.url} (no {ZARR_JSON}): `tj run` builds the caches (or `tj status` "
                         "says which stage writes it)")
    try:
        doc = json.loads(raw)
        attrs = doc["attributes"][ROOT_ATTR]
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{backend.url} is not a thinkjepa cache (root {ZARR_JSON} lacks attributes.{ROOT_ATTR})") from e
    return StoreMeta.from_dict(attrs)


def store_exists(url: str | os.PathLike) -> bool:
    """True when ``url`` holds a cache root (whatever its settings)."""
    return open_backend(url).get(ZARR_JSON) is not None


def open_backend(url: str | os.PathLike, durable: bool | None = None) -> Backend:
    """``durable`` (local stores): fsync what is written; default on, off with THINKJEPA_CACHE_FSYNC=0."""
    url = os.fspath(url)
    if not url:
        raise CacheError("empty cache URL")
    return LocalBackend(url, durable) if _is_local(url) else FsspecBackend(url)


def lock_part(url: str | os.PathLike, part: str, lease_s: float = LEASE_S) -> PartLock:
    """Take the writer lock of ``part`` of the cache at ``url`` (the store need not exist yet).

    Raises CacheError when another live writer holds it, or when the store cannot lock. Take
    it before any expensive start-up (an engine), then hand it to ``CacheWriter(lock=...)``.
    """
    from thinkjepa.cache_schema.schema import check_part

    return open_backend(url).lock(check_part(part), lease_s)
