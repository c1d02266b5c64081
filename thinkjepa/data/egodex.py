"""EgoDex episodes: ``<task>/<n>.mp4`` + ``<task>/<n>.hdf5`` (format: shared/fixtures/egodex/README.md).

``read_episode`` is the one validator of an episode: the manifest builder calls it too, so a
clip that indexes is a clip every later stage can read. It reads the HDF5 arrays in full and
checks the video cheaply (open, frame count, first and last frame), never decoding it all.

EgoDex as it is shipped varies; what the reader does with each variation:

- ``confidences`` is optional (not every EgoDex file has it). A missing group, or missing
  joints in it, mean *unknown* confidence: the episode is kept, the unknown entries read as
  1.0 ("tracked") and ``Episode.has_confidences`` is False (the manifest's
  ``has_confidences`` column). Losses and metrics mask joints with confidence 0 only
  (``train/losses.py``, ``train/metrics.py``), so for such an episode every joint counts in
  the joint loss, ADE/FDE and Acc, exactly as for an episode whose tracker saw every joint.
- Text attributes: ``description`` and ``llm_description`` may each be missing, empty or the
  string ``"None"``; ``episode_description`` falls back in the order written there. A missing
  ``task`` attribute falls back to the task folder name.
- Extra joints (body joints such as ``hip``, ``neck1``), extra attributes and attributes stored
  as bytes or arrays are accepted. Missing joint transforms, camera poses or intrinsics, and
  arrays of the wrong shape or with NaN/Inf are refused with the key that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from thinkjepa.config import SamplingConfig
from thinkjepa.data import video as _video
from thinkjepa.data.video import VideoError, probe_video, rates_differ
from thinkjepa.joints import JOINTS
from thinkjepa.sampling import TooShortError, windows_for_clip

__all__ = ["Episode", "EpisodeError", "read_episode", "decode_frames", "clip_id_for", "episode_description", "description_sources", "CAMERA_KEY", "INTRINSIC_KEY"]

CAMERA_KEY = "transforms/camera"
INTRINSIC_KEY = "camera/intrinsic"


class EpisodeError(ValueError):
    """An episode cannot be used; ``reason`` says why, ``clip_id`` which one."""

    def __init__(self, clip_id: str, reason: str) -> None:
        super().__init__(f"{clip_id}: {reason}")
        self.clip_id = clip_id
        self.reason = reason


@dataclass
class Episode:
    clip_id: str
    video_path: Path
    annotation_path: Path
    n_frames: int
    fps: float
    joints: np.ndarray
    """[T, 52, 3] float32 world positions, ``thinkjepa.joints.JOINTS`` order."""
    confidences: np.ndarray
    """[T, 52] float32 in [0, 1]; 1.0 where the file gives no confidence (see the module doc)."""
    camera_pose: np.ndarray
    """[T, 4, 4] float32 camera-to-world (convention: thinkjepa.data.camera)."""
    intrinsics: np.ndarray
    """[3, 3] float32 K for ``width`` x ``height`` frames."""
    width: int
    height: int
    metadata: dict[str, Any] = field(default_factory=dict)
    confidence_known: np.ndarray | None = None
    """[52] bool: joints whose ``confidences/<joint>`` the file has (None: all of them)."""

    @property
    def has_confidences(self) -> bool:
        """The file gives a tracking confidence for every joint."""
        return self.confidence_known is None or bool(np.all(self.confidence_known))

    @property
    def task(self) -> str:
        return self.clip_id.split("/", 1)[0]


def clip_id_for(annotation_path: str | Path) -> str:
    """``<task folder>/<episode>``: the folder name is the stable key (the task attr is free text)."""
    p = Path(annotation_path)
    return f"{p.parent.name}/{p.stem}"


def _plain(value: Any) -> Any:
    """HDF5 attribute -> plain Python (str, list of str, int, float, bool)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _metadata(attrs: h5py.AttributeManager, task_folder: str) -> dict[str, Any]:
    meta = {k: _plain(v) for k, v in attrs.items()}
    for key in ("description", "llm_description", "environment"):
        meta.setdefault(key, "")
    if not _text(meta.get("task")):
        meta["task"] = task_folder
    # short names the prompt builder and the manifest use; the raw llm_* attrs stay as they are
    meta["objects"] = _as_list(meta.get("llm_objects"))
    meta["verbs"] = _as_list(meta.get("llm_verbs"))
    return meta


def _text(value: Any) -> str:
    """An attribute as text; "" for missing, empty or EgoDex's literal ``"None"``."""
    text = " ".join(str(value).split()) if value is not None else ""
    return "" if text in ("None", "none", "nan") else text


def description_sources(meta: dict[str, Any]) -> tuple[str, ...]:
    """The attributes ``episode_description`` tries, in order: ``description``, the LLM
    description that ``which_llm_description`` selects (``1`` -> ``llm_description``, ``2`` ->
    ``llm_description2``; default 1), the other LLM description, ``description2``, ``task``."""
    which = _text(meta.get("which_llm_description")) or "1"
    llm = ("llm_description2", "llm_description") if which == "2" else ("llm_description", "llm_description2")
    return ("description", *llm, "description2", "task")


