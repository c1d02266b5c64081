"""The commit-record listing behind status and planning: per part, incremental, never stale."""

from __future__ import annotations

import os
import shutil

from cache_testdata import vlm_entry, vlm_meta

from thinkjepa.cache_schema import CacheReader, CacheWriter, record_listing


def _commit(url: str, part: str, keys: list[str], fingerprint: str, seed: int = 0) -> None:
    with CacheWriter(url, vlm_meta(), part=part) as w:
        for i, key in enumerate(keys):
            w.commit(vlm_entry(key, seed + i, n_prefill=6, n_generated=2, fingerprint=fingerprint))


def _from_records(url: str) -> dict[str, tuple[str, float, str]]:
    return {r["key"]: (r["fingerprint"], float(r["committed_at"]), r["part"]) for r in CacheReader(url).records()}


def test_briefs_match_the_records_on_every_store_type(store_url, tmp_path):
    _commit(store_url, "shard-00000-of-00002", ["a/0@9", "a/1@9"], "fp-a")
    _commit(store_url, "shard-00001-of-00002", ["b/0@9"], "fp-b")
    briefs = CacheReader(store_url).briefs(str(tmp_path / "listing"))
    assert briefs == _from_records(store_url)
    assert {k: b[0] for k, b in briefs.items()} == {"a/0@9": "fp-a", "a/1@9": "fp-a", "b/0@9": "fp-b"}


def _legacy(url: str) -> None:
    """The store as written before catalogs existed (records only): the summaries' case."""
    shutil.rmtree(os.path.join(url, "catalog"))


def test_cached_summaries_see_new_replaced_and_removed_records(tmp_path, monkeypatch):
    url, cache = str(tmp_path / "c.zarr"), str(tmp_path / "listing")
    part = "shard-00000-of-00001"
    _commit(url, part, ["a/0@9", "a/1@9", "a/2@9"], "fp-1")
    _legacy(url)
    reads: list[str] = []
    real_brief = record_listing._brief
    monkeypatch.setattr(record_listing, "_brief", lambda raw, p: reads.append(p) or real_brief(raw, p))

    assert CacheReader(url).briefs(cache) == _from_records(url)
    assert len(reads) == 3
    # Nothing changed, but the folder was written moments ago (same clock tick as a commit
    # could be): the part is re-listed, yet no record is read again.
    reads.clear()
    assert CacheReader(url).briefs(cache) == _from_records(url)
    assert reads == []

    # one record replaced (new fingerprint), one added, one removed: exactly those are re-read
    _commit(url, part, ["a/1@9", "a/3@9"], "fp-2", seed=10)
    _legacy(url)
    os.unlink(tmp_path / "c.zarr" / "index" / part / "a~2F0~409.json")
    reads.clear()
    briefs = CacheReader(url).briefs(cache)
    assert briefs == _from_records(url)
    assert set(briefs) == {"a/1@9", "a/2@9", "a/3@9"} and briefs["a/1@9"][0] == "fp-2"
    assert len(reads) == 2

    # an old, settled folder is trusted from its summary: no listing of its records at all
    folder = tmp_path / "c.zarr" / "index" / part
    os.utime(folder, ns=(folder.stat().st_atime_ns, folder.stat().st_mtime_ns - 10**10))
    CacheReader(url).briefs(cache)  # summary now taken long after the folder's mtime
    (summary,) = [p for p in (tmp_path / "listing").iterdir() if not p.name.endswith(".files.json")]
    written = summary.stat().st_mtime_ns
    assert CacheReader(url).briefs(cache) == briefs
    assert summary.stat().st_mtime_ns == written  # taken from the summary, not re-listed


def test_a_damaged_summary_only_costs_a_relisting(tmp_path):
    url, cache = str(tmp_path / "c.zarr"), tmp_path / "listing"
    _commit(url, "p0", ["a/0@9"], "fp-1")
    _legacy(url)
    CacheReader(url).briefs(str(cache))
    for f in cache.iterdir():
        f.write_text("{ torn")
    assert CacheReader(url).briefs(str(cache)) == _from_records(url)
