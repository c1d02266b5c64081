"""Shard planning: which clips shard ``i`` of ``N`` of a sharded stage (extract, encode) works on.

A clip's shard is the sha256 digest of its clip id, read as an integer, modulo ``N``. The
assignment depends on the clip id alone, never on the position of the clip in the manifest,
so adding (or removing) clips never moves an existing clip to another shard: a job array
keeps resuming the work it already has. All windows of a clip go to the same shard, so the video is decoded once.
Changing ``N`` does move clips; each ``(i, N)`` writes its own store part.

It lives in the core, not in a stage: both sharded stages and the pipeline's status share it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

_PART_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})$")


def validate_shard(index: int, count: int) -> tuple[int, int]:
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1} (shards are zero-based: I/N with 0 <= I < N)")
    return index, count


def shard_of(clip_id: str, count: int) -> int:
    """Shard of ``clip_id`` among ``count`` shards (stable across runs, machines, Python versions)."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    # sha256 rather than hash(): Python's str hash is salted per process. The whole digest as
    # one integer, so every shard count sees all of its bits.
    digest = hashlib.sha256(clip_id.encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % count


def part_name(index: int, count: int) -> str:
    """Name of the store part written by shard ``index`` of ``count``: ``shard-00003-of-00008``."""
    validate_shard(index, count)
    return f"shard-{index:05d}-of-{count:05d}"


def parse_part_name(name: str) -> tuple[int, int] | None:
    """Inverse of ``part_name``; None for a part that was not written by a shard runner."""
    m = _PART_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def select_shard(clip_ids: Iterable[str], index: int, count: int) -> list[str]:
    """The clip ids of shard ``index`` of ``count``, in their input order."""
    validate_shard(index, count)
    return [c for c in clip_ids if shard_of(c, count) == index]


def plan_shards(clip_ids: Sequence[str], count: int) -> list[list[str]]:
    """Every shard's clip ids (``result[i]`` is shard i); a partition of ``clip_ids``."""
    validate_shard(0, count)
    out: list[list[str]] = [[] for _ in range(count)]
    for c in clip_ids:
        out[shard_of(c, count)].append(c)
    return out
