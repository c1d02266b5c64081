"""The encode stage: frozen V-JEPA2 latents of past and future windows in the JEPA cache."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from thinkjepa.cache_schema import CacheReader, SchemaMismatchError
from thinkjepa.data.egodex import decode_frames
from thinkjepa.extract.encode import JepaEncoder, plan_encode, run_encode


@pytest.fixture(scope="module")
def encoder(tiny_pipeline) -> JepaEncoder:
    return JepaEncoder(tiny_pipeline.encoder, device="cpu")


@pytest.mark.slow
def test_every_window_is_encoded_and_a_rerun_skips_them(tiny_pipeline, encoder) -> None:
    cfg = tiny_pipeline
    items, problems = plan_encode(cfg)
    r = CacheReader(cfg.url(cfg.encoder.cache))
    assert r.meta.kind == "jepa" and r.meta.hidden_size == 64 and not problems
    assert r.keys() == sorted(it.key for it in items) and len(items) == 12
    entry = r.get(items[0].key)
    assert entry.past.shape == entry.future.shape == (4, 16, 64)
    assert list(entry.past_frames) == list(items[0].window.past)
    assert list(entry.future_frames) == list(items[0].window.future)
    again = run_encode(cfg, encoder=encoder, progress=False)
    assert again.done == [] and sorted(again.skipped) == r.keys() and again.ok


def test_past_and_future_are_encoded_separately(tiny_pipeline, encoder) -> None:
    """The stored past latents are the encoding of the past frames alone: no future frame
    was in the encoder's (bidirectional) attention when they were made."""
    cfg = tiny_pipeline
    it = plan_encode(cfg)[0][0]
    past, future = CacheReader(cfg.url(cfg.encoder.cache)).read_jepa(it.key)
    frames = decode_frames(it.video_path, [*it.window.past, *it.window.future], cfg.encoder.frame_size)
    n = len(it.window.past)
    np.testing.assert_allclose(encoder.encode([frames[:n]])[0], past, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(encoder.encode([frames[n:]])[0], future, rtol=1e-5, atol=1e-5)
    # encoding past and future as one clip would have given other context latents
    joint = encoder.encode([frames])[0][: past.shape[0]]
    assert not np.allclose(joint, past, atol=1e-3)


def test_shards_partition_the_clips(tiny_pipeline, encoder, tmp_path) -> None:
    cfg = tiny_pipeline.model_copy(
        update={"encoder": tiny_pipeline.encoder.model_copy(update={"cache": str(tmp_path / "jepa.zarr")})})
    summaries = [run_encode(cfg, shard=(i, 3), encoder=encoder, progress=False) for i in range(3)]
    done = [set(s.done) for s in summaries]
    assert sum(len(d) for d in done) == 12 and set().union(*done) == {it.key for it in plan_encode(cfg)[0]}
    # all windows of a clip land in one shard
    clips = [{k.split("@")[0] for k in d} for d in done]
    assert all(not (a & b) for i, a in enumerate(clips) for b in clips[i + 1:])
    records = CacheReader(cfg.url(cfg.encoder.cache)).records()
    assert {r["part"] for r in records} == {s.part for s, d in zip(summaries, done) if d}


def test_a_broken_video_is_recorded_and_the_rest_encoded(tiny_pipeline, encoder, tmp_path) -> None:
    src = tiny_pipeline
    table = pq.read_table(src.path(src.data.manifest))
    rows = table.to_pylist()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    rows[0]["video_path"] = str(broken)
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(table.from_pylist(rows, schema=table.schema), manifest)
    cfg = src.model_copy(update={
        "data": src.data.model_copy(update={"manifest": str(manifest)}),
        "encoder": src.encoder.model_copy(update={"cache": str(tmp_path / "jepa.zarr")}),
    })
    s = run_encode(cfg, encoder=encoder, progress=False)
    bad_clip = rows[0]["clip_id"]
    assert set(s.failed) == {k for k in (it.key for it in plan_encode(cfg)[0]) if k.startswith(bad_clip + "@")}
    assert all("decode" in why and bad_clip in why for why in s.failed.values())
    assert len(s.done) == 10
    r = CacheReader(cfg.url(cfg.encoder.cache))
    assert set(r.failures()) == set(s.failed)
    # once the video is back, a rerun encodes just those windows
    shutil.copy(src.path(src.data.root) / f"{bad_clip}.mp4", broken)
    again = run_encode(cfg, encoder=encoder, progress=False)
    assert set(again.done) == set(s.failed) and again.ok
    assert not CacheReader(cfg.url(cfg.encoder.cache)).failures()


def test_a_store_made_with_other_settings_is_refused(tiny_pipeline) -> None:
    cfg = tiny_pipeline.model_copy(
        update={"encoder": tiny_pipeline.encoder.model_copy(update={"storage_dtype": "float16"})})
    with pytest.raises(SchemaMismatchError, match="storage_dtype"):
        run_encode(cfg, progress=False)


def test_tj_encode_command(tiny_pipeline, tmp_path) -> None:
    from typer.testing import CliRunner

    from thinkjepa.app.cli.main import app
    from thinkjepa.config import save_config

    save_config(tiny_pipeline, tmp_path, "pipelines.yaml")
    ok = CliRunner().invoke(app, ["encode", "--config", str(tmp_path / "pipelines.yaml"), "--shard", "0/1"])
    assert ok.exit_code == 0, ok.output
    assert "0 encoded, 12 already done, 0 failed" in " ".join(ok.output.split())
    bad = CliRunner().invoke(app, ["encode", "--config", str(tmp_path / "pipelines.yaml"), "--shard", "2/2"])
    assert bad.exit_code == 2
