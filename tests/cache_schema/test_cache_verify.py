from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
from cache_testdata import vlm_entry, vlm_meta
from typer.testing import CliRunner

from thinkjepa.app.cli.cache_cmd import app
from thinkjepa.cache_schema import CacheError, CacheReader, CacheWriter, cache_stats, verify


@pytest.fixture
def cache(tmp_path):
    """A small committed store: two small entries and one whose prefill is sharded."""
    url = str(tmp_path / "c.zarr")
    with CacheWriter(url, vlm_meta(hidden=256), part="shard-0") as w:
        w.commit(vlm_entry("sort/1@5", 1, hidden=256))
        w.commit(vlm_entry("sort/2@5", 2, hidden=256))
        w.commit(vlm_entry("pour/3@9", 3, n_prefill=1200, hidden=256))
        w.record_failure("pour/4@9", "too short: 12 frames")
    return url


def entry_dir(url: str, key: str):
    from pathlib import Path

    return Path(url) / CacheReader(url).record(key)["path"]


def codes(problems):
    return sorted((p.code, p.key) for p in problems)


@pytest.mark.parametrize("key, array", [("sort/1@5", "prefill"), ("pour/3@9", "prefill"), ("sort/2@5", "frame_index")])
def test_damaged_chunk_is_found(cache, key, array):
    (chunk,) = [p for p in (entry_dir(cache, key) / array).iterdir() if p.name.startswith("c.")]
    size = chunk.stat().st_size
    chunk.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    problems = verify(cache)
    assert codes(problems) == [("corrupt", key)]
    assert array in problems[0].detail
    with pytest.raises(CacheError, match=f"{key}: {array}"):
        CacheReader(cache).read_batch([key], [array])


def test_missing_array_chunk_and_entry_are_found(cache):
    shutil.rmtree(entry_dir(cache, "sort/1@5") / "generated")
    (entry_dir(cache, "sort/2@5") / "prefill_mean" / "c.0.0").unlink()
    shutil.rmtree(entry_dir(cache, "pour/3@9"))
    problems = verify(cache)
    assert codes(problems) == [("missing", "pour/3@9"), ("missing", "sort/1@5"), ("missing", "sort/2@5")]
    text = " ".join(map(str, problems))
    assert "array 'generated' is missing" in text and "prefill_mean: 1 chunk file(s) missing" in text


def test_nonfinite_values_and_orphans_are_found(cache):
    z = zarr.open_array(str(entry_dir(cache, "sort/1@5") / "generated_mean"), mode="r+")
    z[1, 3] = np.inf  # zarr re-encodes the chunk with a valid checksum: only the value check sees it
    orphan = entry_dir(cache, "sort/2@5").parent / "sort~2F9~405.deadbeef"
    shutil.copytree(entry_dir(cache, "sort/2@5"), orphan)
    problems = verify(cache)
    assert codes(problems) == [("nonfinite", "sort/1@5"), ("orphan", None)]
    assert "sort~2F9~405.deadbeef" in problems[1].detail
    # the next writer of that part removes the orphan
    CacheWriter(cache, vlm_meta(hidden=256), part="shard-0").close()
    assert codes(verify(cache)) == [("nonfinite", "sort/1@5")]


def test_shape_disagreeing_with_record_is_found(cache):
    rec_path = next((entry_dir(cache, "sort/1@5").parents[2] / "index" / "shard-0").glob("sort~2F1*"))
    rec = json.loads(rec_path.read_text())
    rec["arrays"]["prefill"]["shape"][1] = 41
    rec_path.write_text(json.dumps(rec))
    assert codes(verify(cache)) == [("shape", "sort/1@5")]


@pytest.mark.slow
def test_cli_verify_show_stats(cache):
    runner = CliRunner()
    res = runner.invoke(app, ["verify", cache])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["verify", cache, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == {"path": cache, "ok": True, "problems": []}

    res = runner.invoke(app, ["show", cache, "pour/3@9", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["arrays"]["prefill"]["shape"] == [3, 1200, 256]
    assert info["tokens"] == {"prefill": 1200, "generated": 5, "vision": 600, "text": 600}
    assert info["vision_frames"] == [0, 1, 2, 3] and info["provenance"]["seed"] == 3
    res = runner.invoke(app, ["show", cache, "pour/3@9"])
    assert res.exit_code == 0 and "prefill" in res.stdout and "thinking about pour/3@9" in res.stdout
    res = runner.invoke(app, ["show", cache, "sort/7@5"])
    assert res.exit_code == 2 and "not committed" in res.output

    res = runner.invoke(app, ["stats", cache, "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["entries"] == 3 and s["entries_per_part"] == {"shard-0": 3} and s["failures"] == 1
    assert s["tokens"]["prefill"] == {"total": 1280, "mean": 1280 / 3, "min": 40, "max": 1200}
    r = CacheReader(cache)
    norms = np.linalg.norm(np.stack([r.read_means(k)["generated"] for k in r.keys()]), axis=-1)
    np.testing.assert_allclose(s["layer_mean_norm"]["generated"]["mean"], norms.mean(axis=0), rtol=1e-5)
    res = runner.invoke(app, ["stats", cache])
    assert res.exit_code == 0 and "shard-0" in res.stdout

    shutil.rmtree(entry_dir(cache, "sort/2@5") / "prefill")
    res = runner.invoke(app, ["verify", cache, "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert not out["ok"] and out["problems"][0]["key"] == "sort/2@5"
    res = runner.invoke(app, ["verify", cache])
    assert res.exit_code == 1 and "sort/2@5" in res.stdout


@pytest.mark.slow
def test_stats_of_a_jepa_cache(tmp_path):
    from cache_testdata import jepa_entry, jepa_meta

    url = str(tmp_path / "j.zarr")
    with CacheWriter(url, jepa_meta()) as w:
        w.commit(jepa_entry("a/1@8", 1))
    s = cache_stats(url)
    assert s["tokens"]["past"]["total"] == 24 and s["latent_mean_norm"]["past"] > 0
