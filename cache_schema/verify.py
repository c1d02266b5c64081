"""verify: everything a reader relies on, checked; returns the list of problems found."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from thinkjepa.cache_schema.encoding import from_storage
from thinkjepa.cache_schema.schema import (
    CLIPS,
    FAILURES,
    INDEX,
    JEPA_FLOAT_ARRAYS,
    SCHEMA_VERSION,
    TOKEN_STREAMS,
    TOKEN_TEXT,
    TOKEN_VISION,
    VLM_FLOAT_ARRAYS,
    VLM_MEAN_ARRAYS,
    ZARR_JSON,
    CacheError,
    RecordError,
    StoreMeta,
    array_names,
    chunk_keys,
    parse_record,
    parse_record_path,
    zarr_dtype,
)
from thinkjepa.cache_schema.store import open_backend, read_meta


@dataclass
class Problem:
    code: str
    """schema | record | missing | shape | corrupt | nonfinite | content | orphan | partial | duplicate"""
    key: str | None
    detail: str
    file: str | None = None
    """The object at fault, relative to the store root (a record, chunk/shard file or folder)."""
    part: str | None = None
    """The part whose record names the damaged entry (what ``repair`` un-commits)."""

    def __str__(self) -> str:
        where = f" [{self.file}]" if self.file else ""
        return f"[{self.code}] {self.key + ': ' if self.key else ''}{self.detail}{where}"

    def to_dict(self) -> dict:
        return asdict(self)


def verify(url: str, check_data: bool = True, progress: Callable[[int, int], None] | None = None) -> list[Problem]:
    """Check the cache at ``url``: schema attributes, every committed entry (present, shapes
    consistent with its record and the store settings, every chunk present; with ``check_data``
    also fully read, checksums and NaN/Inf), orphaned or partial data, keys committed twice.

    ``progress(done, total)`` is called per entry.
    """
    import zarr

    b = open_backend(url)
    try:
        meta = read_meta(b)
        meta.validate()
    except CacheError as e:
        return [Problem("schema", None, str(e))]
    problems: list[Problem] = []
    if meta.schema_version != SCHEMA_VERSION:
        return [Problem("schema", None, f"schema_version {meta.schema_version}, this code reads {SCHEMA_VERSION}")]

    zstore = b.zarr_store(read_only=True)
    by_key: dict[str, list[str]] = {}
    referenced: set[str] = set()
    record_rels = []
    for rel in b.list_files(INDEX) + b.list_files(FAILURES):
        name = rel.rsplit("/", 1)[-1]
        if name.startswith("."):
            problems.append(Problem("partial", None, f"leftover temp file {rel} (an interrupted write)", rel,
                                    rel.split("/")[1] if rel.count("/") >= 2 else None))
        elif rel.startswith(INDEX + "/"):
            if parse_record_path(rel) is None:
                problems.append(Problem("record", None, f"unexpected object {rel} in the index"))
            else:
                record_rels.append(rel)
    record_rels.sort()
    for i, rel in enumerate(record_rels):
        part, key = parse_record_path(rel)  # type: ignore[misc]
        by_key.setdefault(key, []).append(part)
        try:
            rec = parse_record(b.get(rel), part, key, rel)
        except RecordError as e:
            problems.append(Problem("record", key, f"commit record {e.cause}", rel, part))
        else:
            referenced.add(rec["path"])
            for p in _check_entry(zarr, zstore, b, meta, key, rec, check_data):
                p.part = part
                problems.append(p)
        if progress is not None:
            progress(i + 1, len(record_rels))

    for key, parts in sorted(by_key.items()):
        if len(parts) > 1:
            problems.append(Problem("duplicate", key, f"committed by several parts: {sorted(parts)} "
                                                      "(readers take the newest)"))
    for part in b.list_dirs(CLIPS):
        for name in b.list_dirs(f"{CLIPS}/{part}"):
            path = f"{CLIPS}/{part}/{name}"
            if path not in referenced:
                problems.append(Problem("orphan", None, f"{path} has no commit record (an interrupted or "
                                                        "replaced write; the next writer of that part removes it)",
                                        path, part))
    return problems


def _check_entry(zarr, zstore, b, meta: StoreMeta, key: str, rec: dict, check_data: bool) -> list[Problem]:
    out: list[Problem] = []
    path = rec.get("path", "")
    if rec.get("schema_version") != SCHEMA_VERSION:
        out.append(Problem("record", key, f"record schema_version {rec.get('schema_version')}"))
    if not b.exists(f"{path}/{ZARR_JSON}"):
        return out + [Problem("missing", key, f"entry group {path} is missing", f"{path}/{ZARR_JSON}")]
    names = array_names(meta.kind)
    recorded = rec.get("arrays", {})
    if set(recorded) != set(names):
        out.append(Problem("record", key, f"record lists arrays {sorted(recorded)}, expected {sorted(names)}"))
    files = set(b.list_files(path))
    L, H = len(meta.layers), meta.hidden_size
    data: dict[str, np.ndarray] = {}
    for name in names:
        want = recorded.get(name)
        if want is None:
            continue
        adir = f"{path}/{name}"
        if f"{adir}/{ZARR_JSON}" not in files:
            out.append(Problem("missing", key, f"array {name!r} is missing", f"{adir}/{ZARR_JSON}"))
            continue
        try:
            arr = zarr.open_array(store=zstore, path=adir, mode="r", zarr_format=3)
        except Exception as e:
            out.append(Problem("corrupt", key, f"array {name!r} metadata unreadable: {type(e).__name__}: {e}",
                               f"{adir}/{ZARR_JSON}"))
            continue
        shape = tuple(arr.shape)
        if list(shape) != list(want["shape"]) or str(arr.dtype) != want["dtype"]:
            out.append(Problem("shape", key, f"{name}: stored {list(shape)} {arr.dtype}, record says "
                                             f"{want['shape']} {want['dtype']}", f"{adir}/{ZARR_JSON}"))
            continue
        stored = chunk_keys(shape, tuple(arr.shards or arr.chunks))
        lost = [c for c in stored if f"{adir}/{c}" not in files]
        if lost:
            out.append(Problem("missing", key, f"{name}: {len(lost)} chunk file(s) missing", f"{adir}/{lost[0]}"))
            continue
        if name in VLM_FLOAT_ARRAYS or name in JEPA_FLOAT_ARRAYS:
            if str(arr.dtype) != zarr_dtype(meta.storage_dtype):
                out.append(Problem("shape", key, f"{name}: dtype {arr.dtype}, store says {meta.storage_dtype}"))
        expected = _expected_shape(meta, name, shape, L, H)
        if expected is not None and shape != expected:
            out.append(Problem("shape", key, f"{name}: shape {list(shape)}, the store settings need {list(expected)}"))
        if check_data:
            try:
                data[name] = arr[...]
            except Exception as e:
                bad = _bad_file(b, adir, stored)
                out.append(Problem("corrupt", key, f"{name}: unreadable chunk ({type(e).__name__}: {e})",
                                   bad or adir))
    if not check_data:
        return out
    for name, a in data.items():
        if name in VLM_FLOAT_ARRAYS or name in JEPA_FLOAT_ARRAYS or name in VLM_MEAN_ARRAYS:
            f = from_storage(a, meta.storage_dtype) if name not in VLM_MEAN_ARRAYS else a
            if not np.isfinite(f).all():
                out.append(Problem("nonfinite", key, f"{name} holds {int((~np.isfinite(f)).sum())} NaN/Inf values",
                                   f"{path}/{name}"))
    if meta.kind == "vlm":
        for p in _check_vlm_content(key, rec, data):
            p.file = p.file or path
            out.append(p)
    return out


def _bad_file(b, adir: str, stored: list[str]) -> str | None:
    """The chunk/shard file of an array that fails its checksum (the first one), if it can be told."""
    from thinkjepa.cache_schema.encoding import checked

    if len(stored) == 1:
        return f"{adir}/{stored[0]}"
    for c in stored:
        raw = b.get(f"{adir}/{c}")
        try:
            checked(raw or b"", c)
        except CacheError:
            return f"{adir}/{c}"
    return None


def _expected_shape(meta: StoreMeta, name: str, shape: tuple, L: int, H: int) -> tuple | None:
    if meta.kind == "vlm":
        if name in VLM_FLOAT_ARRAYS:
            return (L, shape[1] if len(shape) == 3 else -1, H)
        if name in VLM_MEAN_ARRAYS:
            return (L, H)
        return None
    if name in JEPA_FLOAT_ARRAYS:
        return (*shape[:2], H) if len(shape) == 3 else (-1, -1, H)
    return None


def _check_vlm_content(key: str, rec: dict, d: dict[str, np.ndarray]) -> list[Problem]:
    out = []
    tokens = rec.get("tokens", {})
    for s in TOKEN_STREAMS:
        if s in d and d[s].shape[1] != tokens.get(s):
            out.append(Problem("shape", key, f"{s} holds {d[s].shape[1]} tokens, record says {tokens.get(s)}"))
    n_pre = d["prefill"].shape[1] if "prefill" in d else None
    for name in ("prefill_ids", "prefill_kind", "frame_index"):
        if name in d and n_pre is not None and d[name].shape[0] != n_pre:
            out.append(Problem("shape", key, f"{name} has {d[name].shape[0]} entries for {n_pre} prefill tokens"))
    if "generated_ids" in d and "generated" in d and d["generated_ids"].shape[0] != d["generated"].shape[1]:
        out.append(Problem("shape", key, "generated_ids and generated disagree on the token count"))
    if "prefill_kind" in d and "frame_index" in d and d["prefill_kind"].shape == d["frame_index"].shape:
        kind, frames = d["prefill_kind"], d["frame_index"]
        if not np.isin(kind, (TOKEN_TEXT, TOKEN_VISION)).all():
            out.append(Problem("content", key, "prefill_kind holds values other than text/vision"))
        vision = kind == TOKEN_VISION
        if (frames[vision] < 0).any() or (frames[~vision] != -1).any():
            out.append(Problem("content", key, "frame_index disagrees with prefill_kind"))
    return out
