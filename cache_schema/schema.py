"""The on-disk contract of the feature caches: the one place that names paths, fields and versions.

A cache is a Zarr v3 store (a local folder or any fsspec URL). Layout, relative to its root::

    zarr.json                                 root group; attributes["thinkjepa_cache"] = StoreMeta
    clips/zarr.json                           group
    clips/<part>/zarr.json                    group, written only by the writer of <part>
    clips/<part>/<ekey>.<gen>/zarr.json       one entry (group); attributes: key, part, kind,
                                              fingerprint, text (vlm), provenance
    clips/<part>/<ekey>.<gen>/<array>/        its arrays: zarr.json + chunk/shard files c.i.j.k
    index/<part>/<ekey>.json                  commit record, written LAST in one atomic put: key,
                                              part, path, fingerprint, per-array shape/dtype/
                                              chunks/shard/nbytes, token counts, committed_at
    failures/<part>/<ekey>.json               {key, part, reason, at}; deleted when <key> commits
    locks/<part>.lock                         (local stores) flock held by the live writer of <part>
    catalog/<part>/<seq>.parquet              derived table of <part>'s commit records (key, fingerprint,
                                              committed_at, path, record file identity), written by
                                              the part's writer after the records; readers check it
                                              against the records (``catalog``). Optional: a cache
                                              without it (written before it existed) is read from its
                                              records, and a file of another CATALOG_VERSION is ignored

``<ekey>`` is the entry key (``<task>/<episode>@<t>``) escaped by :func:`escape_key`
(reversible; only ``[A-Za-z0-9_-]`` and ``~HH`` escapes, so ``.`` can separate ``<gen>``).
``<gen>`` is a random generation id: every commit writes a fresh entry folder and the record
names it, so replacing an entry swaps atomically and a reader never sees a mixture.

Arrays of a VLM entry (L = len(meta.layers), H = meta.hidden_size, Np/Ng tokens):

    prefill        [L, Np, H]  storage dtype   states of every prompt token, per stored layer
    generated      [L, Ng, H]  storage dtype   states of the generated (thinking) tokens
    prefill_mean   [L, H]      float32         mean over the Np tokens (zeros when Np == 0)
    generated_mean [L, H]      float32         mean over the Ng tokens (zeros when Ng == 0)
    prefill_ids    [Np]        int32
    generated_ids  [Ng]        int32
    prefill_kind   [Np]        uint8           TOKEN_TEXT / TOKEN_VISION
    frame_index    [Np]        int32           source frame of a vision token, -1 for text
    (generated tokens are all TOKEN_GENERATED, so no kind array is stored for them)

Arrays of a JEPA entry (D = meta.hidden_size): ``past`` [Tp, P, D] and ``future`` [Tf, P, D]
in the storage dtype, ``past_frames`` and ``future_frames`` int32.

Storage dtype: float16, float32, or bfloat16 stored as its raw uint16 bits (Zarr v3 and numpy
have no bfloat16) with array attribute ``thinkjepa_dtype = "bfloat16"``; readers return float32.

Every chunk uses the plainest Zarr v3 codec chain, ``bytes`` (little endian) + ``crc32c``:
fp16 states barely compress (deflate gains ~15% at ~20 MB/s, far below disk speed), and the
checksum lets ``verify`` find a damaged chunk. Arrays over ~1 MiB are chunked one layer (or
tubelet) x ~1 MiB of tokens and packed into a single ``sharding_indexed`` shard file, so an
entry is a few files while a reader can still fetch a layer subset or a token prefix (see
:func:`chunk_layout`); small arrays are a single chunk. Every chunk is written (no "empty
chunk" skipping), so a missing file is damage, not zeros.

Commit protocol (one writer per part, so no two processes ever touch the same object):
write the entry folder, then the index record. The record is the only thing readers list,
so an entry is visible exactly when complete. A writer killed at any point leaves at most an
unreferenced entry folder or a temp file, which the next writer of that part deletes on start.

One writer per part is enforced, not promised: local stores hold an ``flock`` on
``locks/<part>.lock`` (dropped by the kernel when the writer dies); fsspec stores hold a lease
object at the same path, created with a conditional put and renewed while the writer lives
(``store.Lease``); a store that cannot do conditional puts is refused for writing. Runners take
the lock before starting an engine (``store.lock_part``).

What survives a power cut (or a kernel crash), per store kind:

- local folder, ``durable`` (the default): the entry's data files and folders are made
  durable first -- on Linux by one ``syncfs`` of the filesystem after they are all written
  (``THINKJEPA_CACHE_FSYNC=files``, and other systems: an fsync of each file when written,
  then of every folder of the entry and the folder holding it) -- then the record (temp file,
  fsync, rename, fsync of ``index/<part>/``). So a record on disk implies complete data: a power cut loses at
  most the entries whose records had not been renamed into place, and those are redone.
  Damage that happens anyway (a disk that lies about fsync, bit rot) is caught by the crc32c
  of every chunk (``verify``) and un-committed by ``repair`` so the stage redoes exactly it.
- local folder with ``THINKJEPA_CACHE_FSYNC=0`` (scratch stores): survives killed processes
  only (the page cache outlives them); after a power cut, records may point at torn chunks --
  run ``tj cache verify --repair`` before trusting such a store.
- object stores through fsspec (S3, GCS, Azure): every put is atomic and durable once it
  returns (the service's guarantee), and the record is put after all data objects returned,
  so the same "record implies data" holds without fsync.
- ``memory://``: nothing survives the process (tests, scratch).

A record is only trusted after ``check_record``: it must name its own key and part, and its
``path`` must be an entry folder of that part (``clips/<part>/<ekey>.<gen>``); a record that
names any other path is refused, so a crafted record cannot make a writer delete, or a reader
read, anything outside its part.

Readers list ``index/`` once (keys come from the file names, records are read on demand) and
decode arrays straight from the chunk bytes (``CacheReader._fetch``, 1.5-1.8x zarr-python's
speed on token arrays, ``benchmarks/bench_cache.py``); ``get`` and ``verify`` go through zarr-python, so the tests also
prove the files are plain Zarr v3 that any Zarr tool can open.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1

TOKEN_TEXT = 0
TOKEN_VISION = 1
TOKEN_GENERATED = 2

KINDS = ("vlm", "jepa")
STORAGE_DTYPES = ("float16", "bfloat16", "float32")

ROOT_ATTR = "thinkjepa_cache"
CLIPS = "clips"
INDEX = "index"
FAILURES = "failures"
LOCKS = "locks"
CATALOG = "catalog"
CATALOG_VERSION = 1
"""Version of the catalog files' columns; derived data, so a change needs no SCHEMA_VERSION bump:
files of another version are ignored and rewritten by the part's next writer."""
CATALOG_META_KEY = "thinkjepa.catalog"
ZARR_JSON = "zarr.json"
RECORD_SUFFIX = ".json"
TMP_MARK = ".tmp-"
"""Temp objects are named ``.<name>.tmp-<uuid>``: a leading dot keeps them out of listings."""

