"""``tj data index`` through dask: the same manifest from 1 thread, processes and a
dask.distributed scheduler, and an incremental re-index that reads only new or changed files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from thinkjepa.config import DataConfig, SamplingConfig
from thinkjepa.data import manifest as manifest_mod
from thinkjepa.data.manifest import build_manifest

SMALL = SamplingConfig(mode="stride", past_frames=8, future_frames=8, thinker_frames=8)


def _rows(table) -> list[dict]:
    return table.to_pylist()


@pytest.mark.slow  # starts a process pool and a dask.distributed cluster
def test_processes_and_distributed_give_the_same_manifest(synth_root: Path, tmp_path: Path) -> None:
    base, base_p = build_manifest(synth_root, tmp_path / "a.parquet", DataConfig(), SMALL, incremental=False)
    procs, procs_p = build_manifest(synth_root, tmp_path / "b.parquet", DataConfig(), SMALL, workers=2,
                                    scheduler="processes", incremental=False)
    assert _rows(procs) == _rows(base) and procs_p == base_p and base.num_rows == 16
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        dist, dist_p = build_manifest(synth_root, tmp_path / "c.parquet", DataConfig(), SMALL,
                                      scheduler=cluster.scheduler_address, incremental=False)
    assert _rows(dist) == _rows(base) and dist_p == base_p


@pytest.mark.slow
def test_unreachable_scheduler_is_a_clear_error(synth_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_mod, "SCHEDULER_TIMEOUT_S", 1)
    with pytest.raises(ValueError, match="cannot reach the dask scheduler at 'tcp://127.0.0.1:9'"):
        manifest_mod.scan_episodes([("a/0", synth_root, synth_root)], SMALL, scheduler="tcp://127.0.0.1:9")


@pytest.mark.slow
def test_incremental_index_reads_only_new_or_changed_episodes(synth_root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    out = tmp_path / "m.parquet"
    first, _ = build_manifest(root, out, DataConfig(), SMALL)
    read: list[str] = []
    real = manifest_mod.read_episode

    def counting(video, annotation, clip_id=None, **kw):
        read.append(clip_id)
        return real(video, annotation, clip_id=clip_id, **kw)

    monkeypatch.setattr(manifest_mod, "read_episode", counting)
    again, _ = build_manifest(root, out, DataConfig(), SMALL)
    assert read == [] and _rows(again) == _rows(first)

    task = sorted(p for p in root.iterdir() if p.is_dir())[0]
    shutil.copy(task / "0.mp4", task / "99.mp4")  # a new episode
    shutil.copy(task / "0.hdf5", task / "99.hdf5")
    changed = task / "1.hdf5"
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: re-read
    (task / "2.hdf5").write_bytes(b"not hdf5")  # broken since the last index
    table, problems = build_manifest(root, out, DataConfig(), SMALL)
    assert sorted(read) == sorted([f"{task.name}/99", f"{task.name}/1", f"{task.name}/2"])
    assert f"{task.name}/99" in table.column("clip_id").to_pylist() and table.num_rows == 16
    assert [p.clip_id for p in problems if p.severity == "error"] == [f"{task.name}/2"]

    read.clear()  # the broken episode is remembered as a problem, not re-read
    _, problems2 = build_manifest(root, out, DataConfig(), SMALL)
    assert read == [] and [p.reason for p in problems2] == [p.reason for p in problems]

    read.clear()  # other sampling settings decide "too short" differently: everything is re-read
    build_manifest(root, out, DataConfig(), SMALL.model_copy(update={"past_frames": 6}))
    assert len(read) == 17


def test_local_tasks_are_small_enough_to_balance_and_a_cluster_gets_many() -> None:
    from thinkjepa.data.manifest import LOCAL_CHUNK_EPISODES, chunk_size

    assert chunk_size(2000, 2, "processes") == LOCAL_CHUNK_EPISODES  # 125 tasks, not 8 of 250
    assert chunk_size(10, 2, "processes") == 2  # at least 4 tasks per worker
    assert chunk_size(3, 8, "threads") == 1
    assert chunk_size(300_000, 1, "tcp://head:8786") == 586  # 512 tasks
