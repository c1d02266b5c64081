"""Clip sampling: the one place that decides which frames each branch sees.

A forecast is made at frame ``t``. Every *input* frame index (dense JEPA past window,
thinker frames, and the camera pose used for the world transform, which is the pose of
``past[-1]``) is ``< t``; frames ``>= t`` are only ever targets. ``Window`` enforces this
on construction, so no caller can build a window that leaks the future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thinkjepa.config import SamplingConfig


class TooShortError(ValueError):
    """The episode has too few frames for the configured windows."""


@dataclass(frozen=True)
class Window:
    clip_id: str
    t: int
    """Forecast time: the first future frame. Inputs come from frames < t."""
    past: tuple[int, ...]
    """Dense JEPA context frames (ascending, all < t)."""
    future: tuple[int, ...]
    """Target frames (ascending, all >= t)."""
    thinker: tuple[int, ...]
    """Frames the VLM thinker sees (ascending, all < t)."""

    def __post_init__(self) -> None:
        if not self.past or not self.future or not self.thinker:
            raise ValueError(f"{self.window_id}: empty frame list")
        if max(self.past) >= self.t or max(self.thinker) >= self.t:
            raise ValueError(f"{self.window_id}: an input frame is not before t={self.t} (causality)")
        if min(self.future) < self.t:
            raise ValueError(f"{self.window_id}: a target frame is before t={self.t}")
        if min(self.past) < 0 or min(self.thinker) < 0:
            raise ValueError(f"{self.window_id}: negative frame index")

    @property
    def window_id(self) -> str:
        """Cache key of this window: ``<task>/<episode>@<t>``."""
        return f"{self.clip_id}@{self.t}"

    @property
    def pose_frame(self) -> int:
        """Frame whose camera pose maps camera-frame predictions to world (the last observed)."""
        return self.past[-1]


def rollout_span(window: Window) -> int:
    """Frames one rollout step advances: the future window's length at its own spacing."""
    f = window.future
    return f[-1] - f[0] + (f[-1] - f[-2] if len(f) > 1 else 1)


def rollout_frames(window: Window, steps: int) -> list[tuple[int, ...]]:
    """The target frames of each rollout step (step 0 = the window's own future)."""
    span = rollout_span(window)
    return [tuple(f + k * span for f in window.future) for k in range(steps)]


def split_window_id(window_id: str) -> tuple[str, int]:
    clip_id, _, t = window_id.rpartition("@")
    if not clip_id:
        raise ValueError(f"{window_id!r} is not a window id (<task>/<episode>@<t>)")
    return clip_id, int(t)


def _linspace_int(start: int, stop: int, n: int) -> tuple[int, ...]:
    return tuple(int(round(x)) for x in np.linspace(start, stop, n))


def min_frames(cfg: SamplingConfig) -> int:
    """Shortest episode that yields at least one window under ``cfg``."""
    if cfg.mode == "split_half":
        return 2
    return cfg.stride * cfg.past_frames + cfg.stride * (cfg.future_frames * cfg.horizon_steps - 1) + 1


def windows_for_clip(clip_id: str, n_frames: int, cfg: SamplingConfig) -> list[Window]:
    """All forecast windows of one episode, in ascending ``t``. Raises ``TooShortError``."""
    need = min_frames(cfg)
    if n_frames < need:
        raise TooShortError(
            f"{clip_id}: {n_frames} frames, need at least {need} for sampling mode {cfg.mode!r} "
            f"(past {cfg.past_frames}, future {cfg.future_frames} x {cfg.horizon_steps} step(s), stride {cfg.stride})"
        )
    if cfg.mode == "split_half":
        t = n_frames // 2
        past = _linspace_int(0, t - 1, cfg.past_frames)
        future = _linspace_int(t, n_frames - 1, cfg.future_frames)
        thinker = past if cfg.thinker_frames == cfg.past_frames else _linspace_int(0, t - 1, cfg.thinker_frames)
        return [Window(clip_id, t, past, future, thinker)]

    s, p, f = cfg.stride, cfg.past_frames, cfg.future_frames
    t_min = s * p
    t_max = n_frames - 1 - s * (f * cfg.horizon_steps - 1)
    hop = cfg.window_hop or s * f
    ts = sorted({t_max - hop * j for j in range(cfg.windows_per_clip) if t_max - hop * j >= t_min})
    out = []
    for t in ts:
        past = tuple(t - s * (p - i) for i in range(p))
        future = tuple(t + s * i for i in range(f))
        start = 0 if cfg.thinker_span is None else max(0, t - cfg.thinker_span)
        stop = t - 1 if cfg.thinker_stop == "forecast" else past[0] - 1
        if stop < start:
            raise TooShortError(f"{clip_id}: no frame before the dense window (t={t}) for the thinker")
        thinker = _linspace_int(start, stop, cfg.thinker_frames)
        out.append(Window(clip_id, t, past, future, thinker))
    return out
