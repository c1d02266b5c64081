"""Synthetic EgoDex: same structure as real files, pixels consistent with poses, deterministic,
and a future that depends on an early cue."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from thinkjepa.data.camera import project_points
from thinkjepa.data.egodex import read_episode
from thinkjepa.data.synth import CUE_COLOURS, REACH, SKIN, synthesize_dataset
from thinkjepa.data.video import decode_frames_counted
from thinkjepa.joints import WRIST_INDEX


def _h5_layout(path: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, (obj.shape[1:], obj.dtype.str)) if isinstance(obj, h5py.Dataset) else None)
    return out


def _episodes(root: Path) -> list:
    return [read_episode(h.with_suffix(".mp4"), h) for h in sorted(root.glob("*/*.hdf5"))]


@pytest.fixture(scope="module")
def synth_episodes(synth_root: Path) -> list:
    return _episodes(synth_root)


def test_same_keys_shapes_and_attributes_as_real_files(synth_root: Path, egodex_root: Path) -> None:
    synth_file = next(synth_root.glob("*/*.hdf5"))
    real_files = sorted(egodex_root.glob("*/*.hdf5"))
    # same dataset paths, per-frame shapes and dtypes (the frame count differs, nothing else)
    assert _h5_layout(synth_file) == _h5_layout(real_files[0])
    with h5py.File(synth_file) as f:
        synth_attrs = {k: type(v) for k, v in f.attrs.items()}
    for real in real_files:
        with h5py.File(real) as f:
            for k, v in f.attrs.items():
                assert k in synth_attrs, k
                assert synth_attrs[k] is type(v), k


@pytest.mark.slow
def test_round_trip_through_the_reader(synth_episodes: list, synth_labels: dict) -> None:
    assert len(synth_episodes) == len(synth_labels["episodes"])
    for ep in synth_episodes:
        assert ep.n_frames == synth_labels["n_frames"] == 64
        assert (ep.width, ep.height, ep.fps) == (128, 128, 30.0)
        assert ep.metadata["task"] == ep.task
        assert np.isfinite(ep.joints).all()


def test_projected_joints_land_on_drawn_hands(synth_episodes: list) -> None:
    """Checked on decoded pixels: the pixel under each projected joint has the hand colour; the
    same pixels shifted sideways mostly do not (so the check can fail)."""
    for ep in synth_episodes[::3]:
        frames = decode_frames_counted(ep.video_path, range(ep.n_frames))[0].astype(np.int32)
        uv, depth = project_points(ep.joints, ep.camera_pose, ep.intrinsics)
        t, j = np.nonzero(depth > 0)
        u, v = np.floor(uv[t, j, 0]).astype(int), np.floor(uv[t, j, 1]).astype(int)
        inside = (u >= 0) & (u < ep.width) & (v >= 0) & (v < ep.height)
        assert inside.mean() > 0.95, ep.clip_id
        t, u, v = t[inside], u[inside], v[inside]
        on_hand = np.linalg.norm(frames[t, v, u] - np.array(SKIN), axis=-1) < 60
        shifted = np.linalg.norm(frames[t, v, np.clip(u + 24, 0, ep.width - 1)] - np.array(SKIN), axis=-1) < 60
        assert on_hand.mean() > 0.9, (ep.clip_id, on_hand.mean())
        assert shifted.mean() < 0.5, (ep.clip_id, shifted.mean())


def test_cue_is_large_early_only_and_selects_the_reach(synth_episodes: list, synth_labels: dict) -> None:
    start, end = synth_labels["cue_frames"]
    reach = synth_labels["reach_start"]
    assert start == 0 and end <= 0.5 * synth_labels["n_frames"] and end < reach
    by_task: dict[str, set[int]] = {}
    for ep in synth_episodes:
        cue = synth_labels["episodes"][ep.clip_id]["cue"]
        by_task.setdefault(ep.task, set()).add(cue)
        frames = decode_frames_counted(ep.video_path, [0, end // 2, end - 1, end, reach, ep.n_frames - 1])[0].astype(int)
        # a band across the top of the cue square, above the hands: at least 1/3 of the width
        band = frames[:, 4:10, 40:88]
        dist = np.linalg.norm(band - np.array(CUE_COLOURS[cue]), axis=-1)
        assert (dist[:3] < 50).mean() > 0.95, ep.clip_id
        assert (dist[3:] < 50).mean() < 0.01, ep.clip_id
        # the reach goes where the cue says: right wrist displacement over the reach phase
        w = WRIST_INDEX["right"]
        move = ep.joints[-1, w] - ep.joints[reach, w]
        assert np.sign(move[0]) == np.sign(REACH[cue][0]) and np.sign(move[2]) == np.sign(REACH[cue][2])
        # the left hand mirrors it sideways
        assert np.sign(ep.joints[-1, WRIST_INDEX["left"], 0] - ep.joints[reach, WRIST_INDEX["left"], 0]) == -np.sign(REACH[cue][0])
    # every task folder holds every cue class, so a split grouped by task keeps all classes
    assert all(cues == {0, 1, 2, 3} for cues in by_task.values()) and len(by_task) == 4


def test_text_does_not_leak_the_cue(synth_root: Path, synth_labels: dict) -> None:
    for task in synth_labels["tasks"]:
        attrs = []
        for h in sorted((synth_root / task).glob("*.hdf5")):
            with h5py.File(h) as f:
                attrs.append({k: str(v) for k, v in f.attrs.items() if k != "session_name"})
        assert all(a == attrs[0] for a in attrs), task


@pytest.mark.slow
def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 7), (b, 7), (c, 8)):
        synthesize_dataset(root, 2, seed=seed, n_frames=24, size=(48, 64), tasks=2)
    files = sorted(p.relative_to(a) for p in a.glob("*/*.hdf5"))
    assert len(files) == 2
    differs = False
    for rel in files:
        with h5py.File(a / rel) as fa, h5py.File(b / rel) as fb, h5py.File(c / rel) as fc:
            names: list[str] = []
            fa.visit(lambda n, names=names: names.append(n) if isinstance(fa[n], h5py.Dataset) else None)
            for n in names:
                assert fa[n][()].tobytes() == fb[n][()].tobytes(), n
                differs |= fa[n][()].tobytes() != fc[n][()].tobytes()
            assert dict(fa.attrs.items()).keys() == dict(fb.attrs.items()).keys()
    assert differs, "another seed must give other arrays"
    ep = read_episode(a / files[0].with_suffix(".mp4"), a / files[0])
    assert (ep.height, ep.width, ep.n_frames) == (48, 64, 24)


def test_decoding_a_late_frame_does_not_decode_the_whole_video(synth_episodes: list) -> None:
    ep = synth_episodes[0]
    full, n_full = decode_frames_counted(ep.video_path, range(ep.n_frames))
    assert n_full == ep.n_frames
    # keyframes every 16 frames: seek to the one before frame 60, decode at most a GOP
    got, n = decode_frames_counted(ep.video_path, [60])
    assert n <= 16, n
    np.testing.assert_array_equal(got[0], full[60])
    # far apart: decode near frame 2, then seek again instead of decoding frames 3..47
    idx = [60, 2, 60]
    got, n = decode_frames_counted(ep.video_path, idx)
    assert n <= 3 + 16, n
    np.testing.assert_array_equal(got, full[idx])


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        synthesize_dataset(tmp_path, 1, size=127)
    with pytest.raises(ValueError, match="cue"):
        synthesize_dataset(tmp_path, 1, n_frames=2)
