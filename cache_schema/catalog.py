"""The catalog: a per-part Parquet table of a part's committed entries, so a cold start reads a
few large files instead of one commit record per entry.

The commit records (``index/<part>/<ekey>.json``) stay the durable source of truth; the
catalog is derived from them and may lag them, never lead them. Layout and version are in
``schema`` (``catalog/<part>/<seq>.parquet``, ``CATALOG_VERSION``): the writer of a part (it
holds the part's lock) appends a *delta* file with the rows of each commit batch (``flush``)
and, every ``COMPACT_EVERY`` deltas and when it closes, a *complete* file with every record of
the part, deleting the older files. A row is written only after its record was renamed into
place, so a crash between the two leaves the catalog behind, never ahead.

A reader trusts a part's catalog as it is only when the part's record folder is unchanged
since the newest catalog file was written (same folder mtime, and that mtime older than
``RACY_S`` at the time of writing, so a change in the same clock tick cannot hide; the rule
git uses for its index). Otherwise it lists the folder once, stats each record and reads only
the records whose identity (inode, size, mtime) is not the one the catalog names: a record
replaced by a rename always has a new inode, a deleted one is missing from the listing, a new
one is not in the catalog. So the view a reader builds always equals what the records say.
Object stores (no folder mtimes, no inodes) keep reading every record (``record_listing``).
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

from thinkjepa.cache_schema.record_listing import RACY_S, record_files
from thinkjepa.cache_schema.schema import (
    CATALOG,
    CATALOG_META_KEY,
    CATALOG_VERSION,
    INDEX,
    RECORD_SUFFIX,
    catalog_path,
    escape_key,
)

COMPACT_EVERY = 32
COLUMNS = ("key", "name", "fingerprint", "committed_at", "path", "ino", "size", "mtime_ns")

Row = tuple[str, str, str, float, str, int, int, int]
"""One catalog row, in ``COLUMNS`` order."""


def row_of(record: dict, ident: tuple[int, int, int] | None) -> Row:
    """The catalog row of a commit record whose file has identity ``(ino, size, mtime_ns)``."""
    ino, size, mtime = ident if ident is not None else (-1, -1, -1)
    return (record["key"], escape_key(record["key"]) + RECORD_SUFFIX, str(record.get("fingerprint", "")),
            float(record.get("committed_at", 0) or 0), str(record.get("path", "")), ino, size, mtime)


def _encode(rows: list[Row], meta: dict[str, Any]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(zip(*rows)) if rows else [() for _ in COLUMNS]
    types = [pa.string(), pa.string(), pa.string(), pa.float64(), pa.string(), pa.int64(), pa.int64(), pa.int64()]
    table = pa.table({n: pa.array(c, type=t) for n, c, t in zip(COLUMNS, cols, types)})
    table = table.replace_schema_metadata({CATALOG_META_KEY: json.dumps(meta).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _meta(raw: bytes) -> dict[str, Any] | None:
    """The metadata of one catalog file (its footer only); None when it is torn, foreign or of
    another version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(pa.BufferReader(raw))
        meta = json.loads((schema.metadata or {})[CATALOG_META_KEY.encode()])
    except Exception:  # noqa: BLE001 - any unreadable file is just no catalog: the records are read
        return None
    if meta.get("version") != CATALOG_VERSION or list(schema.names) != list(COLUMNS):
        return None
    return meta


def _columns(raw: bytes, names: tuple[str, ...]) -> dict[str, list] | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(pa.BufferReader(raw)).read(columns=list(names))
    except Exception:  # noqa: BLE001 - as above
        return None
    return {c: table.column(c).to_pylist() for c in names}


def _seqs(backend: Any, part: str) -> list[int]:
    out = []
    for rel in backend.list_files(f"{CATALOG}/{part}"):
        name = rel.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and not name.startswith(".") and name[:-8].isdigit():
            out.append(int(name[:-8]))
    return sorted(out)


