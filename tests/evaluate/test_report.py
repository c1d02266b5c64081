"""tj-eval's aggregation: the paper's metric definitions and the files a report consists of."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from thinkjepa.config import PipelineConfig
from thinkjepa.evaluate.report import Forecasts, summarize, write_report


def _forecast(model: str, offsets_m: list[float], frames: int = 4) -> Forecasts:
    """Windows whose every joint is off by a known distance (along x) in every future frame,
    except the last frame, which is off by twice that."""
    n = len(offsets_m)
    rng = np.random.default_rng(0)
    target = rng.normal(size=(n, frames, 52, 3)).astype(np.float32)
    pred = target.copy()
    for i, d in enumerate(offsets_m):
        pred[i, :, :, 0] += d
        pred[i, -1, :, 0] += d
    return Forecasts(model, [f"task/{i}@10" for i in range(n)], pred, target)


def test_ade_fde_acc_follow_the_paper_definitions():
    fc = _forecast("m", [0.01, 0.07])
    s = summarize(fc, acc_threshold_m=0.05)
    # frames 1-3 off by d, last frame by 2d: ADE = mean over frames and joints
    assert s["ADE"] == pytest.approx(np.mean([(3 * 0.01 + 0.02) / 4, (3 * 0.07 + 0.14) / 4]), rel=1e-5)
    assert s["FDE"] == pytest.approx(np.mean([0.02, 0.14]), rel=1e-5)
    # window 0: every error < 5 cm; window 1: none
    assert s["Acc"] == pytest.approx(0.5)
    assert len(s["ADE_by_step"]) == 4 and s["ADE_by_step"][-1] == pytest.approx(0.08, rel=1e-5)


def test_report_files_and_rows(tmp_path):
    cfg = PipelineConfig(workdir=str(tmp_path))
    result = write_report(cfg, [_forecast("thinkjepa", [0.01, 0.02]), _forecast("last_observed", [0.1, 0.2])])
    out = tmp_path / "eval"
    assert result["models"]["thinkjepa"]["ADE"] < result["models"]["last_observed"]["ADE"]
    table = pq.read_table(out / "metrics.parquet").to_pylist()
    assert [(r["model"], r["window_id"]) for r in table] == [
        ("thinkjepa", "task/0@10"), ("thinkjepa", "task/1@10"), ("last_observed", "task/0@10"), ("last_observed", "task/1@10")]
    summary = json.loads((out / "metrics.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["thinkjepa", "last_observed"]
    md = (out / "report.md").read_text()
    assert "| thinkjepa | 2 |" in md and "0.0614" in md  # published numbers shown for context
    assert (out / "ade_fde.png").stat().st_size > 1000 and (out / "error_by_horizon.png").exists()
    assert (out / "config.yaml").exists()
