"""Guidance benchmark v2: synthetic EgoDex episodes whose future needs BOTH branches.

Why a second generator (v1 stays in ``synth.py``, byte for byte reproducible): in v1 the whole
reach happens after the forecast time t, so the dense window shows nothing that predicts it and
no JEPA-only model can beat "the hands stay where they are" (docs/reference.md §7). Here:

- Many procedural scenes (task folders; background, table and camera motion per scene, scene
  colours of low saturation so they never look like a cue colour), split by scene.
- The hands move during the dense window: from ``motion_start`` both hands translate across
  the table with a random heading and speed (what the dense JEPA branch must read off the
  latents), and at frame ``t + turn_delay`` the heading turns by an angle chosen by the turn
  class ``TURN_ANGLES_DEG[c]`` (what only the thinker can know). So a forecast needs the dense
  branch for heading and speed AND the thinker for which turn.
- The cue (a colour band over the top of the frame, one colour per class) is shown in frames
  ``[0, cue_end)``: seen by the thinker's frames spread over the past, never by the dense
  window (which starts after ``cue_end``) and never at or after t. With
  ``sampling.thinker_stop: dense`` (the demo's setting) the thinker sees only frames before
  the dense window, where the hands are still at rest: the guidance can tell the turn, not the
  heading or the speed, so a win of thinkjepa before the turn would be a leak.
- Controls with the same per-episode seeds (so the same scenes, headings, speeds and turns):
  ``cued`` (the shown cue is the turn class), ``shuffled`` (the shown cue is drawn
  independently of the turn, balanced per scene) and ``absent`` (no cue at all). A model that
  wins on a control is reading something other than the cue: a leak.
- A diagnosis with the same draws: ``fixed_turn`` (no cue, and every episode turns by class
  ``FIXED_TURN_CLASS``). Its past and its future before the turn are those of the other modes,
  frame for frame; only the turn is no longer uncertain. A JEPA-only model trained on it shows
  what the dense branch reaches before the turn when nothing about the future is ambiguous.

Every scene holds every turn class equally often (episodes cycle through a per-scene
permutation), so a split by scene keeps the classes balanced. The labels file records per
episode the turn class, the shown cue (or null), heading, speed, and the frames that matter;
it lives outside any task folder, so indexing ignores it.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.progress import track

from thinkjepa.data.synth import (
    ALL_TRANSFORM_JOINTS,
    CUE_COLOURS,
    FPS,
    HOME,
    LABELS_FILE,
    N_CUES,
    SceneTask,
    _attrs,
    _body_transforms,
    _camera_poses,
    _hand_transforms,
    _render_frame,
    _size_hw,
    _smooth_noise,
    _write_hdf5,
    _write_video,
    synth_intrinsics,
)
from thinkjepa.joints import HANDS

Mode = Literal["cued", "shuffled", "absent", "fixed_turn"]
MODES: tuple[str, ...] = ("cued", "shuffled", "absent", "fixed_turn")
FIXED_TURN_CLASS = 0
"""``fixed_turn``: the turn class of every episode, so that the future is determined by the dense
window alone. A diagnosis, not a control: a JEPA-only model trained there faces no ambiguity
about the turn, which tells how much of its error before the turn it pays for the ambiguity."""
TURN_ANGLES_DEG: tuple[float, ...] = (-90.0, -30.0, 30.0, 90.0)
"""Heading change at ``t + turn_delay`` per turn class (positive = counter-clockwise seen from above)."""
assert len(TURN_ANGLES_DEG) == N_CUES
V2_DEMO_OVERRIDES: tuple[str, ...] = (
    "demo.generator=guidance_v2", "sampling.future_frames=8", "sampling.windows_per_clip=1",
    "sampling.window_hop=null", "sampling.horizon_steps=1", "eval.rollout_steps=1", "train.rollout_steps=1",
)
"""Dotted overrides that turn the demo defaults (rollout v3 since issue 28) back into the layout
v2 data is made for: one window per clip, past and future of 8 frames, and the paper's one-step
loss (bench_guidance.py and the v2 precondition tests run on it)."""
CAMERA_MOTIONS: tuple[str, ...] = ("pan", "sway", "dolly", "bob")
CUE_BOX = (0.0, 0.0, 1.0, 0.5)
"""The cue band: the top half of the frame, full width (fractions of the frame)."""


def v2_timeline(n_frames: int, past_frames: int, future_frames: int, turn_delay: int = 2) -> dict[str, int]:
    """The frames that matter for the ``stride``-mode window of one episode (stride 1, one
    window per clip, so t = n_frames - future_frames): the cue ends before the dense window
    starts, the motion starts just before it, the turn comes ``turn_delay`` frames after t."""
    t = n_frames - future_frames
    dense_start = t - past_frames
    motion_start = max(1, dense_start - 1)  # still at rest in every frame before the dense window
    cue_end = min(dense_start, max(2, round(0.45 * dense_start)))
    turn = t + turn_delay
    if not 0 < cue_end <= dense_start or not turn < n_frames or dense_start < 2:
        raise ValueError(
            f"n_frames={n_frames} is too short for past {past_frames} + future {future_frames} frames "
            f"with a cue before the dense window and a turn {turn_delay} frames after t"
        )
    return {"t": t, "dense_start": dense_start, "motion_start": motion_start, "cue_end": cue_end, "turn": turn}


def _scene_colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Background and table: low saturation, mid value, so no scene colour resembles a cue."""
    h = rng.uniform(0, 1)
    bg = colorsys.hsv_to_rgb(h, rng.uniform(0.05, 0.3), rng.uniform(0.22, 0.4))
    table = colorsys.hsv_to_rgb((h + rng.uniform(-0.1, 0.1)) % 1, rng.uniform(0.05, 0.3), rng.uniform(0.42, 0.58))
    return tuple(int(round(255 * c)) for c in bg), tuple(int(round(255 * c)) for c in table)  # type: ignore[return-value]


