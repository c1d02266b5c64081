"""SIGINT / SIGTERM through `tj run` (thinkjepa/interrupts.py): the encode stage stops at the next
batch, keeps what it committed, records nothing as failed, exits 130 / 143, and a rerun
finishes. (The vLLM path, where the engine core dies of a group Ctrl-C, is
tests/extract/test_interrupt.py.)"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from stage_fixtures import tiny_config
from typer.testing import CliRunner

from thinkjepa.app.cli.main import app
from thinkjepa.cache_schema import CacheReader, store_exists, verify
from thinkjepa.config import save_config

pytestmark = pytest.mark.slow


def _signal_after_first_commit(url: str, signum: int, fired: list[int]) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if store_exists(url) and CacheReader(url).keys():
                fired.append(len(CacheReader(url).keys()))
                os.kill(os.getpid(), signum)  # the main thread (CliRunner's) gets it, as from a terminal
                return
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_tj_run_encode_stops_cleanly_on_a_signal_and_resumes(tmp_path: Path, tiny_data, tiny_vjepa2, signum, code):
    cfg = tiny_config(tmp_path / "w", tiny_data, tiny_vjepa2, encoder={"batch_size": 1},
                      sampling={"windows_per_clip": 6, "window_hop": 2})
    cfg_file = save_config(cfg, tmp_path, "p.yaml")
    runner = CliRunner()
    assert runner.invoke(app, ["run", "index", "--config", str(cfg_file), "--no-progress"]).exit_code == 0
    url = cfg.url(cfg.encoder.cache)
    fired: list[int] = []
    watcher = _signal_after_first_commit(url, signum, fired)
    res = runner.invoke(app, ["run", "encode", "--config", str(cfg_file), "--no-progress"])
    watcher.join(5)
    text = " ".join(res.output.split())
    assert fired, "no commit was seen"
    assert res.exit_code == code, (text[-2000:], repr(res.exception))
    assert "rerun the same command to resume" in text and "Traceback" not in text
    reader = CacheReader(url)
    assert reader.failures() == {} and verify(url) == []
    kept = reader.keys()
    total = len(kept)
    res = runner.invoke(app, ["run", "encode", "--config", str(cfg_file), "--no-progress"])
    assert res.exit_code == 0, res.output
    after = CacheReader(url).keys()
    assert set(kept) <= set(after) and len(after) > total, "the signal must land mid-stage"
