"""CacheReader: committed entries only, by key, field by field, batched, or as dask views."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from thinkjepa.cache_schema.encoding import (
    checked,
    decode_shard_index,
    from_storage,
    shard_index_size,
    storage_into_f32,
)
from thinkjepa.cache_schema.schema import (
    FAILURES,
    INDEX,
    JEPA_FLOAT_ARRAYS,
    SCHEMA_VERSION,
    TOKEN_STREAMS,
    VLM_INT_ARRAYS,
    CacheError,
    JEPAEntry,
    SchemaMismatchError,
    StoreMeta,
    VLMEntry,
    first_chunk_key,
    parse_record,
    parse_record_path,
    record_path,
)
from thinkjepa.cache_schema.store import open_backend, read_meta

log = logging.getLogger(__name__)

MEAN_FIELDS = ("prefill_mean", "generated_mean")
TOKEN_FIELDS = TOKEN_STREAMS
BATCH_FIELDS = (*MEAN_FIELDS, *TOKEN_FIELDS, *VLM_INT_ARRAYS, *JEPA_FLOAT_ARRAYS, "past_frames", "future_frames")


def _counting_store(inner):
    """Wrap a zarr store so the reader knows how many bytes it fetched (benchmarks, tests)."""
    from zarr.storage import WrapperStore

    class CountingStore(WrapperStore):
        bytes_read = 0

        async def get(self, key, prototype, byte_range=None):
            buf = await self._store.get(key, prototype, byte_range)
            if buf is not None:
                CountingStore.bytes_read += len(buf)
            return buf

        async def get_partial_values(self, prototype, key_ranges):
            out = await self._store.get_partial_values(prototype, key_ranges)
            CountingStore.bytes_read += sum(len(b) for b in out if b is not None)
            return out

    return CountingStore(inner)


class CacheReader:
    """Read access to the cache at ``url``.

    ``expect``: the settings the caller needs; any difference raises SchemaMismatchError that
    lists every differing field. Listing is done once and cached; ``refresh()`` re-lists.
    Picklable (for DataLoader workers): the store is reopened in the new process.
    """

    def __init__(self, url: str, expect: StoreMeta | None = None) -> None:
        self._url_in = url
        self._expect = expect
        self._open()

    def _open(self) -> None:
        self._b = open_backend(self._url_in)
        self.url = self._b.url
        self.meta = read_meta(self._b)
        if self.meta.schema_version != SCHEMA_VERSION:
            raise SchemaMismatchError(
                self.url, [f"schema_version: store has {self.meta.schema_version}, this code reads {SCHEMA_VERSION}"],
                action="cannot read it")
        if self._expect is not None:
            differences = self.meta.diff(self._expect)
            if differences:
                raise SchemaMismatchError(self.url, differences, action="not what the caller expects")
        self._zstore = _counting_store(self._b.zarr_store(read_only=True))
        self._layer_pos = {layer: i for i, layer in enumerate(self.meta.layers)}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._listing: dict[str, list[str]] | None = None
        self._records: dict[str, dict] = {}
        self._direct_bytes = 0

    def __getstate__(self) -> dict:
        return {"url": self._url_in, "expect": self._expect}

    def __setstate__(self, state: dict) -> None:
        self._url_in, self._expect = state["url"], state["expect"]
        self._open()

    @property
    def bytes_read(self) -> int:
        """Bytes this reader fetched from the store so far (data and zarr metadata)."""
        return type(self._zstore).bytes_read + self._direct_bytes

    # -- listing ------------------------------------------------------------------------

    def refresh(self) -> None:
        with self._lock:
            self._listing = None
            self._records = {}

    def _parts_of(self) -> dict[str, list[str]]:
        if self._listing is None:
            listing = self._catalog_listing()
            if listing is None:
                listing = {}
                for rel in self._b.list_files(INDEX):
                    parsed = parse_record_path(rel)
                    if parsed is not None:
                        listing.setdefault(parsed[1], []).append(parsed[0])
            with self._lock:
                self._listing = listing
        return self._listing

    def _catalog_listing(self) -> dict[str, list[str]] | None:
        """Key -> parts from the parts' catalogs (a few Parquet reads, checked against the
        records); None unless every part has one (then the index is listed)."""
        from thinkjepa.cache_schema.record_listing import catalog_keys

        if not self._b.is_local:
            return None
        listing: dict[str, list[str]] = {}
        for part in self._b.list_dirs(INDEX):
            got = catalog_keys(self._b, part)
            if got is None:
                return None
            for key in got:
                listing.setdefault(key, []).append(part)
        return listing

    def keys(self) -> list[str]:
        """Committed keys, sorted (one listing of the index, no record read)."""
        return sorted(self._parts_of())

    def __len__(self) -> int:
        return len(self._parts_of())

    def __contains__(self, key: str) -> bool:
        return key in self._parts_of()

    def briefs(self, listing_cache: str | None = None) -> dict[str, tuple[str, float, str]]:
        """``{key: (fingerprint, committed_at, part)}`` of every committed key, without reading
        the records again that ``listing_cache`` (a folder the caller owns) already summarised.
        See ``record_listing``."""
        from thinkjepa.cache_schema.record_listing import record_briefs

        return record_briefs(self._b, listing_cache)

    def folder_state(self) -> dict[str, int] | None:
        """See ``record_listing.folder_state``."""
        from thinkjepa.cache_schema.record_listing import folder_state

        return folder_state(self._b)

    def record(self, key: str) -> dict:
        """The commit record of ``key``; the newest one if several parts committed it."""
        rec = self._records.get(key)
        if rec is not None:
            return rec
        parts = self._parts_of().get(key)
        if not parts:
            raise KeyError(f"{key!r} is not committed in cache {self.url}")
        rels = [record_path(p, key) for p in parts]
        found, errors = [], []
        for p, rel, raw in zip(parts, rels, self._b.get_many(rels)):
            try:
                found.append(parse_record(raw, p, key, rel))
            except CacheError as e:
                errors.append(e)
        if not found:
            raise errors[0]
        rec = max(found, key=lambda r: r.get("committed_at", 0))
        self._records[key] = rec
        return rec

    def records(self) -> list[dict]:
        """Every trustworthy commit record (key, part, path, fingerprint, arrays, tokens,
        committed_at, ...). A torn or refused record is left out (its key counts as not
        committed, so its stage redoes it) and logged naming its file; ``record(key)`` raises."""
        listing = self._parts_of()
        todo = [(k, p) for k, parts in listing.items() if k not in self._records for p in parts]
        rels = [record_path(p, k) for k, p in todo]
        raws = self._b.get_many(rels)
        newest: dict[str, dict] = {}
        for (k, p), rel, raw in zip(todo, rels, raws):
            try:
                r = parse_record(raw, p, k, rel)
            except CacheError as e:
                log.warning("cache %s: %s", self.url, e)
                continue
            if k not in newest or r.get("committed_at", 0) > newest[k].get("committed_at", 0):
                newest[k] = r
        self._records.update(newest)
        return [self._records[k] for k in sorted(listing) if k in self._records]

    def entry_identities(self) -> dict[str, tuple[str, str]]:
        """``{key: (fingerprint, entry path)}`` of the newest commit of every key: what an
        entry's identity is (the path's suffix is its generation); ``entry_identity_table`` as
        a dict."""
        t = self.entry_identity_table()
        return dict(zip(t.column("key").to_pylist(),
                        zip(t.column("fingerprint").to_pylist(), t.column("path").to_pylist())))

    def entry_identity_table(self) -> Any:
        """Every key's newest commit as an Arrow table (``key``, ``fingerprint``,
        ``committed_at``, ``path``; one row per key, sorted by key). From the parts' catalogs
        where every part has one (``catalog.part_identity_table``: a few Parquet reads, checked
        against the records like ``briefs``), else from ``records()`` (a torn or refused record
        is left out there; from a catalog, a record that is JSON but refused by
        ``parse_record`` would count, which only changes a brief)."""
        import pyarrow as pa

        from thinkjepa.cache_schema.catalog import IDENTITY_COLUMNS, _first_per_key, identity_table

        tables = self._catalog_identity_tables()
        if tables is None:
            recs = self.records()  # sorted by key, the newest commit of each
            return identity_table([(r["key"], r["fingerprint"], float(r.get("committed_at", 0) or 0), r["path"])
                                   for r in recs])
        if not tables:
            return identity_table([])
        # the newest commit of a key wins; between equal times, the part listed first
        table = pa.concat_tables(tables).combine_chunks().sort_by(
            [("key", "ascending"), ("committed_at", "descending"), ("order", "ascending")])
        return _first_per_key(table).select(list(IDENTITY_COLUMNS))

    def _catalog_identity_tables(self) -> list | None:
        """Each part's ``catalog.part_identity_table`` with its listing order as a column; None
        when the store is not local or a part has no usable catalog."""
        import pyarrow as pa

        from thinkjepa.cache_schema.catalog import part_identity_table
        from thinkjepa.cache_schema.record_listing import _read_brief

        if not self._b.is_local:
            return None
        tables = []
        for order, part in enumerate(self._b.list_dirs(INDEX)):
            t = part_identity_table(self._b, part, _read_brief)
            if t is None:
                return None
            tables.append(t.append_column("order", pa.array([order] * t.num_rows, pa.int32())))
        return tables

    def failures(self, briefs: dict[str, tuple[str, float, str]] | None = None) -> dict[str, str]:
        """``{key: reason}`` of recorded failures not superseded by a later commit of that key
        (``briefs``: from ``briefs()``, so no commit record is read again)."""
        rels = [r for r in self._b.list_files(FAILURES) if parse_record_path(r)]
        out: dict[str, tuple[float, str]] = {}
        for rel, raw in zip(rels, self._b.get_many(rels)):
            try:
                doc = json.loads(raw) if raw else None
                key, at = doc["key"], float(doc.get("at", 0))
            except (ValueError, TypeError, KeyError):
                log.warning("cache %s: unreadable failure record %s ignored", self.url, rel)
                continue
            if briefs is not None:
                if key in briefs and briefs[key][1] >= at:
                    continue
            else:
                try:
                    if key in self._parts_of() and self.record(key).get("committed_at", 0) >= at:
                        continue
                except CacheError:
                    pass  # a torn commit record: the failure stands, the key is redone
            if key not in out or at > out[key][0]:
                out[key] = (at, doc.get("reason", ""))
        return {k: v[1] for k, v in sorted(out.items())}

    # -- single entries -----------------------------------------------------------------

    def _array(self, key: str, name: str):
        import zarr

        path = f"{self.record(key)['path']}/{name}"
        try:
            return zarr.open_array(store=self._zstore, path=path, mode="r", zarr_format=3)
        except Exception as e:
            raise CacheError(f"{key}: array {name!r} of the entry is unreadable (folder {path}; {type(e).__name__}: "
                             f"{e}); run `tj cache verify --repair`") from e

    def _read(self, key: str, name: str, selection: Any = Ellipsis) -> np.ndarray:
        arr = self._array(key, name)
        try:
            if isinstance(selection, tuple) and any(isinstance(s, list) for s in selection):
                return arr.get_orthogonal_selection(selection)
            return arr[selection]
        except Exception as e:
            raise CacheError(f"{key}: reading {name!r} failed (folder {self.record(key)['path']}/{name}; "
                             f"{type(e).__name__}: {e}); run `tj cache verify --repair`") from e

    def _float(self, key: str, name: str, selection: Any = Ellipsis) -> np.ndarray:
        return from_storage(self._read(key, name, selection), self.meta.storage_dtype)

    def _positions(self, key: str, layers: Sequence[int] | None) -> list[int] | None:
        if layers is None:
            return None
        missing = [layer for layer in layers if layer not in self._layer_pos]
        if missing:
            raise CacheError(f"{key}: layers {missing} are not stored in {self.url} (it holds {self.meta.layers})")
        return [self._layer_pos[layer] for layer in layers]

    def _need(self, kind: str) -> None:
        if self.meta.kind != kind:
            raise CacheError(f"the cache at {self.url} holds {self.meta.kind!r} entries, not {kind!r}")

    def _fetch(self, key: str, name: str, lead: list[int] | None = None, take: int | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``lead`` of axis 0 and the first ``take`` of axis 1 of an entry array.

        The hot path of training reads: it decodes the layout this package writes (see
        ``schema.chunk_layout``) straight from the chunk/shard bytes, checking every chunk's
        crc32c, and fetches only the chunks the selection touches. zarr-python reads the same
        files (``get``, ``verify``, dask views) but costs twice the time on token arrays.
        With ``out`` (float32), the selection is converted into it and ``out`` returned.
        """
        rec = self.record(key)
        desc = rec["arrays"].get(name)
        what = f"{key}: {name}"
        if desc is None:
            raise CacheError(f"{what}: the entry has no such array")
        shape, chunks = tuple(desc["shape"]), tuple(desc["chunks"])
        shard = tuple(desc["shard"]) if desc.get("shard") else None
        dtype = np.dtype(desc["dtype"]).newbyteorder("<")
        ndim = len(shape)
        rows = list(range(shape[0])) if lead is None or ndim == 1 else list(lead)
        if ndim >= 2:
            take = shape[1] if take is None else min(int(take), shape[1])
        if out is None:
            dst = np.empty((len(rows), take, *shape[2:]) if ndim >= 2 else shape, dtype=dtype)
        else:
            dst = out
        storage = self.meta.storage_dtype

        def put(target, src) -> None:
            if out is None:
                target[...] = src
            else:
                storage_into_f32(target, src, storage)

        if not all(shape) or (ndim >= 2 and take == 0):
            return dst
        # one object (chunk or shard) holds each entry array (schema.chunk_layout): its key is the first
        rel = f"{rec['path']}/{name}/{first_chunk_key(ndim)}"
        what = f"{key}: {name} (file {rel})"
        try:
            if shard is None:
                raw = self._b.get(rel)
                if raw is None:
                    raise FileNotFoundError(rel)
                self._direct_bytes += len(raw)
                a = checked(raw, what).view(dtype).reshape(chunks)[tuple(slice(0, n) for n in shape)]
                if ndim == 1:
                    put(dst, a)
                else:
                    for i, r in enumerate(rows):
                        put(dst[i, :take], a[r, :take])
                return dst
            per = tuple(s // c for s, c in zip(shard, chunks))
            step = chunks[1]
            n_j = -(-take // step)
            pad = (0,) * (ndim - 2)
            need = [(r, j) for r in rows for j in range(n_j)]
            n_idx = shard_index_size(per)
            if 2 * len(need) >= math.prod(per):  # most of the shard: one read beats many
                whole = self._b.get(rel)
                if whole is None:
                    raise FileNotFoundError(rel)
                self._direct_bytes += len(whole)
                view = memoryview(whole)
                index = decode_shard_index(view[-n_idx:], per, what)
                pieces = {}
                for r, j in need:
                    off, n = (int(v) for v in index[(r, j, *pad)])
                    pieces[r, j] = view[off:off + n] if off + n <= len(view) - n_idx else b""
            else:
                (ib,) = self._b.get_ranges(rel, [(-n_idx, 0)])
                index = decode_shard_index(ib, per, what)
                spans = [tuple(int(v) for v in index[(r, j, *pad)]) for r, j in need]
                got = self._b.get_ranges(rel, [(off, off + n) for off, n in spans])
                self._direct_bytes += len(ib) + sum(len(g) for g in got)
                pieces = dict(zip(need, got))
            for i, r in enumerate(rows):
                for j in range(n_j):
                    lo, hi = j * step, min((j + 1) * step, take)
                    data = checked(pieces[r, j], f"{what} chunk ({r}, {j})").view(dtype).reshape(chunks)[0]
                    put(dst[i, lo:hi], data[: hi - lo])
            return dst
        except FileNotFoundError as e:
            raise CacheError(f"{what}: data file missing; run `tj cache verify --repair`") from e
        except (OSError, ValueError, IndexError) as e:
            if isinstance(e, CacheError):
                raise CacheError(f"{e}; run `tj cache verify --repair`") from e
            # a short shard file: the index or a chunk lies past its end
            raise CacheError(f"{what}: unreadable, the file is short or damaged ({type(e).__name__}: {e}); "
                             "run `tj cache verify --repair`") from e

    def get(self, key: str) -> VLMEntry | JEPAEntry:
        """The whole entry, float arrays as float32."""
        import zarr

        rec = self.record(key)
        try:
            attrs = dict(zarr.open_group(store=self._zstore, path=rec["path"], mode="r", zarr_format=3).attrs)
        except Exception as e:
            raise CacheError(f"{key}: entry group unreadable ({type(e).__name__}: {e})") from e
        if self.meta.kind == "vlm":
            return VLMEntry(
                key=key, prefill=self._float(key, "prefill"), generated=self._float(key, "generated"),
                prefill_ids=self._read(key, "prefill_ids"), generated_ids=self._read(key, "generated_ids"),
                prefill_kind=self._read(key, "prefill_kind"), frame_index=self._read(key, "frame_index"),
                text=attrs.get("text", ""), provenance=attrs.get("provenance", {}),
                fingerprint=attrs.get("fingerprint", ""))
        return JEPAEntry(
            key=key, past=self._float(key, "past"), future=self._float(key, "future"),
            past_frames=self._read(key, "past_frames"), future_frames=self._read(key, "future_frames"),
            provenance=attrs.get("provenance", {}), fingerprint=attrs.get("fingerprint", ""))

    def attrs(self, key: str) -> dict:
        """Entry attributes: key, part, fingerprint, text (vlm), provenance."""
        import zarr

        return dict(zarr.open_group(store=self._zstore, path=self.record(key)["path"], mode="r",
                                    zarr_format=3).attrs)

    def read_means(self, key: str, layers: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """``{"prefill": [L, H], "generated": [L, H]}`` float32 token means (a few KB per entry)."""
        self._need("vlm")
        pos = self._positions(key, layers)
        return {s: self._fetch(key, f"{s}_mean", pos) for s in TOKEN_STREAMS}

    def read_tokens(self, key: str, stream: str, max_tokens: int | None,
                    layers: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``([L, N, H] float32, [N] bool mask)``: the first ``max_tokens`` tokens, zero-padded.

        Only that token prefix (and those layers) is fetched. ``max_tokens=None``: all tokens.
        """
        self._need("vlm")
        if stream not in TOKEN_STREAMS:
            raise CacheError(f"{key}: stream must be one of {TOKEN_STREAMS}, got {stream!r}")
        n_out = int(self.record(key)["tokens"][stream]) if max_tokens is None else int(max_tokens)
        pos = self._positions(key, layers)
        n_layers = len(self.meta.layers) if pos is None else len(pos)
        out = np.empty((n_layers, n_out, self.meta.hidden_size), dtype=np.float32)
        mask = np.empty(n_out, dtype=bool)
        self._tokens_into(key, stream, pos, out, mask)
        return out, mask

    def _tokens_into(self, key: str, stream: str, pos: list[int] | None, out: np.ndarray, mask: np.ndarray) -> None:
        """Fill ``out`` [L, n_out, H] float32 (uninitialised) and ``mask`` [n_out] with the first
        tokens of ``stream``, zero-padded. Writing into the caller's buffer (a batch row) spares
        the batch a stacking copy, and only the padding is zeroed: at token-stream sizes every
        extra pass over the array costs as much as reading the bytes."""
        take = min(int(self.record(key)["tokens"][stream]), out.shape[1])
        if take:
            self._fetch(key, stream, pos, take, out=out[:, :take])  # converts while copying: no temporary
        out[:, take:] = 0
        mask[:take] = True
        mask[take:] = False

    def read_token_info(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(prefill_kind [Np] uint8, frame_index [Np] int32)``: which prompt tokens are vision
        tokens, and the thinker frame each came from (-1 for text)."""
        self._need("vlm")
        return self._read(key, "prefill_kind"), self._read(key, "frame_index")

    def read_jepa(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(past, future)`` latents as float32."""
        self._need("jepa")
        return self._latents(key, "past"), self._latents(key, "future")

    def _latents(self, key: str, name: str) -> np.ndarray:
        shape = self.record(key)["arrays"][name]["shape"]
        return self._fetch(key, name, out=np.empty(shape, dtype=np.float32))

    # -- batches ------------------------------------------------------------------------

    def _read_fields(self, key: str, fields: Sequence[str], tokens: dict[str, tuple[np.ndarray, np.ndarray]],
                     layers: Sequence[int] | None) -> dict[str, np.ndarray]:
        """The non-token fields of one entry; its token streams go into ``tokens`` (row views)."""
        out: dict[str, np.ndarray] = {}
        for f in fields:
            if f in MEAN_FIELDS:
                out[f] = self._fetch(key, f, self._positions(key, layers))
            elif f in TOKEN_FIELDS:
                self._need("vlm")
                self._tokens_into(key, f, self._positions(key, layers), *tokens[f])
            elif f in JEPA_FLOAT_ARRAYS:
                out[f] = self._latents(key, f)
            else:
                out[f] = self._fetch(key, f)
        return out

    def read_batch(self, keys: Sequence[str], fields: Sequence[str], max_tokens: int | dict[str, int] | None = None,
                   layers: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Only ``fields`` of ``keys``, stacked on a leading batch axis.

        Fields: prefill_mean, generated_mean (vlm, [B, L, H]); prefill, generated (vlm tokens,
        [B, L, N, H] plus ``<stream>_mask`` [B, N]); past, future (jepa); the id/kind/frame
        arrays. Token streams are cut or padded to ``max_tokens`` (an int or a per-stream dict;
        unset: the longest in the batch). Entries are fetched concurrently.
        """
        unknown = [f for f in fields if f not in BATCH_FIELDS]
        if unknown:
            raise CacheError(f"unknown fields {unknown}; choose from {BATCH_FIELDS}")
        keys = list(keys)
        mt: dict[str, int | None]
        if isinstance(max_tokens, dict):
            mt = {s: max_tokens.get(s) for s in TOKEN_STREAMS}
        else:
            mt = {s: max_tokens for s in TOKEN_STREAMS}
        if not keys:
            return {}
        n_layers = len(self.meta.layers) if layers is None else len(layers)
        streams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for s in TOKEN_STREAMS:
            if s in fields:
                n = mt[s] if mt[s] is not None else max(int(self.record(k)["tokens"][s]) for k in keys)
                streams[s] = (np.empty((len(keys), n_layers, int(n), self.meta.hidden_size), dtype=np.float32),
                              np.empty((len(keys), int(n)), dtype=bool))

        def row(b: int) -> dict[str, np.ndarray]:
            return self._read_fields(keys[b], fields, {s: (t[b], m[b]) for s, (t, m) in streams.items()}, layers)

        # Threads pay off where a read waits (remote stores) or is large (token streams and
        # latents: file reads and conversions release the GIL). Local means are a few KB per
        # entry: handing each to a pool thread only adds GIL hand-offs (measured slower).
        big = bool(streams) or any(f in JEPA_FLOAT_ARRAYS for f in fields)
        if len(keys) > 1 and (big or not self._b.is_local):
            rows = list(self._executor().map(row, range(len(keys))))
        else:
            rows = [row(b) for b in range(len(keys))]
        out: dict[str, np.ndarray] = {}
        for s, (t, m) in streams.items():
            out[s], out[f"{s}_mask"] = t, m
        for name in rows[0]:
            try:
                out[name] = np.stack([r[name] for r in rows])
            except ValueError as e:
                shapes = {k: r[name].shape for k, r in zip(keys, rows)}
                raise CacheError(f"field {name!r} has different shapes across the batch: {shapes}") from e
        return out

    def stream(self, keys: Iterable[str] | None = None, fields: Sequence[str] = MEAN_FIELDS, batch_size: int = 16,
               max_tokens: int | dict[str, int] | None = None,
               layers: Sequence[int] | None = None) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
        """``(keys, read_batch(...))`` per batch, reading the next batch while the caller works."""
        keys = list(self.keys() if keys is None else keys)
        batches = [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
        if not batches:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-prefetch") as pre:
            nxt = pre.submit(self.read_batch, batches[0], fields, max_tokens, layers)
            for i, batch in enumerate(batches):
                cur = nxt.result()
                if i + 1 < len(batches):
                    nxt = pre.submit(self.read_batch, batches[i + 1], fields, max_tokens, layers)
                yield batch, cur

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cache-read")
            return self._pool

    # -- dask views ---------------------------------------------------------------------

    def means_dask(self, stream: str, keys: Sequence[str] | None = None, block: int = 64):
        """dask array [E, L, H] float32 of the per-entry token means of ``stream`` (lazy)."""
        import dask
        import dask.array as da

        self._need("vlm")
        if stream not in TOKEN_STREAMS:
            raise CacheError(f"stream must be one of {TOKEN_STREAMS}, got {stream!r}")
        keys = list(self.keys() if keys is None else keys)
        L, H = len(self.meta.layers), self.meta.hidden_size
        if not keys:
            return da.zeros((0, L, H), dtype=np.float32)

        def load(ks: list[str]) -> np.ndarray:
            return np.stack([self._fetch(k, f"{stream}_mean") for k in ks])

        # Blocks of entries, not one task per entry: a cache-wide graph stays small.
        parts = [da.from_delayed(dask.delayed(load)(keys[i:i + block]), shape=(len(keys[i:i + block]), L, H),
                                 dtype=np.float32) for i in range(0, len(keys), block)]
        return da.concatenate(parts, axis=0)

    def latent_means_dask(self, name: str, keys: Sequence[str] | None = None, block: int = 16):
        """dask array [E, D] float32: per-entry mean over tubelets and patches of ``past``/``future``."""
        import dask
        import dask.array as da

        self._need("jepa")
        keys = list(self.keys() if keys is None else keys)
        D = self.meta.hidden_size
        if not keys:
            return da.zeros((0, D), dtype=np.float32)

        def load(ks: list[str]) -> np.ndarray:
            return np.stack([self._latents(k, name).mean(axis=(0, 1)) for k in ks])

        parts = [da.from_delayed(dask.delayed(load)(keys[i:i + block]), shape=(len(keys[i:i + block]), D),
                                 dtype=np.float32) for i in range(0, len(keys), block)]
        return da.concatenate(parts, axis=0)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
