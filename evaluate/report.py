"""``tj-eval``: compare trained variants and baselines on the held-out split.

Writes ``metrics.json`` (summary per model), ``metrics.parquet`` (one row per window and
model), ``report.md`` (comparison table, with the paper's published numbers for context) and
plots. Forecasts come from ``thinkjepa.evaluate.predict``; this module only aggregates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thinkjepa.config import PipelineConfig, save_config

# Project page snapshot (REFERENCE.md section 1): EgoDex part 2, 32 past -> 32 future frames.
PUBLISHED = {
    "thinkjepa": {"ADE": 0.0614, "FDE": 0.0556, "Acc": 0.5960},
    "jepa_only": {"ADE": 0.0706, "FDE": 0.0656, "Acc": 0.4706},
    "vlm_only": {"ADE": 0.1420, "FDE": 0.1441, "Acc": 0.0842},
}


@dataclass
class Forecasts:
    """World-frame forecasts of one model on one split, aligned with the targets."""

    model: str
    window_ids: list[str]
    pred: np.ndarray  # [N, F, 52, 3] metres, world frame
    target: np.ndarray  # [N, F, 52, 3]
    conf: np.ndarray | None = None  # [N, F, 52]
    extra: dict[str, Any] = field(default_factory=dict)


def joint_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """L2 error per window, future frame and joint: [N, F, 52] (the metric's one definition
    lives in thinkjepa.train.metrics)."""
    import torch

    from thinkjepa.train.metrics import joint_errors as _joint_errors

    return _joint_errors(torch.from_numpy(pred).double(), torch.from_numpy(target).double()).numpy()


def summarize(fc: Forecasts, acc_threshold_m: float) -> dict[str, Any]:
    """ADE (all future frames and joints), FDE (last frame), Acc (share of joint errors below
    the threshold), and ADE per horizon step, as the paper defines them."""
    err = joint_errors(fc.pred, fc.target)
    return {
        "model": fc.model,
        "windows": int(err.shape[0]),
        "ADE": float(err.mean()),
        "FDE": float(err[:, -1].mean()),
        "Acc": float((err < acc_threshold_m).mean()),
        "ADE_by_step": [float(x) for x in err.mean(axis=(0, 2))],
    }


def per_window_table(forecasts: list[Forecasts], acc_threshold_m: float) -> pa.Table:
    rows: dict[str, list[Any]] = {"model": [], "window_id": [], "ADE": [], "FDE": [], "Acc": []}
    for fc in forecasts:
        err = joint_errors(fc.pred, fc.target)
        for i, wid in enumerate(fc.window_ids):
            rows["model"].append(fc.model)
            rows["window_id"].append(wid)
            rows["ADE"].append(float(err[i].mean()))
            rows["FDE"].append(float(err[i, -1].mean()))
            rows["Acc"].append(float((err[i] < acc_threshold_m).mean()))
    return pa.table(rows)


def _markdown_table(summaries: list[dict[str, Any]]) -> str:
    lines = ["| model | windows | ADE (m) | FDE (m) | Acc@5cm | published ADE / FDE / Acc |", "|---|---|---|---|---|---|"]
    for s in summaries:
        pub = PUBLISHED.get(s["model"])
        pub_s = f"{pub['ADE']:.4f} / {pub['FDE']:.4f} / {pub['Acc']:.4f}" if pub else "-"
        lines.append(f"| {s['model']} | {s['windows']} | {s['ADE']:.4f} | {s['FDE']:.4f} | {s['Acc']:.4f} | {pub_s} |")
    return "\n".join(lines)


def _plots(out: Path, summaries: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["model"] for s in summaries]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [s["ADE"] for s in summaries], 0.4, label="ADE")
    ax.bar(x + 0.2, [s["FDE"] for s in summaries], 0.4, label="FDE")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("metres")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ade_fde.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in summaries:
        ax.plot(np.arange(1, len(s["ADE_by_step"]) + 1), s["ADE_by_step"], marker="o", label=s["model"])
    ax.set_xlabel("future frame")
    ax.set_ylabel("mean joint error (m)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "error_by_horizon.png", dpi=120)
    plt.close(fig)
    return ["ade_fde.png", "error_by_horizon.png"]


def write_report(cfg: PipelineConfig, forecasts: list[Forecasts], notes: list[str] | None = None) -> dict[str, Any]:
    out = cfg.path(cfg.eval.out)
    out.mkdir(parents=True, exist_ok=True)
    thr = cfg.eval.acc_threshold_m
    summaries = [summarize(fc, thr) for fc in forecasts]
    pq.write_table(per_window_table(forecasts, thr), out / "metrics.parquet")
    (out / "metrics.json").write_text(json.dumps({"split": cfg.eval.split, "models": summaries}, indent=2))
    plots = _plots(out, summaries)
    md = [
        "# ThinkJEPA evaluation",
        "",
        f"Split `{cfg.eval.split}`; metrics in metres, world frame; Acc = share of joint errors below "
        f"{thr:g} m. Published numbers are the paper's (EgoDex part 2, full-size models) and are "
        "shown for context only: they are comparable only for a full-size run on the same data.",
        "",
        _markdown_table(summaries),
        "",
        *[f"![{p}]({p})" for p in plots],
    ]
    if notes:
        md += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    (out / "report.md").write_text("\n".join(md) + "\n")
    save_config(cfg, out)
    return {"report": str(out / "report.md"), "models": {s["model"]: {k: s[k] for k in ("ADE", "FDE", "Acc")} for s in summaries}}


def run_eval(cfg: PipelineConfig) -> dict[str, Any]:
    """Forecast the eval split with every trained variant and the baselines, then report."""
    from thinkjepa.evaluate.predict import forecast_baselines, forecast_variant

    forecasts = [forecast_variant(cfg, v, cfg.eval.split) for v in cfg.eval.variants]
    forecasts += forecast_baselines(cfg, cfg.eval.split)
    return write_report(cfg, forecasts)
