"""Forecast videos: PyAV writes an MP4 that decodes to the observed then the future frames at the
stated size, with the paths drawn where the camera sees them."""

from __future__ import annotations

import av
import numpy as np
import pytest

from thinkjepa.evaluate.video import COLORS, DRAWN, forecast_video, frame_size


def _scene(n_past: int, n_future: int, h: int, w: int):
    frames = np.full((n_past + n_future, h, w, 3), 40, np.uint8)
    poses = np.repeat(np.eye(4)[None], n_past + n_future, axis=0)
    K = np.array([[w / 2, 0, w / 2], [0, w / 2, h / 2], [0, 0, 1.0]])
    past = np.zeros((n_past, 52, 3))
    past[..., 2] = 1.0  # every joint 1 m in front of the camera, at the image centre
    truth = np.zeros((n_future, 52, 3))
    truth[..., 2] = 1.0
    truth[..., 0] = np.linspace(0.0, 0.4, n_future)[:, None]  # moving right
    guided = truth.copy()
    guided[..., 1] = 0.3  # lower in the image
    return frames, poses, K, past, truth, {"guided": ("thinkjepa", guided), "reference": ("jepa_only", truth[:1].repeat(n_future, 0))}


def test_video_decodes_to_every_frame_at_its_size_with_the_paths_drawn(tmp_path):
    n_past, n_future = 5, 7
    h, w = frame_size(90, 121)  # small odd source: scaled up to the minimum width, both even
    assert (h, w) == (286, 384)
    frames, poses, K, past, truth, fc = _scene(n_past, n_future, h, w)
    path = forecast_video(tmp_path / "v" / "w.mp4", frames, poses, K, past, truth, fc, title="task/0@8")
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    assert len(decoded) == n_past + n_future and all(f.shape == (h, w, 3) for f in decoded)
    last = decoded[-1].astype(int)
    # the true path's end (u = w/2 + 0.4 * w/2) is green, the guided forecast's (0.3 m lower) blue
    u, v = int(w / 2 + 0.4 * w / 2), int(h / 2)
    near = last[v - 6 : v + 7, u - 6 : u + 7].reshape(-1, 3)
    assert (np.abs(near - COLORS["truth"]).sum(1) < 90).any()
    vg = int(h / 2 + 0.3 * w / 2)
    near = last[vg - 4 : vg + 5, u - 4 : u + 5].reshape(-1, 3)
    assert (np.abs(near - COLORS["guided"]).sum(1) < 90).any()
    # an observed frame has no forecast colour anywhere
    first = decoded[0].astype(int).reshape(-1, 3)
    assert not (np.abs(first - COLORS["guided"]).sum(1) < 60).any()
    assert len(DRAWN) == 12


def test_mismatched_frames_are_refused_with_the_path(tmp_path):
    frames, poses, K, past, truth, fc = _scene(3, 4, 64, 64)
    with pytest.raises(ValueError, match=r"w\.mp4: 6 frames"):
        forecast_video(tmp_path / "w.mp4", frames[:6], poses[:6], K, past, truth, fc)
    with pytest.raises(ValueError, match="must be even"):
        forecast_video(tmp_path / "w.mp4", frames[:, :63], poses, K, past, truth, fc)
