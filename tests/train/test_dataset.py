"""The training dataset: batch-contract samples streamed from the caches, and the data order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thinkjepa.cache_schema import CacheReader
from thinkjepa.data.egodex import read_episode
from thinkjepa.sampling import Window
from thinkjepa.train.dataset import EpochBatchSampler, WindowDataset, WindowRef, make_loader, split_windows
from thinkjepa.train.targets import window_targets


def _shapes(cfg, B: int, L: int, H: int) -> dict[str, tuple[int, ...]]:
    s = cfg.sampling
    Tp, Tf, P, D = s.past_frames // 2, s.future_frames // 2, 16, 64
    return {
        "past_latents": (B, Tp, P, D), "future_latents": (B, Tf, P, D),
        "target_joints": (B, s.future_frames, 52, 3), "target_conf": (B, s.future_frames, 52),
        "cam_pose": (B, 4, 4), "past_joints_cam": (B, 52, 3), "past_states_cam": (B, s.past_frames, 52, 3),
        "guid_prefill_mean": (B, L, H), "guid_generated_mean": (B, L, H),
        "guid_prefill": (B, L, cfg.model.guidance_tokens, H), "guid_prefill_mask": (B, cfg.model.guidance_tokens),
        "guid_generated": (B, L, cfg.model.guidance_tokens, H),
        "guid_generated_mask": (B, cfg.model.guidance_tokens),
    }


@pytest.mark.parametrize("mode,keys", [
    ("means", {"guid_prefill_mean", "guid_generated_mean"}),
    ("tokens", {"guid_prefill", "guid_prefill_mask", "guid_generated", "guid_generated_mask"}),
    ("none", set()),
])
def test_batches_follow_the_model_batch_contract(tiny_pipeline, vlm_shape, mode, keys) -> None:
    cfg = tiny_pipeline
    layers, hidden = vlm_shape
    ds = WindowDataset(cfg, "train", guidance=mode)
    loader = make_loader(ds, EpochBatchSampler(len(ds), 3, seed=0), num_workers=0)
    batch = next(iter(loader))
    want = _shapes(cfg, 3, len(layers), hidden)
    base = {"past_latents", "future_latents", "target_joints", "target_conf", "cam_pose", "past_joints_cam", "past_states_cam"}
    assert set(batch) == base | keys
    for k, v in batch.items():
        assert tuple(v.shape) == want[k], k
        assert v.dtype == (torch.bool if k.endswith("_mask") else torch.float32), k
    dims = {"latent_dim": 64, "n_tubelets_past": 4, "n_tubelets_future": 4, "n_patches": 16, "future_frames": 8}
    if mode != "none":  # without guidance the VLM cache is never opened
        dims.update(guidance_layers=len(layers), guidance_hidden=hidden)
    assert {k: ds.dims[k] for k in dims} == dims


def test_sample_values_come_from_the_caches_and_the_episode(tiny_pipeline) -> None:
    cfg = tiny_pipeline
    ds = WindowDataset(cfg, "val", guidance="tokens")
    jepa, vlm = CacheReader(cfg.url(cfg.encoder.cache)), CacheReader(cfg.url(cfg.thinker.cache))
    for i, ref in enumerate(ds.refs):
        s = ds[i]
        past, future = jepa.read_jepa(ref.key)
        np.testing.assert_array_equal(s["past_latents"].numpy(), past)
        np.testing.assert_array_equal(s["future_latents"].numpy(), future)
        tokens, mask = vlm.read_tokens(ref.key, "generated", cfg.model.guidance_tokens)
        np.testing.assert_array_equal(s["guid_generated"].numpy(), tokens)
        np.testing.assert_array_equal(s["guid_generated_mask"].numpy(), mask)
        # padded slots are masked, real ones are not
        n_real = int(vlm.record(ref.key)["tokens"]["generated"])
        assert s["guid_generated_mask"].sum() == min(n_real, cfg.model.guidance_tokens)
        ep = read_episode(ref.video_path, ref.annotation_path, check_video=False)
        tg = window_targets(ep.joints, ep.confidences, ep.camera_pose, ref.window)
        np.testing.assert_array_equal(s["target_joints"].numpy(), tg.joints_world)
        np.testing.assert_array_equal(s["cam_pose"].numpy(), ep.camera_pose[ref.window.pose_frame])


def test_worker_processes_yield_the_same_batches(tiny_pipeline) -> None:
    ds = WindowDataset(tiny_pipeline, "train", guidance="means")
    serial = list(make_loader(ds, EpochBatchSampler(len(ds), 2, seed=3), num_workers=0))
    parallel = list(make_loader(ds, EpochBatchSampler(len(ds), 2, seed=3), num_workers=2))
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_split_holds_only_its_clips_and_missing_windows_are_listed(tiny_pipeline) -> None:
    cfg = tiny_pipeline
    refs = {s: split_windows(cfg, s) for s in ("train", "val", "test")}
    clips = {s: {r.window.clip_id for r in v} for s, v in refs.items()}
    assert all(clips.values()) and not (clips["train"] & clips["val"]) and not (clips["train"] & clips["test"])
    first = refs["train"][0]
    never_encoded = Window(first.window.clip_id, 12, tuple(range(4, 12)), tuple(range(12, 20)), (0, 5))
    unknown = WindowRef(never_encoded, first.video_path, first.annotation_path)
    with pytest.warns(UserWarning, match="missing from the caches"):
        ds = WindowDataset(cfg, "train", windows=[*refs["train"], unknown])
    assert ds.missing == [never_encoded.window_id] and ds.window_ids == [r.key for r in refs["train"]]
    with pytest.raises(ValueError, match="none of its 1 windows"):
        WindowDataset(cfg, "train", windows=[unknown])


def test_a_cache_cut_by_other_sampling_is_refused(tiny_pipeline) -> None:
    other = tiny_pipeline.model_copy(update={"sampling": tiny_pipeline.sampling.model_copy(update={"window_hop": 2})})
    with pytest.raises(ValueError, match="other sampling settings.*window_hop"):
        WindowDataset(other, "train")


def test_epoch_order_is_a_function_of_seed_and_epoch() -> None:
    a, b = EpochBatchSampler(10, 3, seed=7), EpochBatchSampler(10, 3, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert sorted(i for batch in a for i in batch) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)
    full = list(a)
    a.set_epoch(2, start_batch=2)
    assert list(a) == full[2:] and len(a) == 2
    # one iterator may span epochs (prefetch across the boundary) with the same batches
    a.set_epoch(2, start_batch=2, n_epochs=2)
    b.set_epoch(3)
    assert list(a) == full[2:] + list(b) and len(a) == 6
    # batch_size is global: the ranks split each step's batch; the short last step is padded
    # (same shape on every rank) and the padding is flagged by valid_count
    one = EpochBatchSampler(10, 6, seed=7)
    ranks = [EpochBatchSampler(10, 6, seed=7, rank=r, world=3) for r in range(3)]
    for s in (one, *ranks):
        s.set_epoch(1)
    assert [len(s) for s in (one, *ranks)] == [2, 2, 2, 2]
    for b, (whole, *parts) in enumerate(zip(one, *ranks)):
        assert [len(p) for p in parts] == [2, 2, 2]
        assert [i for r, p in zip(ranks, parts) for i in p[: r.valid_count(b)]] == whole
    assert [r.valid_count(1) for r in ranks] == [2, 2, 0]
    with pytest.raises(ValueError, match="global batch.*multiple of 3"):
        EpochBatchSampler(10, 4, seed=7, world=3)
    # evaluation: unpadded, every index exactly once
    ev = [EpochBatchSampler(10, 4, seed=0, shuffle=False, rank=r, world=3, pad=False) for r in range(3)]
    assert sorted(i for r in ev for batch in r for i in batch) == list(range(10))
    assert all(r.valid_count(b) == len(batch) for r in ev for b, batch in enumerate(r))


def test_nothing_to_serve_names_the_cause_and_the_next_command(tiny_pipeline, tmp_path) -> None:
    import shutil

    from thinkjepa.data.manifest import read_manifest

    cfg = tiny_pipeline
    other = cfg.model_copy(update={"thinker": cfg.thinker.model_copy(update={"model": "someone/else"})})
    with pytest.raises(ValueError, match=r"config thinker\.model is 'someone/else' .*another model.*tj-extract run"):
        WindowDataset(other, "train", guidance="means")
    # a manifest whose test split is empty: the message says so (not "run extract first")
    m = tmp_path / "m.parquet"
    shutil.copy(cfg.path(cfg.data.manifest), m)
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = read_manifest(m)
    t = t.set_column(t.column_names.index("split"), "split",
                     pa.array(["train" if s == "test" else s for s in t.column("split").to_pylist()]))
    pq.write_table(t, m)
    moved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"manifest": str(m), "split_by": "task"})})
    with pytest.raises(ValueError, match=r"split 'test' is empty.*split by task folder.*data\.split_by=episode"):
        WindowDataset(moved, "test", guidance="means")


def test_rollout_targets_beyond_the_episode_name_the_window_and_the_fix(tiny_pipeline) -> None:
    """``train.rollout_steps`` > 1 reads every step's frames; a window whose episode ends
    before them is refused by name (the config check makes this unreachable from a config with
    ``sampling.horizon_steps`` >= ``train.rollout_steps``)."""
    ds = WindowDataset(tiny_pipeline, "val", guidance="none", target_steps=2)
    with pytest.raises(ValueError, match=rf"{ds.refs[0].key}: train.rollout_steps=2 needs frames up to \d+, the episode has 32"):
        ds[0]
    with pytest.raises(ValueError, match="target_steps must be >= 1"):
        WindowDataset(tiny_pipeline, "val", guidance="none", target_steps=0)
