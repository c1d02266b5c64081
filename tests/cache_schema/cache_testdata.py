"""Deterministic random entries for the cache tests (importable by spawned writer processes)."""

from __future__ import annotations

import numpy as np

from thinkjepa.cache_schema import TOKEN_TEXT, TOKEN_VISION, CacheWriter, JEPAEntry, StoreMeta, VLMEntry

LAYERS = [0, 4, 8]
HIDDEN = 32


def vlm_meta(storage_dtype: str = "float16", hidden: int = HIDDEN, **over) -> StoreMeta:
    kw = dict(kind="vlm", model="tiny/qwen3vl", revision="r1", layers=list(LAYERS),
              layer_convention="decoder_output_prenorm", hidden_size=hidden, storage_dtype=storage_dtype,
              extra={"frames": 8, "max_new_tokens": 4})
    kw.update(over)
    return StoreMeta(**kw)


def jepa_meta(storage_dtype: str = "float16", hidden: int = 16) -> StoreMeta:
    return StoreMeta(kind="jepa", model="tiny/vjepa2", revision=None, layers=[], layer_convention="encoder_last",
                     hidden_size=hidden, storage_dtype=storage_dtype, extra={"tubelet": 2})


def vlm_entry(key: str, seed: int, n_prefill: int = 40, n_generated: int = 5, hidden: int = HIDDEN,
              fingerprint: str = "fp-1") -> VLMEntry:
    rng = np.random.default_rng(seed)
    L = len(LAYERS)
    kind = np.full(n_prefill, TOKEN_TEXT, np.uint8)
    n_vis = n_prefill // 2
    kind[3:3 + n_vis] = TOKEN_VISION
    frames = np.full(n_prefill, -1, np.int32)
    frames[3:3 + n_vis] = np.arange(n_vis) % 4
    scale = rng.uniform(0.5, 3.0, size=(L, 1, hidden))
    return VLMEntry(
        key=key,
        prefill=(rng.standard_normal((L, n_prefill, hidden)) * scale).astype(np.float32),
        generated=(rng.standard_normal((L, n_generated, hidden)) * scale).astype(np.float32),
        prefill_ids=rng.integers(0, 1000, n_prefill).astype(np.int32),
        generated_ids=rng.integers(0, 1000, n_generated).astype(np.int32),
        prefill_kind=kind, frame_index=frames, text=f"thinking about {key} ✓",
        provenance={"prompt": "Describe this video.", "frames": [0, 2, 4], "seed": seed}, fingerprint=fingerprint)


def jepa_entry(key: str, seed: int, hidden: int = 16) -> JEPAEntry:
    rng = np.random.default_rng(seed)
    return JEPAEntry(key=key, past=rng.standard_normal((4, 6, hidden)).astype(np.float32),
                     future=rng.standard_normal((2, 6, hidden)).astype(np.float32),
                     past_frames=np.arange(8, dtype=np.int32), future_frames=np.arange(8, 12, dtype=np.int32),
                     provenance={"seed": seed}, fingerprint="jfp")


# Entries of the crash test: big enough (> 1 MiB) to take the sharded path and many writes.
CRASH_KW = dict(n_prefill=1200, n_generated=6, hidden=256)


def crash_keys(n: int, prefix: str = "task") -> list[str]:
    return [f"{prefix}_{i % 3}/{i}@{10 + i}" for i in range(n)]


def write_sequence(url: str, part: str, n: int, seed: int, progress=None, start=None, kw: dict | None = None,
                   prefix: str = "task") -> None:
    """Commit entries 0..n-1 of ``part`` (skipping done ones), as a writer process would."""
    kw = CRASH_KW if kw is None else kw
    meta = vlm_meta(hidden=kw.get("hidden", HIDDEN))
    if start is not None:
        start.wait()
    with CacheWriter(url, meta, part=part) as w:
        for i, key in enumerate(crash_keys(n, prefix)):
            if not w.is_done(key, "fp-1"):
                w.commit(vlm_entry(key, seed + i, **kw))
            if progress is not None:
                with progress.get_lock():
                    progress.value += 1


def race_for_part(url: str, part: str, n: int, seed: int, start, release, results, idx: int, kw: dict) -> None:
    """One of several processes racing to write ``part``: report ("won", commits) or ("refused", why)."""
    from thinkjepa.cache_schema import CacheError

    start.wait()
    try:
        w = CacheWriter(url, vlm_meta(hidden=kw.get("hidden", HIDDEN)), part=part)
    except CacheError as e:
        results.put((idx, "refused", str(e)))
        return
    with w:
        n_new = 0
        for i, key in enumerate(crash_keys(n)):
            if not w.is_done(key, "fp-1"):
                w.commit(vlm_entry(key, seed + i, **kw))
                n_new += 1
        results.put((idx, "won", n_new))
        release.wait(300)
