"""The shard runner, `tj-extract run` / `status`, end to end with the tiny Qwen3-VL Thinking.

Engines are real (vLLM for the EgoDex end-to-end test, transformers where a test needs fresh
processes or several engine starts: a vLLM start costs about a minute on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from thinkjepa.cache_schema import CacheReader, store_exists, verify
from thinkjepa.config import ThinkerConfig, load_config
from thinkjepa.data.manifest import build_manifest
from thinkjepa.data.synth import synthesize_dataset
from thinkjepa.extract.runner import plan_clips, run_shard
from thinkjepa.extract.status import extraction_status
from thinkjepa.shards import part_name, shard_of

REPO = Path(__file__).resolve().parents[2]
# The EgoDex fixtures are 20-29 frames long: 4 past / 4 future frames, the thinker sees 4
# frames spread over everything before t, two forecast times per clip.
SAMPLING = {"mode": "stride", "past_frames": 4, "future_frames": 4, "thinker_frames": 4,
            "windows_per_clip": 2, "window_hop": 4}


def write_config(path: Path, workdir: Path, manifest: Path, thinker: ThinkerConfig, sampling: dict | None = None,
                 **overrides) -> Path:
    """A pipeline YAML whose thinker section is the session engines' settings (so they can be reused)."""
    doc = {
        "workdir": str(workdir),
        "data": {"manifest": str(manifest)},
        "sampling": sampling or SAMPLING,
        "thinker": {**thinker.model_dump(mode="json"), "storage_dtype": "float16", "clips_per_call": 4, **overrides},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def egodex_manifest(egodex_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(None, use_default_file=False, base={"sampling": SAMPLING})
    out = tmp_path_factory.mktemp("egodex-index") / "manifest.parquet"
    table, problems = build_manifest(egodex_root, out, cfg.data, cfg.sampling)
    assert table.num_rows == 3, problems
    return out


def all_window_keys(cfg) -> list[str]:
    return sorted(it.key for p in plan_clips(cfg) for it in p.items)


def cli():
    from thinkjepa.app.cli.extract_cmd import app

    return app


# -- vLLM, real EgoDex episodes ---------------------------------------------------------


def test_vllm_end_to_end_two_shards_verify_show_status(tmp_path: Path, egodex_manifest: Path, tiny_thinker_cfg,
                                                       vllm_thinker) -> None:
    cfg_file = write_config(tmp_path / "extract.yaml", tmp_path / "run", egodex_manifest, tiny_thinker_cfg,
                            backend="vllm")
    cfg = load_config(cfg_file)
    backend = vllm_thinker  # the session's engine, built with these thinker settings
    layers = cfg.thinker.layers
    url = cfg.url(cfg.thinker.cache)
    expected = all_window_keys(cfg)
    assert len(expected) == 6

    summaries = [run_shard(cfg, (i, 2), backend=backend, progress=False) for i in range(2)]
    assert all(not s.failed for s in summaries), [s.failed for s in summaries]
    assert all(s.done for s in summaries)  # the three clips split over both shards
    done = [k for s in summaries for k in s.done]
    assert sorted(done) == expected and len(set(done)) == len(done)

    from thinkjepa.app.cli.main import app as tj

    res = CliRunner().invoke(tj, ["cache", "verify", url, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"], res.output
    reader = CacheReader(url)
    assert reader.meta.layers == layers and reader.meta.kind == "vlm"
    assert reader.meta.extra["sampling"]["mode"] == "stride"
    for rec in reader.records():
        clip_id = rec["key"].rpartition("@")[0]
        assert rec["part"] == part_name(shard_of(clip_id, 2), 2)

    # `tj cache show` reports every configured layer and both streams of every entry.
    for key in expected:
        res = CliRunner().invoke(tj, ["cache", "show", url, key, "--json"])
        assert res.exit_code == 0, res.output
        shown = json.loads(res.stdout)
        assert shown["layers"] == layers
        for stream in ("prefill", "generated"):
            assert shown["arrays"][stream]["shape"][0] == len(layers) and shown["arrays"][stream]["shape"][2] == backend.hidden_size
            assert shown["arrays"][f"{stream}_mean"]["shape"] == [len(layers), backend.hidden_size]
            assert shown["tokens"][stream] >= 1
    entry = reader.get(expected[0])
    assert entry.prefill.shape[0] == len(layers) and entry.generated.shape[0] == len(layers)
    assert entry.generated.shape[1] == len(entry.provenance["all_generated_ids"]) - 1 >= 1
    assert entry.provenance["frame_indices"] == [int(f) for f in entry.provenance["frame_indices"]]
    assert max(entry.provenance["frame_indices"]) < entry.provenance["window"]["t"]  # causality

    st = extraction_status(cfg)
    assert st["shard_count"] == 2 and st["complete"]
    assert st["totals"]["done"] == 6 and sum(r["done"] for r in st["shards"]) == 6

    # A finished shard reruns without starting an engine and extracts nothing.
    res = CliRunner().invoke(cli(), ["run", "--config", str(cfg_file), "--shard", "1/2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "0 extracted" in res.output


# -- transformers: killed mid-shard, then resumed ----------------------------------------


def _run_cmd(cfg_file: Path) -> list[str]:
    return [sys.executable, "-m", "thinkjepa.app.cli.extract_cmd", "run", "--config", str(cfg_file), "--shard", "0/1",
            "--no-progress"]


def _env() -> dict[str, str]:
    # Same thread count in every process: bitwise equal arrays need the same reduction order.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}


def _committed(url: str) -> int:
    return len(CacheReader(url).keys()) if store_exists(url) else 0


@pytest.mark.slow  # > 20 s on 2 shared cores
def test_killed_shard_resumes_to_the_uninterrupted_result(tmp_path: Path, egodex_manifest: Path, tiny_thinker_cfg,
                                                          hf_thinker) -> None:
    # Transformers backend: fresh processes with vLLM would spend minutes on engine starts.
    sampling = {**SAMPLING, "windows_per_clip": 4, "window_hop": 2}
    cfgs = {}
    for name in ("reference", "killed"):
        cfgs[name] = write_config(tmp_path / f"{name}.yaml", tmp_path / name, egodex_manifest, tiny_thinker_cfg,
                                  sampling, backend="transformers", clips_per_call=1)
    ref_cfg, kill_cfg = load_config(cfgs["reference"]), load_config(cfgs["killed"])
    keys = all_window_keys(ref_cfg)
    assert len(keys) >= 10

    # The uninterrupted run happens in this process, with the subprocesses' thread count.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_shard(ref_cfg, (0, 1), backend=hf_thinker, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary.ok and sorted(summary.done) == keys

    url = kill_cfg.url(kill_cfg.thinker.cache)
    proc = subprocess.Popen(_run_cmd(cfgs["killed"]), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while _committed(url) == 0:
            assert proc.poll() is None, f"extraction exited early: {proc.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no commit within 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    n_before = _committed(url)
    assert 0 < n_before < len(keys), "the kill must land mid-shard"

    resumed = subprocess.run(_run_cmd(cfgs["killed"]), env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(keys) - n_before} extracted, {n_before} already done" in " ".join(resumed.stderr.split())

    assert verify(url) == []
    ref, got = CacheReader(ref_cfg.url(ref_cfg.thinker.cache)), CacheReader(url)
    assert ref.keys() == got.keys() == keys
    for key in keys:
        a, b = ref.get(key), got.get(key)
        assert a.fingerprint == b.fingerprint and a.text == b.text
        for name in ("prefill", "generated", "prefill_ids", "generated_ids", "prefill_kind", "frame_index"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (key, name)
        for stream, m in ref.read_means(key).items():
            assert m.tobytes() == got.read_means(key)[stream].tobytes()


# -- failures, retries and stale entries (synthetic episodes, transformers) ------------------


@pytest.fixture()
def synth_setup(tmp_path: Path, tiny_thinker_cfg):
    root = tmp_path / "data"
    synthesize_dataset(root, episodes=3, seed=3, n_frames=24, size=64, tasks=3)
    manifest = tmp_path / "manifest.parquet"
    base = load_config(None, use_default_file=False, base={"sampling": SAMPLING})
    table, problems = build_manifest(root, manifest, base.data, base.sampling)
    assert table.num_rows == 3, problems
    cfg_file = write_config(tmp_path / "extract.yaml", tmp_path / "run", manifest, tiny_thinker_cfg, backend="transformers")
    return cfg_file, table.to_pylist()


def _status(cfg_file: Path, *sets: str) -> dict:
    args = ["status", "--config", str(cfg_file), "--json"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(cli(), args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _run(cfg_file: Path, *sets: str, shard: str = "0/1"):
    args = ["run", "--config", str(cfg_file), "--shard", shard, "--no-progress"]
    for s in sets:
        args += ["--set", s]
    return CliRunner().invoke(cli(), args)


@pytest.mark.slow  # > 20 s on 2 shared cores
def test_failed_clip_is_recorded_retried_and_prompt_change_makes_entries_stale(synth_setup) -> None:
    cfg_file, rows = synth_setup
    cfg = load_config(cfg_file)
    keys = all_window_keys(cfg)
    bad = rows[1]
    bad_keys = [k for k in keys if k.startswith(bad["clip_id"] + "@")]
    assert len(keys) == 6 and len(bad_keys) == 2

    video = Path(bad["video_path"])
    good_bytes = video.read_bytes()
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)  # went bad after indexing

    res = _run(cfg_file)
    assert res.exit_code == 1, res.output
    assert "2 failed" in res.output and "tj-extract status" in res.output and "rerun" in res.output
    st = _status(cfg_file)
    assert st["totals"] == {"clips": 3, "windows": 6, "done": 4, "stale": 0, "failed": 2, "pending": 0, "orphans": 0}
    assert sorted(st["failed"]) == bad_keys
    assert all(r.startswith("decode: ") and video.name in r for r in st["failed"].values())
    assert not st["complete"]
    assert verify(cfg.url(cfg.thinker.cache)) == []  # a failure leaves no half-written entry

    # Another store-wide setting is refused before any engine starts, naming the field.
    res = _run(cfg_file, "thinker.layers=[0,1]")
    assert res.exit_code == 2 and "layers" in res.output

    # The rerun retries the failed windows only.
    video.write_bytes(good_bytes)
    res = _run(cfg_file)
    assert res.exit_code == 0, res.output
    assert "2 extracted, 4 already done, 0 failed" in " ".join(res.output.split())
    st = _status(cfg_file)
    assert st["complete"] and st["totals"]["done"] == 6 and st["failed"] == {}

    # A new prompt template makes every entry stale; the rerun re-extracts them in place.
    new_tpl = "thinker.prompt_template='Summarise the {task} video; objects: {objects}.'"  # YAML-quoted
    assert _status(cfg_file)["totals"]["stale"] == 0
    st = _status(cfg_file, new_tpl)
    assert sorted(st["stale"]) == keys and st["totals"]["done"] == 0 and not st["complete"]
    res = _run(cfg_file, new_tpl)
    assert res.exit_code == 0, res.output
    assert "6 extracted, 0 already done" in " ".join(res.output.split())
    assert _status(cfg_file, new_tpl)["complete"]
    assert _status(cfg_file)["totals"]["stale"] == 6
    reader = CacheReader(cfg.url(cfg.thinker.cache))
    assert reader.keys() == keys
    assert all("Summarise the" in reader.get(k).provenance["prompt"] for k in keys[:1])
    assert verify(cfg.url(cfg.thinker.cache)) == []


def test_cli_rejects_bad_shard_and_template(tmp_path: Path, egodex_manifest: Path) -> None:
    no_model = ThinkerConfig(model=str(tmp_path / "no-model"), backend="transformers")
    cfg_file = write_config(tmp_path / "c.yaml", tmp_path / "run", egodex_manifest, no_model)
    for spec in ("2/2", "-1/2", "1", "x/2"):
        res = _run(cfg_file, shard=spec)
        assert res.exit_code == 2, (spec, res.output)
    res = _run(cfg_file, "thinker.prompt_template=Describe {weather}.")
    assert res.exit_code == 2 and "weather" in res.output
    # Nothing ran, so no store was created.
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("zarr.json"))



def test_a_reused_engine_must_match_the_config(tmp_path: Path, egodex_manifest: Path, tiny_thinker_cfg,
                                               hf_thinker) -> None:
    # Otherwise entries would carry fingerprints of settings they were not made with.
    cfg = load_config(write_config(tmp_path / "c.yaml", tmp_path / "run", egodex_manifest, tiny_thinker_cfg,
                                   backend="transformers", max_new_tokens=3))
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_shard(cfg, (0, 1), backend=hf_thinker, progress=False)
    assert not store_exists(cfg.url(cfg.thinker.cache))


def test_a_second_writer_of_a_shard_is_refused_before_any_engine_starts(tmp_path: Path, egodex_manifest: Path) -> None:
    from thinkjepa.cache_schema import CacheError, lock_part

    # No model exists at this path: an engine start would fail with another error.
    no_model = ThinkerConfig(model=str(tmp_path / "no-model"), backend="transformers")
    cfg = load_config(write_config(tmp_path / "c.yaml", tmp_path / "run", egodex_manifest, no_model))
    with lock_part(cfg.url(cfg.thinker.cache), part_name(0, 1)):
        with pytest.raises(CacheError, match="being written by another live process"):
            run_shard(cfg, (0, 1), progress=False)
    with pytest.raises(Exception) as e:  # lock free: it now gets as far as the (missing) engine
        run_shard(cfg, (0, 1), progress=False)
    assert "being written" not in str(e.value)
