"""Forecast videos: one MP4 per selected window, the observed frames with the observed hand
paths, then the future frames with the true paths and the forecasts of two models drawn on them
(both hands: wrists and fingertips). People judge a hand forecast by watching it; a still frame
hides whether a path lags the hand or leads it.

Points are projected with each frame's own camera pose (the camera moves in egocentric video), so
a forecast drawn on future frame k is where the model says the joint will be at frame k, seen from
where the camera really was. PyAV writes H.264 (yuv420p, even frame sizes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from thinkjepa.evaluate.errors import JOINT_GROUPS

DRAWN = JOINT_GROUPS["wrists"] + JOINT_GROUPS["fingertips"]
"""Joints drawn: both wrists and all ten fingertips."""
COLORS = {"observed": (160, 160, 160), "truth": (44, 160, 44), "guided": (31, 119, 180), "reference": (255, 127, 14)}
MAX_WIDTH = 640
MIN_WIDTH = 384
"""Small sources (test data) are scaled up so the caption and the paths stay readable."""
FPS = 8
"""Slower than the 30 fps recording: a 16-frame future lasts 2 s, long enough to follow."""


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def frame_size(height: int, width: int, max_width: int = MAX_WIDTH, min_width: int = MIN_WIDTH) -> tuple[int, int]:
    """The video's ``(h, w)``: the source scaled into [``min_width``, ``max_width``], both even (yuv420p)."""
    s = min(max(1.0, min_width / width), max_width / width)
    return _even(height * s), _even(width * s)


def _project(points: np.ndarray, poses: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``points`` [T, J, 3] world, ``poses`` [T, 4, 4] -> uv [T, J, 2], in front [T, J]."""
    from thinkjepa.data.camera import project_points

    uv, z = project_points(points, poses, K)
    return uv, z > 0


def _draw(image: np.ndarray, tracks: list[tuple[tuple[int, int, int], np.ndarray, np.ndarray, int]], caption: str) -> np.ndarray:
    """Trails up to the current frame and a dot at it; ``tracks``: (colour, uv [T, J, 2], ok [T, J], current index)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    d = ImageDraw.Draw(im)
    r = max(2, image.shape[1] // 160)
    for color, uv, ok, k in tracks:
        for j in range(uv.shape[1]):
            pts = [tuple(map(float, uv[t, j])) for t in range(k + 1) if ok[t, j]]
            if len(pts) > 1:
                d.line(pts, fill=color, width=max(1, r // 2))
            if ok[k, j]:
                u, v = uv[k, j]
                if color == COLORS["guided"]:  # filled and small: visible inside the reference's ring
                    d.ellipse([u - r + 1, v - r + 1, u + r - 1, v + r - 1], fill=color)
                else:
                    rr = r + 2 if color == COLORS["reference"] else r
                    d.ellipse([u - rr, v - rr, u + rr, v + rr], outline=color, width=2)
    d.rectangle([0, 0, image.shape[1], 28], fill=(0, 0, 0))
    d.multiline_text((4, 2), caption, fill=(255, 255, 255))
    return np.asarray(im)


def forecast_video(
    path: str | Path,
    frames: np.ndarray,
    poses: np.ndarray,
    K: np.ndarray,
    past_joints: np.ndarray,
    truth: np.ndarray,
    forecasts: Mapping[str, tuple[str, np.ndarray]],
    title: str = "",
    fps: int = FPS,
) -> Path:
    """Write the MP4 of one window and return its path.

    ``frames`` [P + F, H, W, 3] uint8 (the observed frames, then the future ones; already at the
    video's size), ``poses`` [P + F, 4, 4] camera-to-world of those frames, ``K`` the intrinsics
    at that size, ``past_joints`` [P, 52, 3] and ``truth`` [F, 52, 3] world positions,
    ``forecasts`` {role: (label, [F, 52, 3])} with role ``guided`` or ``reference``."""
    import av

    n_past, n_future = past_joints.shape[0], truth.shape[0]
    if frames.shape[0] != n_past + n_future or poses.shape[0] != frames.shape[0]:
        raise ValueError(f"{path}: {frames.shape[0]} frames and {poses.shape[0]} poses for {n_past} past + {n_future} future")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: frame size {w}x{h} must be even for yuv420p (see frame_size)")
    past_uv, past_ok = _project(past_joints[:, DRAWN], poses[:n_past], K)
    fut = {"truth": ("truth", truth)} | dict(forecasts)
    fut_uv = {role: _project(arr[:, DRAWN], poses[n_past:], K) for role, (_, arr) in fut.items()}
    legend = "green: truth, " + ", ".join(f"{'blue' if r == 'guided' else 'orange'}: {label}" for r, (label, _) in forecasts.items())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(frames.shape[0]):
            if i < n_past:
                tracks = [(COLORS["observed"], past_uv, past_ok, i)]
                caption = f"{title}\nobserved frame {i + 1}/{n_past} (grey: observed hand paths)"
            else:
                k = i - n_past
                tracks = [(COLORS["observed"], past_uv, past_ok, n_past - 1)]
                tracks += [(COLORS[role], uv, ok, k) for role, (uv, ok) in fut_uv.items()]
                caption = f"{title}\nfuture frame {k + 1}/{n_future}: {legend}"
            img = _draw(frames[i], tracks, caption)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def window_video(path: str | Path, episode, window, video_path: str | Path, truth: np.ndarray,
                 forecasts: Mapping[str, tuple[str, np.ndarray]], title: str = "") -> Path:
    """``forecast_video`` of one window of an episode: decodes its past and future frames at the
    video size and scales the intrinsics to it."""
    from thinkjepa.data.egodex import decode_frames

    idx = list(window.past) + list(window.future)
    full = decode_frames(video_path, idx[:1], clip_id=window.clip_id)
    h, w = frame_size(*full.shape[1:3])
    frames = decode_frames(video_path, idx, size=(h, w), clip_id=window.clip_id)
    sy, sx = h / full.shape[1], w / full.shape[2]
    K = np.asarray(episode.intrinsics, np.float64).copy()
    K[0] *= sx
    K[1] *= sy
    return forecast_video(path, frames, np.asarray(episode.camera_pose)[idx], K, np.asarray(episode.joints)[list(window.past)],
                          truth, forecasts, title=title)


__all__ = ["DRAWN", "FPS", "forecast_video", "frame_size", "window_video"]
