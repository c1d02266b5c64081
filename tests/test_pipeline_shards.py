"""`tj status` / `tj run` with sharded stages, as a cluster user runs them: the shards run as
`tj-extract run --shard I/N` and `tj encode --shard I/N` (or `tj run --shard I/N`), then one
dependent job runs `tj run train eval`.

Real components: the tiny random Qwen3-VL Thinking through the transformers backend (the
vLLM engine is covered by test_e2e), tiny V-JEPA2, Zarr caches on disk, accelerate training.
"""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from thinkjepa.app.cli.main import app
from thinkjepa.app.demo import demo_config
from thinkjepa.cache_schema import CacheReader
from thinkjepa.shards import shard_of

runner = CliRunner()

SETTINGS = [
    "thinker.backend=transformers",
    "sampling.windows_per_clip=2",
    "sampling.window_hop=4",
    "train.epochs=1",
    "train.checkpoint_every=50",
]


def tj(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


def status_rows(config: str, *sets: str) -> dict[str, dict]:
    extra = [a for s in sets for a in ("--set", s)]
    return {r["stage"]: r for r in json.loads(tj("status", "--config", config, "--json", *extra).stdout)}


def stale(rows: dict[str, dict]) -> list[str]:
    return [name for name, r in rows.items() if r["stale"]]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A workdir with synthetic data, tiny models and a pipelines.yaml, nothing run yet."""
    from thinkjepa.data.synth import synthesize_dataset
    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking
    from thinkjepa.tiny.vjepa2 import build_tiny_vjepa2

    base = tmp_path_factory.mktemp("cluster")
    data = base / "data"
    synthesize_dataset(data, episodes=6, seed=0, n_frames=32, size=64, tasks=3)
    qwen = build_tiny_qwen3vl_thinking(base / "models" / "qwen", seed=0)
    vjepa = build_tiny_vjepa2(base / "models" / "vjepa", frames_per_clip=8, crop_size=64, seed=0)
    cfg = demo_config(base / "work", data, qwen, vjepa, SETTINGS)
    config = base / "pipelines.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, str(config)


@pytest.mark.slow
def test_two_shards_then_train_eval_and_a_thinker_change_redoes_one_shard(project):
    cfg, config = project
    tj("run", "index", "--config", config)
    clip_ids = [r["clip_id"] for r in __import__("pyarrow.parquet").parquet.read_table(
        cfg.path(cfg.data.manifest)).to_pylist()]
    assert {shard_of(c, 2) for c in clip_ids} == {0, 1}, "both shards must hold a clip"

    # shard 0 of both sharded stages, by the stage commands themselves (not `tj run`)
    tj("extract", "run", "--config", config, "--shard", "0/2", "--no-progress")
    tj("encode", "--config", config, "--shard", "0/2")
    rows = status_rows(config)
    extract_status = json.loads(tj("extract", "status", "--config", config, "--json").stdout)
    assert rows["extract"]["windows"] == {k: extract_status["totals"][k] for k in rows["extract"]["windows"]}
    assert rows["extract"]["windows"]["pending"] > 0 and rows["extract"]["windows"]["done"] > 0
    assert rows["extract"]["incomplete_shards"] == ["1/2"]
    assert rows["extract"]["next"] == "tj run --shard 1/2 extract"
    assert rows["encode"]["incomplete_shards"] == ["1/2"]

    # train needs every shard: it refuses, naming the pending one, and runs nothing
    refused = tj("run", "train", "--config", config, ok=False)
    assert refused.exit_code == 1
    assert "1/2" in refused.output and "--allow-partial" in refused.output
    assert not cfg.path(cfg.train.out).exists()

    # shard 1: afterwards every stage up to encode is fresh without any `tj run` of them
    tj("extract", "run", "--config", config, "--shard", "1/2", "--no-progress")
    tj("encode", "--config", config, "--shard", "1/2")
    rows = status_rows(config)
    assert stale(rows) == ["train", "eval"], rows
    for name in ("extract", "encode"):
        w = rows[name]["windows"]
        assert w["done"] == w["windows"] > 0 and w["pending"] == w["stale"] == w["failed"] == 0
        assert rows[name]["shard_count"] == 2 and rows[name]["incomplete_shards"] == []

    # the dependent job: train and eval, after which everything is fresh
    tj("run", "train", "eval", "--config", config)
    rows = status_rows(config)
    assert stale(rows) == [], rows
    assert json.loads((cfg.path("{workdir}/state") / "train.json").read_text())["partial"] is None

    # a thinker change: exactly extract, train and eval are stale; every window of extract is
    changed = "thinker.max_new_tokens=4"
    rows = status_rows(config, changed)
    assert stale(rows) == ["extract", "train", "eval"], rows
    assert rows["extract"]["windows"]["stale"] == rows["extract"]["windows"]["windows"]
    assert rows["extract"]["incomplete_shards"] == ["0/2", "1/2"]

    url = cfg.url(cfg.thinker.cache)
    before = {r["key"]: r for r in CacheReader(url).records()}
    result = tj("run", "--shard", "1/2", "--config", config, "--set", changed)
    assert "train: left for later" in result.output and "eval: left for later" in result.output
    after = {r["key"]: r for r in CacheReader(url).records()}
    assert set(after) == set(before)
    for key, rec in after.items():
        in_shard_1 = shard_of(key.rpartition("@")[0], 2) == 1
        assert (rec["fingerprint"] != before[key]["fingerprint"]) == in_shard_1, key
        assert (rec["committed_at"] != before[key]["committed_at"]) == in_shard_1, key
    rows = status_rows(config, changed)
    assert rows["extract"]["incomplete_shards"] == ["0/2"]
    shard0 = sum(1 for k in after if shard_of(k.rpartition("@")[0], 2) == 0)
    assert rows["extract"]["windows"]["stale"] == shard0
    assert rows["encode"]["stale"] is False  # the thinker is no input of encode
    # the per-shard stamp carries what it ran on
    stamp = json.loads((cfg.path("{workdir}/state") / "extract.shard-00001-of-00002.json").read_text())
    assert stamp["part"] == "shard-00001-of-00002" and stamp["sections"]["thinker"] == cfg.model_copy(
        update={"thinker": cfg.thinker.model_copy(update={"max_new_tokens": 4})}).section_fingerprint("thinker")

    # --allow-partial trains on what is there and says so, in the run and in `tj status`
    tj("run", "train", "--config", config, "--set", changed, "--allow-partial")
    state = json.loads((cfg.path("{workdir}/state") / "train.json").read_text())
    assert "extract" in state["partial"] and "0/2" in state["partial"]["extract"]
    # what it trained on: the fresh windows of shard 1 only; shard 0's stale guidance is left out
    from thinkjepa.train.checkpoint import seed_run_dir
    from thinkjepa.train.run_inputs import INPUTS_FILE

    run = seed_run_dir(cfg.path(cfg.train.out), cfg.eval.variants[0], cfg.train.seeds[0])
    used = json.loads((run / INPUTS_FILE).read_text())["windows"]
    keys = [k for ids in used.values() for k in ids]
    assert keys and {shard_of(k.rpartition("@")[0], 2) for k in keys} == {1}, used
    rows = status_rows(config, changed)
    assert rows["train"]["stale"] and any("--allow-partial" in r for r in rows["train"]["reasons"])