class PartCatalog:
    """The catalog of one part of a local store, kept by that part's writer (who holds its lock)."""

    def __init__(self, backend: Any, part: str) -> None:
        self._b, self.part = backend, part
        seqs = _seqs(backend, part)
        self._seq = seqs[-1] if seqs else 0
        self._pending: list[Row] = []
        self._deltas = 0

    def _folder_mtime(self) -> int:
        try:
            return os.stat(self._b.root / INDEX / self.part).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _write(self, rows: list[Row], complete: bool) -> None:
        from thinkjepa.cache_schema.fsio import atomic_write_bytes

        folder = self._folder_mtime()  # before the rows are read: the lock holder alone changes it
        self._seq += 1
        meta = {"version": CATALOG_VERSION, "part": self.part, "complete": complete,
                "folder_mtime_ns": folder, "written_ns": time.time_ns()}
        path = self._b.root / catalog_path(self.part, self._seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        # derived data: a power cut that tears it costs one re-listing, so no fsync
        atomic_write_bytes(path, _encode(rows, meta), durable=False)

    def add(self, row: Row) -> None:
        self._pending.append(row)

    def flush(self, all_rows) -> None:
        """Write the rows added since the last flush (a delta; a complete file every
        ``COMPACT_EVERY`` deltas, ``all_rows()`` giving every row of the part)."""
        if not self._pending:
            return
        if self._deltas + 1 >= COMPACT_EVERY:
            self.compact(all_rows())
            return
        self._write(self._pending, complete=False)
        self._pending = []
        self._deltas += 1

    def compact(self, rows: list[Row]) -> None:
        """Write one complete file of ``rows`` (every record of the part) and drop the older files."""
        self._write(rows, complete=True)
        self._pending = []
        self._deltas = 0
        for seq in _seqs(self._b, self.part):
            if seq < self._seq:
                self._b.delete(catalog_path(self.part, seq))


def record_identity(backend: Any, rel: str) -> tuple[int, int, int] | None:
    """``(ino, size, mtime_ns)`` of a local record file (what the catalog compares); None elsewhere."""
    if not backend.is_local:
        return None
    try:
        st = os.stat(os.path.join(backend.url, rel))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _load(backend: Any, part: str) -> tuple[dict[str, Any], list[bytes]] | None:
    """The newest complete file of the part and every later delta, oldest first, with the
    newest file's metadata; None when there is no usable complete file."""
    raws: list[bytes] = []
    newest: dict[str, Any] | None = None
    for seq in reversed(_seqs(backend, part)):
        raw = backend.get(catalog_path(part, seq))
        meta = _meta(raw) if raw else None
        if meta is None:
            return None  # torn, deleted by a compaction meanwhile, or another version: use the records
        newest = newest or meta
        raws.append(raw)  # type: ignore[arg-type]
        if meta.get("complete"):
            return newest, raws[::-1]
    return None


def _catalog_state(backend: Any, part: str) -> tuple[list[bytes], bool, bool] | None:
    """The part's catalog files (oldest first), whether its record folder exists, and whether
    the catalog may be taken as it is: the folder unchanged since the newest file was written
    (same mtime, and that mtime older than ``RACY_S`` then). None: no usable catalog."""
    if not backend.is_local:
        return None
    loaded = _load(backend, part)
    if loaded is None:
        return None
    meta, raws = loaded
    try:
        mtime = (backend.root / INDEX / part).stat().st_mtime_ns
    except FileNotFoundError:
        return raws, False, False
    return raws, True, mtime == meta["folder_mtime_ns"] and (meta["written_ns"] - mtime) / 1e9 > RACY_S


Entry = tuple[str | None, float]
"""``(fingerprint, committed_at)`` of a committed key; fingerprint None for a torn record."""


def part_entries(backend: Any, part: str, read_brief, *, paths: bool = False) -> dict[str, Any] | None:
    """``{key: (fingerprint, committed_at)}`` of every record file of ``part``, as the records
    say; None when the part has no usable catalog (the caller then reads the records). With
    ``paths``: ``(fingerprint, committed_at, entry path)``.

    ``read_brief(path, name)`` reads one record file into ``(key, fingerprint, committed_at,
    path)`` (fingerprint None: torn or foreign) or None (not a record's name)."""
    state = _catalog_state(backend, part)
    return None if state is None else _entries(backend, part, state, read_brief, paths)


def _entries(backend: Any, part: str, state: tuple[list[bytes], bool, bool], read_brief,
             paths: bool) -> dict[str, Any] | None:
    """``part_entries`` from the part's ``_catalog_state`` (read once by the caller)."""
    raws, folder_exists, trusted = state
    if not folder_exists:
        return {}
    if trusted:
        # unchanged since the newest file was written: only the columns status needs
        out: dict[str, Any] = {}
        wanted = ("key", "fingerprint", "committed_at", *(("path",) if paths else ()))
        for raw in raws:  # oldest first: a later row replaces an earlier one
            cols = _columns(raw, wanted)
            if cols is None:
                return None
            out.update(zip(cols["key"], zip(*(cols[c] for c in wanted[1:]))))
        return out
    rows: dict[str, tuple] = {}
    for raw in raws:
        cols = _columns(raw, COLUMNS)
        if cols is None:
            return None
        for row in zip(*(cols[c] for c in COLUMNS)):
            rows[row[1]] = row
    out = {}
    for e, ident in record_files(backend.root / INDEX / part):
        row = rows.get(e.name)
        if row is not None and row[5:] == ident:
            out[row[0]] = (row[2], row[3], row[4])[: 3 if paths else 2]
            continue
        got = read_brief(Path(e.path), e.name)
        if got is not None:
            out[got[0]] = (got[1], got[2], got[3])[: 3 if paths else 2]
    return out


IDENTITY_COLUMNS = ("key", "fingerprint", "committed_at", "path")


def identity_schema() -> Any:
    """The Arrow schema of an identity table (``IDENTITY_COLUMNS``)."""
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("fingerprint", pa.string()), ("committed_at", pa.float64()),
                      ("path", pa.string())])


