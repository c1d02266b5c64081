"""The split rule: which of train / val / test a split group (task folder, or episode in the
episode-grouped fallback) belongs to.

A group's split is a property of the group, never of the set it sits in: ``unit(group, seed)``
is a stable hash of the group key salted with ``data.split_seed``, mapped to [0, 1), and the
fractions cut [0, 1) into train, val and test. Adding or removing a task never moves another
task between splits (a seeded permutation of the current set does: with 100 tasks, removing one
moved 7). The one exception is a tiny dataset where the hash leaves a split with a non-zero
share empty: ``fill_empty`` then lends it the group whose hash lies nearest that split's
interval (train first, then test, then val), and the manifest records every group it lent, so
the move is visible and undone as soon as the hash fills the split itself.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

SPLITS = ("train", "val", "test")
SPLIT_RULE = "sha256(seed:group)-v1"
"""Recorded in the manifest: a manifest made under another rule is re-split, not merged."""
_FILL_ORDER = ("train", "test", "val")
"""Which empty split is filled first: a held-out test set matters more than a val set."""


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three finite non-negative shares with a non-empty train share, normalised to sum 1."""
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or fr[0] <= 0:
        raise ValueError(f"split fractions must be three finite non-negative shares (train > 0), got {list(fractions)}")
    total = sum(fr)
    return fr[0] / total, fr[1] / total, fr[2] / total


def unit(group: str, seed: int) -> float:
    """The group's stable position in [0, 1): the same on every machine and Python version."""
    digest = hashlib.sha256(f"{seed}:{group}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _bounds(fr: tuple[float, float, float]) -> dict[str, tuple[float, float]]:
    return {"train": (0.0, fr[0]), "val": (fr[0], fr[0] + fr[1]), "test": (fr[0] + fr[1], 1.0)}


def split_of(group: str, fractions: Sequence[float], seed: int) -> str:
    """The split the hash gives ``group`` (before any lending of ``fill_empty``)."""
    u = unit(group, seed)
    fr = check_fractions(fractions)
    for name, (lo, hi) in _bounds(fr).items():
        if fr[SPLITS.index(name)] > 0 and lo <= u < hi:
            return name
    return [s for s, share in zip(SPLITS, fr) if share > 0][-1]  # u rounding past the last bound


def assign_splits(groups: Iterable[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Split group -> ``train``/``val``/``test``: the one split rule (see the module doc)."""
    return assign_splits_recorded(groups, fractions, seed)[0]


def assign_splits_recorded(groups: Iterable[str], fractions: Sequence[float],
                           seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """``assign_splits`` and the groups lent by ``fill_empty`` (group -> the split it was lent to)."""
    fr = check_fractions(fractions)
    names = sorted(set(groups))
    out = {g: split_of(g, fr, seed) for g in names}
    lent = fill_empty(out, fr, seed)
    return out, lent


def fill_empty(out: dict[str, str], fr: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Give each split with a non-zero share that the hash left empty one group, nearest its
    interval, from a split that keeps one (or from a split filled later in ``_FILL_ORDER``).
    Only tiny datasets get here; the moves are returned so the manifest can record them."""
    bounds = _bounds(fr)
    lent: dict[str, str] = {}
    for need in _FILL_ORDER:
        if fr[SPLITS.index(need)] <= 0 or need in out.values():
            continue
        counts = {s: list(out.values()).count(s) for s in SPLITS}
        later = _FILL_ORDER[_FILL_ORDER.index(need) + 1:]
        donors = [g for g, s in out.items() if counts[s] > 1 or s in later]
        if not donors:
            continue
        lo, hi = bounds[need]
        pick = min(donors, key=lambda g, lo=lo, hi=hi: (max(lo - unit(g, seed), unit(g, seed) - hi, 0.0), g))
        out[pick] = need
        lent[pick] = need
    return lent


__all__ = ["SPLITS", "SPLIT_RULE", "assign_splits", "assign_splits_recorded", "check_fractions", "split_of", "unit"]
