"""``tj-extract status``: per shard, which windows are done, stale, failed or pending.

Computed from the manifest, the config and the store alone (no engine start): a window is
*done* when the store holds it with the fingerprint the current config gives it, *stale*
when it holds it with another fingerprint (prompt template, frames, token budget, the
episode's content... changed: the runner's own ``plan_clips`` + ``fingerprints_of``),
*failed* when its last attempt failed, *pending* otherwise. Entries the store holds for
windows the manifest no longer yields are *orphans* (kept, never read by training). The
counting rule is ``stage_run.tally_windows``, shared with the encode stage and `tj status`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thinkjepa.config import PipelineConfig
from thinkjepa.data.content import UNREADABLE
from thinkjepa.extract.fingerprint import FINGERPRINT_VERSION
from thinkjepa.extract.runner import episode_files_digest, fingerprints_of, open_reader, plan_clips
from thinkjepa.plan_memo import cached_plan, plan_key, root_listing
from thinkjepa.provenance import stage_fingerprint
from thinkjepa.stage_run import (
    PlannedClip,
    cached_status,
    file_identity,
    infer_shard_count,
    listing_cache_dir,
    tally_windows,
)

if TYPE_CHECKING:
    from thinkjepa.data.listing import DatasetListing


def extraction_status(cfg: PipelineConfig, shards: int | None = None, list_limit: int | None = None,
                      listing: DatasetListing | None = None) -> dict[str, Any]:
    """JSON-able status of the VLM store against the current config.

    ``shards``: how to group windows (default: the count the store was written with, else 1).
    ``list_limit``: cap the key lists per category (counts stay exact).
    ``listing``: the dataset listing of ``data.root`` the caller made already (else made here).
    """
    url = cfg.url(cfg.thinker.cache)
    reader = open_reader(url)
    listing = listing or root_listing(cfg)
    inputs = {
        "manifest": file_identity(cfg.path(cfg.data.manifest)), "episodes": episode_files_digest(cfg, listing),
        "settings": cfg.section_fingerprint("thinker", "sampling"), "version": FINGERPRINT_VERSION,
        "stage": stage_fingerprint("extract", {"thinker": (cfg.thinker.model, cfg.thinker.revision)}),
        "shards": shards, "list_limit": list_limit,
    }
    return cached_status(cfg, "extract", reader, inputs,
                         lambda: _compute(cfg, url, reader, shards, list_limit, plan_key(cfg, inputs, listing)))


def _compute(cfg: PipelineConfig, url: str, reader: Any, shards: int | None, list_limit: int | None,
             key: tuple[dict[str, Any], int] | None) -> dict[str, Any]:
    from thinkjepa.extract.runner import PromptCache

    briefs = reader.briefs(listing_cache_dir(cfg)) if reader is not None else {}
    failures = reader.failures(briefs) if reader is not None else {}
    n = shards or infer_shard_count(b[2] for b in briefs.values())

    def plan() -> tuple[list[PlannedClip], bool]:
        plans = plan_clips(cfg, shards=n)
        fps = iter(fingerprints_of(cfg, [it for p in plans for it in p.items]))
        planned = [PlannedClip(p.clip_id, p.shard, [(it.key, next(fps)) for it in p.items], p.problem) for p in plans]
        # an unreadable file is read again by the next plan (it may be readable by then)
        keep = not any(p.failed_keys or any(it.episode.startswith(UNREADABLE) for it in p.items) for p in plans)
        return planned, keep

    if key is None:
        planned = plan()[0]
    else:
        planned = cached_plan(cfg, "extract", {**key[0], "shards": n, "prompts": PromptCache.VERSION}, key[1], plan)
    tally = tally_windows(planned, n, {k: b[0] for k, b in briefs.items()}, failures, list_limit)
    return {"cache": url, "manifest": str(cfg.path(cfg.data.manifest)), "store_exists": reader is not None, **tally}