def episode_description(meta: dict[str, Any]) -> str:
    """One line saying what happens: the first non-empty attribute of ``description_sources``
    ("" when the file has none of them)."""
    for key in description_sources(meta):
        if text := _text(meta.get(key)):
            return text
    return ""


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [s.strip() for s in str(value).split(",") if s.strip()]


def _keys(f: h5py.File) -> set[str]:
    """``group/name`` of every member of the top-level groups, and the top-level names."""
    out = set(f.keys())
    for g in ("transforms", "confidences", "camera"):
        if isinstance(f.get(g), h5py.Group):
            out.update(f"{g}/{k}" for k in f[g].keys())
    return out


def _read_annotation(clip_id: str, path: Path) -> dict[str, Any]:
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise EpisodeError(clip_id, f"unreadable HDF5 {path.name} (truncated or corrupt: {e})") from e
    try:
        with f:
            present = _keys(f)  # one listing per group: `key in f` per joint costs a lookup each
            required = [f"transforms/{j}" for j in JOINTS] + [CAMERA_KEY, INTRINSIC_KEY]
            missing = [k for k in required if k not in present]
            if missing:
                shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
                raise EpisodeError(clip_id, f"missing key(s) in {path.name}: {shown}")
            # confidences are optional in EgoDex: a missing joint means "unknown" (module doc)
            known = np.array([f"confidences/{j}" in present for j in JOINTS])
            conf_keys = [f"confidences/{j}" for j, k in zip(JOINTS, known) if k]
            per_frame = [k for k in required if k != INTRINSIC_KEY] + conf_keys
            ds = {k: f[k] for k in per_frame}  # each dataset opened once
            # poses in whole numbers would be metres truncated to 0 or 1: refused, never cast
            not_float = [(k, d.dtype) for k, d in [*ds.items(), (INTRINSIC_KEY, f[INTRINSIC_KEY])]
                         if not k.startswith("confidences/") and not np.issubdtype(d.dtype, np.floating)]
            if not_float:
                raise EpisodeError(clip_id, f"non-float pose data in {path.name}: "
                                            + ", ".join(f"{k} is {dt}" for k, dt in not_float[:5]))
            shapes = {k: d.shape for k, d in ds.items()}
            T = shapes[CAMERA_KEY][0] if shapes[CAMERA_KEY] else -1
            uneven = [k for k in per_frame if not shapes[k] or shapes[k][0] != T]
            if uneven:
                raise EpisodeError(
                    clip_id,
                    f"per-frame arrays disagree on the frame count in {path.name}: {CAMERA_KEY} has {T} rows, "
                    + ", ".join(f"{k} has {shapes[k][0] if shapes[k] else 0}" for k in uneven[:5]),
                )
            transforms = np.stack([ds[f"transforms/{j}"][()] for j in JOINTS], axis=1)
            camera = ds[CAMERA_KEY][()]
            K = f[INTRINSIC_KEY][()]
            conf = np.ones((T, len(JOINTS)), dtype=np.float32)
            for i in np.flatnonzero(known):
                key = f"confidences/{JOINTS[i]}"
                if shapes[key] != (T,):
                    raise EpisodeError(clip_id, f"{key} in {path.name} has shape {shapes[key]}, expected ({T},)")
                conf[:, i] = ds[key][()]
            meta = _metadata(f.attrs, path.parent.name)
    except EpisodeError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise EpisodeError(clip_id, f"unreadable HDF5 {path.name} (truncated or corrupt: {e})") from e
    return {"transforms": transforms, "camera": camera, "K": K, "conf": conf, "conf_known": known, "meta": meta}


def _check_arrays(clip_id: str, a: dict[str, Any]) -> None:
    tr, cam, K, conf = a["transforms"], a["camera"], a["K"], a["conf"]
    T = cam.shape[0] if cam.ndim == 3 else -1
    if cam.shape != (T, 4, 4) or T < 1:
        raise EpisodeError(clip_id, f"{CAMERA_KEY} has shape {cam.shape}, expected (T, 4, 4)")
    if tr.shape != (T, len(JOINTS), 4, 4):
        raise EpisodeError(clip_id, f"joint transforms have shape {tr.shape}, expected ({T}, 52, 4, 4) like {CAMERA_KEY}")
    if conf.shape != (T, len(JOINTS)):
        raise EpisodeError(clip_id, f"confidences have shape {conf.shape}, expected ({T}, 52)")
    if conf is not None:
        _check_confidences(clip_id, conf)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise EpisodeError(clip_id, f"{INTRINSIC_KEY} is not a valid 3x3 K matrix: {K.tolist()}")
    for name, arr in (("joint transforms", tr), ("camera poses", cam)):
        bad = ~np.isfinite(arr).reshape(T, -1).all(axis=1)
        if bad.any():
            frames = np.flatnonzero(bad)
            where = ""
            if arr is tr:
                bad_j = ~np.isfinite(tr).reshape(T, len(JOINTS), -1).all(axis=(0, 2))
                where = f" (joints {', '.join(JOINTS[j] for j in np.flatnonzero(bad_j)[:5])})"
            raise EpisodeError(
                clip_id, f"NaN/Inf in {name}{where} at {bad.sum()} frame(s), first {frames[:5].tolist()}"
            )
    _check_rigid(clip_id, cam)


