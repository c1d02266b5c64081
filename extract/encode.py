"""The encode stage: frozen V-JEPA2 latents of every window into the JEPA cache.

For each window the dense past frames and the future frames are encoded in *separate* forward
passes (V-JEPA2's encoder attends across all tubelets of its input, so encoding them together
would let future pixels into the context latents). Past clips of several windows share a
batch, and future clips share another; batch rows never interact. Frames are decoded at
``encoder.frame_size`` and preprocessed by the checkpoint's own video processor.

Resumable and sharded like extraction: a window committed with the same fingerprint is
skipped, clips are split across shards by ``thinkjepa.shards`` (one partition rule for
both stages), each shard writes its own store part, and a failing clip or window is recorded
in the store with its reason while the shard goes on.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from thinkjepa.cache_schema import SCHEMA_VERSION, CacheWriter, JEPAEntry, StoreMeta
from thinkjepa.config import EncoderConfig, PipelineConfig
from thinkjepa.provenance import model_key, record_stage_inputs, stage_fingerprint
from thinkjepa.sampling import TooShortError, Window
from thinkjepa.shards import part_name, shard_of, validate_shard
from thinkjepa.stage_run import ShardSummary, manifest_rows, run_batches

if TYPE_CHECKING:
    from thinkjepa.data.listing import DatasetListing

LAYER_CONVENTION = "encoder_last"
"""What a JEPA entry holds: the encoder's final (layer-normed) token states, no predictor."""

FINGERPRINT_VERSION = 2
"""Bump when this module changes what it stores for the same settings.
2: the episode's content fingerprint (``thinkjepa.data.content``) is part of it."""


EncodeSummary = ShardSummary


@dataclass(frozen=True)
class EncodeItem:
    key: str
    clip_id: str
    window: Window
    video_path: str
    episode: str = ""
    """Content fingerprint of the episode (``thinkjepa.data.content``)."""


def encode_stage_fingerprint(enc: EncoderConfig) -> str:
    """The encode code, engines and the encoder's identity (``thinkjepa.provenance``)."""
    return stage_fingerprint("encode", {"encoder": (enc.model, enc.revision)})


def _jepa_payload(enc: EncoderConfig, past: Any, future: Any, episode: Any, stage: str | None) -> dict[str, Any]:
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "model": model_key(enc.model),  # a local folder by content, not its path
        "revision": enc.revision,
        "frame_size": enc.frame_size,
        "storage_dtype": enc.storage_dtype,
        "layer_convention": LAYER_CONVENTION,
        "past": past,
        "future": future,
        "episode": episode,
        "stage": stage if stage is not None else encode_stage_fingerprint(enc),
    }


def jepa_entry_fingerprint(enc: EncoderConfig, window: Window, episode: str = "", stage: str | None = None) -> str:
    """Everything a JEPA entry's arrays depend on (settings of the whole store included, so an
    entry stands on its own). ``stage``: ``encode_stage_fingerprint(enc)``, computed once by
    callers that fingerprint many windows (``fingerprints`` does all of them at once)."""
    payload = _jepa_payload(enc, [int(f) for f in window.past], [int(f) for f in window.future], episode, stage)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def jepa_store_extra(cfg: PipelineConfig) -> dict[str, Any]:
    """Store-wide settings compared on open: one sampling rule and frame size per store."""
    return {"sampling": cfg.sampling.model_dump(mode="json"), "frame_size": cfg.encoder.frame_size}


def jepa_store_meta(cfg: PipelineConfig, hidden_size: int) -> StoreMeta:
    enc = cfg.encoder
    return StoreMeta(
        kind="jepa",
        model=model_key(enc.model),  # a local folder by content: the store stays valid when moved
        revision=enc.revision,
        layers=[],
        layer_convention=LAYER_CONVENTION,
        hidden_size=int(hidden_size),
        storage_dtype=enc.storage_dtype,
        extra=jepa_store_extra(cfg),
    )


