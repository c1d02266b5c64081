"""The resumable shard runner behind ``tj-extract run --shard I/N``.

Plan: manifest -> clips of this shard (``shards.shard_of``) -> windows
(``thinkjepa.sampling.windows_for_clip``) -> one work item per window with its prompt and
extraction fingerprint. Run: skip what the store already holds with the same fingerprint
(without starting the engine when nothing is left), decode each clip's thinker frames once,
send ``thinker.clips_per_call`` requests per engine call, commit every result on its own (a
killed shard loses at most the call in flight). A window that fails (unreadable video,
prompt too long for the context, engine error) is recorded in the store with its reason and
the shard goes on; the next run retries it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thinkjepa.cache_schema import (
    CacheReader,
    CacheWriter,
    SchemaMismatchError,
    StoreMeta,
    VLMEntry,
    lock_part,
    store_exists,
)
from thinkjepa.config import PipelineConfig
from thinkjepa.data.egodex import decode_frames
from thinkjepa.data.video import VideoError
from thinkjepa.extract.fingerprint import Fingerprinter, fingerprint_payload
from thinkjepa.extract.layers import LAYER_CONVENTION
from thinkjepa.extract.prompt import build_prompt, prompt_metadata, read_clip_metadata, validate_template
from thinkjepa.provenance import model_key, record_stage_inputs
from thinkjepa.sampling import TooShortError, Window, windows_for_clip
from thinkjepa.shards import part_name, shard_of, validate_shard
from thinkjepa.stage_run import ShardSummary, listing_cache_dir, manifest_rows, run_batches

if TYPE_CHECKING:
    from thinkjepa.data.listing import DatasetListing
    from thinkjepa.extract.thinker_io import ThinkerBackend, ThinkerOutput, ThinkerRequest


@dataclass(frozen=True)
class ExtractItem:
    """One window to extract: its cache key and everything its entry depends on."""

    key: str
    clip_id: str
    window: Window
    video_path: str
    fps: float
    user_text: str
    episode: str = ""
    """Content fingerprint of the episode (``thinkjepa.data.content``)."""

    @property
    def frame_indices(self) -> list[int]:
        return list(self.window.thinker)


@dataclass
class ClipPlan:
    clip_id: str
    shard: int
    items: list[ExtractItem] = field(default_factory=list)
    problem: str | None = None
    """Why the clip yields no window (too short for the sampling rule), if so."""
    failed_keys: list[str] = field(default_factory=list)
    """Windows that exist but cannot be planned (unreadable HDF5): failures of this stage."""


ExtractSummary = ShardSummary


def fingerprints_of(cfg: PipelineConfig, items: Sequence[ExtractItem]) -> list[str]:
    """The extraction fingerprint of each item: what the runner commits and what status and
    training compare against (one ``Fingerprinter`` for all; the episode's content
    fingerprint, set by ``plan_clips``, is part of it)."""
    fp = Fingerprinter(cfg.thinker, layer_convention=LAYER_CONVENTION)
    return [fp(user_text=it.user_text, frame_indices=it.window.thinker, episode=it.episode) for it in items]


def fingerprint_of(cfg: PipelineConfig, item: ExtractItem) -> str:
    return fingerprints_of(cfg, [item])[0]


class PromptCache:
    """Each clip's user prompt, kept between runs under the workdir and reused while its
    inputs are unchanged: the annotation file's (size, mtime, inode), the template and the
    manifest's task and description. Reading an HDF5 file's attributes costs ~4 ms, which
    made planning a 100k-episode manifest (so every `tj status`) take minutes. Concurrent
    shards may each rewrite the cache (the last one wins, which only costs a re-read)."""

    VERSION = 1

    def __init__(self, path: Path | None, template: str) -> None:
        self.path = path
        self.template = template
        self._entries: dict[str, list] = {}
        self._dirty = False
        if path is not None:
            try:
                doc = json.loads(path.read_text())
                if doc.get("version") == self.VERSION:
                    self._entries = doc["entries"]
            except (OSError, ValueError, KeyError, AttributeError):
                pass  # missing or damaged: rebuilt as clips are planned

    def user_text(self, clip_id: str, row: dict[str, Any]) -> str:
        path = str(row["annotation_path"])
        try:
            st = os.stat(path)
            ident: list[Any] | None = [st.st_size, st.st_mtime_ns, st.st_ino]
        except OSError:
            ident = None
        inputs = [ident, self.template, clip_id, row.get("task") or "", row.get("description") or ""]
        hit = self._entries.get(path)
        if ident is not None and hit is not None and hit[0] == inputs:
            return hit[1]
        metadata: dict[str, Any] = {k: row[k] for k in ("task", "description") if row.get(k)}
        metadata.update(prompt_metadata(read_clip_metadata(path)))
        text = build_prompt(self.template, metadata, clip_id)
        if ident is not None:
            self._entries[path] = [inputs, text]
            self._dirty = True
        return text

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        from thinkjepa.cache_schema.fsio import atomic_write_json

        try:
            atomic_write_json(self.path, {"version": self.VERSION, "entries": self._entries}, durable=False, indent=None)
        except OSError:
            pass  # a cache: the next plan reads the files again
        self._dirty = False


def _with_clip_id(w: Window, clip_id: str) -> Window:
    # ``dataclasses.replace`` would re-run the causality checks the template already passed
    # (same frames): a third of the cost of planning a large manifest.
    out = object.__new__(Window)
    out.__dict__.update(w.__dict__, clip_id=clip_id)
    return out


def clip_windows(cfg: PipelineConfig) -> Callable[[str, int], list[Window]]:
    """``windows_for_clip`` with the frame lists computed once per frame count (they depend
    on nothing else), for planning whole manifests. Raises ``TooShortError`` likewise."""
    memo: dict[int, list[Window] | TooShortError] = {}

    def windows(clip_id: str, n_frames: int) -> list[Window]:
        got = memo.get(n_frames)
        if got is None:
            try:
                got = windows_for_clip("\0", n_frames, cfg.sampling)
            except TooShortError as e:
                got = e
            memo[n_frames] = got
        if isinstance(got, TooShortError):
            raise TooShortError(str(got).replace("\0", clip_id, 1))
        return [_with_clip_id(w, clip_id) for w in got]

    return windows


def episode_files_digest(cfg: PipelineConfig, listing: DatasetListing | None = None) -> str | None:
    """A digest that changes when an episode file (annotation or video) the manifest names may
    have changed (size, mtime or inode): prompts come from the annotations' attributes and entry
    fingerprints hold each episode's content fingerprint, so a status or plan computed earlier
    holds while it is equal. The dataset listing of ``data.root`` (``data.listing.dataset_listing``:
    one stat per file; ``listing``: the one the caller already made for this root), else one
    stat per episode file."""
    import hashlib

    from thinkjepa.data.manifest import read_manifest
    from thinkjepa.plan_memo import root_listing

    listing = listing or root_listing(cfg)
    if listing is not None:
        return "listing:" + listing.identity
    try:
        table = read_manifest(cfg.path(cfg.data.manifest)).select(["annotation_path", "video_path"])
    except (OSError, KeyError, ValueError):
        return None
    h = hashlib.sha256()
    for p in (*table.column(0).to_pylist(), *table.column(1).to_pylist()):
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}\n".encode())
        except OSError:
            h.update(f"{p}:missing\n".encode())
    return h.hexdigest()[:16]


def plan_clips(cfg: PipelineConfig, shards: int = 1, only_shard: int | None = None) -> list[ClipPlan]:
    """Every clip of the manifest (or of shard ``only_shard`` of ``shards``) with its work
    items, in clip-id order. Reads the manifest and each clip's HDF5 attributes (through
    ``PromptCache``), no video; each episode's content fingerprint comes from the workdir's
    memo (``thinkjepa.data.content``: a stat per file unless the file changed)."""
    from thinkjepa.data.content import episode_or_placeholder, for_workdir

    validate_template(cfg.thinker.prompt_template)
    prompts = PromptCache(Path(listing_cache_dir(cfg)) / "prompts.json", cfg.thinker.prompt_template)
    content = for_workdir(cfg.workdir)
    windows_of = clip_windows(cfg)
    plans = []
    keep = None if only_shard is None else (lambda c: shard_of(c, shards) == only_shard)
    for row in manifest_rows(cfg, keep):
        clip_id = str(row["clip_id"])
        s = shard_of(clip_id, shards) if only_shard is None else only_shard
        plan = ClipPlan(clip_id, s)
        plans.append(plan)
        try:
            windows = windows_of(clip_id, int(row["n_frames"]))
        except TooShortError as e:
            plan.problem = f"too short for the sampling rule: {str(e).removeprefix(clip_id + ': ')}"
            continue
        try:
            user_text = prompts.user_text(clip_id, row)
        except ValueError as e:  # unreadable HDF5: its windows fail here, with the cause
            plan.problem = str(e)
            plan.failed_keys = [w.window_id for w in windows]
            continue
        episode = episode_or_placeholder(content, str(row["video_path"]), str(row["annotation_path"]))
        plan.items = [
            ExtractItem(w.window_id, clip_id, w, str(row["video_path"]), float(row["fps"]), user_text, episode)
            for w in windows
        ]
    prompts.save()
    content.save()
    return plans


def vlm_store_extra(cfg: PipelineConfig) -> dict[str, Any]:
    """Store-wide settings kept in ``StoreMeta.extra``: one sampling rule per store, so training
    never mixes windows cut by different rules."""
    return {"sampling": cfg.sampling.model_dump(mode="json")}


def vlm_store_meta(cfg: PipelineConfig, *, layers: Sequence[int], layer_convention: str, hidden_size: int) -> StoreMeta:
    """The VLM store's settings for this config and an engine's layers / convention / width."""
    return StoreMeta(
        kind="vlm",
        model=model_key(cfg.thinker.model),  # a local folder by content: the store stays valid when moved
        revision=cfg.thinker.revision,
        layers=[int(x) for x in layers],
        layer_convention=layer_convention,
        hidden_size=int(hidden_size),
        storage_dtype=cfg.thinker.storage_dtype,
        extra=vlm_store_extra(cfg),
    )


def open_reader(url: str) -> CacheReader | None:
    """The store at ``url``, or None when nothing was written there yet."""
    return CacheReader(url) if store_exists(url) else None


def _check_store(reader: CacheReader, cfg: PipelineConfig) -> None:
    """Refuse a store made with other settings before paying for an engine start."""
    expected = vlm_store_meta(
        cfg, layers=cfg.thinker.layers, layer_convention=LAYER_CONVENTION, hidden_size=reader.meta.hidden_size
    )
    differences = reader.meta.diff(expected)
    if differences:
        raise SchemaMismatchError(
            reader.url, differences, action="point thinker.cache at a new store, or delete this one to start over"
        )


def _check_backend(cfg: PipelineConfig, backend: ThinkerBackend) -> None:
    """A reused engine must produce what the fingerprints claim."""
    th = cfg.thinker
    engine_cfg = getattr(backend, "cfg", None)
    if engine_cfg is not None:
        fields = ("model", "revision", "layers", "max_new_tokens", "max_prefill_tokens", "compute_dtype")
        diff = [f"{f}: engine {getattr(engine_cfg, f)!r}, config {getattr(th, f)!r}"
                for f in fields if getattr(engine_cfg, f) != getattr(th, f)]
        if diff:
            raise ValueError(f"the given backend was built with other thinker settings ({'; '.join(diff)})")
    if backend.layer_convention != LAYER_CONVENTION:
        # Fingerprints and status assume the project's one convention.
        raise ValueError(f"backend stores layers as {backend.layer_convention!r}, expected {LAYER_CONVENTION!r}")


def _to_entry(item: ExtractItem, out: ThinkerOutput, fingerprint: str, provenance: dict[str, Any]) -> VLMEntry:
    return VLMEntry(
        key=item.key,
        prefill=out.prefill,
        generated=out.generated,
        prefill_ids=np.asarray(out.prefill_ids, dtype=np.int32),
        generated_ids=np.asarray(out.generated_ids, dtype=np.int32),
        prefill_kind=np.asarray(out.prefill_kind, dtype=np.uint8),
        frame_index=np.asarray(out.frame_index, dtype=np.int32),
        text=str(out.text),
        provenance={
            **provenance,
            "prompt": out.prompt,
            "prompt_tokens": int(out.prompt_tokens),
            "all_generated_ids": [int(x) for x in np.asarray(out.all_generated_ids).reshape(-1)],
            "window": {"t": item.window.t, "past": list(item.window.past), "future": list(item.window.future)},
            "video_path": item.video_path,
            "fps": item.fps,
        },
        fingerprint=fingerprint,
    )




class EngineDied(RuntimeError):
    """The engine process died (killed, out of memory): no fault of the input, so nothing is
    recorded as failed; the shard stops and a rerun resumes it."""


def _engine_dead(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "EngineDeadError":  # vllm.v1.engine.exceptions; vLLM is an optional import
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _extract_batch(backend: ThinkerBackend, requests: list[ThinkerRequest]) -> list[Any]:
    """Results in request order. An engine error that takes a whole call down is retried
    request by request, so one bad clip does not fail its neighbours. A dead engine stops the
    shard (``EngineDied``) unless a stop was requested (a group Ctrl-C kills the engine core:
    ``run_batches`` then drops those results)."""
    from thinkjepa.interrupts import requested

    outs = _extract_batch_once(backend, requests)
    dead = next((o for o in outs if isinstance(o, BaseException) and _engine_dead(o)), None)
    if dead is not None and not requested():
        raise EngineDied(f"the thinker engine died ({' '.join(str(dead).split())[:300]}); nothing was recorded as "
                         "failed: rerun the same command to resume") from dead
    return outs


def _extract_batch_once(backend: ThinkerBackend, requests: list[ThinkerRequest]) -> list[Any]:
    try:
        outs = list(backend.extract(requests))
        if len(outs) != len(requests):
            raise RuntimeError(f"backend returned {len(outs)} results for {len(requests)} requests")
        return outs
    except Exception as e:  # noqa: BLE001 - any engine failure is isolated below
        from thinkjepa.interrupts import requested

        if len(requests) == 1 or requested():  # after Ctrl-C the engine is gone: no retries
            return [e] * len(requests)
    results: list[Any] = []
    for r in requests:
        try:
            results.extend(backend.extract([r]))
        except Exception as e:  # noqa: BLE001
            results.append(e)
    return results


def plan_shard(
    cfg: PipelineConfig, shard: tuple[int, int]
) -> tuple[list[ClipPlan], list[ExtractItem], list[ExtractItem], CacheReader | None]:
    """Shard ``(I, N)``'s clip plans, its work items, those still to do (not committed with the
    fingerprint they get now), and the store's reader (None before the first commit)."""
    i, n = validate_shard(*shard)
    plans = plan_clips(cfg, shards=n, only_shard=i)
    items = [it for p in plans for it in p.items]
    reader = open_reader(cfg.url(cfg.thinker.cache))
    if reader is None:
        return plans, items, list(items), None
    _check_store(reader, cfg)
    committed = {k: b[0] for k, b in reader.briefs(listing_cache_dir(cfg)).items()}
    todo = [it for it, fp in zip(items, fingerprints_of(cfg, items)) if committed.get(it.key) != fp]
    return plans, items, todo, reader