def make_scenes(n: int, seed: int) -> list[SceneTask]:
    rng = np.random.default_rng([seed, 1_000_001])
    scenes = []
    for i in range(n):
        bg, table = _scene_colours(rng)
        motion = CAMERA_MOTIONS[int(rng.integers(len(CAMERA_MOTIONS)))]
        scenes.append(SceneTask(
            name=f"scene_{i:02d}_{motion}", background=bg, table=table, motion=motion,
            description="move both hands across the table.",
            environment=f"table:rgb{table}, background:rgb{bg}, camera:{motion}",
        ))
    return scenes


def _rot_y(v: np.ndarray, deg: float) -> np.ndarray:
    """Rotate a table-plane vector (x, z) counter-clockwise seen from above (+y up)."""
    a = np.deg2rad(deg)
    x, z = v[0], v[2]
    # seen from above with +y up, counter-clockwise takes +x towards -z
    return np.array([x * np.cos(a) + z * np.sin(a), v[1], -x * np.sin(a) + z * np.cos(a)])


def _v2_motion(rng: np.random.Generator, T: int, tl: dict[str, int], heading: float, speed: float,
               turn_class: int) -> dict[str, np.ndarray]:
    """World transforms [T, 4, 4] of the hand joints: idle, then a shared straight motion that
    turns at ``tl['turn']``."""
    vel = speed * np.array([np.cos(heading), 0.0, -np.sin(heading)])
    vel_after = _rot_y(vel, TURN_ANGLES_DEG[turn_class])
    disp = np.zeros((T, 3))
    for f in range(tl["motion_start"] + 1, T):
        disp[f] = disp[f - 1] + (vel if f <= tl["turn"] else vel_after)
    out: dict[str, np.ndarray] = {}
    for hand in HANDS:
        home = HOME[hand] + rng.uniform(-0.015, 0.015, 3) * np.array([1, 0, 1])
        wrist = home + _smooth_noise(rng, T, 0.006) * np.array([1.0, 0.3, 1.0]) + disp
        yaw = _smooth_noise(rng, T, 0.06, 1)[:, 0] + (0.12 if hand == "left" else -0.12)
        out.update(_hand_transforms(hand, wrist, yaw))
    return out


