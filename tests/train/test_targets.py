"""Targets: future joints framed by the pose of the last observed frame, and only that pose."""

from __future__ import annotations

import numpy as np
import pytest

from thinkjepa.config import SamplingConfig
from thinkjepa.data.camera import world_to_camera
from thinkjepa.data.egodex import read_episode
from thinkjepa.sampling import windows_for_clip
from thinkjepa.train.targets import window_targets

SAMPLING = SamplingConfig(mode="stride", past_frames=6, future_frames=6, stride=1, thinker_frames=4, windows_per_clip=2,
                          window_hop=3)


@pytest.fixture(scope="module")
def episode(egodex_root):
    ep = read_episode(egodex_root / "lock_unlock_key" / "9.mp4", egodex_root / "lock_unlock_key" / "9.hdf5",
                      check_video=False)
    return ep


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    pose = np.eye(4, dtype=np.float32)
    pose[:3, :3] = q
    pose[:3, 3] = rng.normal(size=3)
    return pose


def test_only_the_pose_of_the_last_observed_frame_is_used(episode) -> None:
    rng = np.random.default_rng(0)
    for w in windows_for_clip(episode.clip_id, episode.n_frames, SAMPLING):
        base = window_targets(episode.joints, episode.confidences, episode.camera_pose, w)
        poses = episode.camera_pose.copy()
        for f in range(episode.n_frames):
            if f != w.pose_frame:  # every future pose and every other past pose
                poses[f] = _random_pose(rng)
        other = window_targets(episode.joints, episode.confidences, poses, w)
        for name in ("joints_world", "joints_cam", "conf", "cam_pose", "past_joints_cam", "past_states_cam"):
            np.testing.assert_array_equal(getattr(base, name), getattr(other, name), err_msg=name)
        # ... while the pose of that frame is what frames the targets
        poses[w.pose_frame] = _random_pose(rng)
        moved = window_targets(episode.joints, episode.confidences, poses, w)
        assert not np.allclose(moved.joints_cam, base.joints_cam, atol=1e-3)
        np.testing.assert_allclose(moved.joints_world, base.joints_world, atol=1e-4)


def test_camera_world_round_trip(episode) -> None:
    for w in windows_for_clip(episode.clip_id, episode.n_frames, SAMPLING):
        tg = window_targets(episode.joints, episode.confidences, episode.camera_pose, w)
        assert tg.joints_world.shape == (6, 52, 3) and tg.conf.shape == (6, 52)
        assert tg.cam_pose.shape == (4, 4) and tg.past_joints_cam.shape == (52, 3)
        np.testing.assert_array_equal(tg.cam_pose, episode.camera_pose[w.pose_frame])
        # cam -> world with the pose_frame pose gives back the recorded future joints ...
        np.testing.assert_allclose(tg.joints_world, episode.joints[list(w.future)], atol=2e-5)
        # ... and world -> cam again gives the camera-frame targets
        np.testing.assert_allclose(world_to_camera(tg.joints_world, tg.cam_pose), tg.joints_cam, atol=2e-5)
        np.testing.assert_allclose(tg.past_joints_cam, world_to_camera(episode.joints[w.pose_frame], tg.cam_pose),
                                   atol=1e-5)
        # real EgoDex hands are in front of the head camera (OpenCV convention: z forward)
        assert np.median(tg.joints_cam[..., 2]) > 0
        np.testing.assert_array_equal(tg.conf, episode.confidences[list(w.future)])


def test_past_states_are_the_observed_frames_only(episode) -> None:
    """The state tokens' input: every past frame's joints in the last observed camera frame,
    the same whatever the frames from t on hold."""
    for w in windows_for_clip(episode.clip_id, episode.n_frames, SAMPLING):
        tg = window_targets(episode.joints, episode.confidences, episode.camera_pose, w)
        assert tg.past_states_cam.shape == (len(w.past), 52, 3)
        np.testing.assert_allclose(tg.past_states_cam, world_to_camera(episode.joints[list(w.past)], tg.cam_pose), atol=1e-5)
        np.testing.assert_array_equal(tg.past_states_cam[-1], tg.past_joints_cam)
        joints = episode.joints.copy()
        joints[w.t :] += 10.0  # every frame from t on
        moved = window_targets(joints, episode.confidences, episode.camera_pose, w)
        np.testing.assert_array_equal(moved.past_states_cam, tg.past_states_cam)
        assert not np.allclose(moved.joints_cam, tg.joints_cam)


def test_inconsistent_arrays_name_the_clip(episode) -> None:
    w = windows_for_clip(episode.clip_id, episode.n_frames, SAMPLING)[0]
    with pytest.raises(ValueError, match=episode.clip_id):
        window_targets(episode.joints[:, :50], episode.confidences, episode.camera_pose, w)
    with pytest.raises(ValueError, match="past the episode end"):
        window_targets(episode.joints[:10], episode.confidences[:10], episode.camera_pose[:10], w)
