"""Ctrl-C on `tj demo` as from a terminal: the whole process group (the demo, vLLM's engine core
and worker) gets SIGINT while extraction is committing. The demo must exit 130, record no window
as failed, keep every committed entry, say how to resume, and the same command must then finish
the demo from where it stopped. (`tj run` and `tj-extract run` have their own tests:
tests/test_interrupts.py, tests/extract/test_interrupt.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thinkjepa.cache_schema import CacheReader, store_exists, verify

pytestmark = pytest.mark.slow  # two demo runs, two vLLM engine starts

REPO = Path(__file__).resolve().parents[1]
# the e2e test's small demo; one clip per engine call, so the signal lands between commits
SETS = ["train.epochs=2", "demo.scenes=6", "demo.episodes_per_scene=4", "thinker.clips_per_call=1"]


def _cmd(workdir: Path) -> list[str]:
    sets = [a for s in SETS for a in ("--set", s)]
    return [sys.executable, "-m", "thinkjepa.app.cli.main", "demo", "--workdir", str(workdir), *sets]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}


def _committed(url: str) -> int:
    return len(CacheReader(url).keys()) if store_exists(url) else 0


def test_group_sigint_during_demo_extraction_exits_130_and_the_rerun_finishes(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    url = str(workdir / "cache" / "vlm.zarr")
    proc = subprocess.Popen(_cmd(workdir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, as a terminal's job
    try:
        deadline = time.monotonic() + 600
        while _committed(url) < 2:
            assert proc.poll() is None, f"the demo exited early: {proc.stdout.read().decode()[-3000:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no extraction commit within 600 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = " ".join(out.decode().split())
    assert proc.returncode == 130, text[-3000:]
    assert "rerun the same command to resume" in text, text[-3000:]
    assert "fix the input" not in text and "Traceback" not in text, text[-3000:]
    reader = CacheReader(url)
    kept = reader.keys()
    assert reader.failures() == {}, "a window was recorded as failed by the interrupt"
    assert len(kept) >= 2 and verify(url) == []
    assert not (workdir / "eval" / "metrics.json").exists(), "the signal must land before the demo's end"

    resumed = subprocess.run(_cmd(workdir), env=_env(), capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    after = CacheReader(url)
    assert set(kept) <= set(after.keys()) and len(after.keys()) > len(kept) and after.failures() == {}
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert {"thinkjepa", "jepa_matched"} <= set(metrics["models"])