class JepaEncoder:
    """A frozen V-JEPA2 encoder and its video processor, loaded like any hub id."""

    def __init__(self, enc: EncoderConfig, device: str | None = None) -> None:
        import torch
        from transformers import AutoVideoProcessor, VJEPA2Model

        from thinkjepa.extract.model_files import naming_damaged_files

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # bf16 halves the encoder's cost on GPUs; CPUs stay in fp32 (bf16 matmuls are slow there).
        self.dtype = (
            torch.bfloat16
            if self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            else torch.float32
        )
        self.frame_size = enc.frame_size
        with naming_damaged_files(enc.model):
            self.processor = AutoVideoProcessor.from_pretrained(enc.model, revision=enc.revision)
            self.model = VJEPA2Model.from_pretrained(enc.model, revision=enc.revision, dtype=self.dtype)
        self.model.to(self.device).eval().requires_grad_(False)
        self.hidden_size = int(self.model.config.hidden_size)
        self.tubelet_size = int(self.model.config.tubelet_size)

    def encode(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Clips of equal length, each uint8 ``[T, H, W, 3]`` -> float32 latents
        ``[B, T // tubelet, n_patches, D]``; each clip is encoded on its own (no cross-clip attention)."""
        import torch

        if not clips:
            raise ValueError("no clips to encode")
        lengths = {c.shape[0] for c in clips}
        if len(lengths) != 1:
            raise ValueError(f"clips of one encoder batch must have the same length, got {sorted(lengths)}")
        n = lengths.pop()
        if n % self.tubelet_size:
            # the patch embedding's stride would silently drop the trailing frame
            raise ValueError(f"{n} frames per clip is not a multiple of the tubelet size {self.tubelet_size}")
        # Resize/normalise on the encoder's device: on a GPU the CPU-side processor was half
        # of a batched call (benchmarks/bench_encode.py).
        pixels = self.processor(list(clips), return_tensors="pt", device=str(self.device))["pixel_values_videos"]
        with torch.inference_mode():
            out = self.model(pixels.to(self.device, self.dtype), skip_predictor=True).last_hidden_state
        B, N, D = out.shape
        tub = n // self.tubelet_size
        return out.float().cpu().numpy().reshape(B, tub, N // tub, D)




def plan_encode(cfg: PipelineConfig, shard: tuple[int, int] = (0, 1)) -> tuple[list[EncodeItem], dict[str, str]]:
    """Work items of shard ``(I, N)`` in clip order, and the clips that yield no window (id -> why)."""
    i, n = validate_shard(*shard)
    items: list[EncodeItem] = []
    problems: dict[str, str] = {}
    for clip_id, _s, clip_items, problem in _plan_clips(cfg, n, only_shard=i):
        if problem is not None:
            problems[clip_id] = problem
        items += clip_items
    return items, problems


def _plan_clips(cfg: PipelineConfig, n: int, only_shard: int | None = None):
    """``(clip_id, shard, items, problem)`` of every manifest clip under ``n`` shards (of shard
    ``only_shard`` only, if given). The runner and ``encode_status`` both plan through this, so
    the items (and with them ``fingerprints``) are the same for both: each carries its
    episode's content fingerprint from the workdir's memo (``thinkjepa.data.content``)."""
    from thinkjepa.data.content import episode_or_placeholder, for_workdir
    from thinkjepa.extract.runner import clip_windows

    windows_of = clip_windows(cfg)
    content = for_workdir(cfg.workdir)
    keep = None if only_shard is None else (lambda c: shard_of(c, n) == only_shard)
    for row in manifest_rows(cfg, keep):
        clip_id = str(row["clip_id"])
        s = shard_of(clip_id, n) if only_shard is None else only_shard
        try:
            windows = windows_of(clip_id, int(row["n_frames"]))
        except TooShortError as e:
            yield clip_id, s, [], f"too short: {e}"
            continue
        episode = episode_or_placeholder(content, str(row["video_path"]), str(row["annotation_path"]))
        yield clip_id, s, [EncodeItem(w.window_id, clip_id, w, str(row["video_path"]), episode) for w in windows], None
    content.save()


def fingerprints(enc: EncoderConfig, items: Sequence[EncodeItem]) -> dict[str, str]:
    """``{key: jepa_entry_fingerprint}`` of ``items``: what the runner commits and status compares
    against. The JSON of the fixed fields is made once and each window's frames and episode are
    spliced in (byte for byte ``jepa_entry_fingerprint``'s text), so a manifest's windows cost a
    sha256 each, not a ``json.dumps`` of the whole payload and a model identity lookup."""
    from thinkjepa.extract.fingerprint import spliced_json

    fill = spliced_json(_jepa_payload(enc, None, None, None, encode_stage_fingerprint(enc)), ("past", "future", "episode"))
    frames: dict[tuple[int, ...], str] = {}

    def frames_json(f: tuple[int, ...]) -> str:
        got = frames.get(f)
        if got is None:
            if len(frames) >= 4096:  # frame lists drawn per clip: keep it bounded
                frames.clear()
            got = frames[f] = json.dumps([int(x) for x in f])
        return got

    out: dict[str, str] = {}
    last: tuple[str, str] = ("", json.dumps(""))
    for it in items:
        if it.episode != last[0]:
            last = (it.episode, json.dumps(it.episode))
        text = fill({"past": frames_json(it.window.past), "future": frames_json(it.window.future), "episode": last[1]})
        out[it.key] = hashlib.sha256(text.encode()).hexdigest()[:24]
    return out


def encode_status(cfg: PipelineConfig, shards: int | None = None, list_limit: int | None = None,
                  listing: DatasetListing | None = None) -> dict[str, Any]:
    """Done / stale / failed / pending windows of the JEPA store per shard (the rule of
    ``stage_run.tally_windows``, as ``tj-extract status`` counts the VLM store). ``listing``:
    the dataset listing of ``data.root`` the caller made already (else made here)."""
    from thinkjepa.cache_schema import CacheReader, store_exists
    from thinkjepa.extract.runner import episode_files_digest
    from thinkjepa.plan_memo import plan_key, root_listing
    from thinkjepa.stage_run import cached_status, file_identity

    url = cfg.url(cfg.encoder.cache)
    reader = CacheReader(url) if store_exists(url) else None
    listing = listing or root_listing(cfg)
    inputs = {
        "manifest": file_identity(cfg.path(cfg.data.manifest)), "settings": cfg.section_fingerprint("encoder", "sampling"),
        "episodes": episode_files_digest(cfg, listing), "version": FINGERPRINT_VERSION, "shards": shards,
        "list_limit": list_limit, "stage": encode_stage_fingerprint(cfg.encoder),
    }
    key = plan_key(cfg, inputs, listing)
    return cached_status(cfg, "encode", reader, inputs, lambda: _encode_status(cfg, url, reader, shards, list_limit, key))


def _encode_status(cfg: PipelineConfig, url: str, reader: Any, shards: int | None, list_limit: int | None,
                   key: tuple[dict[str, Any], int] | None) -> dict[str, Any]:
    from thinkjepa.data.content import UNREADABLE
    from thinkjepa.plan_memo import cached_plan
    from thinkjepa.stage_run import PlannedClip, infer_shard_count, listing_cache_dir, tally_windows

    briefs = reader.briefs(listing_cache_dir(cfg)) if reader is not None else {}
    failures = reader.failures(briefs) if reader is not None else {}
    n = shards or infer_shard_count(b[2] for b in briefs.values())

    def plan() -> tuple[list[PlannedClip], bool]:
        clips = list(_plan_clips(cfg, n))
        fps = fingerprints(cfg.encoder, [it for _, _, items, _ in clips for it in items])
        planned = [PlannedClip(clip_id, s, [(it.key, fps[it.key]) for it in items], problem)
                   for clip_id, s, items, problem in clips]
        # an unreadable file is read again by the next plan (it may be readable by then)
        keep = not any(it.episode.startswith(UNREADABLE) for _, _, items, _ in clips for it in items)
        return planned, keep

    planned = plan()[0] if key is None else cached_plan(cfg, "encode", {**key[0], "shards": n}, key[1], plan)
    tally = tally_windows(planned, n, {k: b[0] for k, b in briefs.items()}, failures, list_limit)
    return {"cache": url, "manifest": str(cfg.path(cfg.data.manifest)), "store_exists": reader is not None, **tally}


def run_encode(
    cfg: PipelineConfig,
    shard: tuple[int, int] = (0, 1),
    *,
    encoder: JepaEncoder | None = None,
    progress: bool = True,
) -> EncodeSummary:
    """Encode shard ``shard = (I, N)`` (zero-based) of the manifest into ``cfg.encoder.cache``.

    Resumable: windows already committed with the same fingerprint are skipped, and the
    encoder is loaded only if there is work left. ``encoder``: one to reuse across calls.
    """
    from transformers import AutoConfig

    from thinkjepa.data.egodex import EpisodeError, decode_frames

    t0 = time.perf_counter()
    i, n = validate_shard(*shard)
    summary = EncodeSummary(part=part_name(i, n))
    items, problems = plan_encode(cfg, (i, n))
    enc = cfg.encoder
    hidden = encoder.hidden_size if encoder else AutoConfig.from_pretrained(enc.model, revision=enc.revision).hidden_size
    writer = CacheWriter(cfg.url(enc.cache), jepa_store_meta(cfg, hidden), part=summary.part)
    try:
        for clip_id, why in problems.items():
            summary.failed[clip_id] = why
            writer.record_failure(clip_id, why)
        fps = fingerprints(enc, items)
        done_before = {it.key for it in items if writer.is_done(it.key, fps[it.key])}
        summary.skipped = [it.key for it in items if it.key in done_before]
        todo = [it for it in items if it.key not in done_before]
        if todo and encoder is None:
            encoder = JepaEncoder(enc)

        def decode(group: list[EncodeItem]) -> Callable[[EncodeItem], tuple[np.ndarray, np.ndarray]]:
            wanted = sorted({f for it in group for f in (*it.window.past, *it.window.future)})
            frames = decode_frames(group[0].video_path, wanted, enc.frame_size, clip_id=group[0].clip_id)
            pos = {f: j for j, f in enumerate(wanted)}
            return lambda it: (frames[[pos[f] for f in it.window.past]], frames[[pos[f] for f in it.window.future]])

        def run_batch(batch: list[EncodeItem], clips: list[tuple[np.ndarray, np.ndarray]]) -> list[Any]:
            assert encoder is not None
            try:
                past = encoder.encode([p for p, _ in clips])
                future = encoder.encode([f for _, f in clips])
            except (RuntimeError, ValueError) as e:
                return [e] * len(batch)
            return [JEPAEntry(
                key=it.key,
                past=past[j],
                future=future[j],
                past_frames=np.asarray(it.window.past, np.int32),
                future_frames=np.asarray(it.window.future, np.int32),
                provenance={
                    "clip_id": it.clip_id, "t": it.window.t, "video_path": it.video_path,
                    "model": enc.model, "revision": enc.revision, "frame_size": enc.frame_size,
                    "layer_convention": LAYER_CONVENTION, "fingerprint_version": FINGERPRINT_VERSION,
                },
                fingerprint=fps[it.key],
            ) for j, it in enumerate(batch)]

        run_batches(
            todo, decode=decode, decode_errors=(EpisodeError, OSError, ValueError), run_batch=run_batch,
            batch_size=enc.batch_size, sink=writer, summary=summary, stage="encode", engine_step="encode",
            total=len(items), progress=progress,
        )
    finally:
        writer.close()
    record_stage_inputs(cfg, "encode")
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = [
    "EncodeItem",
    "EncodeSummary",
    "JepaEncoder",
    "LAYER_CONVENTION",
    "encode_status",
    "encode_stage_fingerprint",
    "jepa_entry_fingerprint",
    "fingerprints",
    "jepa_store_meta",
    "plan_encode",
    "run_encode",
    "jepa_store_extra",
]
