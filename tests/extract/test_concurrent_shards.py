"""Two shards of one extraction started at the same moment on one machine, as the cluster
recipe runs them (docs/distributed.md): both engines come up, both commands exit 0, and the
shared VLM cache holds every window of the manifest. Each is its own `tj-extract` process with
its own vLLM engine, on the tiny random Qwen3-VL Thinking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from thinkjepa.app.cli.main import app
from thinkjepa.app.demo import demo_config
from thinkjepa.cache_schema import CacheReader
from thinkjepa.sampling import windows_for_clip
from thinkjepa.shards import shard_of


@pytest.mark.slow
def test_two_shards_started_together_both_finish_and_fill_the_cache(tmp_path: Path) -> None:
    from thinkjepa.data.synth import synthesize_dataset
    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking
    from thinkjepa.tiny.vjepa2 import build_tiny_vjepa2

    data = tmp_path / "data"
    synthesize_dataset(data, episodes=6, seed=0, n_frames=32, size=64, tasks=3)
    qwen = build_tiny_qwen3vl_thinking(tmp_path / "models" / "qwen", seed=0)
    vjepa = build_tiny_vjepa2(tmp_path / "models" / "vjepa", frames_per_clip=8, crop_size=64, seed=0)
    cfg = demo_config(tmp_path / "work", data, qwen, vjepa, ["sampling.windows_per_clip=2", "sampling.window_hop=4"])
    assert cfg.thinker.backend == "vllm"
    config = tmp_path / "pipelines.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    res = CliRunner().invoke(app, ["run", "index", "--config", str(config)])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(cfg.path(cfg.data.manifest)).to_pylist()
    assert {shard_of(r["clip_id"], 2) for r in rows} == {0, 1}, "both shards must hold a clip"

    script = Path(sys.executable).with_name("tj-extract")  # the console script the README runs
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen([str(script), "run", "--config", str(config), "--shard", f"{i}/2", "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
        for i in (0, 1)
    ]
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"shard {i}/2 exited {p.returncode}:\n{out[-3000:]}"

    expected = {w.window_id for r in rows for w in windows_for_clip(r["clip_id"], r["n_frames"], cfg.sampling)}
    assert len(expected) == 2 * len(rows)
    reader = CacheReader(cfg.url(cfg.thinker.cache))
    assert set(reader.keys()) == expected
    status = CliRunner().invoke(app, ["status", "--config", str(config), "--json"])
    extract = next(r for r in json.loads(status.stdout) if r["stage"] == "extract")
    assert not extract["stale"] and extract["windows"]["done"] == len(expected), extract
