"""The per-part catalog: read instead of the commit records, never different from them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cache_testdata import vlm_entry, vlm_meta

from thinkjepa.cache_schema import CacheReader, CacheWriter, record_listing
from thinkjepa.cache_schema.schema import CATALOG, CATALOG_META_KEY

PART = "shard-00000-of-00001"


def _commit(url: str, part: str, keys: list[str], fingerprint: str, seed: int = 0) -> None:
    with CacheWriter(url, vlm_meta(), part=part) as w:
        for i, key in enumerate(keys):
            w.commit(vlm_entry(key, seed + i, n_prefill=6, n_generated=2, fingerprint=fingerprint))
        w.flush()


def _truth(url: str) -> dict[str, tuple[str, float, str]]:
    """What the records say, read one by one (no catalog, no summary)."""
    import json

    out: dict[str, tuple[str, float, str]] = {}
    for rec_file in (Path(url) / "index").glob("*/*.json"):
        try:
            r = json.loads(rec_file.read_bytes())
        except ValueError:
            continue
        if r["key"] not in out or r["committed_at"] > out[r["key"]][1]:
            out[r["key"]] = (r["fingerprint"], float(r["committed_at"]), r["part"])
    return out


def _counting_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    real = record_listing._read_brief
    monkeypatch.setattr(record_listing, "_read_brief", lambda path, name: reads.append(name) or real(path, name))
    monkeypatch.setattr(record_listing, "_brief", lambda raw, p: pytest.fail("a record summary was used"))
    return reads


def _settle(url: str, part: str) -> None:
    """Age the part's folder as if its last commit was long ago, and have a writer rewrite the
    catalog: the state of a store whose writers finished a while ago."""
    folder = Path(url) / "index" / part
    os.utime(folder, ns=(folder.stat().st_atime_ns, folder.stat().st_mtime_ns - 10**10))
    with CacheWriter(url, vlm_meta(), part=part):
        pass


def test_the_catalog_is_read_instead_of_the_records(tmp_path, monkeypatch):
    url = str(tmp_path / "c.zarr")
    _commit(url, "shard-00000-of-00002", ["a/0@9", "a/1@9"], "fp-a")
    _commit(url, "shard-00001-of-00002", ["b/0@9"], "fp-b")
    assert len(list((Path(url) / CATALOG).glob("*/*.parquet"))) == 2  # one complete file per part
    reads = _counting_reads(monkeypatch)
    # just written (a change in the same clock tick could hide): each record is stat'ed, none read
    assert CacheReader(url).briefs() == _truth(url)
    assert reads == []
    for part in ("shard-00000-of-00002", "shard-00001-of-00002"):
        _settle(url, part)
    truth = _truth(url)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).parent.name == "index":
            pytest.fail(f"the settled part {path} was listed")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert CacheReader(url).briefs() == truth
    assert CacheReader(url).keys() == ["a/0@9", "a/1@9", "b/0@9"]


def test_records_changed_behind_the_catalog_are_seen(tmp_path, monkeypatch):
    url = str(tmp_path / "c.zarr")
    _commit(url, PART, ["a/0@9", "a/1@9", "a/2@9"], "fp-1")
    _settle(url, PART)
    catalog_files = sorted((Path(url) / CATALOG / PART).iterdir())
    saved = {p: p.read_bytes() for p in catalog_files}
    # a new key, a replaced one and a deleted one, then the catalog put back as it was before
    _commit(url, PART, ["a/1@9", "a/3@9"], "fp-2", seed=10)
    os.unlink(Path(url) / "index" / PART / "a~2F0~409.json")
    for p in (Path(url) / CATALOG / PART).iterdir():
        p.unlink()
    for p, raw in saved.items():
        p.write_bytes(raw)
    reads = _counting_reads(monkeypatch)
    briefs = CacheReader(url).briefs()
    assert briefs == _truth(url)
    assert set(briefs) == {"a/1@9", "a/2@9", "a/3@9"} and briefs["a/1@9"][0] == "fp-2"
    assert sorted(reads) == ["a~2F1~409.json", "a~2F3~409.json"]  # exactly the changed records


def test_a_torn_or_foreign_catalog_falls_back_to_the_records(tmp_path):
    url = str(tmp_path / "c.zarr")
    _commit(url, PART, ["a/0@9", "a/1@9"], "fp-1")
    (newest,) = (Path(url) / CATALOG / PART).iterdir()
    newest.write_bytes(newest.read_bytes()[:40])
    assert CacheReader(url).briefs() == _truth(url)
    newest.write_bytes(b"PAR1 not parquet at all")
    assert CacheReader(url).briefs() == _truth(url)
    assert CacheReader(url).keys() == ["a/0@9", "a/1@9"]


def test_a_catalog_of_another_version_is_ignored(tmp_path):
    import json

    import pyarrow.parquet as pq

    url = str(tmp_path / "c.zarr")
    _commit(url, PART, ["a/0@9"], "fp-1")
    (newest,) = (Path(url) / CATALOG / PART).iterdir()
    table = pq.read_table(newest)
    meta = json.loads(table.schema.metadata[CATALOG_META_KEY.encode()])
    lie = table.slice(0, 0).replace_schema_metadata({CATALOG_META_KEY: json.dumps({**meta, "version": 999})})
    pq.write_table(lie, newest)  # says "no entries", in a version this code does not read
    assert CacheReader(url).briefs() == _truth(url) != {}


_CRASHING_WRITER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {testdir!r})
    from cache_testdata import vlm_entry, vlm_meta
    from thinkjepa.cache_schema import CacheWriter
    w = CacheWriter({url!r}, vlm_meta(), part={part!r})
    for i, key in enumerate(["a/0@9", "a/1@9", "a/2@9"]):
        w.commit(vlm_entry(key, i, n_prefill=6, n_generated=2, fingerprint="fp-1"))
    w.flush()  # the batch is in the catalog
    w.commit(vlm_entry("a/1@9", 7, n_prefill=6, n_generated=2, fingerprint="fp-2"))  # replaced
    w.commit(vlm_entry("a/9@9", 8, n_prefill=6, n_generated=2, fingerprint="fp-2"))  # new
    os.kill(os.getpid(), signal.SIGKILL)  # between the records and the catalog's next delta
""")


