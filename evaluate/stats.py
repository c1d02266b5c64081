"""Statistics of a comparison: mean +- std over seeds, paired bootstrap intervals over windows,
intervals over training seeds, and the digest that names a window set.

Two questions, two instruments. ``paired_bootstrap`` over windows answers "on these windows,
with these trained models, is the difference real?": it holds the window-to-window noise and
none of the run-to-run noise (a new training seed is a new model). ``seed_comparison`` answers
"would it hold for another training run?": a paired Student t interval over the per-seed mean
differences (small seed counts are what this field trains, and a percentile bootstrap over 3
seeds is far too narrow), with a two-level bootstrap (seeds, then windows) beside it.

Pure NumPy, no files: the benchmark and the report call the same functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_CHUNK = 256
"""Bootstrap resamples drawn at once (bounds memory on large window sets)."""


def paired_bootstrap(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired windows and its percentile-bootstrap 95% interval.

    ``a[i]`` and ``b[i]`` belong to the same window (see ``align``); windows are resampled
    with replacement, keeping the pairs together. Returns ``(mean_diff, lo, hi)``; the
    difference is significant at 5% when the interval excludes 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two equal-length non-empty 1-D arrays, got {a.shape} and {b.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        k = min(_CHUNK, n_boot - start)
        means[start : start + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}
"""Two-sided 95% Student t quantiles by degrees of freedom (standard tables); a df between two
rows takes the smaller df's (larger, conservative) value, beyond 120 it is 1.980."""


def t_quantile_975(df: int) -> float:
    """The 97.5% Student t quantile for ``df`` degrees of freedom (conservative between rows)."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom (2 seeds), got {df}")
    return T_975[max(k for k in T_975 if k <= df)]


def hierarchical_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over (seed, window) cells and its two-level percentile 95% interval.

    ``a[s, w]`` and ``b[s, w]`` are per-window values of the same training seed ``s`` (rows
    paired: both variants of one seed start from the same weights) on the same window ``w``.
    Each resample draws seeds with replacement, then windows with replacement, both kept
    paired, so the interval holds the seed-to-seed and the window-to-window variation."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"hierarchical_bootstrap needs two equal (seeds, windows) arrays, got {a.shape} and {b.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = a - b
    n_s, n_w = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        k = min(_CHUNK, n_boot - start)
        rows = rng.integers(0, n_s, size=(k, n_s, 1))
        cols = rng.integers(0, n_w, size=(k, 1, n_w))
        means[start : start + k] = d[rows, cols].mean(axis=(1, 2))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def seed_comparison(
    a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], n_boot: int, seed: int = 0
) -> dict[str, Any] | None:
    """Variant ``a`` against ``b`` over training seeds: per-seed mean differences, their paired
    t interval and the two-level bootstrap; ``None`` with fewer than 2 paired seeds.

    ``a`` and ``b`` map a seed to its per-window values (same window order). Seeds are paired
    by name; a side with one unseeded run (a baseline, key ``"-"``) is paired with every seed
    of the other."""
    if set(a) == {"-"}:
        a = {s: a["-"] for s in b}
    if set(b) == {"-"}:
        b = {s: b["-"] for s in a}
    common = [s for s in a if s in b]
    if len(common) < 2:
        return None
    A = np.asarray([a[s] for s in common], np.float64)
    B = np.asarray([b[s] for s in common], np.float64)
    diffs = (A - B).mean(axis=1)
    n = diffs.size
    mean = float(diffs.mean())
    half = t_quantile_975(n - 1) * float(diffs.std(ddof=1)) / np.sqrt(n)
    _, h_lo, h_hi = hierarchical_bootstrap(A, B, n_boot=n_boot, seed=seed)
    lo, hi = float(mean - half), float(mean + half)
    return {
        "mean_diff": mean, "lo": lo, "hi": hi, "significant": bool(lo > 0 or hi < 0), "seeds": n,
        "per_seed_diff": {s: float(x) for s, x in zip(common, diffs)},
        "lower_in": int((diffs < 0).sum()), "higher_in": int((diffs > 0).sum()),
        "windows": int(A.shape[1]), "method": "paired t over seeds",
        "hierarchical": {"lo": h_lo, "hi": h_hi, "significant": bool(h_lo > 0 or h_hi < 0)},
    }


def align(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair two per-window mappings by window id; both must cover the same windows."""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"window sets differ: only in the first {only_a[:3]}, only in the second {only_b[:3]}")
    ids = sorted(a)
    return ids, np.array([a[i] for i in ids]), np.array([b[i] for i in ids])


def comparison(a: Mapping[str, float], b: Mapping[str, float], n_boot: int, seed: int = 0) -> dict[str, float | int | bool]:
    """``paired_bootstrap`` of two per-window mappings as the report and metrics.json state it."""
    ids, x, y = align(a, b)
    mean, lo, hi = paired_bootstrap(x, y, n_boot=n_boot, seed=seed)
    return {"mean_diff": mean, "lo": lo, "hi": hi, "significant": bool(lo > 0 or hi < 0), "windows": len(ids)}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def window_digest(window_ids: Sequence[str]) -> str:
    """Order-free name of a window set: equal digests mean the same windows."""
    return hashlib.sha256("\n".join(sorted(window_ids)).encode()).hexdigest()[:16]


__all__ = ["T_975", "align", "comparison", "hierarchical_bootstrap", "mean_std", "paired_bootstrap", "seed_comparison",
           "t_quantile_975", "window_digest"]
