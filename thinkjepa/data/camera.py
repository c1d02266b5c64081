"""EgoDex camera convention: the one home of how world points map to pixels.

Found on the real EgoDex files (tests/data/test_egodex_real.py checks it): ``transforms/camera``
is camera-to-world, and the camera frame is OpenCV-style, x right, y down, z forward
(points in front of the camera have z > 0). So a world point X lands on pixel
``K @ (X_cam / z_cam)`` with ``X_cam = inv(camera_pose) @ X``; ``camera/intrinsic`` is the K
of the full video frame. The ARKit-style alternative (looking down -z, y up) puts the left hand
on the right of the image on those files. The synthetic renderer uses the same functions, so
its pixels follow the same convention by construction.
"""

from __future__ import annotations

import numpy as np


def world_to_camera(points_world: np.ndarray, camera_pose: np.ndarray) -> np.ndarray:
    """Points ``[..., N, 3]`` in world -> camera frame; ``camera_pose`` ``[..., 4, 4]`` camera-to-world."""
    pose = np.asarray(camera_pose, dtype=np.float64)
    pts = np.asarray(points_world, dtype=np.float64)
    rot = pose[..., :3, :3]
    trans = pose[..., :3, 3]
    # inverse of a rigid transform: R^T (X - t); avoids a general matrix inverse
    return np.einsum("...ji,...nj->...ni", rot, pts - trans[..., None, :])


def camera_to_world(points_cam: np.ndarray, camera_pose: np.ndarray) -> np.ndarray:
    """Inverse of ``world_to_camera``."""
    pose = np.asarray(camera_pose, dtype=np.float64)
    pts = np.asarray(points_cam, dtype=np.float64)
    return np.einsum("...ij,...nj->...ni", pose[..., :3, :3], pts) + pose[..., None, :3, 3]


def project_points(
    points_world: np.ndarray, camera_pose: np.ndarray, K: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project world points to pixels.

    points_world ``[..., N, 3]``, camera_pose ``[..., 4, 4]`` (camera-to-world, broadcast over
    the leading dims), K ``[3, 3]``. Returns ``(uv [..., N, 2], depth [..., N])``; a point is in
    front of the camera iff ``depth > 0`` (its uv is meaningless otherwise).
    """
    cam = world_to_camera(points_world, camera_pose)
    K = np.asarray(K, dtype=np.float64)
    z = cam[..., 2]
    safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
    u = K[0, 0] * cam[..., 0] / safe + K[0, 1] * cam[..., 1] / safe + K[0, 2]
    v = K[1, 1] * cam[..., 1] / safe + K[1, 2]
    return np.stack([u, v], axis=-1), z


_WORLD_UP = np.array([0.0, 1.0, 0.0])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = _WORLD_UP) -> np.ndarray:
    """Camera-to-world pose of a camera at ``eye`` looking at ``target`` (world ``up`` is +y, as in EgoDex)."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose
