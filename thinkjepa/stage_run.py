"""What the sharded, resumable stages (extract, encode) share: their summary, how a failure
is worded, their progress bar, how they read the manifest, and the loop that turns a shard's
remaining work into committed entries (``run_batches``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from thinkjepa.config import PipelineConfig
from thinkjepa.logs import project_console


@dataclass
class ShardSummary:
    """What one run over a shard did. ``failed`` maps key -> reason (a clip id for a clip
    that yields no window)."""

    part: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def failure_reason(stage: str, exc: BaseException) -> str:
    """One line naming the step that failed and why (kept in the cache's failure record)."""
    msg = " ".join(str(exc).split()) or "(no message)"
    return f"{stage}: {type(exc).__name__}: {msg}"[:2000]


def progress_bar(enabled: bool, label: str) -> Progress:
    """A rich bar on stderr with a free ``status`` field (failures so far, loss, ...)."""
    return Progress(
        TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        # THINKJEPA_PROGRESS=0: `tj run` / `tj demo --no-progress` switch every stage's bar off
        console=project_console(), disable=not enabled or os.environ.get("THINKJEPA_PROGRESS") == "0",
    )


class WorkItem(Protocol):
    """One window of a sharded stage: its cache key and the clip whose frames it needs."""

    @property
    def key(self) -> str: ...

    @property
    def clip_id(self) -> str: ...


class EntrySink(Protocol):
    """Where a stage's results go (a ``CacheWriter``): commit one entry, or record a failure."""

    def commit(self, entry: Any) -> Any: ...

    def record_failure(self, key: str, reason: str) -> Any: ...

    def flush(self) -> Any: ...


ItemT = TypeVar("ItemT", bound=WorkItem)
PayloadT = TypeVar("PayloadT")


def _by_clip(items: Sequence[ItemT]) -> Iterator[list[ItemT]]:
    # planning emits a clip's windows together, so one pass finds each clip's group
    group: list[ItemT] = []
    for it in items:
        if group and it.clip_id != group[0].clip_id:
            yield group
            group = []
        group.append(it)
    if group:
        yield group


def run_batches(
    todo: Sequence[ItemT],
    *,
    decode: Callable[[list[ItemT]], Callable[[ItemT], PayloadT]],
    decode_errors: tuple[type[BaseException], ...],
    run_batch: Callable[[list[ItemT], list[PayloadT]], list[Any]],
    batch_size: int,
    sink: EntrySink,
    summary: ShardSummary,
    stage: str,
    engine_step: str,
    total: int,
    progress: bool,
) -> None:
    """The body of a sharded stage, after planning and skipping: decode each clip's frames once
    (``decode(group)`` returns what one item's request is made of), send ``batch_size`` requests
    per ``run_batch`` call, commit every result on its own, and record every failure with the
    step that failed (decode, ``engine_step``, commit) while the shard goes on.

    ``run_batch(items, payloads)`` returns, per item in order, the entry to commit or the
    exception that item failed with. A commit that raises ValueError (the entry does not fit
    the store) fails that item only.

    Batch k is committed on one writer thread while the engine runs batch k+1, so the engine
    does not wait for the disk; commits still happen one at a time and in order (batch k's end
    before k+1's begin). Any other error of a commit (a full disk) stops the shard at the next
    batch boundary, as it would without the thread; entries not committed are redone by the
    next run, as after a kill.

    SIGINT / SIGTERM (``thinkjepa.interrupts``) stop it at the next batch boundary: the batch in
    flight is committed, results that failed after the signal (vLLM's engine core dies on a
    group Ctrl-C) are dropped, not recorded as failures, and ``StageInterrupted`` is raised."""
    from thinkjepa import interrupts

    with interrupts.cooperative():
        _run_batches(todo, decode=decode, decode_errors=decode_errors, run_batch=run_batch, batch_size=batch_size,
                     sink=sink, summary=summary, stage=stage, engine_step=engine_step, total=total, progress=progress)
    interrupts.check(f"{len(summary.done)} {stage} entr(ies) committed by this run are kept; "
                     "rerun the same command to resume (nothing was recorded as failed by the stop)")


def _run_batches(todo, *, decode, decode_errors, run_batch, batch_size, sink, summary, stage, engine_step, total,
                 progress) -> None:
    from thinkjepa.interrupts import requested

    pending: list[tuple[ItemT, PayloadT]] = []
    lock = threading.RLock()  # the sink, the summary and the bar are shared by both threads

    with progress_bar(progress, f"{stage} {summary.part}") as bar, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{stage}-commit") as committer:
        task = bar.add_task(stage, total=total, completed=len(summary.skipped), status="")
        in_flight: list[Future[None]] = []

        def advance() -> None:
            with lock:
                bar.update(task, advance=1, status=f"[red]{len(summary.failed)} failed[/red]" if summary.failed else "")

        def fail(key: str, reason: str) -> None:
            with lock:
                summary.failed[key] = reason
                sink.record_failure(key, reason)

        def commit_all(batch: list[tuple[ItemT, PayloadT]], outs: list[Any]) -> None:
            for (item, _), out in zip(batch, outs):
                if isinstance(out, BaseException) and requested():
                    continue  # failed because of the stop (a dead engine), not because of the input
                if isinstance(out, BaseException):
                    fail(item.key, failure_reason(engine_step, out))
                else:
                    try:
                        with lock:
                            sink.commit(out)
                    except ValueError as e:  # CacheError: the result does not fit the store
                        fail(item.key, failure_reason("commit", e))
                    else:
                        with lock:
                            summary.done.append(item.key)
                advance()
            with lock:
                sink.flush()  # the batch into the store's catalog (its records are already the truth)

        def wait_for_commits() -> None:
            while in_flight:
                in_flight.pop().result()  # a commit's error (OSError, a power cut) is raised here

        def flush() -> None:
            if not pending:
                return
            batch = list(pending)
            pending.clear()
            outs = run_batch([it for it, _ in batch], [p for _, p in batch])
            if len(outs) != len(batch):
                raise RuntimeError(f"{engine_step}: {len(outs)} results for {len(batch)} requests")
            wait_for_commits()
            in_flight.append(committer.submit(commit_all, batch, outs))

        for group in _by_clip(todo):
            if requested():
                break  # stop submitting; what is pending is neither run nor recorded
            try:
                payload_of = decode(group)
            except decode_errors as e:
                for it in group:
                    fail(it.key, failure_reason("decode", e))
                    advance()
                continue
            for it in group:
                pending.append((it, payload_of(it)))
                if len(pending) >= batch_size and not requested():
                    flush()
        if not requested():
            flush()
        wait_for_commits()


def listing_cache_dir(cfg: PipelineConfig) -> str:
    """Where summaries of the caches' commit records are kept (see ``record_listing``)."""
    return str(cfg.path("{workdir}/state/listing"))


def manifest_rows(cfg: PipelineConfig, clip_filter: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """The clips manifest's rows in clip-id order (those whose clip id ``clip_filter`` keeps), or
    a message saying how to build it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from thinkjepa.data.manifest import read_manifest

    path = cfg.path(cfg.data.manifest)
    if not path.exists():
        raise FileNotFoundError(f"clips manifest {path} not found: build it first with `tj data index ROOT --out {path}`")
    table = read_manifest(path, data_root=cfg.data.root)  # the episodes where the config says the data is now
    # sorted and filtered as columns, so only the rows kept become dicts (one shard of 64 of a
    # 340k-row manifest: 5k dicts, not 340k); Arrow orders strings by UTF-8 bytes, which is
    # Python's code point order
    table = table.take(pc.sort_indices(table, [("clip_id", "ascending")]))
    if clip_filter is not None:
        table = table.filter(pa.array([clip_filter(c) for c in table.column("clip_id").to_pylist()], pa.bool_()))
    # Column lists zipped into dicts: to_pylist() builds them cell by cell, 5x slower at 100k rows.
    names = table.column_names
    return [dict(zip(names, values)) for values in zip(*(table.column(c).to_pylist() for c in names))]


@dataclass
class PlannedClip:
    """One clip of the manifest as a sharded stage plans it: its shard, and either its windows
    as ``(key, fingerprint)`` pairs or why it yields none."""

    clip_id: str
    shard: int
    windows: list[tuple[str, str]] = field(default_factory=list)
    problem: str | None = None


@dataclass(frozen=True)
class PlanColumns:
    """A stage's plan as columns: per clip its id, shard and problem (null: none), and every
    window flattened in clip order (``offsets[i]:offsets[i + 1]`` are clip ``i``'s). What
    ``tally_windows`` counts from, with no Python object per window (340k episodes)."""

    clip_ids: Any  # pyarrow string array
    shards: Any  # numpy int array
    problems: Any  # pyarrow string array
    offsets: Any  # numpy int array, one more than clips
    keys: Any  # pyarrow string array
    fingerprints: Any  # pyarrow string array

    @classmethod
    def of(cls, planned: Sequence[PlannedClip]) -> PlanColumns:
        import numpy as np
        import pyarrow as pa

        offsets = np.zeros(len(planned) + 1, np.int64)
        np.cumsum([len(p.windows) for p in planned], out=offsets[1:])
        return cls(
            clip_ids=pa.array([p.clip_id for p in planned], pa.string()),
            shards=np.array([p.shard for p in planned], np.int64),
            problems=pa.array([p.problem for p in planned], pa.string()),
            offsets=offsets,
            keys=pa.array([k for p in planned for k, _ in p.windows], pa.string()),
            fingerprints=pa.array([f for p in planned for _, f in p.windows], pa.string()),
        )

    def clips(self) -> list[PlannedClip]:
        keys, fps, offs = self.keys.to_pylist(), self.fingerprints.to_pylist(), self.offsets.tolist()
        return [PlannedClip(c, int(s), list(zip(keys[a:b], fps[a:b])), p) for c, s, p, a, b in
                zip(self.clip_ids.to_pylist(), self.shards.tolist(), self.problems.to_pylist(), offs, offs[1:])]


WINDOW_STATES = ("done", "stale", "failed", "pending")


def tally_windows(
    planned: Sequence[PlannedClip] | PlanColumns,
    shard_count: int,
    fingerprints: dict[str, str],
    failures: dict[str, str],
    list_limit: int | None = None,
) -> dict[str, Any]:
    """Per shard and in total: which planned windows are done, stale, failed or pending.

    A window is *done* when the store holds it with the fingerprint it would get now, *stale*
    when it holds it with another one, *failed* when its last attempt failed, *pending*
    otherwise; a clip with no window counts as one failed unit under its clip id (its
    windows, if any, are not counted). Entries the store holds for windows no longer planned
    are *orphans*. One rule for extract and encode, so `tj status` and `tj-extract status` can
    never disagree. Lists keep plan order; ``list_limit`` caps them (counts stay exact).
    Counted in columns: per-window Python was a second of a cold `tj status` per 100k windows.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from thinkjepa.shards import part_name

    plan = planned if isinstance(planned, PlanColumns) else PlanColumns.of(planned)
    n_clips = len(plan.shards)
    counts = np.diff(plan.offsets)
    problem = pc.fill_null(pc.not_equal(plan.problems, ""), False).to_numpy(zero_copy_only=False).astype(bool)
    clip_of = np.repeat(np.arange(n_clips), counts)
    live = ~problem[clip_of]
    wshard = plan.shards[clip_of]
    store_keys = pa.array(list(fingerprints), pa.string())
    idx = pc.index_in(plan.keys, value_set=store_keys)
    held = idx.is_valid().to_numpy(zero_copy_only=False).astype(bool)
    same = pc.fill_null(pc.equal(pc.take(pa.array(list(fingerprints.values()), pa.string()), idx),
                                 plan.fingerprints), False).to_numpy(zero_copy_only=False).astype(bool)
    in_failures = pc.is_in(plan.keys, value_set=pa.array(list(failures), pa.string())).to_numpy(
        zero_copy_only=False).astype(bool)
    state = np.full(len(clip_of), WINDOW_STATES.index("pending"))
    state[in_failures & ~held] = WINDOW_STATES.index("failed")
    state[held] = WINDOW_STATES.index("stale")
    state[same] = WINDOW_STATES.index("done")

    def per_shard_count(shards: Any) -> list[int]:
        return np.bincount(shards, minlength=shard_count)[:shard_count].tolist()

    per_shard = [{"shard": part_name(i, shard_count), "index": i} for i in range(shard_count)]
    columns = {"clips": per_shard_count(plan.shards), "windows": per_shard_count(wshard[live])}
    for i, name in enumerate(WINDOW_STATES):
        columns[name] = per_shard_count(wshard[live & (state == i)])
    columns["failed"] = [a + b for a, b in zip(columns["failed"], per_shard_count(plan.shards[problem]))]
    for i, row in enumerate(per_shard):
        row.update({k: v[i] for k, v in columns.items()})
        row["complete"] = row["done"] == row["windows"] and row["failed"] == 0

    def keys_in(name: str) -> list[str]:
        where = np.flatnonzero(live & (state == WINDOW_STATES.index(name)))
        return plan.keys.take(where if list_limit is None else where[:list_limit]).to_pylist()

    # failed clips and windows in plan order (a clip before its windows' positions), as a dict
    # (a later entry of the same name keeps the first one's place)
    failed_at = [(int(plan.offsets[i]), 0, int(i), plan.clip_ids[int(i)].as_py(), plan.problems[int(i)].as_py())
                 for i in np.flatnonzero(problem)]
    where = np.flatnonzero(live & (state == WINDOW_STATES.index("failed")))
    failed_at += [(int(p), 1, 0, k, failures[k]) for p, k in zip(where, plan.keys.take(where).to_pylist())]
    failed = {name: reason for *_, name, reason in sorted(failed_at)}
    orphan_mask = pc.invert(pc.is_in(store_keys, value_set=pc.filter(plan.keys, pa.array(live))))
    orphans = sorted(pc.filter(store_keys, orphan_mask).to_pylist())
    totals = {k: sum(r[k] for r in per_shard) for k in ("clips", "windows", *WINDOW_STATES)}
    totals["orphans"] = len(orphans)

    def cap(v: Any) -> Any:
        if list_limit is None:
            return v
        return dict(list(v.items())[:list_limit]) if isinstance(v, dict) else v[:list_limit]

    return {
        "shard_count": shard_count,
        "totals": totals,
        "complete": totals["done"] == totals["windows"] and totals["failed"] == 0,
        "shards": per_shard,
        "stale": keys_in("stale"),
        "failed": cap(failed),
        "pending": keys_in("pending"),
        "orphans": cap(orphans),
    }


def cached_status(
    cfg: PipelineConfig, name: str, reader: Any, inputs: dict[str, Any], compute: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``compute()`` (a stage's window status), reused from the last call while its inputs are
    unchanged: ``inputs`` (manifest identity, settings, ...) and the store's folders
    (``CacheReader.folder_state``). Planning every clip of a 100k-episode manifest is most of
    what `tj status` costs; most calls find nothing changed. A result computed within
    ``RACY_S`` of a folder's change is not reused (a commit in the same clock tick leaves the
    mtime unchanged)."""
    import json
    import time

    from thinkjepa.cache_schema.fsio import atomic_write_json
    from thinkjepa.cache_schema.record_listing import RACY_S

    state = reader.folder_state() if reader is not None else {}
    if state is None:
        return compute()
    key = {"inputs": inputs, "store": state}
    variant = "-".join(str(inputs.get(k)) for k in ("shards", "list_limit"))
    path = Path(listing_cache_dir(cfg)) / f"status-{name}-{variant}.json"
    try:
        doc = json.loads(path.read_text())
        if doc.get("key") == json.loads(json.dumps(key)) and doc.get("trusted"):
            return doc["result"]
    except (OSError, ValueError, AttributeError):
        pass
    result = compute()
    newest = max(state.values(), default=0)
    trusted = (time.time_ns() - newest) / 1e9 > RACY_S
    try:
        atomic_write_json(path, {"key": key, "trusted": trusted, "result": result}, durable=False, indent=None)
    except OSError:
        pass
    return result


def file_identity(path: str | Path) -> list[int] | None:
    """``[size, mtime_ns, inode]`` of a file, None if it is missing."""
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def infer_shard_count(parts: Any) -> int:
    """The shard count a store was written with (the most common one if it changed), else 1."""
    from collections import Counter

    from thinkjepa.shards import parse_part_name

    counts: Counter[int] = Counter()
    for name, n in Counter(parts).items():  # one parse per distinct part, not per entry
        parsed = parse_part_name(name)
        if parsed is not None:
            counts[parsed[1]] += n
    return counts.most_common(1)[0][0] if counts else 1