def run_shard(
    cfg: PipelineConfig,
    shard: tuple[int, int] = (0, 1),
    *,
    backend: ThinkerBackend | None = None,
    progress: bool = True,
) -> ExtractSummary:
    """Extract shard ``shard = (I, N)`` (zero-based) of the manifest into ``cfg.thinker.cache``.

    Resumable: windows committed with the fingerprint they would get now are skipped, and when
    nothing is left no engine is started. ``backend``: an engine to use (left open); by
    default one is made from ``cfg.thinker`` and closed at the end.
    Raises SchemaMismatchError when the store was made with other store-wide settings.
    """
    i, n = validate_shard(*shard)
    t0 = time.perf_counter()
    summary = ExtractSummary(part=part_name(i, n))
    url = cfg.url(cfg.thinker.cache)
    plans, items, todo, reader = plan_shard(cfg, (i, n))
    for p in plans:
        if p.problem:
            for key in p.failed_keys or [p.clip_id]:
                summary.failed[key] = p.problem
    todo_keys = {it.key for it in todo}
    summary.skipped = [it.key for it in items if it.key not in todo_keys]

    if todo:
        # The part's lock first: a second writer of this part is refused before it pays for an engine.
        lock = lock_part(url, summary.part)
        own_backend = backend is None
        try:
            if own_backend:
                from thinkjepa.extract.backends import make_backend

                backend = make_backend(cfg.thinker)
            assert backend is not None
            _check_backend(cfg, backend)
            meta = vlm_store_meta(
                cfg, layers=backend.layers, layer_convention=backend.layer_convention, hidden_size=backend.hidden_size
            )
            with CacheWriter(url, meta, part=summary.part, lock=lock) as writer:
                for clip_id, problem in summary.failed.items():
                    writer.record_failure(clip_id, problem)
                _run_items(cfg, todo, backend, writer, summary, total=len(items), progress=progress)
        finally:
            lock.release()
            if own_backend and backend is not None:
                backend.close()
    elif summary.failed and reader is not None:
        # Nothing to extract, but clips that yield no window are still reported in the store.
        with CacheWriter(url, reader.meta, part=summary.part) as writer:
            for clip_id, problem in summary.failed.items():
                writer.record_failure(clip_id, problem)
    record_stage_inputs(cfg, "extract")
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_items(
    cfg: PipelineConfig,
    todo: list[ExtractItem],
    backend: ThinkerBackend,
    writer: CacheWriter,
    summary: ExtractSummary,
    *,
    total: int,
    progress: bool,
) -> None:
    from thinkjepa.extract.thinker_io import ThinkerRequest

    th = cfg.thinker

    def decode(group: list[ExtractItem]) -> Callable[[ExtractItem], ThinkerRequest]:
        wanted = sorted({f for it in group for f in it.frame_indices})
        frames = decode_frames(group[0].video_path, wanted, th.frame_size)
        pos = {f: j for j, f in enumerate(wanted)}
        return lambda it: ThinkerRequest(
            key=it.key, frames=frames[[pos[f] for f in it.frame_indices]], frame_indices=it.frame_indices,
            fps=it.fps, user_text=it.user_text,
        )

    def run_batch(items: list[ExtractItem], requests: list[ThinkerRequest]) -> list[Any]:
        entries: list[Any] = []
        for item, out in zip(items, _extract_batch(backend, requests)):
            if isinstance(out, BaseException):
                entries.append(out)
                continue
            fp = fingerprint_of(cfg, item)
            prov = fingerprint_payload(
                th, layer_convention=LAYER_CONVENTION, user_text=item.user_text,
                frame_indices=item.frame_indices, episode=item.episode,
            )
            prov.update(fingerprint=fp, clip_id=item.clip_id, hidden_size=int(backend.hidden_size),
                        capture=getattr(backend, "capture", None))
            entries.append(_to_entry(item, out, fp, prov))
        return entries

    run_batches(
        todo, decode=decode, decode_errors=(VideoError, OSError, ValueError), run_batch=run_batch,
        batch_size=th.clips_per_call, sink=writer, summary=summary, stage="extract", engine_step="engine",
        total=total, progress=progress,
    )
