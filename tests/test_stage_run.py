"""The loop every sharded stage runs after planning (``stage_run.run_batches``): one decode per
clip, batches of the configured size, every result committed on its own into a real store, and
each failure recorded with the step that failed while the shard goes on."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from thinkjepa.cache_schema import CacheReader, CacheWriter, JEPAEntry, StoreMeta
from thinkjepa.stage_run import ShardSummary, run_batches

HIDDEN = 16


@dataclass(frozen=True)
class Item:
    key: str
    clip_id: str


def _entry(key: str, hidden: int = HIDDEN) -> JEPAEntry:
    rng = np.random.default_rng(list(key.encode()))
    return JEPAEntry(key=key, past=rng.standard_normal((4, 6, hidden)).astype(np.float32),
                     future=rng.standard_normal((2, 6, hidden)).astype(np.float32),
                     past_frames=np.arange(8, dtype=np.int32), future_frames=np.arange(8, 12, dtype=np.int32),
                     provenance={}, fingerprint=f"fp-{key}")


def test_decode_once_per_clip_batch_commit_and_record_every_failure(tmp_path):
    items = [Item("a/0@8", "a"), Item("a/1@8", "a"), Item("b/0@8", "b"),
             Item("c/0@8", "c"), Item("c/1@8", "c"), Item("c/2@8", "c"), Item("d/0@8", "d")]
    decoded: list[str] = []
    batches: list[list[str]] = []

    def decode(group: list[Item]):
        decoded.append(group[0].clip_id)
        if group[0].clip_id == "b":
            raise OSError("moov atom not found")
        return lambda it: f"frames of {it.key}"

    def run_batch(batch: list[Item], payloads: list[str]):
        batches.append([it.key for it in batch])
        assert payloads == [f"frames of {it.key}" for it in batch]
        return [RuntimeError("prompt too long") if it.key == "c/1@8"
                else _entry(it.key, hidden=8 if it.clip_id == "d" else HIDDEN) for it in batch]

    meta = StoreMeta(kind="jepa", model="tiny/vjepa2", revision=None, layers=[], layer_convention="encoder_last",
                     hidden_size=HIDDEN, storage_dtype="float32", extra={})
    url = str(tmp_path / "jepa.zarr")
    summary = ShardSummary(part="shard-00000-of-00001", skipped=["z/0@8"])
    with CacheWriter(url, meta, part=summary.part) as writer:
        run_batches(items, decode=decode, decode_errors=(OSError,), run_batch=run_batch, batch_size=2, sink=writer,
                    summary=summary, stage="encode", engine_step="engine", total=len(items) + 1, progress=False)

    assert decoded == ["a", "b", "c", "d"]  # each clip's frames decoded once, in plan order
    assert batches == [["a/0@8", "a/1@8"], ["c/0@8", "c/1@8"], ["c/2@8", "d/0@8"]]
    assert summary.done == ["a/0@8", "a/1@8", "c/0@8", "c/2@8"]
    assert summary.failed["b/0@8"].startswith("decode: OSError: moov atom not found")
    assert summary.failed["c/1@8"] == "engine: RuntimeError: prompt too long"
    assert summary.failed["d/0@8"].startswith("commit: ")  # another hidden size than the store's
    assert set(summary.failed) == {"b/0@8", "c/1@8", "d/0@8"}

    reader = CacheReader(url)
    assert sorted(reader.keys()) == sorted(summary.done)
    assert reader.failures() == summary.failed  # what the summary says is what the store says
    np.testing.assert_array_equal(reader.get("c/2@8").past, _entry("c/2@8").past)


class _Sink:
    """A real writer, with a hook before every commit (what the test wants to see or break)."""

    def __init__(self, writer: CacheWriter, before_commit) -> None:
        self.writer, self.before_commit, self.committed = writer, before_commit, []

    def commit(self, entry):
        self.before_commit(entry.key)
        out = self.writer.commit(entry)
        self.committed.append(entry.key)
        return out

    def record_failure(self, key, reason):
        return self.writer.record_failure(key, reason)

    def flush(self):
        return self.writer.flush()


META = StoreMeta(kind="jepa", model="tiny/vjepa2", revision=None, layers=[], layer_convention="encoder_last",
                 hidden_size=HIDDEN, storage_dtype="float32", extra={})


def _items(n: int) -> list[Item]:
    return [Item(f"c{i}/0@8", f"c{i}") for i in range(n)]


def test_the_engine_runs_the_next_batch_while_the_last_one_commits(tmp_path):
    items = _items(6)
    second_batch_started = threading.Event()
    seen_during_first_commit: list[bool] = []
    calls: list[int] = []

    def run_batch(batch, payloads):
        calls.append(len(calls))
        if len(calls) == 2:
            second_batch_started.set()
        return [_entry(it.key) for it in batch]

    def before_commit(key):
        if key == items[0].key:  # batch 1's first commit waits for the engine to take batch 2
            seen_during_first_commit.append(second_batch_started.wait(timeout=60))

    url = str(tmp_path / "jepa.zarr")
    summary = ShardSummary(part="shard-00000-of-00001")
    with CacheWriter(url, META, part=summary.part) as writer:
        sink = _Sink(writer, before_commit)
        run_batches(items, decode=lambda g: (lambda it: None), decode_errors=(OSError,), run_batch=run_batch,
                    batch_size=2, sink=sink, summary=summary, stage="encode", engine_step="engine",
                    total=len(items), progress=False)
    assert seen_during_first_commit == [True]  # serially, batch 2 could not start before this commit ended
    assert sink.committed == summary.done == [it.key for it in items]  # one at a time, in plan order
    assert sorted(CacheReader(url).keys()) == sorted(summary.done)


def test_a_disk_error_of_a_commit_stops_the_shard_and_keeps_what_was_committed(tmp_path):
    items = _items(6)
    engine_calls: list[int] = []

    def run_batch(batch, payloads):
        engine_calls.append(1)
        return [_entry(it.key) for it in batch]

    def before_commit(key):
        if key == items[2].key:
            raise OSError(28, "No space left on device")

    url = str(tmp_path / "jepa.zarr")
    summary = ShardSummary(part="shard-00000-of-00001")
    with CacheWriter(url, META, part=summary.part) as writer:
        sink = _Sink(writer, before_commit)
        with pytest.raises(OSError, match="No space left"):
            run_batches(items, decode=lambda g: (lambda it: None), decode_errors=(), run_batch=run_batch,
                        batch_size=2, sink=sink, summary=summary, stage="encode", engine_step="engine",
                        total=len(items), progress=False)
    # batch 2's commit failed while the engine ran batch 3; nothing after it was committed
    assert sink.committed == summary.done == [items[0].key, items[1].key]
    assert len(engine_calls) == 3 and not summary.failed
    assert sorted(CacheReader(url).keys()) == sorted(summary.done)


def _tally_per_window(planned, shard_count, fingerprints, failures, list_limit=None):
    """The counting rule written one window at a time (how ``tally_windows`` read before it
    counted in columns): the reference the columnar count must equal."""
    per_shard = [{"clips": 0, "windows": 0, "done": 0, "stale": 0, "failed": 0, "pending": 0} for _ in range(shard_count)]
    lists = {"stale": [], "pending": [], "failed": {}}
    planned_keys = set()
    for plan in planned:
        row = per_shard[plan.shard]
        row["clips"] += 1
        if plan.problem:
            row["failed"] += 1
            lists["failed"][plan.clip_id] = plan.problem
            continue
        for key, fp in plan.windows:
            planned_keys.add(key)
            row["windows"] += 1
            have = fingerprints.get(key)
            state = "done" if have == fp else "stale" if have is not None else "failed" if key in failures else "pending"
            row[state] += 1
            if state == "failed":
                lists["failed"][key] = failures[key]
            elif state != "done":
                lists[state].append(key)
    orphans = sorted(set(fingerprints) - planned_keys)

    def cap(v):
        if list_limit is None:
            return v
        return dict(list(v.items())[:list_limit]) if isinstance(v, dict) else v[:list_limit]

    return per_shard, {k: cap(v) for k, v in lists.items()}, cap(orphans), len(orphans)


@pytest.mark.parametrize("seed", range(12))
def test_the_columnar_tally_counts_as_the_per_window_rule(seed):
    """Random plans (problem clips, some with windows; a key planned twice; failures, stale and
    orphan entries; empty clips) counted in columns, from clips or from the kept plan's
    columns, give exactly the per-window rule's counts and lists, in plan order."""
    import random

    from thinkjepa.stage_run import PlanColumns, PlannedClip, tally_windows

    rng = random.Random(seed)
    n = rng.randint(1, 5)
    planned = []
    for c in range(rng.randint(0, 30)):
        windows = [(f"c{c}@{w}", f"fp{rng.randint(0, 1)}") for w in range(rng.randint(0, 4))]
        if windows and rng.random() < 0.1:
            windows.append(windows[0])  # a key planned twice counts twice
        problem = rng.choice([None] * 6 + ["", "unreadable video", "too short"])
        planned.append(PlannedClip(f"c{c}", rng.randrange(n), windows, problem))
    keys = [k for p in planned for k, _ in p.windows]
    fingerprints = {k: f"fp{rng.randint(0, 2)}" for k in keys if rng.random() < 0.6}
    fingerprints.update({f"gone@{i}": "fp0" for i in range(rng.randint(0, 3))})
    failures = {k: f"boom {k}" for k in keys if rng.random() < 0.2}
    failures.update({"c0": "clip-level failure record"} if rng.random() < 0.5 else {})
    limit = rng.choice([None, 0, 1, 3])
    shards, lists, orphans, n_orphans = _tally_per_window(planned, n, fingerprints, failures, limit)
    for given in (planned, PlanColumns.of(planned)):
        got = tally_windows(given, n, fingerprints, failures, limit)
        assert [{k: r[k] for k in shards[0]} for r in got["shards"]] == shards
        assert {k: got[k] for k in lists} == lists
        assert list(got["failed"]) == list(lists["failed"])  # plan order
        assert got["orphans"] == orphans and got["totals"]["orphans"] == n_orphans
        assert got["complete"] == all(r["done"] == r["windows"] and r["failed"] == 0 for r in shards)
    assert PlanColumns.of(planned).clips() == planned

