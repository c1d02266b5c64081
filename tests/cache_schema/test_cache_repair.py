"""Durable commits, repair of damaged entries, reader errors that name entry and file, refused records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cache_testdata import vlm_entry, vlm_meta
from typer.testing import CliRunner

from thinkjepa.app.cli.cache_cmd import app
from thinkjepa.cache_schema import CacheError, CacheReader, CacheWriter, RecordError, repair, verify
from thinkjepa.cache_schema.fsio import syncfs_available

KEYS = ["sort/1@5", "sort/2@5", "pour/3@9", "pour/4@9", "wipe/5@3"]
PART = "shard-0"


def write_all(url: str, keys=KEYS) -> list[str]:
    """Commit every key not done yet, as a stage rerun would; returns the keys (re)written."""
    written = []
    with CacheWriter(url, vlm_meta(hidden=256), part=PART) as w:
        for i, key in enumerate(keys):
            if not w.is_done(key, "fp-1"):
                # pour/3 is big enough to be sharded: one shard file per float array
                w.commit(vlm_entry(key, i, n_prefill=1200 if key == "pour/3@9" else 40, hidden=256))
                written.append(key)
    return written


@pytest.fixture
def cache(tmp_path):
    url = str(tmp_path / "c.zarr")
    assert write_all(url) == KEYS
    return url


def entry_dir(url: str, key: str) -> Path:
    return Path(url) / CacheReader(url).record(key)["path"]


def record_file(url: str, key: str) -> Path:
    from thinkjepa.cache_schema.schema import record_path

    return Path(url) / record_path(PART, key)


def only_chunk(d: Path) -> Path:
    (c,) = [p for p in d.iterdir() if p.name.startswith("c.")]
    return c


def test_commit_fsyncs_data_then_folders_then_record_then_its_folder(tmp_path, monkeypatch):
    """``THINKJEPA_CACHE_FSYNC=files``: an fsync per data file and folder, no syncfs."""
    import thinkjepa.cache_schema.fsio as fsio
    import thinkjepa.cache_schema.store as store

    monkeypatch.setenv("THINKJEPA_CACHE_FSYNC", "files")
    monkeypatch.setattr(fsio, "sync_filesystem", lambda path: pytest.fail(f"syncfs of {path} in files mode"))
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        events.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", fsync)
    monkeypatch.setattr(fsio.os, "fsync", fsync)
    url = str(tmp_path / "c.zarr")
    with CacheWriter(url, vlm_meta(hidden=256), part=PART) as w:
        events.clear()
        rec = w.commit(vlm_entry("sort/1@5", 1, hidden=256))
    root = str(Path(url).absolute())
    entry = f"{root}/{rec['path']}"
    rec_file = f"{root}/index/{PART}"
    data_files = {str(p) for p in Path(entry).rglob("*") if p.is_file()}
    data_dirs = {entry, *(str(p) for p in Path(entry).rglob("*") if p.is_dir())}
    synced = set(events)
    assert data_files <= synced, "every data file is fsync'ed"
    assert data_dirs | {f"{root}/clips/{PART}"} <= synced, "every entry folder and the one holding it"
    # the record: its temp file (renamed afterwards, so /proc names the temp), then index/<part>/
    i_rec = max(i for i, e in enumerate(events) if e.startswith(rec_file + "/."))
    assert events.index(rec_file) > i_rec
    assert all(events.index(x) < i_rec for x in data_files | data_dirs)
    # each file and folder once: a new folder's name is not fsync'ed in its parent and again by
    # the entry's tree sync
    assert len(events) == len(set(events)), sorted(e for e in set(events) if events.count(e) > 1)

    events.clear()
    with CacheWriter(url, vlm_meta(hidden=256), part=PART, durable=False) as w:
        w.commit(vlm_entry("sort/2@5", 2, hidden=256))
    assert events == []

    monkeypatch.setenv("THINKJEPA_CACHE_FSYNC", "0")
    with CacheWriter(url, vlm_meta(hidden=256), part=PART) as w:
        w.commit(vlm_entry("sort/3@5", 3, hidden=256))
    assert events == []


@pytest.mark.skipif(not syncfs_available(), reason="syncfs is Linux's (CI runs Linux)")
def test_commit_syncs_the_filesystem_once_with_the_whole_entry_then_fsyncs_the_record(tmp_path, monkeypatch):
    """The default on Linux: one syncfs after every data file and folder of the entry is
    written whole, before the record exists; then the record's temp file and its folder."""
    import thinkjepa.cache_schema.fsio as fsio
    import thinkjepa.cache_schema.store as store

    monkeypatch.delenv("THINKJEPA_CACHE_FSYNC", raising=False)
    assert store.data_sync_method() == "syncfs"
    url = str(tmp_path / "c.zarr")
    root = Path(url).absolute()
    events: list[tuple[str, object]] = []
    real_fsync, real_syncfs = os.fsync, fsio.sync_filesystem

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def syncfs(path):
        seen = {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}
        events.append(("syncfs", (str(path), seen)))
        real_syncfs(path)

    monkeypatch.setattr(store.os, "fsync", fsync)
    monkeypatch.setattr(fsio.os, "fsync", fsync)
    monkeypatch.setattr(fsio, "sync_filesystem", syncfs)
    with CacheWriter(url, vlm_meta(hidden=256), part=PART) as w:
        events.clear()
        rec = w.commit(vlm_entry("sort/1@5", 1, hidden=256))
    entry = root / rec["path"]
    rec_file = f"{root}/index/{PART}"
    syncs = [e for e in events if e[0] == "syncfs"]
    assert len(syncs) == 1, events
    i_sync = events.index(syncs[0])
    path, seen = syncs[0][1]
    assert path == str(root)
    final = {str(p): p.stat().st_size for p in entry.rglob("*") if p.is_file()}
    assert len(final) > 10 and all(seen.get(f) == n for f, n in final.items()), "every data file, whole, at the syncfs"
    assert not any(f.startswith(rec_file) for f in seen), "no record before the data is durable"
    fsyncs = [e[1] for e in events if e[0] == "fsync"]
    assert not any(str(f).startswith(str(entry)) for f in fsyncs), "no fsync per data file or folder"
    i_tmp = next(i for i, e in enumerate(events) if e[0] == "fsync" and str(e[1]).startswith(rec_file + "/."))
    assert i_sync < i_tmp < events.index(("fsync", rec_file))


