"""The cache's hand-written Zarr v3 encoder against zarr-python's own writer, and the whole store
read with nothing but stock zarr.

The hot path encodes chunks and shards itself (``cache_schema.encoding``: fsync durability and no
copies); these tests hold it to zarr-python's sharded writer (``zarr.create_array(...,
shards=...)``) byte for byte, metadata included, on the layouts the cache produces (one chunk,
sharded with equal chunks, sharded with a padded edge chunk, empty). Where zarr-python lays the
inner chunks of a shard out in another order (Morton, on a 2x2 chunk grid) the shard's length and
every inner chunk's bytes, found through each shard index, are compared instead. A stock-zarr walk from the
store's root opens every committed array; the folders that are not Zarr nodes (``index/``,
``failures/``, ``locks/``: plain JSON records and lock files) only make zarr warn.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from cache_testdata import jepa_entry, jepa_meta, vlm_entry, vlm_meta
from zarr.codecs import BytesCodec, Crc32cCodec

from thinkjepa.cache_schema import CacheReader, CacheWriter, schema
from thinkjepa.cache_schema.encoding import (
    bf16_bits_to_f32,
    bfloat16_view,
    checked,
    encode_array,
    f32_to_bf16_bits,
    shard_index_size,
)
from thinkjepa.cache_schema.schema import CHUNK_SEP, array_zarr_json, chunk_layout

CASES = {
    "int32 ids, one chunk": np.arange(40, dtype=np.int32),
    "uint8 kinds, one chunk": (np.arange(17) % 3).astype(np.uint8),
    "float32 means, one chunk": np.random.default_rng(0).normal(size=(3, 256)).astype(np.float32),
    "float16 states, sharded": np.random.default_rng(1).normal(size=(3, 1200, 256)).astype(np.float16),
    "float32 states, sharded with a padded edge chunk": np.random.default_rng(2).normal(size=(2, 1101, 256)).astype(np.float32),
    "bfloat16 bits, sharded": f32_to_bf16_bits(np.random.default_rng(3).normal(size=(4, 700, 256)).astype(np.float32)),
    "no tokens": np.zeros((3, 0, 256), np.float16),
}
_META_KEYS = ("zarr_format", "node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs")


def _ours(a: np.ndarray, folder: Path) -> None:
    chunks, shard = chunk_layout(a.shape, a.dtype.itemsize)
    folder.mkdir(parents=True)
    (folder / "zarr.json").write_text(json.dumps(array_zarr_json(a.shape, str(a.dtype), chunks, shard, {}, None)))
    for key, bufs in encode_array(a, chunks, shard):
        (folder / key).write_bytes(b"".join(memoryview(b).cast("B") for b in bufs))


def _zarr_python(a: np.ndarray, folder: Path) -> None:
    chunks, shard = chunk_layout(a.shape, a.dtype.itemsize)
    z = zarr.create_array(store=str(folder), shape=a.shape, dtype=a.dtype, chunks=chunks, shards=shard,
                          serializer=BytesCodec(endian="little"), compressors=[Crc32cCodec()], filters=None,
                          fill_value=0, chunk_key_encoding={"name": "default", "separator": CHUNK_SEP},
                          config={"write_empty_chunks": True}, zarr_format=3)
    z[...] = a


def _inner_chunks(shard: bytes, per_shard: tuple[int, ...]) -> dict[tuple[int, ...], bytes]:
    """Each inner chunk's encoded bytes (data + crc32c) by its index in the shard, found through
    the shard index (checked by its own crc32c)."""
    index = checked(shard[-(shard_index_size(per_shard)):], "shard index").view("<u8").reshape(*per_shard, 2)
    return {idx: shard[int(index[idx][0]) : int(index[idx][0] + index[idx][1])] for idx in np.ndindex(*per_shard)}


@pytest.mark.parametrize("name", list(CASES))
def test_encoder_writes_the_bytes_zarr_python_writes(tmp_path, name):
    a = CASES[name]
    _ours(a, tmp_path / "ours")
    _zarr_python(a, tmp_path / "zarr")
    ours = {p.name: p.read_bytes() for p in (tmp_path / "ours").iterdir() if p.name != "zarr.json"}
    theirs = {p.name: p.read_bytes() for p in (tmp_path / "zarr").iterdir() if p.name != "zarr.json"}
    assert sorted(ours) == sorted(theirs) and (ours or a.size == 0)
    chunks, shard = chunk_layout(a.shape, a.dtype.itemsize)
    for key in ours:
        if shard is None or ours[key] == theirs[key]:  # chunk data + crc32c (+ shard index + crc): the same bytes
            assert ours[key] == theirs[key], key
        else:  # zarr-python lays inner chunks out in Morton order, ours in C order: the index says where
            per_shard = tuple(s // c for s, c in zip(shard, chunks))
            assert len(ours[key]) == len(theirs[key]) and _inner_chunks(ours[key], per_shard) == _inner_chunks(theirs[key], per_shard)
    m_ours, m_zarr = (json.loads((tmp_path / d / "zarr.json").read_text()) for d in ("ours", "zarr"))
    if a.dtype.itemsize == 1:  # zarr-python leaves out an endianness that means nothing for one byte
        m_ours["codecs"][0].pop("configuration")
    assert {k: m_ours[k] for k in _META_KEYS} == {k: m_zarr[k] for k in _META_KEYS}
    back = zarr.open_array(str(tmp_path / "ours"), mode="r")[...]
    assert back.dtype == a.dtype and np.array_equal(back, a)


def test_stock_zarr_walks_the_whole_store_and_reads_every_array(tmp_path):
    root = tmp_path / "vlm.zarr"
    entries = [vlm_entry("sort/0@8", 1, n_prefill=1200, n_generated=6, hidden=256),  # sharded
               vlm_entry("sort/1@8", 2, n_prefill=17, n_generated=0, hidden=256)]  # small, and an empty stream
    with CacheWriter(str(root), vlm_meta("bfloat16", hidden=256), part="shard-00000-of-00001") as w:
        for e in entries:
            w.commit(e)
        w.record_failure("sort/2@8", "video unreadable")
    reader = CacheReader(str(root))
    side_folders = {schema.INDEX, schema.FAILURES, schema.LOCKS, schema.CATALOG}  # not Zarr nodes
    assert {p.name for p in root.iterdir()} >= {"zarr.json", "clips"} | side_folders
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        members = dict(zarr.open_group(str(root), mode="r").members(max_depth=None))
    # the non-Zarr folders are skipped with a warning each, never an error
    assert {str(w.message).split()[2] for w in caught if "not recognized" in str(w.message)} <= side_folders
    arrays = {p: a for p, a in members.items() if isinstance(a, zarr.Array)}
    for e in entries:
        rec = reader.record(e.key)
        folder = rec["path"]
        for name in rec["arrays"]:
            arr = arrays.pop(f"{folder}/{name}")
            got = arr[...]
            if name.endswith("_mean"):  # written by the cache from the tokens: the reader's means
                np.testing.assert_array_equal(got, reader.read_means(e.key)[name[: -len("_mean")]])
                continue
            want = np.asarray(e.__dict__[name])
            if name in ("prefill", "generated"):  # bfloat16 travels as its bits; the helper reads it as bfloat16
                assert arr.attrs["thinkjepa_dtype"] == "bfloat16" and got.dtype == np.uint16
                as_bf16 = bfloat16_view(got)
                assert str(as_bf16.dtype) == "torch.bfloat16"
                np.testing.assert_array_equal(as_bf16.float().numpy(), bf16_bits_to_f32(f32_to_bf16_bits(want)))
                np.testing.assert_array_equal(as_bf16.float().numpy(), reader.get(e.key).__dict__[name])
            else:
                np.testing.assert_array_equal(got, want)
    assert not arrays  # every array zarr found belongs to a committed entry, and each was opened


def test_jepa_store_walks_too(tmp_path):
    root = tmp_path / "jepa.zarr"
    with CacheWriter(str(root), jepa_meta("float16"), part="p0") as w:
        w.commit(jepa_entry("t/0@8", 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arrays = {p: a for p, a in zarr.open_group(str(root), mode="r").members(max_depth=None) if isinstance(a, zarr.Array)}
    assert sorted(p.rsplit("/", 1)[1] for p in arrays) == ["future", "future_frames", "past", "past_frames"]
    past = next(a for p, a in arrays.items() if p.endswith("/past"))
    np.testing.assert_array_equal(past[...], jepa_entry("t/0@8", 0).past.astype(np.float16))
