import json
import os
import time

import pytest

from thinkjepa.cache_schema.fsio import atomic_write_json, atomic_write_text, clean_stale_temps, temp_name


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "state.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [q.name for q in p.parent.iterdir()] == ["state.json"]  # no temp left behind


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_text(p, "old")
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})  # json.dumps fails before anything is written
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_temp_names_are_unique_and_stale_ones_are_cleaned(tmp_path):
    p = tmp_path / "f"
    a, b = temp_name(p), temp_name(p)
    assert a != b and a.parent == tmp_path
    a.write_text("left by a crashed writer")
    b.write_text("a live writer's")
    old = time.time() - 7200
    os.utime(a, (old, old))
    assert clean_stale_temps(tmp_path) == [a]
    assert not a.exists() and b.exists()