def identity_table(rows: list[tuple[str, str, float, str]]) -> Any:
    """An identity table from ``(key, fingerprint, committed_at, path)`` rows (may be none)."""
    import pyarrow as pa

    schema = identity_schema()
    cols = list(zip(*rows)) if rows else [()] * len(schema)
    return pa.table([pa.array(c, f.type) for c, f in zip(cols, schema)], schema=schema)


def _first_per_key(table: Any) -> Any:
    """The first row of each run of equal keys of a table sorted by key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows < 2:
        return table
    keys = table.column("key")
    change = pc.not_equal(keys.slice(1), keys.slice(0, table.num_rows - 1))
    return table.filter(pa.concat_arrays([pa.array([True]), pa.chunked_array(change).combine_chunks()]))


def part_identity_table(backend: Any, part: str, read_brief) -> Any:
    """``part_entries(..., paths=True)`` as an Arrow table (``IDENTITY_COLUMNS``, the records
    with a fingerprint), straight from the catalog's columns when the part is unchanged since
    its newest file (no Python object per entry: a cold `tj status` at 340k episodes reads
    every entry's identity); None when the part has no usable catalog."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    state = _catalog_state(backend, part)
    if state is None:
        return None
    raws, _, trusted = state
    if not trusted:
        got = _entries(backend, part, state, read_brief, paths=True)
        return None if got is None else identity_table([(k, *v) for k, v in got.items() if v[0] is not None])
    schema = identity_schema()
    tables = []
    for seq, raw in enumerate(raws):  # oldest first: a later row replaces an earlier one
        try:
            t = pq.ParquetFile(pa.BufferReader(raw)).read(columns=list(IDENTITY_COLUMNS)).cast(schema)
        except Exception:  # noqa: BLE001 - as in _columns: no catalog, the records are read
            return None
        tables.append(t.append_column("seq", pa.array([seq] * t.num_rows, pa.int32())))
    table = pa.concat_tables(tables).combine_chunks()
    if pc.count_distinct(table.column("key")).as_py() != table.num_rows:  # deltas (or a damaged file)
        table = table.append_column("row", pa.array(range(table.num_rows), pa.int64()))
        table = _first_per_key(table.sort_by([("key", "ascending"), ("row", "descending")]))
    table = table.filter(pc.is_valid(table.column("fingerprint")))
    return table.select(list(IDENTITY_COLUMNS))


def rebuild(backend: Any, part: str, records: list[dict]) -> None:
    """A complete catalog of ``part`` from its ``records`` (the caller holds the part's lock)."""
    from thinkjepa.cache_schema.schema import record_path

    rows = [row_of(r, record_identity(backend, record_path(part, r["key"]))) for r in records]
    PartCatalog(backend, part).compact(rows)
