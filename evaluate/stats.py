"""Statistics of a comparison: mean +- std over seeds, paired bootstrap intervals, and the
digest that names a window set.

Pure NumPy, no files: the benchmark and the report call the same functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

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


__all__ = ["align", "comparison", "mean_std", "paired_bootstrap", "window_digest"]
