"""The report's pictures: horizon curves with error bands over seeds, the histogram of
per-window ADE differences, and trajectory overlays (on the last observed video frame and
top-down in 3D). Each function writes one PNG and returns its file name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from thinkjepa.evaluate.errors import JOINT_GROUPS

_DRAWN = JOINT_GROUPS["wrists"] + JOINT_GROUPS["fingertips"]
_COLORS = {"truth": "#2ca02c", "guided": "#1f77b4", "reference": "#ff7f0e", "past": "#7f7f7f"}
_END = {"truth": "o", "guided": "x", "reference": "+"}
REF_STYLE = "reference"  # dashed, so it stays visible where it coincides with the guided model


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def horizon_curves(out: Path, name: str, curves: dict[str, tuple[list[float], list[float]]], title: str,
                   frames_per_step: int | None = None) -> str:
    """ADE per future frame, one line per model, a band of +- one std over seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for model, (mean, std) in curves.items():
        x = np.arange(1, len(mean) + 1)
        m, s = np.asarray(mean), np.asarray(std)
        style = "--" if model in ("last_observed", "constant_velocity") else "-"
        (line,) = ax.plot(x, m, style, marker="o", ms=3, label=model)
        if s.any():
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2)
    if frames_per_step:
        for k in range(1, len(next(iter(curves.values()))[0]) // frames_per_step):
            ax.axvline(k * frames_per_step + 0.5, color="k", lw=0.5, alpha=0.4)
    ax.set_xlabel("future frame")
    ax.set_ylabel("mean joint error (m)")
    return _save(plt, fig, ax, out, name, title)


def _save(plt, fig, ax, out: Path, name: str, title: str) -> str:
    """Title, legend, write ``out/name`` and free the figure (matplotlib keeps open figures alive)."""
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def diff_histogram(out: Path, name: str, diffs: np.ndarray, title: str, xlabel: str = "thinkjepa - jepa_only") -> str:
    """Per-window ADE(model) - ADE(reference): left of 0 the model is better."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(diffs, bins=min(30, max(5, len(diffs) // 2)), color="#1f77b4", alpha=0.8)
    ax.axvline(0, color="k", lw=1)
    ax.axvline(float(np.mean(diffs)), color="r", lw=1, ls="--", label=f"mean {np.mean(diffs):+.4f} m")
    ax.set_xlabel(f"ADE difference per window (m), {xlabel}")
    ax.set_ylabel("windows")
    return _save(plt, fig, ax, out, name, title)


def trajectory_overlays(out: Path, name: str, items: list[dict[str, Any]], title: str) -> str:
    """One row per window: predicted vs true wrist and fingertip paths projected on the last
    observed frame (left; camera intrinsics and that frame's pose), and top-down world x-z
    (right; EgoDex's y is up). ``items``: dicts with ``window_id``, ``image`` [H, W, 3] or None,
    ``K``, ``pose`` (4x4 camera-to-world of the last observed frame), ``past`` [P, 52, 3],
    ``truth`` / ``guided`` / ``reference`` [F, 52, 3] world, ``labels`` {role: model name}, ``gain`` (m)."""
    from thinkjepa.data.camera import project_points

    plt = _plt()
    fig, axes = plt.subplots(len(items), 2, figsize=(10, 3.6 * len(items)), squeeze=False)
    for row, it in zip(axes, items):
        ax_img, ax_top = row
        if it["image"] is not None:
            ax_img.imshow(it["image"])
            h, w = it["image"].shape[:2]
            ax_img.set_xlim(0, w)
            ax_img.set_ylim(h, 0)
        names = {"past": "observed", "truth": "truth", **it.get("labels", {})}
        for key in ("past", "truth", "guided", "reference"):
            traj = it[key][:, _DRAWN]  # [F, J, 3]
            uv, z = project_points(traj.reshape(-1, 3)[None], it["pose"], it["K"])
            uv = uv[0].reshape(traj.shape[0], traj.shape[1], 2)
            front = z[0].reshape(traj.shape[0], traj.shape[1]) > 0
            for j in range(traj.shape[1]):
                ok = front[:, j]
                ls = "--" if key == REF_STYLE else "-"
                ax_img.plot(uv[ok, j, 0], uv[ok, j, 1], ls, color=_COLORS[key], lw=1.2 if key != "past" else 0.8,
                            label=names.get(key, key) if j == 0 else None)
                ax_top.plot(traj[:, j, 0], traj[:, j, 2], ls, color=_COLORS[key], lw=1.0, label=names.get(key, key) if j == 0 else None)
                if key != "past":  # where each forecast ends: short paths stay visible
                    ax_top.plot(traj[-1, j, 0], traj[-1, j, 2], _END[key], color=_COLORS[key], ms=3)
                    if ok[-1]:
                        ax_img.plot(uv[-1, j, 0], uv[-1, j, 1], _END[key], color=_COLORS[key], ms=2)
        ax_img.set_title(f"{it['window_id']}  (gain {1000 * it['gain']:+.3f} mm)", fontsize=8)
        ax_img.axis("off")
        ax_top.set_aspect("equal", adjustable="datalim")
        ax_top.set_xlabel("world x (m)")
        ax_top.set_ylabel("world z (m)")
        ax_top.set_title("top-down: wrists and fingertips", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower right")
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


__all__ = ["diff_histogram", "horizon_curves", "trajectory_overlays"]
