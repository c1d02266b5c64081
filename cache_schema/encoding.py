"""Array <-> bytes: storage dtypes (bfloat16 as raw bits) and Zarr v3 chunk encoding.

Chunks are encoded here rather than through zarr-python's write path because every cache array
uses the plainest codec chain (``bytes`` + ``crc32c``): a full chunk is a contiguous slice of
the array plus a 4-byte checksum, written without a copy, and fsync'ed where the commit
protocol needs it. zarr-python's writer produces the same bytes
(``tests/cache_schema/test_zarr_interop.py``) at about 0.4x this encoder's speed
(``benchmarks/bench_cache.py``: 57 vs 143 MB/s on a shared 2-core box). ``get`` and ``verify``
read through zarr-python, so every test read also checks the files are valid Zarr.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import google_crc32c
import numpy as np

from thinkjepa.cache_schema.fastcopy import PIECE, copy_array
from thinkjepa.cache_schema.schema import CHUNK_SEP, CacheError, chunk_keys

_F16_MAX = float(np.finfo(np.float16).max)


def as_numpy(x, what: str) -> np.ndarray:
    """numpy view of an array-like; torch tensors (incl. bfloat16) are converted to float32."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor: numpy cannot hold its bf16
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    try:
        return np.asarray(x)
    except Exception as e:
        raise CacheError(f"{what}: not an array ({type(x).__name__}): {e}") from e


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16, returned as uint16 bits."""
    if x.dtype == np.float32 and x.size >= PIECE:  # vectorised (thinkjepa.cache_schema.fastcopy); same rounding
        out = np.empty(x.shape, dtype=np.uint16)
        copy_array(out, x, dst_torch_dtype="bfloat16")
        return out
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def bfloat16_view(bits):
    """An array stored as bfloat16 (uint16 bits, array attribute ``thinkjepa_dtype =
    "bfloat16"``) as a ``torch.bfloat16`` tensor sharing its memory: the helper for reading a
    cache with stock zarr, which has no bfloat16 data type (``zarr.open_array(...)[...]`` gives
    the uint16 bits)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(bits, dtype=np.uint16)).view(torch.bfloat16)


def to_storage(x: np.ndarray, storage_dtype: str, what: str) -> np.ndarray:
    """C-contiguous little-endian array in the storage representation; refuses float16 overflow."""
    if not np.issubdtype(x.dtype, np.floating):
        raise CacheError(f"{what}: expected a float array, got dtype {x.dtype}")
    if storage_dtype == "bfloat16":
        return f32_to_bf16_bits(x)
    target = np.dtype(storage_dtype).newbyteorder("<")
    if x.dtype == target:
        return np.ascontiguousarray(x)
    if storage_dtype == "float16" and x.size and x.dtype.itemsize > 2:
        peak = max(float(x.max()), -float(x.min()))
        if peak > _F16_MAX:  # would silently become inf
            raise CacheError(f"{what}: value {peak:.4g} overflows float16 (max {_F16_MAX:.0f}); "
                             "store this model's states as bfloat16")
    if x.dtype == np.float32 and storage_dtype == "float16" and x.size >= PIECE:
        out = np.empty(x.shape, dtype=np.float16)  # vectorised (thinkjepa.cache_schema.fastcopy); same rounding
        copy_array(out, x)
        return out
    return np.ascontiguousarray(x, dtype=target)


def from_storage(a: np.ndarray, storage_dtype: str) -> np.ndarray:
    if storage_dtype == "bfloat16":
        return bf16_bits_to_f32(a)
    return np.asarray(a, dtype=np.float32)


def storage_into_f32(dst: np.ndarray, src: np.ndarray, storage_dtype: str) -> None:
    """Write stored values ``src`` (float16/float32, or bfloat16 as uint16 bits) into float32 ``dst``.

    The hot loop of token reads: vectorised and on the calling thread (thinkjepa.cache_schema.fastcopy),
    which makes the conversion cheaper than reading the bytes. The values are those of
    :func:`from_storage` (the conversion to float32 is exact)."""
    if src.dtype == np.float32 or src.size < PIECE:
        np.copyto(dst, from_storage(src, storage_dtype) if storage_dtype == "bfloat16" else src)
        return
    copy_array(dst, src, "bfloat16" if storage_dtype == "bfloat16" else None)