TOKEN_STREAMS = ("prefill", "generated")
VLM_FLOAT_ARRAYS = ("prefill", "generated")
VLM_MEAN_ARRAYS = ("prefill_mean", "generated_mean")
VLM_INT_ARRAYS = {"prefill_ids": "int32", "generated_ids": "int32", "prefill_kind": "uint8", "frame_index": "int32"}
JEPA_FLOAT_ARRAYS = ("past", "future")
JEPA_INT_ARRAYS = {"past_frames": "int32", "future_frames": "int32"}

CHUNK_TARGET_BYTES = 1 << 20
CHUNK_SEP = "."

_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_GEN_RE = re.compile(r"^[0-9a-f]{8,32}$")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class CacheError(ValueError):
    """A cache cannot be opened, written or read as asked; the message names the entry and cause."""


class RecordError(CacheError):
    """A commit record is torn, unreadable or untrustworthy; ``rel`` is its path in the store."""

    def __init__(self, key: str, rel: str, cause: str) -> None:
        self.key, self.rel, self.cause = key, rel, cause
        super().__init__(f"{key}: commit record {rel} {cause}; run `tj cache verify --repair` to un-commit it "
                         "so its stage redoes it")


class SchemaMismatchError(CacheError):
    """A store was made with other settings than the ones given. ``differences`` lists each field."""

    def __init__(self, url: str, differences: list[str], action: str = "refusing to mix entries") -> None:
        self.url = url
        self.differences = differences
        super().__init__(f"cache at {url} differs from the expected settings ({action}): " + "; ".join(differences))


