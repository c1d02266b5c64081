"""Train-split statistics of the thinker guidance, as dask reductions over the VLM cache.

``guidance_stats(vlm_url, keys)`` reads the per-entry, per-layer token means that the cache
stores beside the tokens (a few KB per window, ``CacheReader.means_dask``) and reduces them in
one dask graph: every block of entries is read once and feeds all statistics. Use it on the
train split's window keys only (the statistics must not see val/test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from thinkjepa.cache_schema import CacheReader
from thinkjepa.cache_schema.schema import TOKEN_STREAMS


@dataclass(frozen=True)
class StreamStats:
    """Statistics of one token stream's per-entry means over ``count`` entries (float64)."""

    layers: tuple[int, ...]
    count: int
    mean: np.ndarray
    """[L, H] mean over entries."""
    std: np.ndarray
    """[L, H] population std over entries."""
    layer_mean: np.ndarray
    """[L] mean over entries and hidden features."""
    layer_std: np.ndarray
    """[L] std over entries and hidden features."""


def guidance_stats(
    vlm_url: str,
    keys: Sequence[str],
    streams: Sequence[str] = TOKEN_STREAMS,
    *,
    scheduler: str = "threads",
    num_workers: int = 2,
    block: int = 64,
) -> dict[str, StreamStats]:
    """Per stream (``prefill``, ``generated``): per-layer mean and std of the cache's per-entry
    token means over ``keys``. ``scheduler``: a local dask scheduler (``threads``,
    ``processes``, ``sync``) or a ``dask.distributed`` address.

    Raises ``ValueError`` for no keys and ``KeyError`` naming keys the cache does not hold.
    """
    import dask

    keys = list(keys)
    if not keys:
        raise ValueError("guidance_stats needs at least one window key (the train split's)")
    reader = CacheReader(vlm_url)
    try:
        have = set(reader.keys())
        absent = [k for k in keys if k not in have]
        if absent:
            raise KeyError(f"{len(absent)} key(s) not committed in {vlm_url}, first: {absent[:3]}")
        lazy = {}
        for s in streams:
            x = reader.means_dask(s, keys, block=block).astype(np.float64)  # [E, L, H]
            lazy[s] = (x.mean(axis=0), x.std(axis=0), x.mean(axis=(0, 2)), x.std(axis=(0, 2)))
        if scheduler in ("threads", "processes", "sync"):
            (got,) = dask.compute(lazy, scheduler=scheduler, num_workers=num_workers)
        else:
            from distributed import Client

            with Client(scheduler) as client:
                got = client.compute(lazy, sync=True)
        layers = tuple(int(v) for v in reader.meta.layers)
    finally:
        reader.close()
    return {s: StreamStats(layers, len(keys), *(np.asarray(a) for a in v)) for s, v in got.items()}


__all__ = ["StreamStats", "guidance_stats"]
