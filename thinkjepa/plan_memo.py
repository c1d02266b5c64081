"""The last window plan of each sharded stage (extract, encode), kept under the workdir.

Planning a 340k-episode manifest in Python (each clip's prompt and content fingerprint, a
sha256 per window) was most of a cold `tj status` (29 CPU s), and most calls plan what the
last one planned: a shard committed (so the kept status no longer holds), or another shard
count or list limit was asked for. A stage's plan (per clip: its shard, its windows as
``(key, fingerprint)``, or why it yields none) is a function of the manifest, the episode
files, the stage's settings and its code, and is kept keyed by all of them
(``<workdir>/.thinkjepa/plan-<stage>.parquet``):

- the manifest's path and identity (size, mtime, inode) and ``data.root``;
- the episode files' identity (``extract.runner.episode_files_digest``: name, size, mtime and
  inode of every file under ``data.root``, from the listing the status makes anyway);
- what the caller adds: the stage's settings sections, fingerprint version, stage fingerprint
  (code, engines, model identity) and the versions of the prompt and content memos;
- the shard count, and the code that plans (``PLAN_CODE``).

It is used only when the whole key is equal (any changed input plans afresh), and only when
it was written more than ``RACY_S`` after the newest of those files changed (an edit within
the same clock tick as the listing leaves its mtime unchanged). A plan with a clip that could
not be read (an unreadable episode file: the next plan reads it again) is not kept. A file of
another version, torn or unreadable is ignored, never trusted.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinkjepa.config import PipelineConfig
from thinkjepa.stage_run import PlanColumns, PlannedClip, listing_cache_dir

if TYPE_CHECKING:
    from thinkjepa.data.listing import DatasetListing

VERSION = 1
_META = b"thinkjepa.plan"
PLAN_CODE = ("plan_memo.py", "stage_run.py", "shards.py", "sampling.py", "data/content.py", "data/manifest.py",
             "extract/runner.py", "extract/encode.py", "extract/fingerprint.py", "extract/prompt.py")
"""The modules that plan (beyond each stage's own code, in its stage fingerprint): a change to
any of them plans afresh."""


def memo_path(cfg: PipelineConfig, stage: str) -> Path:
    return Path(cfg.workdir) / ".thinkjepa" / f"plan-{stage}.parquet"


def root_listing(cfg: PipelineConfig) -> DatasetListing | None:
    """The dataset listing of ``data.root`` (one stat per file), None when it is no folder."""
    from thinkjepa.data.listing import dataset_listing

    if cfg.data.root and Path(cfg.data.root).is_dir():
        return dataset_listing(cfg.data.root, listing_cache_dir(cfg))
    return None


def plan_key(cfg: PipelineConfig, inputs: dict[str, Any], listing: DatasetListing | None) -> tuple[dict[str, Any], int] | None:
    """The memo key of a stage's plan from its status ``inputs`` (all but the shard count and
    list limit asked for), and the newest mtime among the files it identifies. None (the plan
    is not kept) unless the episodes are the listed files under ``data.root``: a manifest whose
    paths are not relative to the root (an older one) may name files the listing does not see."""
    import pyarrow.parquet as pq

    from thinkjepa.data.content import VERSION as CONTENT_VERSION
    from thinkjepa.data.manifest import manifest_provenance
    from thinkjepa.provenance import code_digest

    manifest = cfg.path(cfg.data.manifest)
    if listing is None or inputs.get("manifest") is None or not inputs.get("episodes"):
        return None
    try:
        if (manifest_provenance(pq.read_schema(manifest)) or {}).get("paths_relative_to") != "root" \
                and not _absolute_under(manifest, str(cfg.data.root)):
            return None
    except (OSError, ValueError):
        return None
    key = {k: v for k, v in inputs.items() if k not in ("shards", "list_limit")}
    key.update(manifest_path=str(manifest), data_root=str(Path(str(cfg.data.root)).resolve()),
               content=CONTENT_VERSION, code=code_digest(PLAN_CODE))
    return key, max(int(inputs["manifest"][1]), listing.newest_mtime_ns)


def _absolute_under(manifest: Path, root: str) -> bool:
    """Whether every episode path of a manifest that stores them as they are (written before
    paths relative to the root) is a plain absolute path under ``root``: one pass over the two
    columns in Arrow."""
    import os

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from thinkjepa.data.manifest import PATH_COLUMNS

    prefixes = {os.path.normpath(root).rstrip("/") + "/", str(Path(root).resolve()).rstrip("/") + "/"}
    table = pq.read_table(manifest, columns=list(PATH_COLUMNS))
    for name in PATH_COLUMNS:
        col = table.column(name)
        if col.null_count or pc.any(pc.match_substring_regex(col, r"(^|/)\.\.?(/|$)|//")).as_py():
            return False
        under = None
        for prefix in prefixes:
            hit = pc.starts_with(col, prefix)
            under = hit if under is None else pc.or_(under, hit)
        if not pc.all(under).as_py():
            return False
    return True


def cached_plan(
    cfg: PipelineConfig,
    stage: str,
    key: dict[str, Any] | None,
    newest_input_ns: int,
    compute: Callable[[], tuple[list[PlannedClip], bool]],
) -> list[PlannedClip] | PlanColumns:
    """The plan kept for ``key``, else ``compute()`` (the plan and whether it may be kept),
    kept for the next call. ``key`` None: inputs that cannot be identified, never kept.
    ``newest_input_ns``: the newest mtime among the files the key identifies."""
    if key is None:
        return compute()[0]
    key = {**json.loads(json.dumps(key)), "version": VERSION}
    path = memo_path(cfg, stage)
    got = load(path, key)
    if got is not None:
        return got
    clips, keep = compute()
    planned = PlanColumns.of(clips)
    trusted = (time.time_ns() - newest_input_ns) / 1e9 > _racy_s()
    if keep and trusted:
        try:
            save(path, key, planned)
        except OSError:
            pass  # a memo: the next call plans again
    return planned


def _racy_s() -> float:
    from thinkjepa.cache_schema.record_listing import RACY_S

    return RACY_S


def save(path: Path, key: dict[str, Any], plan: PlanColumns) -> None:
    """Write the plan atomically (a reader sees the old file or the whole new one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thinkjepa.cache_schema.fsio import atomic_write_bytes

    offsets = pa.array(plan.offsets.astype("int32"))
    table = pa.table({
        "clip_id": plan.clip_ids,
        "shard": pa.array(plan.shards.astype("int32")),
        "problem": plan.problems,
        "keys": pa.ListArray.from_arrays(offsets, plan.keys),
        "fingerprints": pa.ListArray.from_arrays(offsets, plan.fingerprints),
    }).replace_schema_metadata({_META: json.dumps({"key": key}).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue(), durable=False)


def load(path: Path, key: dict[str, Any]) -> PlanColumns | None:
    """The plan in ``path`` if it was kept for ``key``; None when missing, of another key or
    version, torn or inconsistent. Kept in columns: no Python object per window."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        if json.loads(meta.get(_META, b"{}")).get("key") != key:
            return None
        table = pq.read_table(path)
        keys, fps = table.column("keys").combine_chunks(), table.column("fingerprints").combine_chunks()
        if not (isinstance(keys, pa.ListArray) and isinstance(fps, pa.ListArray)
                and keys.offsets.equals(fps.offsets) and keys.null_count == 0):
            return None
        offsets = np.asarray(keys.offsets.to_numpy(zero_copy_only=False), np.int64)
        plan = PlanColumns(
            clip_ids=table.column("clip_id").combine_chunks().cast(pa.string()),
            shards=np.asarray(table.column("shard").to_numpy(), np.int64),
            problems=table.column("problem").combine_chunks().cast(pa.string()),
            offsets=offsets - offsets[0],
            keys=keys.flatten().cast(pa.string()),
            fingerprints=fps.flatten().cast(pa.string()),
        )
        if table.column("clip_id").null_count or table.column("shard").null_count \
                or plan.fingerprints.null_count or len(plan.keys) != plan.offsets[-1]:
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, pa.ArrowException):
        return None  # missing, torn or foreign: planned afresh
    return plan
