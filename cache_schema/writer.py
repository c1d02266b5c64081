"""CacheWriter: validated, atomic per-entry commits into one part of a cache."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from thinkjepa.cache_schema.catalog import PartCatalog, Row, record_identity, row_of
from thinkjepa.cache_schema.encoding import (
    all_finite,
    as_numpy,
    encode_array,
    nbytes_encoded,
    to_storage,
    token_means,
)
from thinkjepa.cache_schema.schema import (
    CLIPS,
    INDEX,
    JEPA_INT_ARRAYS,
    ROOT_ATTR,
    SCHEMA_VERSION,
    TOKEN_TEXT,
    TOKEN_VISION,
    VLM_INT_ARRAYS,
    ZARR_JSON,
    CacheError,
    JEPAEntry,
    SchemaMismatchError,
    StoreMeta,
    VLMEntry,
    array_zarr_json,
    check_part,
    chunk_layout,
    dimension_names,
    dumps,
    entry_path,
    failure_path,
    group_zarr_json,
    parse_record,
    parse_record_path,
    record_path,
)
from thinkjepa.cache_schema.store import LEASE_S, PartLock, open_backend, read_meta

log = logging.getLogger(__name__)


class _Array:
    """One array of an entry, ready to encode: data in its Zarr dtype plus its metadata."""

    def __init__(self, name: str, data: np.ndarray, attrs: dict | None = None) -> None:
        self.name = name
        self.data = data
        self.attrs = attrs or {}
        self.chunks, self.shard = chunk_layout(data.shape, data.dtype.itemsize)

    def objects(self, entry_dir: str):
        meta = array_zarr_json(self.data.shape, str(self.data.dtype), self.chunks, self.shard, self.attrs,
                               dimension_names(self.name, self.data.ndim))
        yield f"{entry_dir}/{self.name}/{ZARR_JSON}", [dumps(meta)]
        for key, bufs in encode_array(self.data, self.chunks, self.shard):
            yield f"{entry_dir}/{self.name}/{key}", bufs

    def describe(self) -> dict[str, Any]:
        return {"shape": list(self.data.shape), "dtype": str(self.data.dtype), "chunks": list(self.chunks),
                "shard": None if self.shard is None else list(self.shard),
                "nbytes": nbytes_encoded(self.data.shape, self.chunks, self.shard, self.data.dtype.itemsize)}


class CacheWriter:
    """Writes entries of one ``part`` of the cache at ``url`` (created on first use).

    Opening refuses a store made with other settings (SchemaMismatchError listing each field),
    takes the part's lock (an flock on local stores, a lease on object stores; or uses ``lock``,
    taken earlier with ``store.lock_part``, and releases it on close), and deletes what a killed
    writer of this part left behind: entry folders no record names, and temp files.
    ``durable`` (local stores): data and folders durable (one syncfs on Linux, else an fsync
    each) before the record, fsync'ed itself (default: on unless THINKJEPA_CACHE_FSYNC=0; see
    the guarantees in ``schema``).
    """

    def __init__(self, url: str, meta: StoreMeta, part: str = "main", *, lock: PartLock | None = None,
                 durable: bool | None = None, lease_s: float = LEASE_S) -> None:
        meta.validate()
        self.part = check_part(part)
        self.meta = meta
        self._b = open_backend(url, durable)
        self.url = self._b.url
        self._pool: ThreadPoolExecutor | None = None
        if lock is not None and (lock.part != self.part or lock.url != self.url):
            raise CacheError(f"the lock given is for part {lock.part!r} of {lock.url}, not {self.part!r} of {self.url}")
        self._lock = lock if lock is not None else self._b.lock(part, lease_s)
        try:
            self._ensure_root()
            for rel in (f"{CLIPS}/{ZARR_JSON}", f"{CLIPS}/{part}/{ZARR_JSON}"):
                if not self._b.exists(rel):
                    self._b.put_atomic(rel, dumps(group_zarr_json({})))
            self._records = self._load_own_records()
            self._collect_garbage()
            self._catalog: PartCatalog | None = None
            self._idents: dict[str, tuple[int, int, int] | None] = {}
            if self._b.is_local:  # object stores: readers list and read the records (see ``catalog``)
                self._catalog = PartCatalog(self._b, self.part)
                self._idents = {k: record_identity(self._b, record_path(self.part, k)) for k in self._records}
                self._catalog.compact(self._catalog_rows())  # repairs what a killed writer left behind
        except BaseException:
            self._lock.release()
            raise
        self._other_parts: dict[str, list[str]] | None = None

    # -- store set-up -------------------------------------------------------------------

    def _ensure_root(self) -> None:
        self._b.put_exclusive(ZARR_JSON, dumps(group_zarr_json({ROOT_ATTR: self.meta.to_dict()})))
        # Read back even after creating it: a concurrent creator with other settings may have won.
        stored = read_meta(self._b)
        differences = stored.diff(self.meta)
        if differences:
            raise SchemaMismatchError(self.url, differences)

    def _load_own_records(self) -> dict[str, dict]:
        records: dict[str, dict] = {}
        for rel in self._b.list_files(f"{INDEX}/{self.part}"):
            name = rel.rsplit("/", 1)[-1]
            if name.startswith("."):
                self._b.delete(rel)  # temp file of an interrupted record write
                continue
            parsed = parse_record_path(rel)
            if parsed is None or parsed[0] != self.part:
                continue
            try:
                rec = parse_record(self._b.get(rel), self.part, parsed[1], rel)
            except CacheError as e:
                # Never followed: a torn or crafted record must not steer a delete.
                log.warning("cache %s: ignoring %s (its key will be redone)", self.url, e)
                continue
            records[parsed[1]] = rec
        return records

    def _collect_garbage(self) -> None:
        referenced = {r["path"] for r in self._records.values()}
        for name in self._b.list_dirs(f"{CLIPS}/{self.part}"):
            path = f"{CLIPS}/{self.part}/{name}"
            if path not in referenced:
                self._b.delete_tree(path)
        for rel in self._b.list_files(f"failures/{self.part}"):
            if rel.rsplit("/", 1)[-1].startswith("."):
                self._b.delete(rel)

    # -- queries ------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Keys committed by this part."""
        return sorted(self._records)

    def is_done(self, key: str, fingerprint: str) -> bool:
        """Committed with ``fingerprint``, by this part or (after a re-sharding) another one."""
        rec = self._records.get(key)
        if rec is not None:
            return rec.get("fingerprint") == fingerprint
        if self._other_parts is None:
            self._other_parts = {}
            for rel in self._b.list_files(INDEX):
                parsed = parse_record_path(rel)
                if parsed and parsed[0] != self.part:
                    self._other_parts.setdefault(parsed[1], []).append(parsed[0])
        for other in self._other_parts.get(key, []):
            rel = record_path(other, key)
            try:
                if parse_record(self._b.get(rel), other, key, rel)["fingerprint"] == fingerprint:
                    return True
            except CacheError:
                continue  # torn elsewhere: not done
        return False

    # -- writing ------------------------------------------------------------------------

    def commit(self, entry: VLMEntry | JEPAEntry) -> dict:
        """Write ``entry`` and make it visible atomically; replaces this part's previous version.

        Raises CacheError (a ValueError) naming the key when the entry does not fit the store;
        nothing becomes visible then. Returns the commit record.
        """
        key = entry.key
        if isinstance(entry, VLMEntry):
            want = "vlm"
        elif isinstance(entry, JEPAEntry):
            want = "jepa"
        else:
            raise CacheError(f"commit expects a VLMEntry or JEPAEntry, got {type(entry).__name__}")
        if want != self.meta.kind:
            raise CacheError(f"{key}: a {want} entry cannot go into the {self.meta.kind!r} store at {self.url}")
        record_rel = record_path(self.part, key)
        attrs = _entry_attrs(entry, self.part)
        entry_dir = entry_path(self.part, key, secrets.token_hex(4))
        try:
            arrays, tokens = (self._write_vlm if want == "vlm" else self._write_jepa)(entry, entry_dir)
            self._b.write_objects([(f"{entry_dir}/{ZARR_JSON}", [dumps(group_zarr_json(attrs))])])
            self._b.sync_tree(entry_dir)  # data and folders durable before the record names them
            record = {
                "schema_version": SCHEMA_VERSION,
                "key": key,
                "part": self.part,
                "kind": want,
                "path": entry_dir,
                "fingerprint": entry.fingerprint,
                "arrays": {a.name: a.describe() for a in arrays},
                "tokens": tokens,
                "committed_at": time.time(),
                "writer": {"host": socket.gethostname(), "pid": os.getpid()},
            }
            self._lock.check()  # a writer that lost its lease must not commit over its successor
            self._b.put_atomic(record_rel, dumps(record))
        except BaseException:
            self._b.delete_tree(entry_dir)
            raise
        old = self._records.get(key)
        self._records[key] = record
        if self._catalog is not None:
            self._idents[key] = ident = record_identity(self._b, record_rel)
            self._catalog.add(row_of(record, ident))
        if old is not None and old.get("path") != entry_dir:
            self._b.delete_tree(old["path"])
        self._b.delete(failure_path(self.part, key))
        return record

    def _catalog_rows(self) -> list[Row]:
        return [row_of(r, self._idents.get(k)) for k, r in self._records.items()]

    def flush(self) -> None:
        """Add the entries committed since the last flush to the part's catalog (after each
        commit batch; ``close`` compacts it). The records stay the truth: a writer killed
        before this only leaves the catalog behind, and readers check it against them."""
        if self._catalog is not None:
            self._catalog.flush(self._catalog_rows)

    def record_failure(self, key: str, reason: str) -> None:
        """Persist why ``key`` could not be produced; removed when ``key`` later commits here."""
        doc = {"key": key, "part": self.part, "reason": str(reason), "at": time.time()}
        self._b.put_atomic(failure_path(self.part, key), dumps(doc))

    def _bg(self, fn, *args) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")
        return self._pool.submit(fn, *args)

    def _write_vlm(self, e: VLMEntry, entry_dir: str) -> tuple[list[_Array], dict]:
        key, m = e.key, self.meta
        L, H = len(m.layers), m.hidden_size
        streams = {}
        for name in ("prefill", "generated"):
            x = as_numpy(getattr(e, name), f"{key}: {name}")
            if x.ndim != 3 or x.shape[0] != L or x.shape[2] != H:
                raise CacheError(f"{key}: {name} has shape {list(x.shape)}; this store needs [L={L}, tokens, H={H}] "
                                 f"(layers {m.layers}, hidden size {H})")
            streams[name] = x
        n_pre, n_gen = streams["prefill"].shape[1], streams["generated"].shape[1]
        ints = {
            "prefill_ids": _int_array(e.prefill_ids, n_pre, "prefill_ids", key),
            "generated_ids": _int_array(e.generated_ids, n_gen, "generated_ids", key),
            "prefill_kind": _int_array(e.prefill_kind, n_pre, "prefill_kind", key),
            "frame_index": _int_array(e.frame_index, n_pre, "frame_index", key),
        }
        kind, frames = ints["prefill_kind"], ints["frame_index"]
        bad = ~np.isin(kind, (TOKEN_TEXT, TOKEN_VISION))
        if bad.any():
            raise CacheError(f"{key}: prefill_kind holds {sorted(set(kind[bad].tolist()))}; "
                             f"allowed are TOKEN_TEXT={TOKEN_TEXT}, TOKEN_VISION={TOKEN_VISION}")
        vision = kind == TOKEN_VISION
        if (frames[vision] < 0).any() or (frames[~vision] != -1).any():
            raise CacheError(f"{key}: frame_index must be >= 0 for vision tokens and -1 for text tokens")
        # The means read the caller's full-precision values; computing them in the background
        # overlaps that pass with the chunk writes below (numpy and file I/O release the GIL).
        means = {n: self._bg(token_means, x) for n, x in streams.items()}
        arrays = []
        for name, x in streams.items():
            a = _Array(name, to_storage(x, m.storage_dtype, f"{key}: {name}"), _dtype_attrs(m.storage_dtype))
            self._b.write_objects(a.objects(entry_dir))
            arrays.append(a)
        for name, x in ints.items():
            a = _Array(name, x.astype(VLM_INT_ARRAYS[name]))
            arrays.append(a)
        for name, fut in means.items():
            mean = fut.result()
            if not np.isfinite(mean).all():
                layer = m.layers[int(np.nonzero(~np.isfinite(mean).all(axis=1))[0][0])]
                raise CacheError(f"{key}: {name} holds NaN or Inf (first at layer {layer})")
            arrays.append(_Array(f"{name}_mean", mean))
        self._b.write_objects(obj for a in arrays[2:] for obj in a.objects(entry_dir))
        tokens = {"prefill": n_pre, "generated": n_gen, "vision": int(vision.sum()), "text": int((~vision).sum())}
        return arrays, tokens

    def _write_jepa(self, e: JEPAEntry, entry_dir: str) -> tuple[list[_Array], dict]:
        key, m = e.key, self.meta
        arrays, tokens = [], {}
        for name in ("past", "future"):
            x = as_numpy(getattr(e, name), f"{key}: {name}")
            if x.ndim != 3 or x.shape[2] != m.hidden_size:
                raise CacheError(f"{key}: {name} has shape {list(x.shape)}; this store needs "
                                 f"[tubelets, patches, D={m.hidden_size}]")
            finite = self._bg(all_finite, x)
            a = _Array(name, to_storage(x, m.storage_dtype, f"{key}: {name}"), _dtype_attrs(m.storage_dtype))
            self._b.write_objects(a.objects(entry_dir))
            if not finite.result():
                raise CacheError(f"{key}: {name} holds NaN or Inf")
            arrays.append(a)
            tokens[name] = int(x.shape[0] * x.shape[1])
        if arrays[0].data.shape[1] != arrays[1].data.shape[1]:
            raise CacheError(f"{key}: past has {arrays[0].data.shape[1]} patches per tubelet, future "
                             f"{arrays[1].data.shape[1]}")
        for name in JEPA_INT_ARRAYS:
            x = as_numpy(getattr(e, name), f"{key}: {name}")
            if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
                raise CacheError(f"{key}: {name} must be a 1-D integer array, got {x.dtype} {list(x.shape)}")
            arrays.append(_Array(name, x.astype(JEPA_INT_ARRAYS[name])))
        self._b.write_objects(obj for a in arrays[2:] for obj in a.objects(entry_dir))
        return arrays, tokens

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        if self._catalog is not None and self._lock_held():
            try:
                self._catalog.compact(self._catalog_rows())
            except OSError as e:  # derived data: readers fall back to the records
                log.warning("cache %s: writing the catalog of part %s failed: %s", self.url, self.part, e)
            self._catalog = None
        self._lock.release()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _lock_held(self) -> bool:
        try:
            self._lock.check()
        except CacheError:
            return False
        return True

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _dtype_attrs(storage_dtype: str) -> dict:
    return {"thinkjepa_dtype": storage_dtype}


