"""One writer per part on every store kind: flock (local), lease (object stores), or a refusal."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time

import fsspec
import numpy as np
import pytest
from cache_testdata import crash_keys, race_for_part, vlm_entry, vlm_meta
from fsspec.implementations.memory import MemoryFileSystem

from thinkjepa.cache_schema import CacheError, CacheReader, CacheWriter, lock_part, verify
from thinkjepa.cache_schema.schema import dumps

CTX = mp.get_context("spawn")
N = 6
KW = dict(n_prefill=300, n_generated=4, hidden=64)


def test_second_writer_of_a_part_is_refused_on_every_store(store_url):
    with CacheWriter(store_url, vlm_meta(), part="p0") as w:
        with pytest.raises(CacheError, match=r"being written by another live process .*pid \d+"):
            CacheWriter(store_url, vlm_meta(), part="p0")
        with pytest.raises(CacheError, match="being written by another live process"):
            lock_part(store_url, "p0")
        with CacheWriter(store_url, vlm_meta(), part="p1") as other:  # other parts are free
            other.commit(vlm_entry("a/1@1", 1))
        w.commit(vlm_entry("a/2@1", 2))
    with CacheWriter(store_url, vlm_meta(), part="p0") as w:  # released on close
        assert w.keys() == ["a/2@1"]


def test_a_lock_taken_early_is_handed_to_the_writer(store_url):
    lock = lock_part(store_url, "p0")
    with pytest.raises(CacheError, match="not 'p1'"):
        CacheWriter(store_url, vlm_meta(), part="p1", lock=lock)
    with CacheWriter(store_url, vlm_meta(), part="p0", lock=lock) as w:
        w.commit(vlm_entry("a/1@1", 1))
    lock_part(store_url, "p0").release()  # the writer released it


def _memory_url() -> str:
    import uuid

    return f"memory://lease-tests/{uuid.uuid4().hex}"


def test_an_expired_lease_is_taken_over_and_a_live_one_is_not():
    url = _memory_url()
    fs = fsspec.filesystem("memory")
    path = f"{url}/locks/p0.lock"
    fs.pipe_file(path, dumps({"owner": "dead", "host": "h", "pid": 1, "expires": time.time() + 3600}))
    with pytest.raises(CacheError, match="lease held by pid 1 on h"):
        CacheWriter(url, vlm_meta(), part="p0")
    fs.pipe_file(path, dumps({"owner": "dead", "host": "h", "pid": 1, "expires": time.time() - 1}))
    with CacheWriter(url, vlm_meta(), part="p0") as w:
        w.commit(vlm_entry("a/1@1", 1))
    assert not fs.exists(path)  # released


def test_a_writer_that_lost_its_lease_commits_nothing():
    url = _memory_url()
    fs = fsspec.filesystem("memory")
    with CacheWriter(url, vlm_meta(), part="p0", lease_s=0.3) as w:
        w.commit(vlm_entry("a/1@1", 1))
        # another process took the part over (e.g. this one was paused past its lease)
        fs.pipe_file(f"{url}/locks/p0.lock", dumps({"owner": "other", "host": "h", "pid": 2,
                                                     "expires": time.time() + 3600}))
        deadline = time.monotonic() + 30
        while w._lock._lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(CacheError, match="lost its lease"):
            w.commit(vlm_entry("a/2@1", 2))
    assert CacheReader(url).keys() == ["a/1@1"]
    assert fs.exists(f"{url}/locks/p0.lock")  # the successor's lease is left alone


class NoConditionalPuts(MemoryFileSystem):
    """An fsspec store that cannot create-if-absent (like some S3 clones and plain HTTP)."""

    protocol = "nocond"

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        if mode == "create":
            raise NotImplementedError("create-only writes are not supported")
        return super().pipe_file(path, value, **kwargs)


def test_a_store_that_cannot_lock_is_refused_with_the_reason():
    fsspec.register_implementation("nocond", NoConditionalPuts, clobber=True)
    with pytest.raises(CacheError, match=r"cannot hold a writer lease .* conditional \(create-only\) puts"):
        CacheWriter("nocond://x/cache.zarr", vlm_meta(), part="p0")


def _race(url: str) -> None:
    """4 processes start at once for ONE part: exactly one wins, the others are refused, nothing is lost."""
    start, release, results = CTX.Event(), CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=race_for_part, args=(url, "shard-0", N, 10, start, release, results, i, KW))
             for i in range(4)]
    for p in procs:
        p.start()
    start.set()
    got = []
    try:
        for _ in procs:
            got.append(results.get(timeout=240))
            if sum(g[1] == "refused" for g in got) == 3:
                release.set()  # the winner holds its lock until all three others were refused
    except queue.Empty:
        pytest.fail(f"writers did not report in time: {got}")
    finally:
        release.set()
        for p in procs:
            p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    won = [g for g in got if g[1] == "won"]
    refused = [g for g in got if g[1] == "refused"]
    assert len(won) == 1 and won[0][2] == N, got
    assert len(refused) == 3 and all("being written by another live process" in g[2] for g in refused), got
    r = CacheReader(url)
    assert r.keys() == sorted(crash_keys(N))
    assert verify(url) == []
    for j, key in enumerate(crash_keys(N)):
        np.testing.assert_array_equal(r.get(key).prefill, vlm_entry(key, 10 + j, **KW).prefill.astype(np.float16)
                                      .astype(np.float32))


@pytest.mark.slow  # spawns processes (several seconds on 2 cores): full suite only
def test_four_processes_race_for_one_part_on_local_disk(tmp_path):
    _race(str(tmp_path / "cache.zarr"))


@pytest.mark.slow
def test_four_processes_race_for_one_part_on_an_s3_server(s3_url):
    _race(s3_url)
