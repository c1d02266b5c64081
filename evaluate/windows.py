"""The window set an evaluation runs on, its targets, and the rollout horizon it allows.

Every model row of a report is scored on the identical windows: ``common_window_set`` builds
each variant's dataset and refuses (naming the window and the variant) when one variant would
see a window another does not. Targets and baselines come from the episodes' HDF5 through
``thinkjepa.train.targets`` (the same definition training uses), for the one-shot future
frames and for every rollout step beyond them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from thinkjepa.config import PipelineConfig
from thinkjepa.sampling import Window, rollout_frames, rollout_span
from thinkjepa.train.dataset import WindowDataset, WindowRef, split_windows
from thinkjepa.train.targets import window_targets


def common_window_set(cfg: PipelineConfig, variants: list[str], split: str) -> list[WindowRef]:
    """The split's windows every variant can read from its caches; an error when they differ,
    and a ``StaleInputError`` when a cache was written by another model or settings, or holds
    entries that are stale (re-extracted with another prompt, an episode edited since): a
    report must not score a model on inputs it would not get now."""
    import warnings

    refs = split_windows(cfg, split)
    served: dict[str, set[str]] = {}
    checked: set[tuple[str, str | None]] = set()
    for v in variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the missing windows are reported below, by name
            ds = WindowDataset(cfg.for_variant(v), split, windows=refs)
        served[v] = set(ds.window_ids)
        if (ds.jepa_url, ds.vlm_url) not in checked:  # variants mostly share their caches
            checked.add((ds.jepa_url, ds.vlm_url))
            _refuse_stale_inputs(cfg.for_variant(v), ds)
    union = set().union(*served.values()) if served else set()
    for v in variants:
        missing = sorted(union - served[v])
        if missing:
            others = [o for o in variants if missing[0] in served[o]]
            raise ValueError(
                f"window {missing[0]} (and {len(missing) - 1} more) of split {split!r} is missing for variant "
                f"{v!r} but present for {others}: every variant must be evaluated on the same windows; "
                "extract/encode the missing entries (`tj-extract status`, `tj run`) and retrain if needed"
            )
    return [r for r in refs if r.key in union]


def _refuse_stale_inputs(cfg: PipelineConfig, ds: WindowDataset) -> None:
    from thinkjepa.cache_schema import CacheReader
    from thinkjepa.train.run_inputs import check_caches, check_entries

    jepa = CacheReader(ds.jepa_url)
    vlm = CacheReader(ds.vlm_url) if ds.vlm_url else None
    check_caches(cfg, jepa, vlm)
    check_entries(cfg, ds.refs, jepa, vlm)


@dataclass
class Episodes:
    """Per-clip episode arrays, read once (joints, confidences, poses, intrinsics, length)."""

    _cache: dict[str, object] = field(default_factory=dict)

    def get(self, ref: WindowRef):
        from thinkjepa.data.egodex import read_episode

        clip = ref.window.clip_id
        if clip not in self._cache:
            self._cache[clip] = read_episode(ref.video_path, ref.annotation_path, clip_id=clip, check_video=False)
        return self._cache[clip]


def targets_for(ep, window: Window, frames: tuple[int, ...]) -> np.ndarray:
    """World-frame joints [len(frames), 52, 3] of ``frames``, through the training targets."""
    w = Window(window.clip_id, window.t, window.past, tuple(frames), window.thinker)
    return window_targets(ep.joints, ep.confidences, ep.camera_pose, w).joints_world


def rollout_steps_available(refs: list[WindowRef], episodes: Episodes, steps: int) -> dict[str, int]:
    """How many rollout steps (<= ``steps``) each window's episode has frames for."""
    out = {}
    for r in refs:
        n = episodes.get(r).n_frames
        out[r.key] = sum(1 for fr in rollout_frames(r.window, steps) if fr[-1] < n)
    return out


def baseline_predictions(ep, window: Window, frames: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``last_observed`` (hold the pose of the last observed frame) and ``constant_velocity``
    (extrapolate the last two observed poses linearly in time): [len(frames), 52, 3] each.
    Both read only observed frames (``window.past``)."""
    p1 = window.past[-1]
    last = ep.joints[p1].astype(np.float64)
    if len(window.past) > 1:
        p0 = window.past[-2]
        velocity = (last - ep.joints[p0].astype(np.float64)) / (p1 - p0)
    else:
        velocity = np.zeros_like(last)
    dt = np.asarray(frames, np.float64)[:, None, None] - p1
    return {
        "last_observed": np.broadcast_to(last, (len(frames), *last.shape)).copy(),
        "constant_velocity": last[None] + dt * velocity[None],
    }


__all__ = [
    "Episodes",
    "baseline_predictions",
    "common_window_set",
    "rollout_frames",
    "rollout_span",
    "rollout_steps_available",
    "targets_for",
]