def _int_array(x, n: int, name: str, key: str) -> np.ndarray:
    a = as_numpy(x, f"{key}: {name}")
    if a.ndim != 1 or a.shape[0] != n:
        raise CacheError(f"{key}: {name} has shape {list(a.shape)}, expected [{n}] (one per token)")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise CacheError(f"{key}: {name} must hold integers, got {a.dtype}")
    return a


def _entry_attrs(e: VLMEntry | JEPAEntry, part: str) -> dict:
    if not isinstance(e.fingerprint, str):
        raise CacheError(f"{e.key}: fingerprint must be a string, got {type(e.fingerprint).__name__}")
    if not isinstance(e.provenance, dict):
        raise CacheError(f"{e.key}: provenance must be a dict, got {type(e.provenance).__name__}")
    attrs: dict[str, Any] = {"key": e.key, "part": part, "fingerprint": e.fingerprint, "provenance": e.provenance,
                             "schema_version": SCHEMA_VERSION}
    if isinstance(e, VLMEntry):
        if not isinstance(e.text, str):
            raise CacheError(f"{e.key}: text must be a string, got {type(e.text).__name__}")
        attrs["text"] = e.text
    try:
        json.dumps(attrs, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CacheError(f"{e.key}: provenance is not JSON-serialisable: {err}") from err
    return attrs
