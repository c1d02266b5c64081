"""Content fingerprints of episodes: what the video stream and the HDF5 file hold.

Stage fingerprints include the fingerprint of the episode a window comes from, so an edited
episode (re-encoded video, corrected poses) makes exactly its windows stale, while touching a
file without changing it (copying the dataset, ``touch``) does not.

Fast path: a memo ``{path: [size, mtime_ns, digest]}`` per workdir; a file whose size and
mtime are unchanged is not read again. When either changed, the content is hashed: the HDF5
file's bytes, and the video's first video stream (codec parameters and every packet's bytes,
no decoding), so a remux into another container with the same stream keeps the fingerprint.

Why the HDF5 file's bytes and not its datasets: walking the ~140 objects of an EgoDex file
through h5py took 45-54 ms per file (the real fixtures), 200x the 0.2 ms of hashing its bytes,
and it is the first pass's cost per episode (about 5 h of one core at full EgoDex's 300k
episodes, against about 1 h now, the video's 12-14 ms being the rest). The byte digest is
only stricter: a file rewritten with the same values but another layout (``h5repack``) reads
as changed, which costs a recompute, never a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from thinkjepa.cache_schema.fsio import atomic_write_json

VERSION = 2
MEMO_NAME = "content-fingerprints.json"
UNREADABLE = "unreadable:"
"""How ``episode_or_placeholder`` marks an episode whose files could not be read."""


def hash_bytes(path: str | os.PathLike, salt: bytes = b"") -> str:
    """sha256 of a file's bytes (after ``salt``), 24 hex digits."""
    h = hashlib.sha256(salt)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]


def hash_hdf5(path: str | os.PathLike) -> str:
    return hash_bytes(path, b"hdf5-bytes-v2")


def hash_video(path: str | os.PathLike) -> str:
    import av

    h = hashlib.sha256(b"video-v1")
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise ValueError(f"{path}: no video stream")
        s = c.streams.video[0]
        cc = s.codec_context
        h.update(f"{cc.name}|{cc.width}x{cc.height}|{s.average_rate}|{s.time_base}".encode())
        if cc.extradata:
            h.update(bytes(cc.extradata))
        for pkt in c.demux(s):
            if pkt.size:
                h.update(f"{pkt.pts}|{pkt.dts}|".encode())
                h.update(bytes(pkt))
    return h.hexdigest()[:24]


def _abspath(path: str | os.PathLike) -> str:
    """``os.path.abspath``, without its ``getcwd`` call for a path that is absolute already
    (every manifest path): the memo's key, looked up twice per episode when planning."""
    p = os.fspath(path)
    return os.path.normpath(p) if isinstance(p, str) and p.startswith("/") else os.path.abspath(p)


_LOADED: dict[Path, tuple[tuple[int, int, int], dict[str, list]]] = {}
"""The last memo file read per path, by its identity (size, mtime, inode: it is only ever
replaced whole), so the stages of one command parse it once."""


def _read_memo(path: Path) -> dict[str, list]:
    try:
        st = os.stat(path)
        ident = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = _LOADED.get(path)
        if hit is not None and hit[0] == ident:
            return dict(hit[1])  # a copy: each object adds its own entries
        doc = json.loads(path.read_text())
        files = doc["files"] if doc.get("version") == VERSION else {}
        if not isinstance(files, dict):
            return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # missing or damaged: only costs re-hashing
    _LOADED.clear()  # one memo at a time: a process planning one workdir
    _LOADED[path] = (ident, files)
    return dict(files)


class ContentFingerprints:
    """Memoised content digests of episode files (see the module doc). Thread-safe."""

    def __init__(self, memo_path: str | os.PathLike | None = None) -> None:
        self.memo_path = Path(memo_path) if memo_path is not None else None
        self._lock = threading.Lock()
        self._memo: dict[str, list] = {}
        self._dirty = False
        self.hashed = 0
        """Files whose content was read (memo misses) by this object."""
        if self.memo_path is not None:
            self._memo = _read_memo(self.memo_path)

    def file(self, path: str | os.PathLike) -> str:
        digest, fresh = self._memoised(path, lambda p: hash_hdf5(p) if p.endswith((".hdf5", ".h5")) else hash_video(p))
        if fresh:
            with self._lock:
                self.hashed += 1
        return digest

    def _memoised(self, path: str | os.PathLike, compute: Callable[[str], str]) -> tuple[str, bool]:
        """``compute(path)`` and True, or the memo's digest and False while the file's size and
        mtime are unchanged."""
        p = _abspath(path)
        st = os.stat(p)
        with self._lock:
            hit = self._memo.get(p)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2], False
        digest = compute(p)
        self.record(p, digest, st)
        return digest, True

    def bytes_digest(self, path: str | os.PathLike) -> str:
        """``hash_bytes`` of any file, memoised like ``file`` (model weights: hashed once)."""
        return self._memoised(path, lambda p: hash_bytes(p, b"bytes-v1"))[0]

    def record(self, path: str | os.PathLike, digest: str, st: os.stat_result | None = None) -> None:
        """Remember ``digest`` for the file as it is now (its size and mtime): for a caller that
        knows the content already, e.g. hard links to one file hashed once."""
        p = _abspath(path)
        st = st or os.stat(p)
        with self._lock:
            self._memo[p] = [st.st_size, st.st_mtime_ns, digest]
            self._dirty = True

    def episode(self, video_path: str | os.PathLike, annotation_path: str | os.PathLike) -> str:
        """One digest for what a window of this episode can depend on: video stream and HDF5."""
        both = f"{self.file(video_path)}|{self.file(annotation_path)}"
        return hashlib.sha256(both.encode()).hexdigest()[:16]

    def save(self) -> None:
        """Write the memo (merged with what other processes added meanwhile)."""
        if self.memo_path is None or not self._dirty:
            return
        merged: dict[str, list] = {}
        try:
            doc = json.loads(self.memo_path.read_text())
            if doc.get("version") == VERSION:
                merged.update(doc["files"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        with self._lock:
            merged.update(self._memo)
            self._dirty = False
        atomic_write_json(self.memo_path, {"version": VERSION, "files": merged}, indent=None)


def for_workdir(workdir: str | os.PathLike) -> ContentFingerprints:
    """The memo of a pipeline workdir (``<workdir>/.thinkjepa/content-fingerprints.json``)."""
    return ContentFingerprints(Path(workdir) / ".thinkjepa" / MEMO_NAME)


def episode_or_placeholder(fps: ContentFingerprints, video_path: str, annotation_path: str) -> str:
    """``fps.episode`` or, for files that cannot be read, a marker from their size and mtime
    (the stage then fails that clip with its own error, and retries it when the file changes)."""
    try:
        return fps.episode(video_path, annotation_path)
    except Exception:  # noqa: BLE001 - any unreadable file; the stage reports the cause
        parts = []
        for p in (video_path, annotation_path):
            try:
                st = os.stat(p)
                parts.append(f"{st.st_size}-{st.st_mtime_ns}")
            except OSError:
                parts.append("missing")
        return UNREADABLE + ":".join(parts)
