"""Cache-wide statistics: counts from the commit records, norms through dask views."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from thinkjepa.cache_schema.reader import CacheReader
from thinkjepa.cache_schema.schema import TOKEN_STREAMS


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"total": 0, "mean": 0.0, "min": 0, "max": 0}
    a = np.asarray(values)
    return {"total": int(a.sum()), "mean": float(a.mean()), "min": int(a.min()), "max": int(a.max())}


def cache_stats(url: str, norms: bool = True, num_workers: int = 2) -> dict[str, Any]:
    """Entries per part, token counts per stream, bytes, failures and (``norms``) per-layer
    norms of the per-entry token means (mean and std over entries), computed with dask.

    Counts need only the commit records; norms read the mean arrays (vlm, a few KB per entry)
    or the full latents (jepa).
    """
    import dask

    r = CacheReader(url)
    records = r.records()
    meta = r.meta
    out: dict[str, Any] = {
        "url": r.url,
        "meta": meta.to_dict(),
        "entries": len(records),
        "entries_per_part": dict(sorted(Counter(rec["part"] for rec in records).items())),
        "failures": len(r.failures()),
        "bytes": int(sum(a["nbytes"] for rec in records for a in rec["arrays"].values())),
    }
    streams = TOKEN_STREAMS + ("vision", "text") if meta.kind == "vlm" else ("past", "future")
    out["tokens"] = {s: _summary([int(rec["tokens"].get(s, 0)) for rec in records]) for s in streams}
    if norms and records:
        keys = [rec["key"] for rec in records]
        if meta.kind == "vlm":
            lazy = {}
            for s in TOKEN_STREAMS:
                n = (r.means_dask(s, keys) ** 2).sum(axis=-1) ** 0.5  # [E, L]
                lazy[s] = (n.mean(axis=0), n.std(axis=0))
            (got,) = dask.compute(lazy, scheduler="threads", num_workers=num_workers)
            out["layer_mean_norm"] = {
                s: {"layers": list(meta.layers), "mean": [float(x) for x in m], "std": [float(x) for x in sd]}
                for s, (m, sd) in got.items()}
        else:
            lazy = {s: r.latent_means_dask(s, keys) for s in ("past", "future")}
            lazy = {s: ((v ** 2).sum(axis=-1) ** 0.5).mean() for s, v in lazy.items()}
            (got,) = dask.compute(lazy, scheduler="threads", num_workers=num_workers)
            out["latent_mean_norm"] = {s: float(v) for s, v in got.items()}
    r.close()
    return out
