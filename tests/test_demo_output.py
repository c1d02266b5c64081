"""`tj demo` as a user runs it, in a real process: its console shows the pipeline's own lines
and no third-party WARNING the project could avoid (those go to <workdir>/logs); and a small
folder of two real EgoDex episodes of two tasks finishes with a report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs the whole demo (vLLM engine start included)

FAST = ["train.epochs=2", "train.checkpoint_every=4", "demo.scenes=6", "demo.episodes_per_scene=4"]
# what third-party warnings look like: vLLM / logging ("WARNING"), torch's glog-style ("W1203 07:40:10"),
# Python warnings ("UserWarning: ..."); the project's own read "warning: ..."
THIRD_PARTY_WARNING = re.compile(r"\bWARNING\b|^W\d{4} \d\d:\d\d|\w+Warning: ")


def _demo(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = [a for s in FAST for a in ("--set", s)]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "thinkjepa.app.cli.main", "demo", "--workdir", str(workdir), *sets, *extra],
        capture_output=True, text=True, timeout=1500, env=env, cwd=workdir.parent,
    )


def test_demo_console_holds_no_third_party_warning(tmp_path: Path) -> None:
    res = _demo(tmp_path / "demo")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "demo finished" in out and "▶ extract" in out  # the pipeline's own lines are there
    leaked = [line for line in out.splitlines() if THIRD_PARTY_WARNING.search(line)]
    assert leaked == [], "\n".join(leaked)
    log = (tmp_path / "demo" / "logs" / "third_party.log").read_text()
    assert "vllm" in log  # the engine's log went to the file instead
    assert "Attempted to load weight" not in log  # tiny checkpoint saved in the dtype the engine loads


def test_small_folder_demo_splits_by_episode_and_finishes_with_a_report(egodex_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "two"
    for cid in ("lock_unlock_key/9", "sort_beads/9"):
        (root / cid).parent.mkdir(parents=True, exist_ok=True)
        for ext in (".mp4", ".hdf5"):
            shutil.copyfile(egodex_root / f"{cid}{ext}", root / f"{cid}{ext}")
    res = _demo(tmp_path / "demo", "--data-root", str(root))
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 0, out
    assert (tmp_path / "demo" / "eval" / "report.md").is_file() and "demo finished" in out
    assert "run encode/extract first" not in out  # no advice to rerun a stage that ran
    assert out.count("grouped by episode") == 1 and "cross-task generalisation is not tested" in out
