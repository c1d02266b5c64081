"""torch's intra-op thread count for one piece of work (``train.num_threads``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` intra-op threads (None: leave torch's setting), then restore it.
    Why: the tiny models of the demo and the benchmarks spend most of a multi-threaded step
    in OpenMP spin-waits on a busy 2-core machine; evaluation rolls the same models out."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["torch_threads"]
