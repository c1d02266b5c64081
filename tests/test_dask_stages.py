"""`tj run --scheduler`: extract and encode shards as tasks on a dask.distributed cluster of 2
worker processes give the caches and stamps of shards launched by hand, also when a worker is
killed while it runs a shard.

Real components: a LocalCluster of worker processes, the tiny random Qwen3-VL Thinking through
the transformers backend, tiny V-JEPA2, Zarr caches on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_pipeline_shards import project, status_rows, tj  # noqa: F401 - `project` is a fixture

from thinkjepa.app.dask_stages import parse_scheduler
from thinkjepa.cache_schema import CacheReader

STORES = ("thinker", "encoder")


def _workdir(cfg, name: str) -> tuple[Path, list[str]]:
    work = Path(cfg.workdir).parent / name
    return work, ["--set", f"workdir={work}"]


def _store(cfg, section: str, work: Path) -> str:
    return str(getattr(cfg, section).cache).replace("{workdir}", str(work))


def _by_hand(config: str, sets: list[str]) -> None:
    """`tj run --shard I/2 extract encode` for each I, as a job array runs them (processes)."""
    for i in range(2):
        cmd = [sys.executable, "-c", "from thinkjepa.app.cli.main import app; app()", "run", "--config", config,
               "--shard", f"{i}/2", "--no-progress", "extract", "encode", *sets]
        # the thread count a dask worker gives its children, so float results are comparable
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _caches(cfg, work: Path) -> dict[str, dict[str, tuple]]:
    """Per store: key -> (fingerprint, part, every array of the entry)."""
    out = {}
    for section in STORES:
        url = _store(cfg, section, work)
        r = CacheReader(url)
        out[section] = {}
        for rec in r.records():
            entry = r.get(rec["key"])
            arrays = {k: v for k, v in vars(entry).items() if isinstance(v, np.ndarray)}
            out[section][rec["key"]] = (rec["fingerprint"], rec["part"], arrays)
    return out


def _assert_same(a: dict, b: dict) -> None:
    for section in STORES:
        assert sorted(a[section]) == sorted(b[section]) and a[section], section
        for key, (fp, part, arrays) in a[section].items():
            fp2, part2, arrays2 = b[section][key]
            assert (fp, part) == (fp2, part2), key
            assert arrays.keys() == arrays2.keys()
            for name in arrays:
                np.testing.assert_array_equal(arrays[name], arrays2[name], err_msg=f"{section} {key} {name}")


def _kill_a_worker_mid_shard(cfg, work: Path, worker_pids: list[int], killed: list[int]) -> None:
    """Once a shard's child process holds a part's writer lock, kill the worker that runs it."""
    import psutil

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not killed:
        for section in STORES:
            locks = Path(_store(cfg, section, work)) / "locks"
            for lock in locks.glob("*.lock") if locks.exists() else ():
                try:
                    pid = json.loads(lock.read_text())["pid"]
                    parent = psutil.Process(pid).ppid()
                except (ValueError, KeyError, OSError, psutil.Error):
                    continue
                if parent in worker_pids:
                    os.kill(parent, signal.SIGKILL)
                    killed.append(parent)
                    return
        time.sleep(0.05)


def test_local_scheduler_spec():
    assert parse_scheduler("local:3") == 3 and parse_scheduler("tcp://h:8786") is None
    with pytest.raises(ValueError, match="local:N"):
        parse_scheduler("local:0")


@pytest.mark.slow
def test_dask_shards_equal_shards_by_hand_also_after_a_worker_is_killed(project):  # noqa: F811
    from distributed import Client, LocalCluster

    cfg, config = project
    by_hand, hand_sets = _workdir(cfg, "by-hand")
    tj("run", "index", "--config", config, *hand_sets)
    _by_hand(config, hand_sets)
    want = _caches(cfg, by_hand)

    on_dask, dask_sets = _workdir(cfg, "dask")
    tj("run", "index", "extract", "encode", "--config", config, "--scheduler", "local:2", "--shards", "2",
       "--no-progress", *dask_sets)
    _assert_same(_caches(cfg, on_dask), want)
    rows = status_rows(config, f"workdir={on_dask}")
    for name in ("index", "extract", "encode"):
        assert rows[name]["stale"] is False, rows[name]
    assert rows["extract"]["shard_count"] == 2
    assert sorted(p.name for p in (on_dask / "state").glob("extract.shard-*.json")) == [
        "extract.shard-00000-of-00002.json", "extract.shard-00001-of-00002.json"]  # the stamps of shards by hand

    killed_run, kill_sets = _workdir(cfg, "killed")
    tj("run", "index", "--config", config, *kill_sets)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={"GPU": 1},
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        killed: list[int] = []
        killer = threading.Thread(target=_kill_a_worker_mid_shard, args=(cfg, killed_run, pids, killed))
        killer.start()
        tj("run", "extract", "encode", "--config", config, "--scheduler", cluster.scheduler_address,
           "--shards", "2", "--no-progress", *kill_sets)
        killer.join()
    assert killed, "no worker was killed while it ran a shard"
    _assert_same(_caches(cfg, killed_run), want)
    rows = status_rows(config, f"workdir={killed_run}")
    assert rows["extract"]["stale"] is False and rows["encode"]["stale"] is False
