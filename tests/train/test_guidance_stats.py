"""guidance_stats: dask reductions over the VLM cache's per-layer means equal numpy on the same
entries, over exactly the keys asked for."""

from __future__ import annotations

import numpy as np
import pytest

from thinkjepa.cache_schema import TOKEN_TEXT, CacheReader, CacheWriter, StoreMeta, VLMEntry
from thinkjepa.train.guidance_stats import guidance_stats

LAYERS, HIDDEN = [0, 2, 5], 8


def vlm_meta() -> StoreMeta:
    return StoreMeta(kind="vlm", model="tiny/qwen3vl", revision=None, layers=list(LAYERS),
                     layer_convention="decoder_output_prenorm", hidden_size=HIDDEN, storage_dtype="float32", extra={})


def vlm_entry(key: str, seed: int) -> VLMEntry:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 3.0, size=(len(LAYERS), 1, HIDDEN))  # layers differ in scale, like real ones
    n_pre, n_gen = 12, 3
    return VLMEntry(
        key=key, prefill=(rng.standard_normal((len(LAYERS), n_pre, HIDDEN)) * scale + seed).astype(np.float32),
        generated=(rng.standard_normal((len(LAYERS), n_gen, HIDDEN)) * scale).astype(np.float32),
        prefill_ids=np.zeros(n_pre, np.int32), generated_ids=np.zeros(n_gen, np.int32),
        prefill_kind=np.full(n_pre, TOKEN_TEXT, np.uint8), frame_index=np.full(n_pre, -1, np.int32),
        text="", provenance={}, fingerprint="fp")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    url = str(tmp_path_factory.mktemp("gs") / "vlm.zarr")
    keys = [f"t{i % 3}/{i}@8" for i in range(10)]
    with CacheWriter(url, vlm_meta(), part="p0") as w:
        for i, k in enumerate(keys):
            w.commit(vlm_entry(k, seed=i))
    return url, keys


def test_matches_numpy_over_the_given_keys(cache) -> None:
    url, keys = cache
    train = keys[:7]
    got = guidance_stats(url, train, block=3)  # several blocks: the reduction crosses them
    r = CacheReader(url)
    for stream in ("prefill", "generated"):
        x = np.stack([r.read_means(k)[stream] for k in train]).astype(np.float64)  # [E, L, H]
        s = got[stream]
        assert s.layers == tuple(LAYERS) and s.count == 7
        np.testing.assert_allclose(s.mean, x.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(s.std, x.std(axis=0), rtol=1e-10)
        np.testing.assert_allclose(s.layer_mean, x.mean(axis=(0, 2)), rtol=1e-10)
        np.testing.assert_allclose(s.layer_std, x.std(axis=(0, 2)), rtol=1e-10)
    everything = guidance_stats(url, keys)
    assert not np.allclose(everything["prefill"].mean, got["prefill"].mean)  # other keys, other stats


def test_errors_name_the_cause(cache) -> None:
    url, keys = cache
    with pytest.raises(ValueError, match="at least one window key"):
        guidance_stats(url, [])
    with pytest.raises(KeyError, match="not committed"):
        guidance_stats(url, [*keys[:2], "nope/0@1"])
