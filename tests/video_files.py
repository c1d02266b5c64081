"""Writing test videos with PyAV: frames at chosen timestamps and encoder settings."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: np.ndarray | Sequence[np.ndarray], *, rate: int = 30,
                pts: Sequence[int] | None = None, pix_fmt: str = "yuv420p",
                options: dict[str, str] | None = None) -> None:
    """H.264 ``path`` from RGB ``frames`` at timestamps ``pts`` in units of 1/rate s (default:
    0, 1, 2, ...: a constant rate)."""
    pts = range(len(frames)) if pts is None else pts
    assert len(pts) == len(frames)
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        if options:
            s.options = options
        for rgb, t in zip(frames, pts, strict=True):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts, f.time_base = t, Fraction(1, rate)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
