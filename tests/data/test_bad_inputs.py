"""Bad inputs that used to pass silently now fail naming the clip and the cause."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from video_files import write_video

from thinkjepa.config import load_config
from thinkjepa.data.egodex import EpisodeError, read_episode
from thinkjepa.data.manifest import build_manifest
from thinkjepa.joints import JOINTS


def _reencode(video: Path, pts: list[int], rate: int) -> None:
    """Rewrite ``video`` with its own frames at timestamps ``pts`` (in 1/rate s): as many
    frames as before, so only the timing differs from what the HDF5 expects."""
    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    write_video(video, frames, rate=rate, pts=pts)


def _frame_count(video: Path) -> int:
    with av.open(str(video)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.slow
def test_a_video_at_another_frame_rate_is_left_out_naming_the_clip(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    video = sorted(root.rglob("*.mp4"))[0]
    clip = f"{video.parent.name}/{video.stem}"
    _reencode(video, list(range(_frame_count(video))), rate=25)
    cfg = load_config(None, [], base={"workdir": str(tmp_path / "work"), "data": {"root": str(root)}},
                      use_default_file=False)
    assert cfg.data.fps == 30.0
    out = tmp_path / "manifest.parquet"
    table, problems = build_manifest(root, out, cfg.data, cfg.sampling)
    bad = [p for p in problems if p.clip_id == clip]
    assert len(bad) == 1 and "frame rate 25 fps, but data.fps is 30" in bad[0].reason
    assert clip not in table.column("clip_id").to_pylist()
    assert table.num_rows == len(list(root.rglob("*.mp4"))) - 1
    # another expected rate is another verdict: the incremental index must not keep the old one
    table, problems = build_manifest(root, out, cfg.data.model_copy(update={"fps": None}), cfg.sampling)
    assert clip in table.column("clip_id").to_pylist() and not [p for p in problems if p.clip_id == clip]
    assert next(r["fps"] for r in table.to_pylist() if r["clip_id"] == clip) == 25.0


def test_a_variable_frame_rate_video_is_refused_naming_the_clip(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    video = sorted(root.rglob("*.mp4"))[0]
    n = _frame_count(video)
    half = n // 2
    _reencode(video, list(range(half)) + [half + 2 * k for k in range(n - half)], rate=30)  # half speed after half
    clip = f"{video.parent.name}/{video.stem}"
    with pytest.raises(EpisodeError, match=rf"{clip}.*variable frame rate in {video.name}.*nominal"):
        read_episode(video, video.with_suffix(".hdf5"), fps=None)
    # the same frames at a constant rate pass: the frame rate, not the re-encoding, is refused
    _reencode(video, list(range(n)), rate=30)
    assert read_episode(video, video.with_suffix(".hdf5"), fps=30.0).n_frames == n


@pytest.mark.parametrize("value", [np.nan, 1.5, -0.1])
def test_bad_confidences_are_refused_naming_the_clip(synth_root, tmp_path, value):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    ann = sorted(root.rglob("*.hdf5"))[0]
    with h5py.File(ann, "r+") as f:
        name = JOINTS[5]
        a = f[f"confidences/{name}"][()]
        a[3] = value
        f[f"confidences/{name}"][...] = a
    clip = f"{ann.parent.name}/{ann.stem}"
    with pytest.raises(EpisodeError, match=rf"{clip}.*confidences must be finite and in \[0, 1\].*first frames \[3\]"):
        read_episode(ann.with_suffix(".mp4"), ann, check_video=False)


def test_an_all_zero_camera_pose_is_refused_naming_the_clip(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    ann = sorted(root.rglob("*.hdf5"))[0]
    with h5py.File(ann, "r+") as f:
        cam = f["transforms/camera"][()]
        cam[2] = 0.0
        f["transforms/camera"][...] = cam
    clip = f"{ann.parent.name}/{ann.stem}"
    with pytest.raises(EpisodeError, match=rf"{clip}.*not a rigid transform at 1 frame\(s\), first \[2\]"):
        read_episode(ann.with_suffix(".mp4"), ann, check_video=False)


@pytest.mark.parametrize("key", ["transforms/leftHand", "transforms/camera", "camera/intrinsic"])
def test_pose_data_in_integers_is_refused_naming_the_clip(synth_root, tmp_path, key):
    # integer metres would truncate every pose to 0 or 1; a cast would hide it (adversarial pass)
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    ann = sorted(root.rglob("*.hdf5"))[0]
    with h5py.File(ann, "r+") as f:
        a = f[key][()]
        del f[key]
        f[key] = a.astype(np.int32)
    clip = f"{ann.parent.name}/{ann.stem}"
    with pytest.raises(EpisodeError, match=rf"{clip}.*non-float pose data in {ann.name}: {key} is int32"):
        read_episode(ann.with_suffix(".mp4"), ann, check_video=False)


@pytest.mark.slow
def test_an_unreadable_hdf5_at_prompt_planning_fails_its_windows(synth_root, tmp_path):
    from thinkjepa.extract.runner import plan_clips

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    cfg = load_config(None, [], base={"workdir": str(tmp_path / "work"), "data": {"root": str(root)},
                                      "sampling": {"mode": "stride", "past_frames": 8, "future_frames": 8,
                                                   "thinker_frames": 8}}, use_default_file=False)
    build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    ann = sorted(root.rglob("*.hdf5"))[1]
    ann.write_bytes(ann.read_bytes()[:200])  # cut after indexing
    plans = {p.clip_id: p for p in plan_clips(cfg)}
    bad = plans[f"{ann.parent.name}/{ann.stem}"]
    assert bad.items == [] and bad.failed_keys and all("@" in k for k in bad.failed_keys)
    assert "unreadable HDF5" in bad.problem and ann.name in bad.problem
    assert all(p.items for c, p in plans.items() if c != bad.clip_id)