def test_repair_uncommits_exactly_the_damaged_entries_and_a_rerun_redoes_them(cache):
    ref = CacheReader(cache)
    before = {k: ref.read_means(k)["prefill"] for k in KEYS}
    # 1: a flipped byte in a small chunk; 2: a shard file cut short; 3: a torn (empty) record
    chunk = only_chunk(entry_dir(cache, "sort/1@5") / "prefill")
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    shard = only_chunk(entry_dir(cache, "pour/3@9") / "prefill")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    record_file(cache, "wipe/5@3").write_bytes(b"")

    problems = verify(cache)
    blamed = {p.key: p for p in problems if p.key}
    assert set(blamed) == {"sort/1@5", "pour/3@9", "wipe/5@3"}
    assert blamed["sort/1@5"].file == f"{CacheReader(cache).record('sort/1@5')['path']}/prefill/c.0.0.0"
    assert blamed["pour/3@9"].file.endswith("/prefill/c.0.0.0")
    assert blamed["wipe/5@3"].file == f"index/{PART}/wipe~2F5~403.json" and "empty" in blamed["wipe/5@3"].detail

    report = repair(cache)
    assert sorted(report.uncommitted) == ["pour/3@9", "sort/1@5", "wipe/5@3"]
    r = CacheReader(cache)
    assert r.keys() == ["pour/4@9", "sort/2@5"]
    assert set(r.failures()) == {"pour/3@9", "sort/1@5", "wipe/5@3"}
    assert "repair" in r.failures()["pour/3@9"]
    assert verify(cache) == []

    assert sorted(write_all(cache)) == ["pour/3@9", "sort/1@5", "wipe/5@3"]
    r = CacheReader(cache)
    assert r.keys() == sorted(KEYS) and r.failures() == {} and verify(cache) == []
    for k in KEYS:
        np.testing.assert_array_equal(r.read_means(k)["prefill"], before[k])