def token_means(x: np.ndarray) -> np.ndarray:
    """Per-layer mean over tokens of [L, N, H] in float32; zeros for an empty stream."""
    n = x.shape[1]
    if n == 0:
        return np.zeros((x.shape[0], x.shape[2]), dtype=np.float32)
    out = np.empty((x.shape[0], x.shape[2]), dtype=np.float32)
    for i in range(x.shape[0]):  # per layer keeps the float32 temporary small
        np.add.reduce(x[i], axis=0, dtype=np.float32, out=out[i])
    out /= np.float32(n)
    return out


def all_finite(x: np.ndarray) -> bool:
    """True when no NaN/Inf; a float64 sum is finite exactly when every finite input is."""
    if x.size == 0:
        return True
    return bool(np.isfinite(np.add.reduce(x.reshape(-1), dtype=np.float64)))


def _chunk(a: np.ndarray, idx: tuple[int, ...], chunks: tuple[int, ...]) -> list:
    """``[data, crc]`` of chunk ``idx`` under bytes(little) + crc32c; a view of ``a`` when full."""
    sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, a.shape))
    blk = a[sl]
    if blk.shape != tuple(chunks):  # edge chunk: Zarr stores it padded with the fill value (0)
        padded = np.zeros(chunks, dtype=a.dtype)
        padded[tuple(slice(0, n) for n in blk.shape)] = blk
        blk = padded
    elif not blk.flags.c_contiguous:
        blk = np.ascontiguousarray(blk)
    return [blk, _crc_bytes(blk)]


def _crc_bytes(buf) -> bytes:
    return np.uint32(google_crc32c.value(buf)).astype("<u4").tobytes()


def encode_array(a: np.ndarray, chunks: tuple[int, ...], shard: tuple[int, ...] | None) -> Iterator[tuple[str, list]]:
    """``(object key, [buffers...])`` of every stored object of ``a`` (see ``schema.chunk_layout``).

    Unsharded: one object per chunk. Sharded: the single shard holds every inner chunk in C
    order followed by the sharding index ((offset, nbytes) uint64 per chunk, then its crc32c).
    """
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    if shard is None:
        for key in chunk_keys(a.shape, chunks):
            yield key, _chunk(a, tuple(int(i) for i in key.split(CHUNK_SEP)[1:]), chunks)
        return
    (key,) = chunk_keys(a.shape, shard)  # the layout makes one shard cover the whole array
    per_shard = tuple(s // c for s, c in zip(shard, chunks))
    index = np.full((*per_shard, 2), np.iinfo(np.uint64).max, dtype="<u8")
    bufs: list = []
    offset = 0
    for idx in np.ndindex(*per_shard):
        if any(i * c >= s for i, c, s in zip(idx, chunks, a.shape)):
            continue  # wholly outside the array: stays "missing" (all-ones) in the index
        data, crc = _chunk(a, idx, chunks)
        bufs += [data, crc]
        index[idx] = (offset, data.nbytes + 4)
        offset += data.nbytes + 4
    bufs += [index, _crc_bytes(index)]
    yield key, bufs


def nbytes_encoded(shape: tuple[int, ...], chunks: tuple[int, ...], shard: tuple[int, ...] | None,
                   itemsize: int) -> int:
    if not all(shape):
        return 0
    n_chunks = math.prod(math.ceil(s / c) for s, c in zip(shape, chunks))
    index = 0 if shard is None else math.prod(s // c for s, c in zip(shard, chunks)) * 16 + 4
    return n_chunks * (math.prod(chunks) * itemsize + 4) + index


def checked(buf, what: str) -> np.ndarray:
    """The data bytes of one encoded chunk (uint8 view), after checking its crc32c."""
    a = np.frombuffer(buf, dtype=np.uint8)
    if a.size < 4:
        raise CacheError(f"{what}: truncated chunk ({a.size} bytes)")
    data = a[:-4]
    if google_crc32c.value(data) != int.from_bytes(a[-4:].tobytes(), "little"):
        raise CacheError(f"{what}: checksum mismatch (damaged chunk)")
    return data


def shard_index_size(per_shard: tuple[int, ...]) -> int:
    return math.prod(per_shard) * 16 + 4


def decode_shard_index(buf, per_shard: tuple[int, ...], what: str) -> np.ndarray:
    """(offset, nbytes) uint64 per inner chunk, shape ``(*per_shard, 2)``."""
    return checked(buf, f"{what} (shard index)").view("<u8").reshape(*per_shard, 2)
