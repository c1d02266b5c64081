"""Rollout benchmark v3: a cue that selects an event a few rollout steps ahead.

Why a third generator (v1 and v2 stay byte for byte reproducible): v2's episodes leave exactly
one rollout step after t and its past is as long as its future, so recursive rollout was never
exercised and the ``shifted`` and ``predicted`` rollout modes coincided (issue 28). Here:

- The windows come from ``thinkjepa.sampling.windows_for_clip`` itself (``stride`` mode, stride
  1, ``windows_per_clip`` windows ``future_frames`` apart, ``horizon_steps`` blocks of future
  after each t), so the generator and the pipeline cannot disagree about which frames a window
  sees. Every window has ``horizon_steps`` (default 4) rollout steps, and its past
  (``past_frames``, default 8) is longer than one step's future (``future_frames``, default 4).
- The hands translate across the table from just before the earliest dense window (heading and
  speed: what the dense branch reads), and turn by ``TURN_ANGLES_DEG[c]`` (v2's classes) so that
  the first frame whose motion differs between classes lies in rollout step 2 of the latest
  window, hence in step 2, 3, ... of the earlier ones: never in step 1 of any window.
- The cue is a full-frame colour card (one colour per class) in frames ``[0, cue_end)``, before
  the earliest dense window: with ``sampling.thinker_stop: dense`` only the thinker sees it, and
  only before t. A full-frame card rather than v2's band: across scenes the random thinker's
  features are dominated by the scene (REFERENCE.md section 7), and a card covers it.
- The videos are lossless H.264 (``qp 0``): a decoded frame is exactly its own input frame, so
  no cue pixel can reach a dense frame through the codec's prediction or look-ahead. The frames
  of every dense window are identical across the modes (the test suite decodes and encodes them).
- Controls with the same per-episode draws: ``cued`` (the card shows the turn class),
  ``shuffled`` (a card drawn independently of the turn, balanced per scene), ``absent`` (no
  card). Diagnosis ``fixed_event``: no card and every episode turns by ``FIXED_TURN_CLASS``.

The labels file records per episode the turn class, the shown cue, heading and speed, and the
timeline (forecast times, the event frame and the rollout step it falls in for each window).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.progress import track

from thinkjepa.config import SamplingConfig
from thinkjepa.data.synth import (
    CUE_COLOURS,
    FPS,
    LABELS_FILE,
    N_CUES,
    _size_hw,
    synth_intrinsics,
)
from thinkjepa.data.synth_v2 import FIXED_TURN_CLASS, TURN_ANGLES_DEG, make_scenes, shown_cue, write_motion_episode
from thinkjepa.sampling import windows_for_clip

Mode = Literal["cued", "shuffled", "absent", "fixed_event"]
MODES: tuple[str, ...] = ("cued", "shuffled", "absent", "fixed_event")
CUE_CARD = (0.0, 0.0, 1.0, 1.0)
"""The cue: the whole frame in the class colour (the hands, at rest, are drawn over it)."""


def v3_sampling(past_frames: int = 8, future_frames: int = 4, windows_per_clip: int = 3,
                horizon_steps: int = 4) -> SamplingConfig:
    """The sampling the v3 data is laid out for (the demo and the benchmark use these values)."""
    return SamplingConfig(
        mode="stride", past_frames=past_frames, future_frames=future_frames, stride=1,
        thinker_frames=8, thinker_stop="dense", windows_per_clip=windows_per_clip,
        window_hop=future_frames, horizon_steps=horizon_steps,
    )


def v3_timeline(n_frames: int, sampling: SamplingConfig) -> dict[str, Any]:
    """The frames that matter, from the pipeline's own windows: the cue ends before the
    earliest dense window, the motion starts just before it, and the first frame moved by the
    turn (``turn + 1``) is in rollout step 2 of the latest window and in steps 2..horizon of
    every window."""
    # thinker_stop is free: the cue lies before every dense window, so the dense branch never sees
    # it either way (``dense``: the thinker sees only frames before the dense window; ``forecast``,
    # the fair VLM-only baseline's setting: up to t-1)
    if sampling.mode != "stride" or sampling.stride != 1:
        raise ValueError("rollout v3 data is laid out for sampling.mode=stride, stride 1")
    wins = windows_for_clip("v3", n_frames, sampling)
    F, R = sampling.future_frames, sampling.horizon_steps
    dense_start = wins[0].past[0]
    t_late = wins[-1].t
    turn = t_late + F  # frame turn + 1 is the first that differs between classes: step 2 of the latest window
    cue_end = max(2, round(0.75 * dense_start))
    steps = {w.t: (turn + 1 - w.t) // F + 1 for w in wins}
    if dense_start < 4 or cue_end >= dense_start - 1 or not all(2 <= k <= R for k in steps.values()):
        raise ValueError(
            f"n_frames={n_frames} with past {sampling.past_frames}, future {F} x {R} steps and "
            f"{sampling.windows_per_clip} windows per clip does not place a cue before the dense windows and "
            f"the event in rollout steps 2..{R} of every window (event steps per forecast time: {steps})"
        )
    return {
        "ts": [w.t for w in wins], "dense_start": dense_start, "motion_start": dense_start - 1,
        "cue_end": cue_end, "turn": turn, "first_changed_frame": turn + 1,
        "event_step": {str(t): k for t, k in steps.items()},
        "past_frames": sampling.past_frames, "future_frames": F, "horizon_steps": R,
    }


def synthesize_rollout_v3(
    out: str | Path,
    *,
    scenes: int = 24,
    episodes_per_scene: int = 8,
    mode: Mode = "cued",
    seed: int = 0,
    n_frames: int = 48,
    sampling: SamplingConfig | None = None,
    size: int | tuple[int, int] = 64,
    speed_range: tuple[float, float] = (0.004, 0.008),
    camera_amp: float = 0.25,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``scenes * episodes_per_scene`` episodes under ``out/<scene>/<n>.mp4|.hdf5`` and
    ``out/synth_labels.json``; returns the labels. Same arguments, same bytes; the modes of one
    seed share every per-episode draw (scene, heading, speed, turn, camera, noise) and differ
    only in the shown card (and, for ``fixed_event``, the turn class)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if scenes < 1 or episodes_per_scene < 1:
        raise ValueError("scenes and episodes_per_scene must be >= 1")
    sampling = sampling or v3_sampling()
    tl = v3_timeline(n_frames, sampling)
    hw = _size_hw(size)
    K = synth_intrinsics(hw[1], hw[0])
    out = Path(out)
    scene_list = make_scenes(scenes, seed)
    master = np.random.default_rng([seed, 30])
    turn_order = [master.permutation(N_CUES) for _ in range(scenes)]
    n_blocks = -(-episodes_per_scene // N_CUES)
    shuffle_order = [[master.permutation(N_CUES) for _ in range(n_blocks)] for _ in range(scenes)]
    labels: dict[str, Any] = {
        "generator": "rollout_v3", "mode": mode, "seed": seed, "n_frames": n_frames, "fps": FPS,
        "height": hw[0], "width": hw[1], "timeline": tl, "turn_angles_deg": list(TURN_ANGLES_DEG),
        "cue_colours": [list(c) for c in CUE_COLOURS], "tasks": [s.name for s in scene_list], "episodes": {},
    }
    pads = np.zeros((0, 3))
    motion_tl = {"motion_start": tl["motion_start"], "turn": tl["turn"]}
    for i in track(range(scenes * episodes_per_scene), description=f"synthesising v3 ({mode})", disable=not progress):
        si, n = i % scenes, i // scenes
        scene = scene_list[si]
        turn_class = FIXED_TURN_CLASS if mode == "fixed_event" else int(turn_order[si][n % N_CUES])
        shown = shown_cue(mode, turn_class, shuffle_order[si], n)
        heading, speed = write_motion_episode(
            out / scene.name, n, np.random.default_rng([seed, 31, i]), scene, seed, i, n_frames=n_frames,
            motion_tl=motion_tl, turn_class=turn_class, shown=shown, cue_end=tl["cue_end"], cue_box=CUE_CARD, K=K,
            hw=hw, camera_amp=camera_amp, speed_range=speed_range, pads=pads, lossless=True)
        labels["episodes"][f"{scene.name}/{n}"] = {
            "scene": scene.name, "turn": turn_class, "cue": shown, "heading": heading, "speed": speed,
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=1))
    return labels


__all__ = ["CUE_CARD", "MODES", "synthesize_rollout_v3", "v3_sampling", "v3_timeline"]