@pytest.mark.slow
def test_a_writer_killed_between_record_and_catalog_loses_and_invents_nothing(tmp_path, monkeypatch):
    url = str(tmp_path / "c.zarr")
    script = _CRASHING_WRITER.format(testdir=str(Path(__file__).parent), url=url, part=PART)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    truth = _truth(url)
    assert {k: v[0] for k, v in truth.items()} == {"a/0@9": "fp-1", "a/1@9": "fp-2", "a/2@9": "fp-1", "a/9@9": "fp-2"}
    files = list((Path(url) / CATALOG / PART).iterdir())
    assert len(files) == 2  # the complete file written at open and one delta: both behind the records
    reads = _counting_reads(monkeypatch)
    assert CacheReader(url).briefs() == truth
    assert sorted(reads) == ["a~2F1~409.json", "a~2F9~409.json"]
    assert CacheReader(url).keys() == sorted(truth)
    # the part's next writer rebuilds the catalog from the records, compacted into one file
    with CacheWriter(url, vlm_meta(), part=PART):
        pass
    assert len(list((Path(url) / CATALOG / PART).iterdir())) == 1
    reads.clear()
    assert CacheReader(url).briefs() == truth
    assert reads == []


def test_entry_identities_from_the_catalogs_equal_the_records(tmp_path, monkeypatch):
    """``CacheReader.entry_identities`` (what `tj status` folds into the training stamp) reads the
    catalogs, and equals the records' own ``(fingerprint, path)`` of the newest commit of each
    key: fresh, trusted, after a recommit in another part, and with one part's catalog gone."""
    import shutil

    url = str(tmp_path / "vlm.zarr")
    _commit(url, PART, ["t/0@8", "t/1@8", "t/2@8"], "a")
    _commit(url, "shard-00000-of-00002", ["t/1@8"], "b", seed=5)  # a newer commit of t/1@8 elsewhere

    def truth() -> dict[str, tuple[str, str]]:
        return {r["key"]: (r["fingerprint"], r["path"]) for r in CacheReader(url).records()}

    def both() -> list[dict[str, tuple[str, str]]]:
        """The dict and the columnar form (one row per key, sorted), as dicts."""
        table = CacheReader(url).entry_identity_table()
        keys = table.column("key").to_pylist()
        assert keys == sorted(set(keys))
        cols = zip(keys, table.column("fingerprint").to_pylist(), table.column("path").to_pylist())
        return [CacheReader(url).entry_identities(), {k: (fp, path) for k, fp, path in cols}]

    assert both() == [truth()] * 2 and truth()["t/1@8"][0] == "b"
    monkeypatch.setattr(record_listing, "RACY_S", -1.0)  # the catalogs trusted as they are
    from thinkjepa.cache_schema import catalog

    monkeypatch.setattr(catalog, "RACY_S", -1.0)
    assert both() == [truth()] * 2
    _commit(url, PART, ["t/0@8"], "c", seed=9)  # recommitted: a new generation
    assert both() == [truth()] * 2 and truth()["t/0@8"][0] == "c"
    with CacheWriter(url, vlm_meta(), part=PART) as w:  # a delta file after the complete one
        w.commit(vlm_entry("t/2@8", 11, n_prefill=6, n_generated=2, fingerprint="d"))
        w.flush()
        assert len(list((Path(url) / CATALOG / PART).iterdir())) == 2
        assert both() == [truth()] * 2 and truth()["t/2@8"][0] == "d"
    shutil.rmtree(Path(url) / CATALOG / PART)
    assert both() == [truth()] * 2
