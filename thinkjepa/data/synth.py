"""Synthetic EgoDex: rendered episodes in the real layout, whose future depends on an early cue.

Each episode: two hands resting on a table, seen by a moving head camera; a large coloured
square (the cue, one of ``N_CUES`` colours) is shown in the first ``cue_fraction`` of the frames
only; in the last ``reach_fraction`` of the frames both hands reach towards the pads that the
cue selects. Before the reach the hands only idle (the same way whatever the cue), so a model
that sees only a short dense window before the reach cannot know where they go, while one that
also sees the early frames can.

Task folders are scene variants (background colours and camera motion style); the cue is
independent of the task and every task folder cycles through all cue classes, so a split
grouped by task folder still has every class in each part. The HDF5 files carry the same keys
and attributes as real EgoDex files; descriptions are generic per task and never mention the cue.
The cue class of each episode is written to ``<out>/synth_labels.json`` (outside any task
folder, so indexing ignores it), for analysis only.

Pixels follow the poses: joints are projected with ``thinkjepa.data.camera.project_points``,
the same function the tests use to check them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import h5py
import numpy as np
from PIL import Image, ImageDraw

from thinkjepa.data.camera import look_at, project_points
from thinkjepa.joints import FINGER_SEGMENTS, FINGERS, HANDS, THUMB

N_CUES = 4
FPS = 30
LABELS_FILE = "synth_labels.json"

CUE_COLOURS: tuple[tuple[int, int, int], ...] = ((225, 30, 30), (30, 190, 60), (40, 70, 225), (200, 40, 210))
SKIN = (238, 192, 150)
PAD = (20, 20, 20)

BODY_JOINTS: tuple[str, ...] = ("hip",) + tuple(f"neck{i}" for i in range(1, 5)) + tuple(f"spine{i}" for i in range(1, 8))
# Every transform key of an EgoDex file: per hand the 26 tracked joints plus Arm and Shoulder, and the body.
ALL_TRANSFORM_JOINTS: tuple[str, ...] = tuple(
    sorted(
        [h + j for h in HANDS for j in THUMB + tuple(f + s for f in FINGERS for s in FINGER_SEGMENTS)]
        + [h + j for h in HANDS for j in ("Hand", "Forearm", "Arm", "Shoulder")]
        + list(BODY_JOINTS)
    )
)
assert len(ALL_TRANSFORM_JOINTS) == 68


@dataclass(frozen=True)
class SceneTask:
    name: str
    background: tuple[int, int, int]
    table: tuple[int, int, int]
    motion: str
    description: str
    environment: str


TASKS: tuple[SceneTask, ...] = (
    SceneTask("reach_pads_pan", (70, 70, 76), (112, 112, 122), "pan",
              "rest both hands on the table, then reach to a pair of pads.", "table:grey, background:grey, camera:pan"),
    SceneTask("reach_pads_sway", (30, 78, 88), (58, 120, 130), "sway",
              "rest both hands on the table, then reach to a pair of pads.", "table:teal, background:teal, camera:sway"),
    SceneTask("reach_pads_dolly", (88, 68, 42), (132, 100, 66), "dolly",
              "rest both hands on the table, then reach to a pair of pads.", "table:brown, background:brown, camera:dolly"),
    SceneTask("reach_pads_bob", (38, 42, 92), (70, 80, 140), "bob",
              "rest both hands on the table, then reach to a pair of pads.", "table:blue, background:navy, camera:bob"),
)

TABLE_Y = 0.82
HOME = {"left": np.array([-0.11, TABLE_Y + 0.035, -0.34]), "right": np.array([0.11, TABLE_Y + 0.035, -0.34])}
# Reach offsets of the right hand per cue class (the left hand mirrors x): apart/together x forward/back.
REACH = np.array([[0.075, 0.0, -0.08], [-0.055, 0.0, -0.08], [0.075, 0.0, 0.06], [-0.055, 0.0, 0.06]])
EYE = np.array([0.0, 1.22, 0.02])
LOOK = np.array([0.0, TABLE_Y, -0.36])


def _mirror(v: np.ndarray, hand: str) -> np.ndarray:
    return v * np.array([-1.0, 1.0, 1.0]) if hand == "left" else v


def _hand_offsets(hand: str) -> dict[str, np.ndarray]:
    """Joint offsets from the wrist in the hand frame (forward along fingers, thumb side, up), metres."""
    up_sign = 1.0 if hand == "right" else -1.0  # the third axis of the left hand frame points down
    side = 1.0  # thumb side is +lateral for both hands; the lateral axis is mirrored per hand
    off: dict[str, np.ndarray] = {"Hand": np.zeros(3), "Forearm": np.array([-0.11, 0.0, up_sign * 0.025])}
    thumb = [(0.025, 0.028, -0.008), (0.048, 0.048, -0.010), (0.070, 0.062, -0.006), (0.090, 0.070, -0.002)]
    for name, p in zip(THUMB, thumb):
        off[name] = np.array([p[0], side * p[1], up_sign * p[2]])
    for finger, lat, scale in zip(FINGERS, (0.022, 0.004, -0.014, -0.029), (1.0, 1.08, 1.0, 0.82)):
        fwd = [0.025, 0.085, 0.085 + 0.040 * scale, 0.085 + 0.065 * scale, 0.085 + 0.085 * scale]
        up = [0.0, 0.006, 0.0, -0.008, -0.016]
        for seg, f, u, k in zip(FINGER_SEGMENTS, fwd, up, (0.5, 1.0, 1.05, 1.1, 1.12)):
            off[finger + seg] = np.array([f, side * lat * k, up_sign * u])
    return off


def _hand_rotation(hand: str, yaw: float) -> np.ndarray:
    """Columns: forward (along fingers), thumb side, and their cross product (a proper rotation,
    as in EgoDex files), for palm-down hands."""
    fwd = np.array([np.sin(yaw), 0.0, -np.cos(yaw)])
    up = np.array([0.0, 1.0, 0.0])
    thumb = np.cross(up, fwd) if hand == "right" else np.cross(fwd, up)
    return np.stack([fwd, thumb, np.cross(fwd, thumb)], axis=1)


def _smooth_noise(rng: np.random.Generator, T: int, amp: float, dims: int = 3) -> np.ndarray:
    """Sum of two random sinusoids per dimension: smooth idle motion."""
    t = np.arange(T)[:, None]
    out = np.zeros((T, dims))
    for _ in range(2):
        freq = rng.uniform(0.5, 1.5, dims) * 2 * np.pi / 48
        phase = rng.uniform(0, 2 * np.pi, dims)
        out += amp / 2 * np.sin(freq * t + phase)
    return out


def _camera_poses(rng: np.random.Generator, T: int, motion: str, amp: float = 1.0) -> np.ndarray:
    """Head-camera poses [T, 4, 4]; ``amp`` scales the motion (1.0: the v1 demo's)."""
    t = np.arange(T)
    phase = rng.uniform(0, 2 * np.pi)
    w = 2 * np.pi * rng.uniform(0.8, 1.3) / max(T, 2)
    s = amp * np.sin(w * t + phase)
    eye = np.repeat(EYE[None], T, axis=0) + rng.normal(0, 0.0015, (T, 3))
    look = np.repeat(LOOK[None], T, axis=0)
    if motion == "pan":
        look[:, 0] += 0.10 * s
    elif motion == "sway":
        eye[:, 0] += 0.07 * s
        look[:, 0] += 0.03 * s
    elif motion == "dolly":
        eye[:, 2] += 0.07 * s
        eye[:, 1] += 0.03 * s
    elif motion == "bob":
        eye[:, 1] += amp * 0.04 * np.sin(2 * w * t + phase)
        look[:, 0] += 0.04 * s
    else:
        raise ValueError(f"unknown camera motion {motion!r}")
    return np.stack([look_at(e, at) for e, at in zip(eye, look)]).astype(np.float32)


def _episode_motion(rng: np.random.Generator, T: int, cue: int, reach_start: int) -> dict[str, np.ndarray]:
    """World 4x4 transforms [T, 4, 4] of the 68 joints, given the cue class."""
    s = np.clip((np.arange(T) - reach_start) / max(T - 1 - reach_start, 1), 0.0, 1.0)
    ease = s * s * (3 - 2 * s)  # smoothstep: the reach starts and ends at rest
    out: dict[str, np.ndarray] = {}
    for hand in HANDS:
        home = HOME[hand] + rng.uniform(-0.015, 0.015, 3) * np.array([1, 0, 1])
        wrist = home + _smooth_noise(rng, T, 0.02) * np.array([1.0, 0.3, 1.0])
        wrist = wrist + ease[:, None] * _mirror(REACH[cue], hand)[None]
        yaw = _smooth_noise(rng, T, 0.15, 1)[:, 0] + (0.12 if hand == "left" else -0.12)
        out.update(_hand_transforms(hand, wrist, yaw))
    return out


def _hand_transforms(hand: str, wrist: np.ndarray, yaw: np.ndarray) -> dict[str, np.ndarray]:
    """[T, 4, 4] world transforms of one hand's 26 joints from its wrist path and yaw."""
    T = wrist.shape[0]
    rots = np.stack([_hand_rotation(hand, y) for y in yaw])
    out: dict[str, np.ndarray] = {}
    for name, off in _hand_offsets(hand).items():
        m = np.tile(np.eye(4), (T, 1, 1))
        m[:, :3, :3] = rots
        m[:, :3, 3] = wrist + np.einsum("tij,j->ti", rots, off)
        out[hand + name] = m
    return out


def _body_transforms(camera: np.ndarray, hands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Shoulders, elbows (Arm) and trunk joints hang from the head (camera) position."""
    T = camera.shape[0]
    head = camera[:, :3, 3].astype(np.float64)
    out: dict[str, np.ndarray] = {}

    def at(pos: np.ndarray) -> np.ndarray:
        m = np.tile(np.eye(4), (T, 1, 1))
        m[:, :3, 3] = pos
        return m

    for hand, sx in (("left", -1.0), ("right", 1.0)):
        shoulder = head + np.array([0.18 * sx, -0.24, 0.06])
        forearm = hands[hand + "Forearm"][:, :3, 3]
        out[hand + "Shoulder"] = at(shoulder)
        out[hand + "Arm"] = at(0.5 * (shoulder + forearm) + np.array([0.04 * sx, -0.12, 0.0]))
    out["hip"] = at(head + np.array([0.0, -0.72, 0.12]))
    for i in range(1, 8):
        out[f"spine{i}"] = at(head + np.array([0.0, -0.72 + 0.06 * i, 0.12 - 0.005 * i]))
    for i in range(1, 5):
        out[f"neck{i}"] = at(head + np.array([0.0, -0.26 + 0.04 * i, 0.08 - 0.01 * i]))
    return out


def synth_intrinsics(width: int, height: int) -> np.ndarray:
    f = 0.7 * width
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float32)


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h % 2 or w % 2:
        raise ValueError(f"frame size {h}x{w}: H.264 (yuv420p) needs even height and width")
    return int(h), int(w)


# Bones drawn per hand: finger chains from the wrist, plus the forearm.
def _bones(hand: str) -> list[tuple[str, str]]:
    bones = [(hand + "Hand", hand + "Forearm")]
    chain = ["Hand", *THUMB]
    bones += [(hand + a, hand + b) for a, b in zip(chain, chain[1:])]
    for finger in FINGERS:
        chain = ["Hand"] + [finger + s for s in FINGER_SEGMENTS]
        bones += [(hand + a, hand + b) for a, b in zip(chain, chain[1:])]
    return bones


def _render_frame(
    t: int,
    task: SceneTask,
    pose: np.ndarray,
    K: np.ndarray,
    hw: tuple[int, int],
    transforms: dict[str, np.ndarray],
    cue: int | None,
    pads: np.ndarray,
    ss: int = 2,
    cue_box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """One RGB frame, supersampled ``ss`` times then box-filtered (fewer aliasing artefacts for H.264)."""
    h, w = hw
    img = Image.new("RGB", (w * ss, h * ss), task.background)
    draw = ImageDraw.Draw(img)
    Kss = K.astype(np.float64).copy()
    Kss[:2] *= ss

    def proj(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return project_points(points, pose, Kss)

    table = np.array([[x, TABLE_Y, z] for x, z in ((-0.6, -0.05), (0.6, -0.05), (0.6, -0.9), (-0.6, -0.9))])
    uv, z = proj(table)
    if (z > 0).all():
        draw.polygon([tuple(p) for p in uv], fill=task.table)
    uv, z = proj(pads)
    for (u, v), d in zip(uv, z):
        if d > 0:
            r = Kss[0, 0] * 0.016 / d
            draw.ellipse([u - r, v - r * 0.6, u + r, v + r * 0.6], fill=PAD)
    if cue is not None:
        if cue_box is None:  # v1: a square of 45% of the short side, top centre
            side = int(round(0.45 * min(h, w))) * ss
            x0 = (w * ss - side) // 2
            draw.rectangle([x0, 2 * ss, x0 + side, 2 * ss + side], fill=CUE_COLOURS[cue])
        else:  # (x0, y0, x1, y1) as fractions of the frame
            x0, y0, x1, y1 = cue_box
            draw.rectangle([x0 * w * ss, y0 * h * ss, x1 * w * ss - 1, y1 * h * ss - 1], fill=CUE_COLOURS[cue])
    # painter's order: the farther hand first
    depth = {hnd: proj(transforms[hnd + "Hand"][t, None, :3, 3])[1][0] for hnd in HANDS}
    for hand in sorted(HANDS, key=lambda x: -depth[x]):
        names = sorted({n for b in _bones(hand) for n in b})
        pts = np.stack([transforms[n][t, :3, 3] for n in names])
        uv, z = proj(pts)
        where = {n: (tuple(uv[i]), z[i]) for i, n in enumerate(names)}
        palm = [hand + "Hand"] + [hand + f + "Knuckle" for f in FINGERS]
        if all(where[n][1] > 0 for n in palm):
            draw.polygon([where[n][0] for n in palm], fill=SKIN)
        for a, b in _bones(hand):
            (pa, za), (pb, zb) = where[a], where[b]
            if za > 0 and zb > 0:
                radius = 0.022 if b.endswith("Forearm") else 0.008
                draw.line([pa, pb], fill=SKIN, width=max(1, int(round(2 * Kss[0, 0] * radius / min(za, zb)))))
        for n in names:
            (u, v), d = where[n]
            if d > 0:
                r = Kss[0, 0] * 0.008 / d
                draw.ellipse([u - r, v - r, u + r, v + r], fill=SKIN)
    return np.asarray(img.resize((w, h), Image.Resampling.BOX))


def _write_video(path: Path, frames: np.ndarray, gop: int = 16, lossless: bool = False) -> None:
    """``lossless``: x264 at qp 0 (rollout v3), so every decoded frame equals its own input frame
    whatever its neighbours hold; otherwise crf 14 (v1 and v2, kept byte for byte)."""
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop  # several keyframes, so seeking is exercised
        # PyAV's default thread_count (auto) overrides x264's "threads" option and made the
        # decoded pixels differ between runs of the same arguments
        stream.codec_context.thread_count = 1
        # single-threaded x264 keeps the bitstream identical across runs and machines' core counts
        quality = {"qp": "0"} if lossless else {"crf": "14"}
        stream.options = {**quality, "preset": "veryfast", "threads": "1"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def _write_hdf5(path: Path, transforms: dict[str, np.ndarray], camera: np.ndarray, K: np.ndarray,
                conf: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp.hdf5")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("camera/intrinsic", data=K.astype(np.float32))
        for name in ALL_TRANSFORM_JOINTS:
            f.create_dataset(f"confidences/{name}", data=conf[name].astype(np.float32))
        f.create_dataset("transforms/camera", data=camera.astype(np.float32))
        for name in ALL_TRANSFORM_JOINTS:
            f.create_dataset(f"transforms/{name}", data=transforms[name].astype(np.float32))
        for k, v in attrs.items():
            f.attrs[k] = v
    tmp.replace(path)


def _attrs(task: SceneTask, seed: int, index: int) -> dict[str, Any]:
    """The attributes of a real EgoDex file, generic per task (nothing about the cue)."""
    return {
        "annotated": np.bool_(True),
        "annotator_version": np.float64(0.2),
        "description": task.description,
        "description2": task.description,
        "environment": task.environment,
        "extra": "synthetic",
        "llm_description": f"Both hands rest on a table and then reach towards pads; {task.motion} camera.",
        "llm_description2": "None",
        "llm_objects": np.array(["table", "pads"], dtype=h5py.string_dtype()),
        "llm_type": "synthetic",
        "llm_verbs": np.array(["rest", "reach"], dtype=h5py.string_dtype()),
        "object": "pads",
        "session_name": f"synthetic-seed{seed}-{index}",
        "task": task.name,
        "type": "Synthetic",
        "which_llm_description": "1",
    }


def foreign_episodes(out: str | Path) -> list[str]:
    """``<task>/<n>`` of the episode files under ``out`` that no earlier synth run listed in its
    labels file: a real dataset, which ``tj data synth`` must not write into unasked."""
    out = Path(out)
    if not out.is_dir():
        return []
    try:
        listed = set(json.loads((out / LABELS_FILE).read_text()).get("episodes", {}))
    except (OSError, ValueError, AttributeError):
        listed = set()
    found = sorted({f"{p.parent.name}/{p.stem}" for p in out.glob("*/*") if p.suffix in (".mp4", ".hdf5")})
    return [c for c in found if c not in listed]


def synthesize_dataset(
    out: str | Path,
    episodes: int,
    seed: int = 0,
    n_frames: int = 64,
    size: int | tuple[int, int] = 128,
    tasks: int | None = None,
    cue_fraction: float = 0.4,
    reach_fraction: float = 0.125,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``episodes`` synthetic episodes under ``out/<task>/<n>.mp4|.hdf5``; returns the labels
    (also written to ``out/synth_labels.json``).

    ``tasks``: number of task folders (default: one per 4 episodes, 1 to 4, so that each task
    folder holds every cue class once it has 4 episodes). The cue is shown in frames
    ``[0, round(cue_fraction * n_frames))``; the reach runs over the last
    ``round(reach_fraction * n_frames)`` frames. Same arguments, same arrays, byte for byte.
    """
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    n_tasks = tasks if tasks is not None else min(len(TASKS), max(1, episodes // N_CUES))
    if not 1 <= n_tasks <= len(TASKS):
        raise ValueError(f"tasks must be in 1..{len(TASKS)}, got {n_tasks}")
    cue_end = int(round(cue_fraction * n_frames))
    reach_start = n_frames - max(1, int(round(reach_fraction * n_frames)))
    if not 0 < cue_end < reach_start:
        raise ValueError(
            f"n_frames={n_frames}: the cue (frames < {cue_end}) must end before the reach (from frame {reach_start})"
        )
    hw = _size_hw(size)
    K = synth_intrinsics(hw[1], hw[0])
    out = Path(out)
    master = np.random.default_rng(seed)
    cue_order = [master.permutation(N_CUES) for _ in range(n_tasks)]
    children = np.random.SeedSequence(seed).spawn(episodes)
    labels: dict[str, Any] = {
        "seed": seed, "n_frames": n_frames, "height": hw[0], "width": hw[1], "fps": FPS,
        "cue_frames": [0, cue_end], "reach_start": reach_start, "cue_colours": [list(c) for c in CUE_COLOURS],
        "tasks": [t.name for t in TASKS[:n_tasks]], "episodes": {},
    }
    pads = np.array([HOME[h] * np.array([1, 0, 1]) + np.array([0, TABLE_Y, 0]) + _mirror(r, h)
                     for h in HANDS for r in REACH])

    from rich.progress import track

    items = range(episodes)
    for i in track(items, description="synthesising episodes", disable=not progress):
        task = TASKS[i % n_tasks]
        n = i // n_tasks
        cue = int(cue_order[i % n_tasks][n % N_CUES])
        rng = np.random.default_rng(children[i])
        camera = _camera_poses(rng, n_frames, task.motion)
        hands = _episode_motion(rng, n_frames, cue, reach_start)
        transforms = {**hands, **_body_transforms(camera, hands)}
        conf = {name: rng.uniform(0.85, 1.0, n_frames) for name in ALL_TRANSFORM_JOINTS}
        frames = np.stack([
            _render_frame(t, task, camera[t].astype(np.float64), K, hw, transforms, cue if t < cue_end else None, pads)
            for t in range(n_frames)
        ])
        folder = out / task.name
        folder.mkdir(parents=True, exist_ok=True)
        _write_hdf5(folder / f"{n}.hdf5", transforms, camera, K, conf, _attrs(task, seed, i))
        _write_video(folder / f"{n}.mp4", frames)
        labels["episodes"][f"{task.name}/{n}"] = {"cue": cue, "task": task.name}
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=1))
    return labels
