from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr
from cache_testdata import LAYERS, jepa_entry, jepa_meta, vlm_entry, vlm_meta

from thinkjepa.cache_schema import (
    CacheError,
    CacheReader,
    CacheWriter,
    VLMEntry,
    escape_key,
    store_exists,
    unescape_key,
    verify,
)
from thinkjepa.cache_schema.encoding import bf16_bits_to_f32, f32_to_bf16_bits


def stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """What the cache should give back for float32 input ``x`` stored as ``dtype``."""
    if dtype == "bfloat16":
        return bf16_bits_to_f32(f32_to_bf16_bits(x))
    return x.astype(dtype).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_vlm_round_trip(store_url, dtype):
    entries = [vlm_entry("sort beads/9@12", 1, n_prefill=40, n_generated=5),
               vlm_entry("pour/_odd.key@3", 2, n_prefill=17, n_generated=0),
               vlm_entry("pour/ünïcode@100", 3, n_prefill=1, n_generated=9)]
    assert not store_exists(store_url)
    with CacheWriter(store_url, vlm_meta(dtype), part="shard-00000-of-00001") as w:
        for e in entries:
            w.commit(e)
    assert store_exists(store_url)
    r = CacheReader(store_url, expect=vlm_meta(dtype))
    assert r.keys() == sorted(e.key for e in entries)
    for e in entries:
        got = r.get(e.key)
        assert isinstance(got, VLMEntry)
        for name in ("prefill", "generated"):
            assert got.__dict__[name].dtype == np.float32
            np.testing.assert_array_equal(got.__dict__[name], stored(e.__dict__[name], dtype))
        for name in ("prefill_ids", "generated_ids", "prefill_kind", "frame_index"):
            np.testing.assert_array_equal(got.__dict__[name], e.__dict__[name])
        assert (got.text, got.provenance, got.fingerprint) == (e.text, e.provenance, e.fingerprint)

        means = r.read_means(e.key)
        for s in ("prefill", "generated"):
            x = e.__dict__[s]
            want = x.mean(axis=1) if x.shape[1] else np.zeros((len(LAYERS), x.shape[2]))
            assert means[s].dtype == np.float32 and means[s].shape == (len(LAYERS), 32)
            np.testing.assert_allclose(means[s], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(r.read_means(e.key, layers=[8, 0])["prefill"], means["prefill"][[2, 0]])

        for n_max in (4, 60):
            toks, mask = r.read_tokens(e.key, "prefill", n_max, layers=[4])
            n = min(n_max, e.prefill.shape[1])
            assert toks.shape == (1, n_max, 32) and mask.tolist() == [True] * n + [False] * (n_max - n)
            np.testing.assert_array_equal(toks[0, :n], got.prefill[1, :n])
            assert not toks[:, n:].any()
    assert verify(store_url) == []


def test_batches_and_stream_read_only_the_fields_asked(store_url):
    entries = [vlm_entry(f"t/{i}@5", i, n_prefill=10 + 7 * i, n_generated=i) for i in range(5)]
    with CacheWriter(store_url, vlm_meta()) as w:
        for e in entries:
            w.commit(e)
    r = CacheReader(store_url)
    keys = [e.key for e in entries]
    b = r.read_batch(keys[:3], ["prefill_mean", "generated"], max_tokens={"generated": 3})
    assert set(b) == {"prefill_mean", "generated", "generated_mask"}
    assert b["prefill_mean"].shape == (3, 3, 32) and b["generated"].shape == (3, 3, 3, 32)
    assert b["generated_mask"].sum(axis=1).tolist() == [0, 1, 2]
    np.testing.assert_array_equal(b["prefill_mean"][1], r.read_means(keys[1])["prefill"])
    # unset max_tokens pads to the longest entry of the batch
    assert r.read_batch(keys[:2], ["prefill"])["prefill"].shape == (2, 3, 17, 32)

    seen = []
    for batch_keys, arrays in r.stream(keys, fields=["prefill_mean", "generated_mean"], batch_size=2):
        assert set(arrays) == {"prefill_mean", "generated_mean"} and arrays["prefill_mean"].shape[0] == len(batch_keys)
        seen += batch_keys
    assert seen == keys

    before = r.bytes_read
    r.read_means(keys[4])
    means_bytes = r.bytes_read - before
    before = r.bytes_read
    r.read_tokens(keys[4], "prefill", 64)
    assert 0 < means_bytes < r.bytes_read - before


def test_sharded_token_arrays_partial_reads_match_zarr(tmp_path):
    """Arrays over 1 MiB are packed into one shard; the direct reader and zarr-python agree."""
    url = str(tmp_path / "c.zarr")
    e = vlm_entry("big/1@9", 7, n_prefill=1100, n_generated=3, hidden=512)
    with CacheWriter(url, vlm_meta(hidden=512)) as w:
        rec = w.commit(e)
    assert rec["arrays"]["prefill"]["shard"] is not None
    r = CacheReader(url)
    z = zarr.open_array(f"{url}/{rec['path']}/prefill", mode="r")
    full = z[...].astype(np.float32)
    np.testing.assert_array_equal(full, stored(e.prefill, "float16"))
    for layers, n_max in ((None, 1280), ([8], 700), ([8, 0], 5), (None, 1100)):
        toks, mask = r.read_tokens(e.key, "prefill", n_max, layers)
        pos = [0, 1, 2] if layers is None else [LAYERS.index(x) for x in layers]
        n = min(n_max, 1100)
        np.testing.assert_array_equal(toks[:, :n], full[pos, :n])
        assert mask.sum() == n
    before = r.bytes_read
    r.read_tokens(e.key, "prefill", 5, layers=[4])
    assert r.bytes_read - before < z.nbytes / 4  # one chunk and the shard index, not the shard


def test_jepa_round_trip(store_url):
    entries = [jepa_entry("a/1@8", 1), jepa_entry("a/2@8", 2)]
    with CacheWriter(store_url, jepa_meta("bfloat16")) as w:
        for e in entries:
            w.commit(e)
    r = CacheReader(store_url)
    for e in entries:
        past, future = r.read_jepa(e.key)
        np.testing.assert_array_equal(past, stored(e.past, "bfloat16"))
        np.testing.assert_array_equal(future, stored(e.future, "bfloat16"))
        got = r.get(e.key)
        np.testing.assert_array_equal(got.future_frames, e.future_frames)
        assert got.provenance == e.provenance
    b = r.read_batch([e.key for e in entries], ["past", "future_frames"])
    assert b["past"].shape == (2, 4, 6, 16) and b["future_frames"].shape == (2, 4)
    with pytest.raises(CacheError, match="'jepa' entries, not 'vlm'"):
        r.read_means("a/1@8")
    with CacheWriter(store_url, jepa_meta("bfloat16")) as w, pytest.raises(CacheError, match="a vlm entry cannot"):
        w.commit(vlm_entry("x/1@1", 0))
    assert verify(store_url) == []


def test_recommit_replaces_and_failures_clear(store_url):
    meta = vlm_meta()
    with CacheWriter(store_url, meta, part="p0") as w:
        w.record_failure("t/1@5", "decode error: truncated video")
        w.record_failure("t/2@5", "too short")
        assert not w.is_done("t/1@5", "fp-1")
        w.commit(vlm_entry("t/1@5", 1, fingerprint="fp-1"))
        assert w.is_done("t/1@5", "fp-1") and not w.is_done("t/1@5", "fp-2")
        w.commit(vlm_entry("t/1@5", 2, fingerprint="fp-2"))
    r = CacheReader(store_url)
    assert r.keys() == ["t/1@5"]
    assert r.failures() == {"t/2@5": "too short"}
    got = r.get("t/1@5")
    assert got.fingerprint == "fp-2"
    np.testing.assert_array_equal(got.prefill, stored(vlm_entry("t/1@5", 2).prefill, "float16"))
    assert verify(store_url) == []  # the replaced version left nothing behind
    # another part sees the commit (re-sharding): no second copy is needed
    with CacheWriter(store_url, meta, part="p1") as w:
        assert w.is_done("t/1@5", "fp-2") and not w.is_done("t/1@5", "fp-1")


@pytest.mark.parametrize("bad, match", [
    (lambda e: setattr(e, "prefill", e.prefill[:2]), r"prefill has shape \[2, 40, 32\]; this store needs \[L=3"),
    (lambda e: setattr(e, "generated", e.generated[..., :16]), r"generated has shape .*H=32"),
    (lambda e: e.prefill.__setitem__((1, 3, 0), np.nan), r"prefill holds NaN or Inf \(first at layer 4\)"),
    (lambda e: e.prefill.__setitem__((0, 0, 0), 1e6), r"prefill: value 1e\+06 overflows float16.*bfloat16"),
    (lambda e: setattr(e, "frame_index", np.zeros(40, np.int32)), r"frame_index must be >= 0 for vision"),
    (lambda e: setattr(e, "prefill_ids", np.zeros(39, np.int32)), r"prefill_ids has shape \[39\], expected \[40\]"),
    (lambda e: setattr(e, "provenance", {"x": object()}), r"provenance is not JSON-serialisable"),
])
def test_bad_entries_are_refused_and_leave_nothing(tmp_path, bad, match):
    url = str(tmp_path / "c.zarr")
    e = vlm_entry("cut/3@7", 0)
    bad(e)
    with CacheWriter(url, vlm_meta()) as w:
        with pytest.raises(CacheError, match="cut/3@7: " + match):
            w.commit(e)
        assert isinstance(CacheError("x"), ValueError)  # extraction catches ValueError per entry
    assert CacheReader(url).keys() == []
    assert verify(url) == []


def test_escape_key_is_reversible_and_path_safe():
    for key in ("sort_beads/9@12", "_x/__y@0", "a b/ü.@.@1", "~/~2F@3", "..@1"):
        esc = escape_key(key)
        assert unescape_key(esc) == key
        assert set(esc) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~")
        assert not esc.startswith("_")
    with pytest.raises(CacheError):
        escape_key("")


def test_reader_pickles_for_dataloader_workers(tmp_path):
    url = str(tmp_path / "c.zarr")
    with CacheWriter(url, vlm_meta()) as w:
        w.commit(vlm_entry("t/1@5", 1))
    r = CacheReader(url)
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2.read_means("t/1@5")["prefill"], r.read_means("t/1@5")["prefill"])
