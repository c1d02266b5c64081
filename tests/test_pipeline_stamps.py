"""Stage stamps and the index stage's state: from what the manifest holds, atomic, replaced by
``--force``. No model is needed: only the index stage runs."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from thinkjepa.app import pipeline
from thinkjepa.app.cli.main import app
from thinkjepa.config import load_config

runner = CliRunner()


@pytest.fixture()
def cfg(tmp_path):
    from thinkjepa.data.synth import synthesize_dataset

    root = tmp_path / "data"
    synthesize_dataset(root, episodes=3, seed=0, n_frames=20, size=32, tasks=3)
    return load_config(None, [f"workdir={tmp_path / 'work'}", f"data.root={root}", "sampling.past_frames=4",
                              "sampling.future_frames=4", "sampling.thinker_frames=4"], use_default_file=False)


def _rows(cfg) -> dict[str, dict]:
    return {r["stage"]: r for r in pipeline.status(cfg)}


def _age(path, seconds: float) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


@pytest.mark.slow
def test_a_manifest_written_by_tj_data_index_counts_until_the_data_changes(cfg, tmp_path):
    assert _rows(cfg)["index"]["reasons"] == ["never ran"]
    res = runner.invoke(app, ["data", "index", "--set", f"workdir={cfg.workdir}", "--set", f"data.root={cfg.data.root}",
                              "--set", "sampling.past_frames=4", "--set", "sampling.future_frames=4",
                              "--set", "sampling.thinker_frames=4"])
    assert res.exit_code == 0, res.output
    rows = _rows(cfg)
    assert not rows["index"]["stale"], rows["index"]
    assert rows["extract"]["stale"] and rows["extract"]["windows"]["pending"] == 3
    assert rows["extract"]["next"] == "tj run extract"

    # other settings than the manifest was built with
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split_seed": 7})})
    assert _rows(other)["index"]["reasons"] == ["inputs changed: data"]

    # a dataset file replaced after the manifest (written aside, renamed over: as copy tools do)
    hdf5 = next(cfg.path(cfg.data.root).rglob("*.hdf5"))
    _age(cfg.path(cfg.data.manifest), 5)
    tmp = hdf5.with_name(".new.hdf5")
    tmp.write_bytes(hdf5.read_bytes())
    os.replace(tmp, hdf5)
    reasons = _rows(cfg)["index"]["reasons"]
    assert len(reasons) == 1 and "dataset files" in reasons[0]


def test_stamps_carry_their_inputs_and_force_replaces_them(cfg):
    assert pipeline.run(cfg, ["index"]) == [("index", "ran")]
    state_dir = cfg.path("{workdir}/state")
    stamp = state_dir / "index.json"
    doc = json.loads(stamp.read_text())
    assert doc["sections"] == {s: cfg.section_fingerprint(s) for s in ("data", "sampling")}
    assert doc["dataset"]["files"] == 6 and doc["dataset"]["root"] == cfg.data.root
    assert doc["manifest"] == [cfg.path(cfg.data.manifest).stat().st_size, cfg.path(cfg.data.manifest).stat().st_mtime_ns]
    assert pipeline.run(cfg, ["index"]) == [("index", "fresh")]

    inode = stamp.stat().st_ino
    assert pipeline.run(cfg, ["index"], force=True) == [("index", "ran")]
    assert stamp.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in state_dir.iterdir() if p.is_file()) == ["index.json"]  # no temp left behind
    assert not _rows(cfg)["index"]["stale"]

    # a settled dataset is listed from folder mtimes, yet an added episode is seen
    for d in [cfg.path(cfg.data.root), *cfg.path(cfg.data.root).iterdir()]:
        if d.is_dir():
            _age(d, 10)
    pipeline.run(cfg, ["index"], force=True)
    assert not _rows(cfg)["index"]["stale"]
    task = next(p for p in cfg.path(cfg.data.root).iterdir() if p.is_dir())
    for f in list(task.iterdir()):
        (task / f"99{f.suffix}").write_bytes(f.read_bytes())
    assert _rows(cfg)["index"]["reasons"] == ["inputs changed: dataset files"]


@pytest.mark.slow
def test_shard_runs_refuse_a_stale_index_and_leave_train_for_later(cfg):
    with pytest.raises(RuntimeError, match="run `tj run index` once before the shards"):
        pipeline.run(cfg, shard=(0, 2))
    pipeline.run(cfg, ["index"])
    # every shard stage is stale, but asking only for train/eval with a shard runs nothing
    assert pipeline.run(cfg, ["train", "eval"], shard=(1, 2)) == [("train", "left"), ("eval", "left")]
    with pytest.raises(ValueError, match="outside 0..1"):
        pipeline.run(cfg, ["extract"], shard=(2, 2))


def _age_store(url: str, seconds: float = 10.0) -> None:
    from pathlib import Path

    for top in ("index", "failures"):
        base = Path(url) / top
        if base.is_dir():
            for d in [base, *base.iterdir()]:
                _age(d, seconds)


@pytest.mark.slow
def test_window_status_is_reused_only_while_the_store_and_manifest_are_unchanged(cfg):
    import numpy as np

    from thinkjepa.cache_schema import CacheWriter, JEPAEntry
    from thinkjepa.extract.encode import encode_status, fingerprints, jepa_store_meta, plan_encode

    pipeline.run(cfg, ["index"])
    items, _ = plan_encode(cfg)
    url = cfg.url(cfg.encoder.cache)

    def commit(it, fingerprint):
        with CacheWriter(url, jepa_store_meta(cfg, 4), part="shard-00000-of-00001") as w:
            w.commit(JEPAEntry(key=it.key, past=np.zeros((2, 1, 4), np.float32), future=np.zeros((2, 1, 4), np.float32),
                               past_frames=np.asarray(it.window.past, np.int32),
                               future_frames=np.asarray(it.window.future, np.int32), provenance={},
                               fingerprint=fingerprint))

    commit(items[0], fingerprints(cfg.encoder, items)[items[0].key])
    _age_store(url)
    assert encode_status(cfg)["totals"]["done"] == 1
    kept = cfg.path("{workdir}/state/listing") / "status-encode-None-None.json"
    written = kept.stat().st_mtime_ns
    assert encode_status(cfg)["totals"]["done"] == 1
    assert kept.stat().st_mtime_ns == written  # reused: nothing changed

    commit(items[1], "another fingerprint")  # a new record: the folder changed
    totals = encode_status(cfg)["totals"]
    assert (totals["done"], totals["stale"], totals["pending"]) == (1, 1, 1)

    _age_store(url)
    encode_status(cfg)
    other = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"frame_size": 32})})
    assert encode_status(other)["totals"]["stale"] == 2  # other settings: computed afresh


def test_the_finishing_command_names_the_incomplete_shards():
    def st(n, complete):
        return {"shard_count": n, "shards": [{"index": i, "complete": i in complete} for i in range(n)]}

    assert pipeline._finish_command("extract", st(1, set())) == "tj run extract"
    assert pipeline._finish_command("encode", st(4, {0, 2})) == "tj run --shard 1/4 encode; tj run --shard 3/4 encode"
    assert pipeline._finish_command("extract", st(64, {3, 9})) == (
        "tj run --shard I/64 extract, for I in 0-2, 4-8, 10-63")
