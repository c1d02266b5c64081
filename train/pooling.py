"""Pooling of the thinker's prefill token states into guidance vectors (``model.pooling``).

Pure numpy on one window's arrays as the cache stores them; the dataset calls it, the model
only sees the pooled result (``guid_prefill_pool`` [L, K, H]):

- ``all``: mean over every prompt token (the reference; the dataset reads the cached means
  instead of the tokens, same numbers);
- ``vision``: mean over the vision tokens only (K = 1);
- ``frame_groups``: one mean per thinker frame group (Qwen3-VL merges ``temporal_patch_size``
  consecutive frames into one group; ``frame_index`` names each vision token's first frame),
  in time order (K = number of groups), optionally only the groups in ``keep`` (a diagnostic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from thinkjepa.cache_schema.schema import TOKEN_VISION

POOLINGS = ("all", "vision", "frame_groups")


def frame_groups(kind: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
    """Sorted distinct source frames of the vision tokens: one per frame group."""
    return np.unique(frame_index[(kind == TOKEN_VISION) & (frame_index >= 0)])


def n_slots(pooling: str, n_groups: int, keep: Sequence[int] | None = None) -> int:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if pooling != "frame_groups":
        return 1
    return len(keep) if keep is not None else n_groups


def pool_prefill(
    tokens: np.ndarray, kind: np.ndarray, frame_index: np.ndarray, pooling: str,
    keep: Sequence[int] | None = None, what: str = "window",
) -> np.ndarray:
    """``tokens [L, N, H]`` (every prompt token, no padding) -> ``[L, K, H]`` float32."""
    if tokens.ndim != 3 or kind.shape != (tokens.shape[1],) or frame_index.shape != kind.shape:
        raise ValueError(f"{what}: prefill tokens {tokens.shape}, kinds {kind.shape}, frame index {frame_index.shape} disagree")
    if pooling == "all":
        return tokens.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    vision = kind == TOKEN_VISION
    if not vision.any():
        raise ValueError(f"{what}: no vision tokens in the prefill, cannot pool with {pooling!r}")
    if pooling == "vision":
        return tokens[:, vision].mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    if pooling != "frame_groups":
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    groups = frame_groups(kind, frame_index)
    picks = range(len(groups)) if keep is None else keep
    bad = [g for g in picks if not 0 <= g < len(groups)]
    if bad:
        raise ValueError(f"{what}: frame groups {bad} requested, the prefill has {len(groups)}")
    out = np.empty((tokens.shape[0], len(picks), tokens.shape[2]), dtype=np.float32)
    for j, g in enumerate(picks):
        sel = vision & (frame_index == groups[g])
        out[:, j] = tokens[:, sel].mean(axis=1, dtype=np.float64)
    return out


__all__ = ["POOLINGS", "frame_groups", "n_slots", "pool_prefill"]