def test_cli_verify_repair(cache):
    only_chunk(entry_dir(cache, "sort/2@5") / "generated_ids").write_bytes(b"\x00" * 3)
    res = CliRunner().invoke(app, ["verify", cache, "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert [(p["key"], p["part"]) for p in doc["problems"]] == [("sort/2@5", PART)]
    assert doc["problems"][0]["file"].endswith("/generated_ids/c.0")
    res = CliRunner().invoke(app, ["verify", cache, "--repair", "--json"])
    assert res.exit_code == 0, res.output
    assert list(json.loads(res.stdout)["repair"]["uncommitted"]) == ["sort/2@5"]
    assert "sort/2@5" not in CacheReader(cache)


def test_repair_refuses_while_a_writer_holds_the_part(cache):
    record_file(cache, "sort/1@5").write_bytes(b"{")
    with CacheWriter(cache, vlm_meta(hidden=256), part=PART):
        with pytest.raises(CacheError, match="being written by another live process"):
            repair(cache)
    assert repair(cache).uncommitted.keys() == {"sort/1@5"}


def test_reader_errors_name_the_entry_and_the_file(cache):
    record_file(cache, "sort/1@5").write_bytes(b'{"key": "sort/1@5", "pa')
    with pytest.raises(RecordError, match=r"sort/1@5: commit record index/shard-0/sort~2F1~405\.json is not valid JSON"):
        CacheReader(cache).read_means("sort/1@5")
    record_file(cache, "sort/2@5").write_bytes(b"")
    with pytest.raises(CacheError, match=r"sort/2@5: commit record index/shard-0/sort~2F2~405\.json is empty"):
        CacheReader(cache).record("sort/2@5")
    # torn records are left out of records(): their keys count as not committed
    assert {r["key"] for r in CacheReader(cache).records()} == set(KEYS) - {"sort/1@5", "sort/2@5"}

    shard = only_chunk(entry_dir(cache, "pour/3@9") / "prefill")
    rel = shard.relative_to(cache).as_posix()
    shard.write_bytes(shard.read_bytes()[:100])
    for read in (lambda r: r.read_tokens("pour/3@9", "prefill", 64), lambda r: r.read_tokens("pour/3@9", "prefill", None)):
        with pytest.raises(CacheError) as e:
            read(CacheReader(cache))
        assert "pour/3@9: prefill" in str(e.value) and rel in str(e.value)
    (entry_dir(cache, "pour/4@9") / "prefill_mean" / "c.0.0").unlink()
    with pytest.raises(CacheError, match=r"pour/4@9: prefill_mean \(file clips/shard-0/.*/prefill_mean/c\.0\.0\): "
                                         "data file missing"):
        CacheReader(cache).read_means("pour/4@9")


@pytest.mark.parametrize("path", ["../../outside", "clips/other-part/sort~2F1~405.0123abcd", "clips/shard-0",
                                  "clips/shard-0/sort~2F2~405.0123abcd"])
def test_a_record_whose_path_leaves_its_entry_folder_is_refused(cache, tmp_path, path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    victim = Path(cache) / "clips" / PART
    n_before = len(list(victim.iterdir()))
    rf = record_file(cache, "sort/1@5")
    rec = json.loads(rf.read_bytes())
    rec["path"] = path
    rf.write_text(json.dumps(rec))
    with pytest.raises(RecordError, match="not an entry folder of its part"):
        CacheReader(cache).record("sort/1@5")
    assert [p.code for p in verify(cache) if p.key == "sort/1@5"] == ["record"]
    # a writer of the part ignores the record (no delete follows it) and redoes the key
    assert write_all(cache) == ["sort/1@5"]
    assert (outside / "precious.txt").read_text() == "keep me"
    assert len(list(victim.iterdir())) == n_before  # old folder of sort/1 collected, new one written
    assert verify(cache) == []


def test_repair_removes_an_orphan_that_is_a_folder_link_and_not_its_target(cache, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("not the cache's")
    link = Path(cache) / "clips" / PART / "linked"
    os.symlink(target, link)
    orphans = [p for p in verify(cache) if p.code == "orphan"]
    assert [p.file for p in orphans] == [f"clips/{PART}/linked"]
    report = repair(cache)
    assert report.removed == [f"clips/{PART}/linked"]
    assert not os.path.lexists(link)  # said removed, and is
    assert (target / "keep.txt").read_text() == "not the cache's"
    assert verify(cache) == []
