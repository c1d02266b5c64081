"""The reader on the three real EgoDex sample episodes (shared/fixtures/egodex, read-only)."""

from __future__ import annotations

from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from thinkjepa.data.camera import project_points, world_to_camera
from thinkjepa.data.egodex import EpisodeError, decode_frames, read_episode
from thinkjepa.joints import JOINTS, WRIST_INDEX

REAL = {"lock_unlock_key/9": 22, "sort_beads/9": 20, "charge_uncharge_airpods/45": 29}


@pytest.fixture(scope="module")
def episodes(egodex_root: Path) -> dict:
    return {cid: read_episode(egodex_root / f"{cid}.mp4", egodex_root / f"{cid}.hdf5") for cid in REAL}


def _decoded_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.slow
def test_frame_counts_match_hdf5_and_decodable_frames(episodes: dict, egodex_root: Path) -> None:
    for cid, ep in episodes.items():
        with h5py.File(egodex_root / f"{cid}.hdf5") as f:
            T = f["transforms/camera"].shape[0]
        assert ep.n_frames == T == REAL[cid] == _decoded_count(ep.video_path)
        assert ep.joints.shape == (T, 52, 3) and ep.confidences.shape == (T, 52)
        assert ep.camera_pose.shape == (T, 4, 4) and ep.intrinsics.shape == (3, 3)
        assert (ep.fps, ep.width, ep.height) == (30.0, 1920, 1080)


def test_joint_positions_are_hdf5_translations_in_joint_order(episodes: dict, egodex_root: Path) -> None:
    for cid, ep in episodes.items():
        with h5py.File(egodex_root / f"{cid}.hdf5") as f:
            for j, name in enumerate(JOINTS):
                np.testing.assert_array_equal(ep.joints[:, j], f[f"transforms/{name}"][:, :3, 3])
                np.testing.assert_array_equal(ep.confidences[:, j], f[f"confidences/{name}"][:])
            np.testing.assert_array_equal(ep.camera_pose, f["transforms/camera"][:])
            np.testing.assert_array_equal(ep.intrinsics, f["camera/intrinsic"][:])


def test_tracked_wrists_project_inside_the_image(episodes: dict) -> None:
    """With K and the camera-to-world pose (OpenCV axes: z forward, y down), every confidently
    tracked wrist lies in front of the camera and inside the frame in most frames."""
    checked = 0
    for ep in episodes.values():
        uv, depth = project_points(ep.joints, ep.camera_pose, ep.intrinsics)
        for hand, w in WRIST_INDEX.items():
            tracked = ep.confidences[:, w] > 0.5
            if tracked.mean() < 0.5:
                continue  # e.g. sort_beads' left hand is out of view (confidence 0)
            inside = (depth[:, w] > 0) & (uv[:, w, 0] >= 0) & (uv[:, w, 0] < ep.width)
            inside &= (uv[:, w, 1] >= 0) & (uv[:, w, 1] < ep.height)
            assert inside[tracked].mean() >= 0.9, (ep.clip_id, hand)
            checked += 1
    assert checked >= 5


def test_camera_convention_left_hand_appears_left(episodes: dict) -> None:
    """Pins the convention down: under it the left wrist is left of the right wrist whenever both
    are tracked; the ARKit reading (-z forward, y up) mirrors them."""
    for ep in episodes.values():
        both = (ep.confidences[:, WRIST_INDEX["left"]] > 0.5) & (ep.confidences[:, WRIST_INDEX["right"]] > 0.5)
        if not both.any():
            continue
        uv, _ = project_points(ep.joints, ep.camera_pose, ep.intrinsics)
        assert (uv[both, WRIST_INDEX["left"], 0] < uv[both, WRIST_INDEX["right"], 0]).all(), ep.clip_id
        cam = world_to_camera(ep.joints, ep.camera_pose)
        arkit_u = -ep.intrinsics[0, 0] * cam[..., 0] / cam[..., 2] + ep.intrinsics[0, 2]
        assert (arkit_u[both, WRIST_INDEX["left"]] > arkit_u[both, WRIST_INDEX["right"]]).all()


def test_metadata_is_read(episodes: dict) -> None:
    ep = episodes["sort_beads/9"]
    assert ep.metadata["task"] == "sort_beads"
    assert ep.metadata["llm_description"].startswith("From a group of beads")
    assert "tablecloth:red" in ep.metadata["environment"]
    assert ep.metadata["objects"] == ["beads", "piles"] and ep.metadata["verbs"] == ["sort"]
    assert ep.metadata["description"]
    for ep in episodes.values():
        assert ep.metadata["task"] == ep.task == ep.clip_id.split("/")[0]


def test_decode_frames_order_repeats_and_resize(episodes: dict) -> None:
    ep = episodes["lock_unlock_key/9"]
    with av.open(str(ep.video_path)) as c:
        full = [f.to_ndarray(format="rgb24", width=96, height=54, interpolation="BILINEAR") for f in c.decode(video=0)]
    idx = [17, 3, 3, 21, 0]
    got = decode_frames(ep.video_path, idx, (54, 96))
    assert got.dtype == np.uint8 and got.shape == (5, 54, 96, 3)
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(got[k], full[i])
    assert decode_frames(ep.video_path, [1], 32).shape == (1, 32, 32, 3)
    assert decode_frames(ep.video_path, [1]).shape == (1, 1080, 1920, 3)


def test_decode_frames_past_the_end_names_the_clip(episodes: dict) -> None:
    ep = episodes["sort_beads/9"]
    with pytest.raises(EpisodeError, match=r"sort_beads/9: .*frame\(s\) \[20\] not in the video"):
        decode_frames(ep.video_path, [0, 20], 16)
