"""Several writer processes at once, and writers killed with SIGKILL mid-run."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time

import numpy as np
import pytest
from cache_testdata import CRASH_KW, crash_keys, vlm_entry, write_sequence

from thinkjepa.cache_schema import CacheReader, store_exists, verify

CTX = mp.get_context("spawn")
N = 10


def _assert_same(r: CacheReader, ref: CacheReader, key: str) -> None:
    a, b = r.get(key), ref.get(key)
    for name in ("prefill", "generated", "prefill_ids", "generated_ids", "prefill_kind", "frame_index"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{key}: {name}")
    assert (a.text, a.provenance, a.fingerprint) == (b.text, b.provenance, b.fingerprint)
    for s, m in r.read_means(key).items():
        np.testing.assert_array_equal(m, ref.read_means(key)[s])


@pytest.mark.slow  # spawns processes (several seconds on 2 cores): full suite only
def test_four_writer_processes_at_once(tmp_path):
    url = str(tmp_path / "cache.zarr")
    kw = dict(n_prefill=300, n_generated=4, hidden=64)
    start = CTX.Event()
    parts = [f"shard-{i:05d}-of-00004" for i in range(4)]
    procs = [CTX.Process(target=write_sequence, args=(url, p, 8, 100 * i),
                         kwargs=dict(start=start, kw=kw, prefix=p)) for i, p in enumerate(parts)]
    for p in procs:
        p.start()
    start.set()  # all four create the store and write at the same moment
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    r = CacheReader(url)
    expected = sorted(k for p in parts for k in crash_keys(8, p))
    assert r.keys() == expected
    assert sorted(rec["part"] for rec in r.records()) == sorted(parts * 8)
    assert verify(url) == []
    for i, p in enumerate(parts):
        for j, key in enumerate(crash_keys(8, p)):
            np.testing.assert_array_equal(r.read_means(key)["prefill"],
                                          vlm_entry(key, 100 * i + j, **kw).prefill.mean(axis=1))


@pytest.mark.slow  # > 20 s on 2 shared cores
def test_sigkill_at_random_points_then_rerun(tmp_path):
    ref_url = str(tmp_path / "reference.zarr")
    t0 = time.perf_counter()
    write_sequence(ref_url, "shard-0", N, seed=7)
    clean_run = time.perf_counter() - t0
    ref = CacheReader(ref_url)
    keys = sorted(crash_keys(N))
    rng = random.Random(1234)
    for trial in range(5):
        url = str(tmp_path / f"trial{trial}.zarr")
        done = CTX.Value("i", 0)
        proc = CTX.Process(target=write_sequence, args=(url, "shard-0", N, 7), kwargs=dict(progress=done))
        proc.start()
        # Kill at a random point inside the run: after a random number of commits, plus a
        # random fraction of one commit's time (so inside writing data, the record, or cleanup).
        after = rng.randrange(0, N - 2)
        deadline = time.monotonic() + 60
        while done.value < after and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, clean_run / N))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL

        # no partial entry is visible: whatever is listed reads back complete and equal
        if store_exists(url):  # (killed while starting up, the store may not exist yet)
            r = CacheReader(url)
            assert set(r.keys()) <= set(keys)
            for key in r.keys():
                _assert_same(r, ref, key)

        write_sequence(url, "shard-0", N, seed=7)  # the rerun completes the rest
        r = CacheReader(url)
        assert verify(url) == [], f"trial {trial}"
        assert r.keys() == keys
        assert len(r.records()) == N and {rec["part"] for rec in r.records()} == {"shard-0"}
        for key in keys:
            _assert_same(r, ref, key)
    assert CRASH_KW["n_prefill"] * CRASH_KW["hidden"] * 3 * 2 > 1 << 20  # entries take the sharded path
