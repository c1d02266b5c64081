"""``tj-extract status``: per shard, which windows are done, stale, failed or pending.

Computed from the manifest, the config and the store alone (no engine start): a window is
*done* when the store holds it with the fingerprint the current config gives it, *stale*
when it holds it with another fingerprint (prompt template, frames, token budget... changed),
*failed* when its last attempt failed, *pending* otherwise. Entries the store holds for
windows the manifest no longer yields are *orphans* (kept, never read by training).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from thinkjepa.config import PipelineConfig
from thinkjepa.extract.runner import fingerprint_of, open_reader, plan_clips
from thinkjepa.extract.shards import parse_part_name, part_name


def _infer_shard_count(parts: list[str]) -> int:
    """The shard count the store was written with (the most common one if it changed)."""
    counts = Counter(p[1] for p in map(parse_part_name, parts) if p is not None)
    return counts.most_common(1)[0][0] if counts else 1


def extraction_status(cfg: PipelineConfig, shards: int | None = None, list_limit: int | None = None) -> dict[str, Any]:
    """JSON-able status of the VLM store against the current config.

    ``shards``: how to group windows (default: the count the store was written with, else 1).
    ``list_limit``: cap the key lists per category (counts stay exact).
    """
    url = cfg.url(cfg.thinker.cache)
    reader = open_reader(url)
    records = reader.records() if reader is not None else []
    failures = reader.failures() if reader is not None else {}
    n = shards or _infer_shard_count([r["part"] for r in records])
    stored = {r["key"]: r for r in records}

    per_shard = [
        {"shard": part_name(i, n), "index": i, "clips": 0, "windows": 0, "done": 0, "stale": 0, "failed": 0, "pending": 0}
        for i in range(n)
    ]
    lists: dict[str, Any] = {"done": [], "stale": [], "pending": [], "failed": {}}
    planned: set[str] = set()
    for plan in plan_clips(cfg, shards=n):
        row = per_shard[plan.shard]
        row["clips"] += 1
        if plan.problem:
            # A clip with no windows counts as one failed unit under its clip id.
            row["failed"] += 1
            lists["failed"][plan.clip_id] = plan.problem
            continue
        for item in plan.items:
            planned.add(item.key)
            row["windows"] += 1
            rec = stored.get(item.key)
            if rec is not None and rec["fingerprint"] == fingerprint_of(cfg, item):
                state = "done"
            elif rec is not None:
                state = "stale"
            elif item.key in failures:
                state = "failed"
            else:
                state = "pending"
            row[state] += 1
            if state == "failed":
                lists["failed"][item.key] = failures[item.key]
            else:
                lists[state].append(item.key)

    for row in per_shard:
        row["complete"] = row["done"] == row["windows"] and row["failed"] == 0
    orphans = sorted(set(stored) - planned)
    totals = {k: sum(r[k] for r in per_shard) for k in ("clips", "windows", "done", "stale", "failed", "pending")}
    totals["orphans"] = len(orphans)

    def cap(v: Any) -> Any:
        if list_limit is None:
            return v
        return dict(list(v.items())[:list_limit]) if isinstance(v, dict) else v[:list_limit]

    return {
        "cache": url,
        "manifest": str(cfg.path(cfg.data.manifest)),
        "store_exists": reader is not None,
        "shard_count": n,
        "totals": totals,
        "complete": totals["done"] == totals["windows"] and totals["failed"] == 0,
        "shards": per_shard,
        "stale": cap(lists["stale"]),
        "failed": cap(lists["failed"]),
        "pending": cap(lists["pending"]),
        "orphans": cap(orphans),
    }
