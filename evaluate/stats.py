"""Statistics of a comparison: mean +- std over seeds, intervals over windows and over training
seeds, the minimum counts below which nothing is called significant, and the digest that names
a window set.

Two questions, two instruments, each named by ``method`` in what it returns:

- over windows (``comparison``): "on these windows, with these trained models, is the
  difference real?" The BCa bootstrap of the mean per-window difference
  (``scipy.stats.bootstrap``, windows resampled with their pairs). It holds the window-to-window
  noise and none of the run-to-run noise (a new training seed is a new model).
- over training seeds (``seed_comparison``): "would it hold for another training run?" The
  paired Student t interval of the per-seed mean differences
  (``scipy.stats.ttest_rel(...).confidence_interval()``; small seed counts are what this field
  trains, and a bootstrap over 3 seeds is far too narrow), with the two-level bootstrap (seeds,
  then windows; no scipy equivalent, so written here) beside it.

A count below ``MIN_WINDOWS`` windows or ``MIN_SEEDS`` seeds is never called significant,
whatever its interval says: a bootstrap over a handful of windows collapses (one window gives a
zero-width interval), and a t interval over 2 seeds rests on one degree of freedom.

No files: the benchmark and the report call the same functions.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

MIN_WINDOWS = 10
"""Fewest windows an interval over windows needs before a difference is called significant."""
MIN_SEEDS = 3
"""Fewest paired training seeds before a difference across training runs is called significant."""
CONFIDENCE = 0.95

WINDOW_METHOD = "BCa bootstrap, scipy.stats.bootstrap"
SEED_METHOD = "paired t, scipy.stats.ttest_rel"
HIERARCHICAL_METHOD = "two-level percentile bootstrap (seeds, then windows)"

_CHUNK = 256
"""Bootstrap resamples drawn at once (bounds memory on large window sets)."""


def _pair(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, ndim: int, what: str) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != ndim or 0 in a.shape:
        shape = "equal-length non-empty 1-D arrays" if ndim == 1 else "equal (seeds, windows) arrays"
        raise ValueError(f"{what} needs two {shape}, got {a.shape} and {b.shape}")
    return a - b


def _check_boot(n_boot: int) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def paired_bootstrap(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired windows and its 95% bootstrap interval (``method``: ``BCa``
    or ``percentile``, as ``scipy.stats.bootstrap`` takes it).

    ``a[i]`` and ``b[i]`` belong to the same window (see ``align``); windows are resampled with
    replacement, keeping the pairs together. Returns ``(mean_diff, lo, hi)``. Where every
    difference is the same (or there is one window) the interval is that value: no resample can
    move it, and scipy's BCa is undefined there."""
    d = _pair(a, b, 1, "paired_bootstrap")
    _check_boot(n_boot)
    mean = float(d.mean())
    if np.ptp(d) == 0:
        return mean, mean, mean
    with warnings.catch_warnings():
        # BCa on a few windows warns that its acceleration estimate is unstable: the minimum
        # counts above are what guards the verdict, so the warning only floods logs
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # BCa's 0/0 on near-constant data: NaN, handled below
        res = sps.bootstrap((d,), np.mean, confidence_level=CONFIDENCE, n_resamples=n_boot, method=method,
                            vectorized=True, batch=_CHUNK, rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa undefined (e.g. two distinct values): percentile
        return paired_bootstrap(a, b, n_boot, seed, method="percentile")
    return mean, lo, hi


def hierarchical_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over (seed, window) cells and its two-level percentile 95% interval.

    ``a[s, w]`` and ``b[s, w]`` are per-window values of the same training seed ``s`` (rows
    paired: both variants of one seed start from the same weights) on the same window ``w``.
    Each resample draws seeds with replacement, then windows with replacement, both kept
    paired, so the interval holds the seed-to-seed and the window-to-window variation.
    ``scipy.stats.bootstrap`` resamples one level only, hence this one."""
    d = _pair(a, b, 2, "hierarchical_bootstrap")
    _check_boot(n_boot)
    n_s, n_w = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        k = min(_CHUNK, n_boot - start)
        rows = rng.integers(0, n_s, size=(k, n_s, 1))
        cols = rng.integers(0, n_w, size=(k, 1, n_w))
        means[start : start + k] = d[rows, cols].mean(axis=(1, 2))
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(lo), float(hi)


def t_interval(diffs: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% Student t interval (``scipy.stats.ttest_rel``);
    equal differences give that value as the interval."""
    d = np.asarray(diffs, np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"a t interval needs at least 2 paired values (1 degree of freedom), got {d.size}")
    mean = float(d.mean())
    if np.ptp(d) == 0:
        return mean, mean, mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # differences equal up to rounding: the interval is ~0 wide
        ci = sps.ttest_rel(d, np.zeros_like(d)).confidence_interval(CONFIDENCE)
    lo, hi = float(ci.low), float(ci.high)
    return (mean, lo, hi) if np.isfinite(lo) and np.isfinite(hi) else (mean, mean, mean)


def _call(lo: float, hi: float, enough: bool) -> dict[str, bool]:
    excludes = bool(lo > 0 or hi < 0)
    return {"excludes_zero": excludes, "enough": enough, "significant": excludes and enough}


def seed_comparison(
    a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], n_boot: int, seed: int = 0,
    min_seeds: int = MIN_SEEDS, min_windows: int = MIN_WINDOWS,
) -> dict[str, Any] | None:
    """Variant ``a`` against ``b`` over training seeds: per-seed mean differences, their paired
    t interval and the two-level bootstrap; ``None`` with fewer than 2 paired seeds.

    ``a`` and ``b`` map a seed to its per-window values (same window order). Seeds are paired
    by name; a side with one unseeded run (a baseline, key ``"-"``) is paired with every seed
    of the other. ``significant`` needs ``min_seeds`` seeds and ``min_windows`` windows."""
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
    n, n_w = diffs.size, int(A.shape[1])
    mean, lo, hi = t_interval(diffs)
    _, h_lo, h_hi = hierarchical_bootstrap(A, B, n_boot=n_boot, seed=seed)
    enough = n >= min_seeds and n_w >= min_windows
    return {
        "mean_diff": mean, "lo": lo, "hi": hi, **_call(lo, hi, enough), "seeds": n, "windows": n_w,
        "min_seeds": min_seeds, "min_windows": min_windows, "method": SEED_METHOD,
        "per_seed_diff": {s: float(x) for s, x in zip(common, diffs)},
        "per_seed_std": float(diffs.std(ddof=1)),
        "lower_in": int((diffs < 0).sum()), "higher_in": int((diffs > 0).sum()),
        "hierarchical": {"lo": h_lo, "hi": h_hi, **_call(h_lo, h_hi, enough), "method": HIERARCHICAL_METHOD},
    }


