"""Training targets of one forecast window: future hand joints, and the pose that frames them.

The model predicts joints in the camera frame of the last observed frame
(``window.pose_frame``) and maps them to world with *that* frame's camera pose. The same
single pose is used here, so the world-frame targets equal the recorded future joints and the
mapping the model learns never needs a camera pose from the future. The pose array is sliced
to that one frame before anything else touches it: no code path below can read a future pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thinkjepa.data.camera import camera_to_world, world_to_camera
from thinkjepa.joints import JOINTS
from thinkjepa.sampling import Window


@dataclass(frozen=True)
class WindowTargets:
    joints_world: np.ndarray
    """[F, 52, 3] float32 future joints in world, mapped back from ``joints_cam`` with ``cam_pose``."""
    joints_cam: np.ndarray
    """[F, 52, 3] float32 future joints in the camera frame of ``window.pose_frame``."""
    conf: np.ndarray
    """[F, 52] float32 tracking confidences of the future joints (loss / metric masking)."""
    cam_pose: np.ndarray
    """[4, 4] float32 camera-to-world pose of ``window.pose_frame``: the only pose used."""
    past_joints_cam: np.ndarray
    """[52, 3] float32 joints of ``window.pose_frame`` in its own camera frame (an input)."""
    past_states_cam: np.ndarray
    """[Fp, 52, 3] float32 joints of every past frame (``window.past``) in the camera frame of
    ``window.pose_frame`` (an input: the model's state tokens); the last equals ``past_joints_cam``."""


def window_targets(
    joints: np.ndarray, confidences: np.ndarray, camera_pose: np.ndarray, window: Window
) -> WindowTargets:
    """Targets of ``window`` from one episode's ``joints [T,52,3]`` (world), ``confidences [T,52]``
    and ``camera_pose [T,4,4]`` (camera-to-world)."""
    T = joints.shape[0]
    if joints.shape[1:] != (len(JOINTS), 3):
        raise ValueError(f"{window.clip_id}: joints have shape {joints.shape}, expected [T, {len(JOINTS)}, 3]")
    if confidences.shape != joints.shape[:2] or camera_pose.shape != (T, 4, 4):
        raise ValueError(
            f"{window.clip_id}: inconsistent episode arrays (joints {joints.shape}, "
            f"confidences {confidences.shape}, camera_pose {camera_pose.shape})"
        )
    if max(window.future) >= T:
        raise ValueError(f"{window.window_id}: target frame {max(window.future)} is past the episode end ({T} frames)")
    pose = np.asarray(camera_pose[window.pose_frame], dtype=np.float64)
    future = list(window.future)
    joints_cam = world_to_camera(joints[future], pose)
    joints_world = camera_to_world(joints_cam, pose)
    past_cam = world_to_camera(joints[window.pose_frame], pose)
    states_cam = world_to_camera(joints[list(window.past)], pose)
    return WindowTargets(
        joints_world=joints_world.astype(np.float32),
        joints_cam=joints_cam.astype(np.float32),
        conf=np.asarray(confidences[future], dtype=np.float32),
        cam_pose=pose.astype(np.float32),
        past_joints_cam=past_cam.astype(np.float32),
        past_states_cam=states_cam.astype(np.float32),
    )


__all__ = ["WindowTargets", "window_targets"]
