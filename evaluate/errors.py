"""Trajectory errors of forecasts, and their summaries: overall, per horizon frame, per
rollout step, per task and per joint group.

Errors are L2 distances in metres per window, frame and joint (``[N, F, 52]``); the metric's
one definition lives in ``thinkjepa.train.metrics``. ADE = mean over frames and joints, FDE =
mean over the joints of the last frame, Acc = share of joint errors below the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from thinkjepa.joints import JOINTS


def _group_indices() -> dict[str, list[int]]:
    wrists = [i for i, n in enumerate(JOINTS) if n.endswith("Hand")]
    tips = [i for i, n in enumerate(JOINTS) if n.endswith("Tip") and not n.endswith("IntermediateTip")]
    rest = [i for i in range(len(JOINTS)) if i not in wrists and i not in tips]
    return {"wrists": wrists, "fingertips": tips, "rest": rest}


JOINT_GROUPS: dict[str, list[int]] = _group_indices()
"""wrists (2), fingertips (10: thumb and four fingers per hand), rest (40)."""
assert len(JOINT_GROUPS["wrists"]) == 2 and len(JOINT_GROUPS["fingertips"]) == 10


def joint_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[N, F, 52, 3] x2 -> [N, F, 52] L2 errors (float64)."""
    import torch

    from thinkjepa.train.metrics import joint_errors as _joint_errors

    return _joint_errors(torch.from_numpy(np.asarray(pred, np.float64)), torch.from_numpy(np.asarray(target, np.float64))).double().numpy()


def scores(err: np.ndarray, acc_threshold_m: float) -> dict[str, float]:
    """ADE / FDE / Acc of errors ``[N, F, J]``."""
    return {
        "ADE": float(err.mean()),
        "FDE": float(err[:, -1].mean()),
        "Acc": float((err < acc_threshold_m).mean()),
    }


def per_window(err: np.ndarray, acc_threshold_m: float) -> dict[str, np.ndarray]:
    """ADE / FDE / Acc of every window: arrays of length N."""
    return {
        "ADE": err.mean(axis=(1, 2)),
        "FDE": err[:, -1].mean(axis=1),
        "Acc": (err < acc_threshold_m).mean(axis=(1, 2)),
    }


def by_frame(err: np.ndarray) -> list[float]:
    """ADE per future frame (the horizon curve)."""
    return [float(x) for x in err.mean(axis=(0, 2))]


def by_step(err: np.ndarray, frames_per_step: int, acc_threshold_m: float) -> list[dict[str, float]]:
    """Scores of each rollout step (consecutive blocks of ``frames_per_step`` frames)."""
    n_steps = err.shape[1] // frames_per_step
    return [scores(err[:, k * frames_per_step : (k + 1) * frames_per_step], acc_threshold_m) for k in range(n_steps)]


def by_group(err: np.ndarray, acc_threshold_m: float) -> dict[str, dict[str, float]]:
    return {g: scores(err[:, :, idx], acc_threshold_m) for g, idx in JOINT_GROUPS.items()}


def task_of(window_id: str) -> str:
    """EgoDex window ids are ``<task>/<episode>@<t>``."""
    return window_id.rpartition("@")[0].split("/")[0]


def by_task(err: np.ndarray, window_ids: list[str], acc_threshold_m: float) -> dict[str, dict[str, Any]]:
    tasks = np.array([task_of(w) for w in window_ids])
    out: dict[str, dict[str, Any]] = {}
    for t in sorted(set(tasks)):
        sel = tasks == t
        out[t] = {**scores(err[sel], acc_threshold_m), "windows": int(sel.sum())}
    return out


__all__ = ["JOINT_GROUPS", "by_frame", "by_group", "by_step", "by_task", "joint_errors", "per_window", "scores", "task_of"]
