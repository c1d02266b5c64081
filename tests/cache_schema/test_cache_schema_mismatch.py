from __future__ import annotations

import json

import pytest
from cache_testdata import vlm_entry, vlm_meta

from thinkjepa.cache_schema import SCHEMA_VERSION, CacheError, CacheReader, CacheWriter, SchemaMismatchError


def test_writer_refuses_other_settings_naming_every_field(store_url):
    with CacheWriter(store_url, vlm_meta(), part="p0") as w:
        w.commit(vlm_entry("t/1@5", 1))
    other = vlm_meta(model="other/model", layers=[0, 4, 12], storage_dtype="bfloat16",
                     extra={"frames": 16, "max_new_tokens": 4})
    with pytest.raises(SchemaMismatchError) as err:
        CacheWriter(store_url, other, part="p1")
    msg = str(err.value)
    for field in ("model: store has 'tiny/qwen3vl', expected 'other/model'", "layers: store has [0, 4, 8]",
                  "storage_dtype", "extra.frames: store has 8, expected 16"):
        assert field in msg
    assert "extra.max_new_tokens" not in msg and "revision" not in msg
    assert len(err.value.differences) == 4
    # nothing was mixed in
    assert CacheReader(store_url).keys() == ["t/1@5"]


def test_reader_says_what_differs(store_url):
    with CacheWriter(store_url, vlm_meta()) as w:
        w.commit(vlm_entry("t/1@5", 1))
    assert CacheReader(store_url, expect=vlm_meta()).keys() == ["t/1@5"]
    with pytest.raises(SchemaMismatchError, match=r"hidden_size: store has 32, expected 64") as err:
        CacheReader(store_url, expect=vlm_meta(hidden=64, revision="r2"))
    assert [d.split(":")[0] for d in err.value.differences] == ["revision", "hidden_size"]


def test_other_schema_version_is_refused(tmp_path):
    url = str(tmp_path / "c.zarr")
    with CacheWriter(url, vlm_meta()) as w:
        w.commit(vlm_entry("t/1@5", 1))
    root = tmp_path / "c.zarr" / "zarr.json"
    doc = json.loads(root.read_text())
    doc["attributes"]["thinkjepa_cache"]["schema_version"] = SCHEMA_VERSION + 1
    root.write_text(json.dumps(doc))
    with pytest.raises(SchemaMismatchError, match=f"schema_version: store has {SCHEMA_VERSION + 1}"):
        CacheWriter(url, vlm_meta())
    with pytest.raises(SchemaMismatchError, match="cannot read it"):
        CacheReader(url)


def test_not_a_cache_and_bad_part(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CacheError, match="no cache at"):
        CacheReader(str(tmp_path / "x"))
    with pytest.raises(CacheError, match="part name 'a/b'"):
        CacheWriter(str(tmp_path / "c.zarr"), vlm_meta(), part="a/b")


def test_one_live_writer_per_part(tmp_path):
    url = str(tmp_path / "c.zarr")
    w = CacheWriter(url, vlm_meta(), part="shard-1")
    with pytest.raises(CacheError, match="being written by another live process"):
        CacheWriter(url, vlm_meta(), part="shard-1")
    CacheWriter(url, vlm_meta(), part="shard-2").close()  # other parts are free
    w.close()
    CacheWriter(url, vlm_meta(), part="shard-1").close()  # released on close
