"""Test-time guidance ablations on the batch inputs (never on model internals): the trained
model is run again with the guidance keys of every sample (``guid_{stream}_mean``,
``guid_{stream}``, ``guid_{stream}_mask``) replaced.

- ``zeroed``: guidance values set to zero (masks kept, so masked means stay defined);
- ``shuffled``: guidance of another window of the split (a fixed derangement);
- ``same_clip``: guidance of another window of the same clip (the nearest earlier one, else
  the nearest later one); windows of single-window clips have none and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from thinkjepa.sampling import split_window_id

ABLATIONS = ("zeroed", "shuffled", "same_clip")


def is_guidance_key(key: str) -> bool:
    return key.startswith("guid_")


def shuffled_sources(n: int, seed: int = 0) -> list[int]:
    """A permutation with no fixed point (every window gets another's guidance)."""
    if n < 2:
        raise ValueError("shuffling guidance needs at least two windows")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    # rotate by one inside the permutation's order: a derangement
    src = np.empty(n, int)
    src[perm] = np.roll(perm, 1)
    return src.tolist()


def same_clip_sources(window_ids: Sequence[str]) -> dict[int, int]:
    """Index -> index of another window of the same clip (nearest earlier, else nearest later)."""
    by_clip: dict[str, list[tuple[int, int]]] = {}
    for i, w in enumerate(window_ids):
        clip, t = split_window_id(w)
        by_clip.setdefault(clip, []).append((t, i))
    out: dict[int, int] = {}
    for items in by_clip.values():
        items.sort()
        for k, (_, i) in enumerate(items):
            if len(items) > 1:
                out[i] = items[k - 1][1] if k > 0 else items[1][1]
    return out


class GuidanceSwap(Dataset):
    """``base`` with the guidance of sample i taken from ``sources[i]`` (or zeroed)."""

    def __init__(self, base: Dataset, kind: str, sources: Sequence[int] | None = None, indices: Sequence[int] | None = None):
        if kind not in ABLATIONS:
            raise ValueError(f"unknown guidance ablation {kind!r}; expected one of {ABLATIONS}")
        self.base, self.kind = base, kind
        self.indices = list(range(len(base))) if indices is None else list(indices)
        self.sources = None if sources is None else list(sources)
        if kind != "zeroed" and self.sources is None:
            raise ValueError(f"ablation {kind!r} needs a source index per sample")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        i = self.indices[j]
        sample = dict(self.base[i])
        keys = [k for k in sample if is_guidance_key(k)]
        if not keys:
            raise ValueError("this dataset serves no guidance keys (a jepa_only dataset?): nothing to ablate")
        if self.kind == "zeroed":
            for k in keys:
                if sample[k].is_floating_point():
                    sample[k] = torch.zeros_like(sample[k])
        else:
            other = self.base[self.sources[j]]
            for k in keys:
                sample[k] = other[k]
        return sample


__all__ = ["ABLATIONS", "GuidanceSwap", "is_guidance_key", "same_clip_sources", "shuffled_sources"]