def align(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair two per-window mappings by window id; both must cover the same windows."""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"window sets differ: only in the first {only_a[:3]}, only in the second {only_b[:3]}")
    ids = sorted(a)
    return ids, np.array([a[i] for i in ids]), np.array([b[i] for i in ids])


def comparison(a: Mapping[str, float], b: Mapping[str, float], n_boot: int, seed: int = 0,
               min_windows: int = MIN_WINDOWS) -> dict[str, Any]:
    """``paired_bootstrap`` of two per-window mappings as the report and metrics.json state it;
    ``significant`` needs ``min_windows`` windows."""
    ids, x, y = align(a, b)
    mean, lo, hi = paired_bootstrap(x, y, n_boot=n_boot, seed=seed)
    return {"mean_diff": mean, "lo": lo, "hi": hi, **_call(lo, hi, len(ids) >= min_windows), "windows": len(ids),
            "min_windows": min_windows, "method": WINDOW_METHOD}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def window_digest(window_ids: Sequence[str]) -> str:
    """Order-free name of a window set: equal digests mean the same windows."""
    return hashlib.sha256("\n".join(sorted(window_ids)).encode()).hexdigest()[:16]


__all__ = ["CONFIDENCE", "HIERARCHICAL_METHOD", "MIN_SEEDS", "MIN_WINDOWS", "SEED_METHOD", "WINDOW_METHOD", "align",
           "comparison", "hierarchical_bootstrap", "mean_std", "paired_bootstrap", "seed_comparison", "t_interval",
           "window_digest"]
