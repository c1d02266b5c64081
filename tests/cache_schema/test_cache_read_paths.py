"""The fast token read path: vectorised float32 conversion and batches filled in place."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from cache_testdata import LAYERS, vlm_entry, vlm_meta

from thinkjepa.cache_schema import CacheReader, CacheWriter
from thinkjepa.cache_schema.encoding import from_storage, storage_into_f32, to_storage


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 700, 64)])  # below and above one conversion piece
def test_storage_into_f32_is_exact_and_writes_only_its_target(dtype, shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    x.flat[:4] = [0.0, -0.0, 6e-8, -65504.0]  # zeros, a float16 subnormal, the float16 extreme
    src = to_storage(x, dtype, "test")
    buf = np.full((shape[0], shape[1] + 9, shape[2]), np.nan, dtype=np.float32)
    storage_into_f32(buf[:, :shape[1]], src, dtype)
    np.testing.assert_array_equal(buf[:, :shape[1]], from_storage(src, dtype))
    assert np.isnan(buf[:, shape[1]:]).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_batch_of_sharded_token_streams_matches_zarr_and_is_padded(tmp_path, dtype):
    url = str(tmp_path / "c.zarr")
    entries = [vlm_entry("big/1@9", 7, n_prefill=1100, n_generated=3, hidden=512),
               vlm_entry("big/2@9", 8, n_prefill=650, n_generated=0, hidden=512)]
    with CacheWriter(url, vlm_meta(dtype, hidden=512)) as w:
        recs = [w.commit(e) for e in entries]
    assert all(rec["arrays"]["prefill"]["shard"] is not None for rec in recs[:1])
    r = CacheReader(url)
    keys = [e.key for e in entries]
    for layers, n_max in ((None, 1280), ([8, 0], 700)):
        b = r.read_batch(keys, ["prefill", "generated", "prefill_mean"], max_tokens={"prefill": n_max, "generated": 4},
                         layers=layers)
        pos = list(range(len(LAYERS))) if layers is None else [LAYERS.index(x) for x in layers]
        assert b["prefill"].shape == (2, len(pos), n_max, 512) and b["prefill"].dtype == np.float32
        for i, (e, rec) in enumerate(zip(entries, recs)):
            # zarr-python decodes the same files independently of the reader's own decoder
            want = zarr.open_array(f"{url}/{rec['path']}/prefill", mode="r")[...]
            want = from_storage(want, dtype)[pos]
            n = min(n_max, e.prefill.shape[1])
            np.testing.assert_array_equal(b["prefill"][i, :, :n], want[:, :n])
            assert not b["prefill"][i, :, n:].any()
            assert b["prefill_mask"][i].tolist() == [True] * n + [False] * (n_max - n)
            assert b["generated_mask"][i].sum() == e.generated.shape[1]
            assert not b["generated"][i, :, e.generated.shape[1]:].any()
            np.testing.assert_array_equal(b["prefill_mean"][i], r.read_means(e.key, layers)["prefill"])
        streamed = [arrays for _k, arrays in r.stream(keys, fields=["prefill"], batch_size=1,
                                                      max_tokens=n_max, layers=layers)]
        np.testing.assert_array_equal(np.concatenate([a["prefill"] for a in streamed]), b["prefill"])


def test_token_rows_fill_every_element_of_an_uninitialised_buffer(tmp_path):
    """Batches are allocated with np.empty and filled row by row: padding must be written."""
    url = str(tmp_path / "c.zarr")
    e = vlm_entry("big/1@9", 7, n_prefill=1100, n_generated=3, hidden=512)
    with CacheWriter(url, vlm_meta(hidden=512)) as w:
        w.commit(e)
    r = CacheReader(url)
    out = np.full((len(LAYERS), 1200, 512), np.nan, dtype=np.float32)
    mask = np.ones(1200, dtype=bool)
    r._tokens_into(e.key, "prefill", None, out, mask)
    toks, want_mask = r.read_tokens(e.key, "prefill", 1200)
    np.testing.assert_array_equal(out, toks)
    assert not out[:, 1100:].any() and mask.tolist() == want_mask.tolist() == [True] * 1100 + [False] * 100


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_to_storage_vectorised_rounds_like_the_reference(dtype):
    """Large arrays take the vectorised conversion; the bits must be numpy's / the RNE formula's."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 300, 64)) * rng.uniform(1e-6, 8000, (4, 1, 64))).astype(np.float32)
    x.flat[:6] = [0.0, -0.0, 1e-9, 65504.0, -65500.0, 3.0e-5]  # zeros, underflow, fp16 extremes, subnormal
    got = to_storage(x, dtype, "test")
    if dtype == "float16":
        want = x.astype(np.float16)
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    else:
        bits = x.view(np.uint32)
        want = ((bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape,grid", [((4,), (4,)), ((4, 7), (4, 7)), ((4, 30, 8), (1, 16, 8)), ((2, 3, 4, 5), (2, 3, 4, 5))])
def test_first_chunk_key_is_the_first_key_of_the_grid(shape, grid):
    from thinkjepa.cache_schema.schema import chunk_keys, first_chunk_key

    assert first_chunk_key(len(shape)) == chunk_keys(shape, grid)[0]