def _check_rigid(clip_id: str, cam: np.ndarray) -> None:
    """A camera pose must be a rigid transform: an all-zero (or scaled, sheared) matrix would put
    every joint at the camera origin in camera coordinates, silently."""
    det = np.linalg.det(cam[:, :3, :3].astype(np.float64))
    last = np.abs(cam[:, 3, :].astype(np.float64) - [0, 0, 0, 1]).max(axis=1)
    bad = (np.abs(det - 1) > 0.05) | (last > 1e-3)
    if bad.any():
        frames = np.flatnonzero(bad)
        raise EpisodeError(
            clip_id, f"{CAMERA_KEY} is not a rigid transform at {bad.sum()} frame(s), first {frames[:5].tolist()} "
            f"(rotation determinant {det[frames[0]]:.3g}, expected 1, last row [0, 0, 0, 1]): an all-zero or "
            "placeholder pose; re-export the episode's camera poses")


def _check_confidences(clip_id: str, conf: np.ndarray) -> None:
    """Confidences weight the loss: NaN or values outside [0, 1] would silently skew it."""
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
    if bad.any():
        frames, joints = np.flatnonzero(bad.any(axis=1)), np.flatnonzero(bad.any(axis=0))
        vals = conf[bad]
        raise EpisodeError(
            clip_id, f"confidences must be finite and in [0, 1]: {int(bad.sum())} value(s) are not "
            f"(e.g. {vals[:3].tolist()}), joints {', '.join(JOINTS[j] for j in joints[:5])}, "
            f"first frames {frames[:5].tolist()}")


def read_episode(
    video_path: str | Path,
    annotation_path: str | Path,
    clip_id: str | None = None,
    sampling: SamplingConfig | None = None,
    check_video: bool = True,
    fps: float | None = None,
) -> Episode:
    """Read and validate one episode; raises ``EpisodeError(clip_id, reason)``.

    ``sampling``: also reject an episode too short for these windows. ``fps``: also reject a
    video at another frame rate (``data.fps``; the windows count frames, so at another rate
    they would span another time). ``check_video=False``
    skips opening the video (fps then assumed ``fps`` or 30, size from K's principal point); use it only
    for episodes that were validated before (e.g. listed in a manifest).
    """
    video_path, annotation_path = Path(video_path), Path(annotation_path)
    clip_id = clip_id or clip_id_for(annotation_path)
    for p, kind in ((annotation_path, "annotation (HDF5)"), (video_path, "video (MP4)")):
        if not p.is_file():
            raise EpisodeError(clip_id, f"missing {kind} file {p}")
    a = _read_annotation(clip_id, annotation_path)
    _check_arrays(clip_id, a)
    T = a["camera"].shape[0]
    if check_video:
        try:
            info = probe_video(video_path)
        except VideoError as e:
            raise EpisodeError(clip_id, str(e)) from e
        if info.n_frames != T:
            raise EpisodeError(
                clip_id, f"frame count mismatch: video has {info.n_frames} frames, HDF5 has {T}"
            )
        if fps is not None and rates_differ(info.fps, fps):
            raise EpisodeError(
                clip_id, f"frame rate {info.fps:g} fps, but data.fps is {fps:g}: its windows would span "
                f"{fps / info.fps:.2f}x the configured time; re-encode the video or set data.fps"
            )
        fps, width, height = info.fps, info.width, info.height
    else:
        fps, width, height = fps or 30.0, int(round(2 * a["K"][0, 2])), int(round(2 * a["K"][1, 2]))
    if sampling is not None:
        try:
            windows_for_clip(clip_id, T, sampling)
        except TooShortError as e:
            raise EpisodeError(clip_id, f"too short: {str(e).removeprefix(clip_id + ': ')}") from e
    return Episode(
        clip_id=clip_id,
        video_path=video_path,
        annotation_path=annotation_path,
        n_frames=T,
        fps=fps,
        joints=np.ascontiguousarray(a["transforms"][:, :, :3, 3], dtype=np.float32),
        confidences=a["conf"].astype(np.float32),
        camera_pose=a["camera"].astype(np.float32),
        intrinsics=a["K"].astype(np.float32),
        width=width,
        height=height,
        metadata=a["meta"],
        confidence_known=None if a["conf_known"].all() else a["conf_known"],
    )


def decode_frames(
    video_path: str | Path,
    indices: list[int] | tuple[int, ...] | np.ndarray,
    size: int | tuple[int, int] | None = None,
    clip_id: str | None = None,
) -> np.ndarray:
    """Frames ``indices`` of an episode's video as uint8 ``[N, H, W, 3]`` in the requested order
    (see ``thinkjepa.data.video.decode_frames``); failures raise ``EpisodeError``."""
    try:
        return _video.decode_frames(video_path, indices, size)
    except VideoError as e:
        raise EpisodeError(clip_id or clip_id_for(video_path), str(e)) from e
