"""Video access with PyAV: probe a file cheaply and decode chosen frames without decoding it all.

Frame indices are presentation order, 0-based, as in the EgoDex HDF5 arrays. A frame's index
comes from its timestamp (``(pts - start) * time_base * fps``), so seeking lands where expected
on constant-frame-rate files like EgoDex's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

# Past this many frames between two wanted frames a fresh seek is cheaper than decoding on.
SEEK_GAP_FRAMES = 48
# Two frame rates this close are one rate: 29.97 is 30 for a window of 64 frames (2 ms); 25 or
# 60 is not, and a stream whose average rate is further from its nominal one does not put frame
# i at i / fps, so its frame indices would stop matching the HDF5's rows.
RATE_TOLERANCE = 0.01


def rates_differ(a: float, b: float) -> bool:
    return abs(float(a) / float(b) - 1.0) > RATE_TOLERANCE


class VideoError(RuntimeError):
    """The video cannot be opened or decoded; the message says why."""


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    fps: float
    width: int
    height: int
    codec: str


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file missing: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"unreadable video {path.name} ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {path.name}")
    return container


def _rate(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoError("video stream has no frame rate")
    return Fraction(rate)


class _Indexer:
    """Maps frame timestamps to frame indices and back for one stream."""

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        self.rate = _rate(stream)
        self.time_base = Fraction(stream.time_base)
        self.start = stream.start_time or 0

    def index(self, frame: av.VideoFrame) -> int:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            raise VideoError("decoded frame has no timestamp")
        return int(round((pts - self.start) * self.time_base * self.rate))

    def pts(self, index: int) -> int:
        return self.start + int(round(index / self.rate / self.time_base))


def _count_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Frame count from the header, or by demuxing (no decoding) when the header has none."""
    if stream.frames:
        return int(stream.frames)
    n = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0)
    return n


def _check_constant_rate(stream: av.video.stream.VideoStream, name: str) -> None:
    """Refuse a variable-frame-rate stream from its header: its average rate (frames over
    duration) differs from the nominal one (the rate its timestamps are written at)."""
    avg, nominal = stream.average_rate, stream.base_rate
    if avg and nominal and rates_differ(avg, nominal):
        raise VideoError(
            f"variable frame rate in {name}: {float(avg):.3f} fps on average, {float(nominal):.3f} nominal, so "
            "frame i is not at i / fps and would not match HDF5 row i; re-encode at a constant rate "
            "(ffmpeg -i IN -fps_mode cfr -r 30 OUT)"
        )


def probe_video(path: str | Path) -> VideoInfo:
    """Open, check the frame rate is constant, count frames and decode the first and the last
    frame: enough to catch a broken file without decoding all of it. Raises ``VideoError``."""
    with _open(path) as container:
        stream = container.streams.video[0]
        _check_constant_rate(stream, Path(path).name)
        try:
            n = _count_frames(container, stream)
            if n <= 0:
                raise VideoError(f"video {Path(path).name} has no frames")
            frames, _ = _decode_sorted(container, stream, [0, n - 1], lambda f: True)
        except av.FFmpegError as e:
            raise VideoError(f"corrupt video {Path(path).name} ({type(e).__name__}: {e})") from e
        if len(frames) != 2:
            raise VideoError(f"corrupt video {Path(path).name}: frame {n - 1} of {n} could not be decoded")
        return VideoInfo(
            n_frames=n,
            fps=float(_rate(stream)),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
        )


def _decode_sorted(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    wanted: Sequence[int],
    convert: Callable[[av.VideoFrame], Any] = lambda f: f,
) -> tuple[dict[int, Any], int]:
    """Decode the ascending unique frame indices ``wanted``: seek to the keyframe before the
    first one, decode forward, re-seek only across big gaps, stop after the last. Returns
    ``convert(frame)`` per index found and how many frames were decoded in all (so tests can
    see that no more were)."""
    idx = _Indexer(stream)
    found: dict[int, Any] = {}
    n_decoded = 0
    i = 0
    while i < len(wanted):
        container.seek(idx.pts(wanted[i]), stream=stream, backward=True, any_frame=False)
        progressed = False
        for frame in container.decode(stream):
            n_decoded += 1
            k = idx.index(frame)
            while i < len(wanted) and wanted[i] < k:
                i += 1  # a frame the stream does not have (gap); reported by the caller
            if i < len(wanted) and wanted[i] == k:
                found[k] = convert(frame)
                i += 1
                progressed = True
            if i >= len(wanted):
                break
            # only re-seek once this seek has paid off, so a long GOP cannot loop forever
            if progressed and wanted[i] - k > SEEK_GAP_FRAMES:
                break
        else:
            break  # end of stream: whatever is still wanted is not there
    return found, n_decoded


def _target_size(size: int | tuple[int, int] | None, width: int, height: int) -> tuple[int, int]:
    """Requested ``size`` -> (height, width)."""
    if size is None:
        return height, width
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def decode_frames(
    video_path: str | Path, indices: Sequence[int], size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """Frames ``indices`` (any order, repeats allowed) as uint8 ``[N, H, W, 3]`` RGB, in the
    requested order. ``size``: int for square, ``(h, w)``, or None for the native size.
    Raises ``VideoError`` for a missing or unreadable file or an index the video does not have."""
    frames, _ = decode_frames_counted(video_path, indices, size)
    return frames


def decode_frames_counted(
    video_path: str | Path, indices: Sequence[int], size: int | tuple[int, int] | None = None
) -> tuple[np.ndarray, int]:
    """``decode_frames`` plus the number of frames the decoder produced to get them."""
    wanted_list = [int(i) for i in indices]
    if any(i < 0 for i in wanted_list):
        raise VideoError(f"{Path(video_path).name}: negative frame index in {wanted_list}")
    with _open(video_path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        h, w = _target_size(size, stream.codec_context.width, stream.codec_context.height)
        if not wanted_list:
            return np.zeros((0, h, w, 3), np.uint8), 0
        wanted = sorted(set(wanted_list))
        try:
            arrays, n_decoded = _decode_sorted(
                container,
                stream,
                wanted,
                lambda f: f.to_ndarray(format="rgb24", width=w, height=h, interpolation="BILINEAR"),
            )
            missing = [i for i in wanted if i not in arrays]
            if missing:
                raise VideoError(
                    f"{Path(video_path).name}: frame(s) {missing[:8]} not in the video "
                    f"({_count_frames(container, stream)} frames)"
                )
        except av.FFmpegError as e:
            raise VideoError(f"corrupt video {Path(video_path).name} ({type(e).__name__}: {e})") from e
    return np.stack([arrays[i] for i in wanted_list]), n_decoded