@dataclass
class StoreMeta:
    """Store-level attributes, fixed when the store is created."""

    kind: str
    model: str
    revision: str | None
    layers: list[int]
    layer_convention: str
    hidden_size: int
    storage_dtype: str
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise CacheError(f"StoreMeta.kind must be one of {KINDS}, got {self.kind!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise CacheError(f"StoreMeta.storage_dtype must be one of {STORAGE_DTYPES}, got {self.storage_dtype!r}")
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise CacheError(f"StoreMeta.hidden_size must be a positive int, got {self.hidden_size!r}")
        if self.kind == "vlm" and not self.layers:
            raise CacheError("StoreMeta.layers must name at least one layer for a 'vlm' store")
        if len(set(self.layers)) != len(self.layers):
            raise CacheError(f"StoreMeta.layers has duplicates: {self.layers}")
        try:
            json.dumps(self.extra, sort_keys=True)
        except TypeError as e:
            raise CacheError(f"StoreMeta.extra must be JSON-serialisable: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        # A JSON round trip makes tuples lists etc., so a dict compares equal to what is stored.
        return json.loads(json.dumps(asdict(self), sort_keys=True))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreMeta:
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(names - {"extra", "schema_version"} - set(d))
        if missing:
            raise CacheError(f"store attributes lack {missing}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def diff(self, other: StoreMeta) -> list[str]:
        """Every field where ``self`` (the store) and ``other`` (the caller) differ, as text."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for k in ("schema_version", "kind", "model", "revision", "layers", "layer_convention", "hidden_size",
                  "storage_dtype"):
            if a[k] != b[k]:
                out.append(f"{k}: store has {a[k]!r}, expected {b[k]!r}")
        ea, eb = a["extra"], b["extra"]
        for k in sorted(set(ea) | set(eb)):
            if ea.get(k, "<absent>") != eb.get(k, "<absent>"):
                out.append(f"extra.{k}: store has {ea.get(k, '<absent>')!r}, expected {eb.get(k, '<absent>')!r}")
        return out


@dataclass
class VLMEntry:
    key: str
    prefill: np.ndarray
    generated: np.ndarray
    prefill_ids: np.ndarray
    generated_ids: np.ndarray
    prefill_kind: np.ndarray
    frame_index: np.ndarray
    text: str
    provenance: dict
    fingerprint: str


@dataclass
class JEPAEntry:
    key: str
    past: np.ndarray
    future: np.ndarray
    past_frames: np.ndarray
    future_frames: np.ndarray
    provenance: dict
    fingerprint: str


def escape_key(key: str) -> str:
    """Reversible, path-safe form of an entry key (``a/b@3`` -> ``a~2Fb~403``)."""
    if not isinstance(key, str) or not key:
        raise CacheError(f"entry key must be a non-empty string, got {key!r}")
    out = []
    for i, ch in enumerate(key):
        # A leading "_" is escaped because Zarr reserves node names starting with "__".
        if ch in _SAFE and not (i == 0 and ch == "_"):
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8"))
    s = "".join(out)
    if len(s) > 200:
        raise CacheError(f"entry key {key!r} is too long for a path once escaped ({len(s)} > 200 characters)")
    return s


def unescape_key(name: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "~":
            raw.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(ch.encode("ascii"))
            i += 1
    return raw.decode("utf-8")


def check_part(part: str) -> str:
    if not isinstance(part, str) or not _PART_RE.match(part):
        raise CacheError(f"part name {part!r} must match {_PART_RE.pattern} (e.g. 'shard-00003-of-00008')")
    return part


def entry_dirname(key: str, gen: str) -> str:
    return f"{escape_key(key)}.{gen}"


def key_of_entry_dirname(name: str) -> str:
    return unescape_key(name.rsplit(".", 1)[0])


def entry_path(part: str, key: str, gen: str) -> str:
    return f"{CLIPS}/{part}/{entry_dirname(key, gen)}"


def record_path(part: str, key: str) -> str:
    return f"{INDEX}/{part}/{escape_key(key)}{RECORD_SUFFIX}"


def catalog_path(part: str, seq: int) -> str:
    return f"{CATALOG}/{part}/{seq:010d}.parquet"


def check_record(rec: Any, part: str, key: str, rel: str) -> dict:
    """``rec`` if it is a record of ``key`` in ``part`` that may be trusted; RecordError if not."""
    if not isinstance(rec, dict):
        raise RecordError(key, rel, f"is not a JSON object ({type(rec).__name__})")
    if rec.get("key") != key or rec.get("part") != part:
        raise RecordError(key, rel, f"names key {rec.get('key')!r} part {rec.get('part')!r}")
    path = rec.get("path")
    prefix = f"{CLIPS}/{part}/{escape_key(key)}."
    if not isinstance(path, str) or not path.startswith(prefix) or not _GEN_RE.match(path[len(prefix):]):
        raise RecordError(key, rel, f"names path {path!r}, which is not an entry folder of its part "
                                    f"({prefix}<generation>); refusing it")
    if not isinstance(rec.get("arrays"), dict) or not isinstance(rec.get("fingerprint"), str):
        raise RecordError(key, rel, "lacks its arrays or fingerprint")
    return rec


def parse_record(raw: bytes | None, part: str, key: str, rel: str) -> dict:
    """Decode and check the record bytes at ``rel`` (None: the object is gone)."""
    if raw is None:
        raise RecordError(key, rel, "vanished (the store changed while reading; refresh())")
    if not raw:
        raise RecordError(key, rel, "is empty (torn by a crash or power cut)")
    try:
        rec = json.loads(raw)
    except ValueError as e:
        raise RecordError(key, rel, f"is not valid JSON ({len(raw)} bytes, torn or damaged: {e})") from e
    return check_record(rec, part, key, rel)


def failure_path(part: str, key: str) -> str:
    return f"{FAILURES}/{part}/{escape_key(key)}{RECORD_SUFFIX}"


def parse_record_path(rel: str) -> tuple[str, str] | None:
    """``(part, key)`` of ``index/<part>/<ekey>.json`` or ``failures/...``; None for anything else."""
    bits = rel.split("/")
    if len(bits) != 3 or bits[0] not in (INDEX, FAILURES):
        return None
    name = bits[2]
    if name.startswith(".") or not name.endswith(RECORD_SUFFIX):
        return None
    return bits[1], unescape_key(name[: -len(RECORD_SUFFIX)])


def array_names(kind: str) -> tuple[str, ...]:
    if kind == "vlm":
        return (*VLM_FLOAT_ARRAYS, *VLM_MEAN_ARRAYS, *VLM_INT_ARRAYS)
    return (*JEPA_FLOAT_ARRAYS, *JEPA_INT_ARRAYS)


def zarr_dtype(storage_dtype: str) -> str:
    """The Zarr data type holding a storage dtype (bfloat16 travels as its raw bits)."""
    return "uint16" if storage_dtype == "bfloat16" else storage_dtype


def chunk_layout(shape: tuple[int, ...], itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """``(chunk shape, shard shape or None)`` of an array.

    Arrays up to ~1 MiB are one chunk. Larger 3-D arrays ([layers, tokens, H] or [tubelets,
    patches, D]) get chunks of one leading index x as many rows of the second axis as fit
    ~1 MiB, all packed into ONE shard file per array: a reader can still fetch one layer or a
    token prefix, while a commit creates a handful of files, which matters on filesystems
    where creating a file costs as much as writing a megabyte. Every full chunk is a
    contiguous run of the C-order array, which the writer exploits (no copy).
    """
    whole = tuple(max(1, s) for s in shape)
    if len(shape) < 3 or math.prod(shape) * itemsize <= CHUNK_TARGET_BYTES:
        return whole, None
    row = math.prod(shape[2:]) * itemsize
    # Equal chunks instead of fixed 1 MiB ones: Zarr pads the edge chunk to full size, which
    # would waste up to a chunk per layer (16% for 1100 tokens in 256-token chunks).
    n_chunks = max(1, math.ceil(shape[1] / max(1, CHUNK_TARGET_BYTES // row)))
    rows = max(1, math.ceil(shape[1] / n_chunks))
    chunks = (1, rows, *shape[2:])
    shard = (max(1, shape[0]), max(1, math.ceil(shape[1] / rows)) * rows, *shape[2:])
    return chunks, shard


def dimension_names(name: str, ndim: int) -> list[str] | None:
    if name in VLM_FLOAT_ARRAYS and ndim == 3:
        return ["layer", "token", "hidden"]
    if name in VLM_MEAN_ARRAYS:
        return ["layer", "hidden"]
    if name in JEPA_FLOAT_ARRAYS and ndim == 3:
        return ["tubelet", "patch", "hidden"]
    if ndim == 1:
        return ["token"] if name in VLM_INT_ARRAYS else ["frame"]
    return None


_BYTES_CRC = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]


def array_zarr_json(shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...], shard: tuple[int, ...] | None,
                    attributes: dict, dims: list[str] | None) -> dict[str, Any]:
    """Zarr v3 array metadata: bytes + crc32c chunks, optionally packed in one sharding_indexed shard."""
    if shard is None:
        grid, codecs = chunks, _BYTES_CRC
    else:
        grid = shard
        codecs = [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": list(chunks), "codecs": _BYTES_CRC, "index_codecs": _BYTES_CRC, "index_location": "end"}}]
    meta: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(grid)}},
        # "." keeps chunk files flat in the array folder: no c/i/j/ directories to create.
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": CHUNK_SEP}},
        "fill_value": 0.0 if dtype.startswith("float") else 0,
        "codecs": codecs,
        "attributes": attributes,
        "storage_transformers": [],
    }
    if dims is not None:
        meta["dimension_names"] = dims
    return meta


def group_zarr_json(attributes: dict) -> dict[str, Any]:
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes}


def chunk_keys(shape: tuple[int, ...], grid: tuple[int, ...]) -> list[str]:
    """Keys (``c.i.j``) of every stored object (chunk or shard) of an array, relative to its folder."""
    counts = [math.ceil(s / c) for s, c in zip(shape, grid)]
    if any(n == 0 for n in counts):
        return []
    return [CHUNK_SEP.join(["c", *map(str, idx)]) for idx in np.ndindex(*counts)]


def first_chunk_key(ndim: int) -> str:
    """``chunk_keys(shape, grid)[0]`` without enumerating the grid (the read path's hot key)."""
    return CHUNK_SEP.join(["c", *("0" * ndim)])


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
