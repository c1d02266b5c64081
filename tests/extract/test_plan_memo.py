"""The kept window plans (``thinkjepa.plan_memo``): a status from a kept plan is the status
computed afresh, and no changed input (an edited, touched or replaced episode file, another
setting) is ever served the kept plan; a torn or foreign memo is ignored."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import pytest
from stage_fixtures import write_random_vlm_cache

from thinkjepa.config import load_config
from thinkjepa.data.manifest import build_manifest
from thinkjepa.data.synth import synthesize_dataset
from thinkjepa.plan_memo import memo_path

SAMPLING = ["sampling.mode=stride", "sampling.past_frames=4", "sampling.future_frames=4", "sampling.thinker_frames=4",
            "sampling.windows_per_clip=2", "sampling.window_hop=4"]


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    """A 4-episode dataset, its manifest and a VLM store holding every window (all done), with
    every kept result trusted at once (``RACY_S`` 0: the files here are seconds old)."""
    import thinkjepa.cache_schema.record_listing as record_listing

    monkeypatch.setattr(record_listing, "RACY_S", -1.0)
    root = tmp_path / "data"
    synthesize_dataset(root, episodes=4, seed=0, n_frames=24, size=32, tasks=2)
    cfg = load_config(None, [f"workdir={tmp_path / 'work'}", f"data.root={root}", *SAMPLING], use_default_file=False)
    build_manifest(root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    from thinkjepa.extract.runner import plan_clips

    keys = [it.key for p in plan_clips(cfg) for it in p.items]
    write_random_vlm_cache(cfg, keys)
    return cfg, root, keys


def _status(cfg, counter=None):
    """``tj-extract status`` with the kept statuses dropped (each call plans or takes the kept plan)."""
    from thinkjepa.extract.status import extraction_status

    for f in Path(cfg.workdir, "state", "listing").glob("status-*.json"):
        f.unlink()
    return extraction_status(cfg)


@pytest.fixture()
def plans(monkeypatch):
    """How many times the extract stage planned every clip afresh."""
    import thinkjepa.extract.status as status

    calls = []
    real = status.plan_clips

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(status, "plan_clips", counting)
    return calls


@pytest.mark.slow
def test_a_kept_plan_gives_the_fresh_status(setup, plans):
    cfg, _, keys = setup
    fresh = _status(cfg)
    assert fresh["totals"]["done"] == len(keys) and fresh["complete"] and len(plans) == 1
    assert memo_path(cfg, "extract").is_file()
    assert _status(cfg) == fresh and len(plans) == 1  # from the kept plan
    memo_path(cfg, "extract").unlink()
    assert _status(cfg) == fresh and len(plans) == 2


@pytest.mark.slow
@pytest.mark.parametrize("change", ["edit", "touch", "replace"])
def test_an_episode_changed_after_the_plan_was_kept_is_planned_again(setup, plans, change):
    cfg, root, keys = setup
    assert _status(cfg)["complete"] and _status(cfg)["complete"] and len(plans) == 1
    hdf5 = sorted(root.rglob("*.hdf5"))[1]
    clip_id = f"{hdf5.parent.name}/{hdf5.stem}"
    st = os.stat(hdf5)
    if change == "edit":  # new attributes: its prompt changes, so do its windows' fingerprints
        with h5py.File(hdf5, "a") as f:
            f.attrs["description"] = "a brand new description"
    elif change == "touch":  # the same bytes, another mtime
        os.utime(hdf5, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    else:  # another file of the same size and mtime renamed over it (a new inode)
        tmp = hdf5.with_name("copy.tmp")
        shutil.copy2(hdf5, tmp)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, hdf5)
        assert os.stat(hdf5).st_ino != st.st_ino
    after = _status(cfg)
    assert len(plans) == 2  # planned afresh, not served the kept plan
    if change == "edit":
        assert sorted(after["stale"]) == sorted(k for k in keys if k.startswith(clip_id + "@"))
        assert after["totals"]["stale"] == 2 and after["totals"]["done"] == len(keys) - 2
    else:  # same content: nothing stale
        assert after["complete"]


@pytest.mark.slow
def test_a_changed_setting_or_shard_count_is_planned_again(setup, plans):
    from thinkjepa.extract.status import extraction_status

    cfg, _, keys = setup
    assert _status(cfg)["complete"] and len(plans) == 1
    other = load_config(None, [f"workdir={cfg.workdir}", f"data.root={cfg.data.root}", *SAMPLING,
                               "thinker.max_new_tokens=7"], use_default_file=False)
    st = _status(other)
    assert st["totals"]["stale"] == len(keys) and len(plans) == 2
    assert extraction_status(cfg, shards=3)["shard_count"] == 3 and len(plans) == 3
    assert _status(cfg)["complete"]  # each key its own plan: the last one kept is this one's again
    assert len(plans) == 4


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["torn", "foreign", "garbage"])
def test_a_torn_or_foreign_memo_is_ignored(setup, plans, damage):
    import pyarrow.parquet as pq

    cfg, _, _ = setup
    fresh = _status(cfg)
    path = memo_path(cfg, "extract")
    if damage == "torn":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "foreign":  # another version of this module wrote it
        table = pq.read_table(path)
        meta = table.schema.metadata[b"thinkjepa.plan"].replace(b'"version": 1', b'"version": 99')
        pq.write_table(table.replace_schema_metadata({b"thinkjepa.plan": meta}), path)
    else:
        path.write_bytes(b"PAR1 not a parquet file PAR1")
    assert _status(cfg) == fresh and len(plans) == 2
    assert _status(cfg) == fresh and len(plans) == 2  # rewritten whole by the plan before


@pytest.mark.slow
def test_the_encode_plan_is_kept_and_follows_an_edit(setup, monkeypatch):
    import thinkjepa.extract.encode as encode

    cfg, root, _ = setup
    calls = []
    real = encode._plan_clips
    monkeypatch.setattr(encode, "_plan_clips", lambda *a, **k: (calls.append(1), real(*a, **k))[1])

    def status():
        for f in Path(cfg.workdir, "state", "listing").glob("status-*.json"):
            f.unlink()
        return encode.encode_status(cfg)

    fresh = status()
    assert status() == fresh and len(calls) == 1 and memo_path(cfg, "encode").is_file()
    video = sorted(root.rglob("*.mp4"))[0]
    st = os.stat(video)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert status() == fresh and len(calls) == 2


def test_a_kept_plan_reads_back_as_the_plan_it_kept(tmp_path):
    """``plan_memo.save`` then ``load`` under the same key gives the same clips (problems,
    empty clips and shards included); another key, a torn file or a foreign one gives None."""
    from thinkjepa.plan_memo import load, save
    from thinkjepa.stage_run import PlanColumns, PlannedClip

    planned = [PlannedClip("a", 0, [("a@0", "f0"), ("a@1", "f1")]), PlannedClip("b", 1, [], "too short"),
               PlannedClip("c", 1, []), PlannedClip("d", 0, [("d@0", "f2")])]
    path = tmp_path / "plan-extract.parquet"
    save(path, {"k": 1}, PlanColumns.of(planned))
    back = load(path, {"k": 1})
    assert back is not None and back.clips() == planned
    assert load(path, {"k": 2}) is None
    path.write_bytes(path.read_bytes()[:-20])
    assert load(path, {"k": 1}) is None
    path.write_bytes(b"not parquet")
    assert load(path, {"k": 1}) is None
