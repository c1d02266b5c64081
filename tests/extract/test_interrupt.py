"""Ctrl-C on a real `tj-extract run` (vLLM engine, tiny Qwen3-VL Thinking): the process group
gets SIGINT, as from a terminal. vLLM's engine core dies of it; the run must exit 130, record
no window as failed, keep every committed entry, and a rerun must finish the shard."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_backends import random_requests
from test_runner import SAMPLING, _committed, _env, _run_cmd, all_window_keys, write_config

from thinkjepa.cache_schema import CacheReader, verify
from thinkjepa.config import load_config
from thinkjepa.data.manifest import build_manifest
from thinkjepa.data.synth import synthesize_dataset
from thinkjepa.extract.runner import _engine_dead

pytestmark = pytest.mark.slow  # two vLLM engine starts (~1-2 min each on 2 shared cores)


@pytest.fixture()
def many_windows(tmp_path: Path, tiny_thinker_cfg) -> Path:
    root = tmp_path / "data"
    synthesize_dataset(root, episodes=4, seed=4, n_frames=40, size=64, tasks=4)
    manifest = tmp_path / "manifest.parquet"
    base = load_config(None, use_default_file=False, base={"sampling": SAMPLING})
    build_manifest(root, manifest, base.data, base.sampling)
    sampling = {**SAMPLING, "windows_per_clip": 6, "window_hop": 4}
    # one request per engine call: the signal lands between commits, with most windows to go
    return write_config(tmp_path / "extract.yaml", tmp_path / "run", manifest, tiny_thinker_cfg, sampling,
                        backend="vllm", clips_per_call=1)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130)])
def test_group_sigint_exits_130_records_nothing_failed_and_resumes(many_windows: Path, sig: int, code: int) -> None:
    cfg = load_config(many_windows)
    url = cfg.url(cfg.thinker.cache)
    keys = all_window_keys(cfg)
    assert len(keys) >= 20
    proc = subprocess.Popen(_run_cmd(many_windows), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: the engine core is in it
    try:
        deadline = time.monotonic() + 400
        while _committed(url) < 2:
            assert proc.poll() is None, f"extraction exited early: {proc.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no commit within 400 s"
            time.sleep(0.05)
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = " ".join(err.decode().split())
    assert proc.returncode == code, text[-3000:]
    assert "rerun the same command to resume" in text and "fix the input" not in text
    reader = CacheReader(url)
    kept = reader.keys()
    assert reader.failures() == {}, "a window was recorded as failed by the interrupt"
    assert 2 <= len(kept) < len(keys), "the signal must land mid-shard"
    assert verify(url) == []

    resumed = subprocess.run(_run_cmd(many_windows), env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(keys) - len(kept)} extracted, {len(kept)} already done" in " ".join(resumed.stderr.split())
    assert CacheReader(url).keys() == keys


def test_an_engine_that_dies_under_the_hooks_dump_wakes_the_call(tiny_thinker_cfg):
    """The race a group Ctrl-C can hit: generation is done, the driver has asked the worker to
    dump the batch's hidden states, and the engine core dies before it answers. vLLM never
    resolves that call; the backend must wake it and fail the batch as a dead engine (which the
    runner does not record as failed), not wait forever."""
    from thinkjepa.extract.backend_vllm import VLLMThinker

    backend = VLLMThinker(tiny_thinker_cfg.model_copy(update={"capture": "hooks"}))
    cores = [p.pid for p in backend.llm.llm_engine.engine_core.resources.engine_manager.processes]
    rpc = backend.llm.collective_rpc

    def freeze_then_kill_under(method, *args, **kwargs):
        if method == "thinkjepa_dump_hidden_states":  # the call goes out; its answer never comes
            for pid in cores:
                os.kill(pid, signal.SIGSTOP)
            threading.Timer(1.0, lambda: [os.kill(pid, signal.SIGKILL) for pid in cores]).start()
        return rpc(method, *args, **kwargs)

    backend.llm.collective_rpc = freeze_then_kill_under
    out: list = []
    try:
        call = threading.Thread(target=lambda: out.extend(backend.extract(random_requests(seed=7, n=2))), daemon=True)
        call.start()
        call.join(120)
        assert not call.is_alive(), "extract still waits on the dead engine after 120 s"
    finally:
        for pid in cores:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        backend.close()
    assert len(out) == 2
    assert all(isinstance(o, Exception) and _engine_dead(o) for o in out), out