def synthesize_guidance_v2(
    out: str | Path,
    *,
    scenes: int = 24,
    episodes_per_scene: int = 8,
    mode: Mode = "cued",
    seed: int = 0,
    n_frames: int = 48,
    past_frames: int = 8,
    future_frames: int = 8,
    turn_delay: int = 2,
    size: int | tuple[int, int] = 128,
    speed_range: tuple[float, float] = (0.004, 0.008),
    camera_amp: float = 0.25,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``scenes * episodes_per_scene`` episodes under ``out/<scene>/<n>.mp4|.hdf5`` and
    ``out/synth_labels.json``; returns the labels. Same arguments, same bytes; the three modes
    of one seed share every per-episode draw (scene, heading, speed, turn, camera) and differ
    only in the shown cue."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if scenes < 1 or episodes_per_scene < 1:
        raise ValueError("scenes and episodes_per_scene must be >= 1")
    tl = v2_timeline(n_frames, past_frames, future_frames, turn_delay)
    hw = _size_hw(size)
    K = synth_intrinsics(hw[1], hw[0])
    out = Path(out)
    scene_list = make_scenes(scenes, seed)
    master = np.random.default_rng([seed, 2])
    turn_order = [master.permutation(N_CUES) for _ in range(scenes)]
    n_blocks = -(-episodes_per_scene // N_CUES)
    # shuffled control: per scene and block of N_CUES episodes a fresh permutation, drawn
    # independently of the turn order (balanced per scene, independent of the turn)
    shuffle_order = [[master.permutation(N_CUES) for _ in range(n_blocks)] for _ in range(scenes)]
    labels: dict[str, Any] = {
        "generator": "guidance_v2", "mode": mode, "seed": seed, "n_frames": n_frames, "fps": FPS,
        "height": hw[0], "width": hw[1], "timeline": tl, "turn_angles_deg": list(TURN_ANGLES_DEG),
        "cue_colours": [list(c) for c in CUE_COLOURS], "tasks": [s.name for s in scene_list], "episodes": {},
    }
    pads = np.zeros((0, 3))
    n_total = scenes * episodes_per_scene
    for i in track(range(n_total), description=f"synthesising v2 ({mode})", disable=not progress):
        si, n = i % scenes, i // scenes
        scene = scene_list[si]
        turn_class = FIXED_TURN_CLASS if mode == "fixed_turn" else int(turn_order[si][n % N_CUES])
        shown = shown_cue(mode, turn_class, shuffle_order[si], n)
        heading, speed = write_motion_episode(
            out / scene.name, n, np.random.default_rng([seed, 3, i]), scene, seed, i, n_frames=n_frames,
            motion_tl=tl, turn_class=turn_class, shown=shown, cue_end=tl["cue_end"], cue_box=CUE_BOX, K=K, hw=hw,
            camera_amp=camera_amp, speed_range=speed_range, pads=pads)
        labels["episodes"][f"{scene.name}/{n}"] = {
            "scene": scene.name, "turn": turn_class, "cue": shown, "heading": heading, "speed": speed,
        }
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=1))
    return labels


def shown_cue(mode: str, turn_class: int, scene_shuffle: np.ndarray, n: int) -> int | None:
    """The cue an episode shows: its turn class (``cued``), a draw independent of the turn and
    balanced per scene (``shuffled``), or none (``absent`` and the fixed-event diagnoses)."""
    if mode == "cued":
        return turn_class
    if mode == "shuffled":
        return int(scene_shuffle[n // N_CUES][n % N_CUES])
    return None


def write_motion_episode(folder: Path, n: int, rng: np.random.Generator, scene: SceneTask, seed: int, i: int, *,
                         n_frames: int, motion_tl: dict[str, int], turn_class: int, shown: int | None, cue_end: int,
                         cue_box: tuple[float, float, float, float], K: np.ndarray, hw: tuple[int, int],
                         camera_amp: float, speed_range: tuple[float, float], pads: np.ndarray,
                         lossless: bool = False) -> tuple[float, float]:
    """Draw, render and write one episode of the straight-then-turn motion (v2 and rollout v3
    share it; the draws come from ``rng`` in a fixed order, so each generator stays byte
    reproducible); returns its heading and speed."""
    heading = float(rng.uniform(0, 2 * np.pi))
    speed = float(rng.uniform(*speed_range))
    camera = _camera_poses(rng, n_frames, scene.motion, amp=camera_amp)
    hands = _v2_motion(rng, n_frames, motion_tl, heading, speed, turn_class)
    transforms = {**hands, **_body_transforms(camera, hands)}
    conf = {name: rng.uniform(0.85, 1.0, n_frames) for name in ALL_TRANSFORM_JOINTS}
    frames = np.stack([
        _render_frame(f, scene, camera[f].astype(np.float64), K, hw, transforms,
                      shown if f < cue_end else None, pads, cue_box=cue_box)
        for f in range(n_frames)
    ])
    folder.mkdir(parents=True, exist_ok=True)
    attrs = _attrs(scene, seed, i)
    attrs.update(llm_description="Both hands move across a table.", object="table")
    _write_hdf5(folder / f"{n}.hdf5", transforms, camera, K, conf, attrs)
    _write_video(folder / f"{n}.mp4", frames, lossless=lossless)
    return heading, speed


__all__ = ["FIXED_TURN_CLASS", "MODES", "V2_DEMO_OVERRIDES", "TURN_ANGLES_DEG", "make_scenes", "shown_cue",
           "synthesize_guidance_v2", "v2_timeline", "write_motion_episode"]
