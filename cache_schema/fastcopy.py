"""Dtype-converting array copies at memory speed, on the calling thread.

The hidden-state path converts tens of MB per clip (engine bf16 -> float32 layer-major on the
way out of vLLM, float32 -> float16 into the cache, float16 -> float32 on the way back to
training). numpy converts float16/bfloat16 element by element (~0.3-0.8 GB/s measured here);
torch's copy uses the CPU's vector conversion instructions (2-7 GB/s). But torch splits a
large copy over its intra-op OpenMP threads, and next to the reader's own threads, a training
step or other processes on the cores those threads wait on each other: on the shared 2-core
box one 1 MiB copy on 2 threads ran at 0.14 GB/s. So copies go in pieces below torch's
parallel grain (32768 elements), each of which runs on the calling thread (2.1 GB/s there).
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Any

import numpy as np

PIECE = 30 * 1024
"""Elements per torch copy: below ``at::internal::GRAIN_SIZE`` (32768), so never parallel."""

_torch_module: Any = None
_torch_lock = threading.Lock()


def torch_module():
    """torch, after spending its once-per-process warning about non-writable numpy arrays:
    sources here are often the store's read-only bytes, which a copy only reads."""
    global _torch_module
    with _torch_lock:
        if _torch_module is None:
            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                torch.from_numpy(np.frombuffer(b"\0\0", dtype=np.uint8))
            _torch_module = torch
    return _torch_module


def copy_serial(dst, src) -> None:
    """``dst.copy_(src)`` for torch tensors of one shape (any dtypes and strides), in pieces of
    at most ``PIECE`` elements split along the leading axes."""
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"copy of shape {tuple(src.shape)} into {tuple(dst.shape)}")
    n = dst.numel()
    if n <= PIECE or dst.dim() == 0:
        dst.copy_(src)
        return
    if dst.dim() == 1:
        for d, s in zip(dst.split(PIECE), src.split(PIECE)):
            d.copy_(s)
        return
    inner = math.prod(dst.shape[1:])
    if inner <= PIECE:
        rows = PIECE // inner
        for d, s in zip(dst.split(rows), src.split(rows)):
            d.copy_(s)
        return
    for i in range(dst.shape[0]):
        copy_serial(dst[i], src[i])


def copy_array(dst: np.ndarray, src: np.ndarray, src_torch_dtype: str | None = None,
               dst_torch_dtype: str | None = None) -> None:
    """numpy ``dst[...] = src`` (same shape) through :func:`copy_serial`. ``src_torch_dtype`` /
    ``dst_torch_dtype`` reinterpret an array's bits (``"bfloat16"`` for bfloat16 held as uint16)."""
    torch = torch_module()
    try:
        s = torch.from_numpy(src)
    except ValueError:  # negative strides: torch cannot view them
        s = torch.from_numpy(np.ascontiguousarray(src))
    d = torch.from_numpy(dst)
    if src_torch_dtype is not None:
        s = s.view(getattr(torch, src_torch_dtype))
    if dst_torch_dtype is not None:
        d = d.view(getattr(torch, dst_torch_dtype))
    copy_serial(d, s)
