"""No stale result kept: training data, code, engines and failed runs as the pipeline sees them.

A tiny workdir (tests/stage_fixtures.py: manifest, JEPA cache by the real encode stage, VLM
cache of random states) is copied per test; the pipeline trains one variant for two steps.
Code changes are made in a copy of the package sources (``provenance.SOURCE_ROOT``), never in
the real tree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest
from stage_fixtures import all_window_ids, private_copy, write_random_vlm_cache

from thinkjepa import provenance
from thinkjepa.app import pipeline
from thinkjepa.config import PipelineConfig
from thinkjepa.train.checkpoint import UnfinishedRunError, seed_run_dir

pytestmark = pytest.mark.slow  # trains, encodes


@pytest.fixture
def trained(tiny_pipeline: PipelineConfig, tmp_path: Path) -> PipelineConfig:
    """A private workdir whose train stage ran through the pipeline (jepa_only, one seed)."""
    cfg = private_copy(tiny_pipeline, tmp_path, max_steps=2, batch_size=2, checkpoint_every=100, seeds=[0])
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"variants": ["jepa_only"]})})
    assert pipeline.run(cfg, ["train"]) == [("train", "ran")]
    return cfg


def _rows(cfg: PipelineConfig) -> dict[str, dict]:
    return {r["stage"]: r for r in pipeline.status(cfg)}


def _train_split_annotation(cfg: PipelineConfig) -> Path:
    from thinkjepa.data.manifest import read_manifest

    rows = read_manifest(cfg.path(cfg.data.manifest)).to_pylist()
    return Path(sorted(r["annotation_path"] for r in rows if r["split"] == "train")[0])


def test_an_episode_edited_in_place_retrains(trained):
    cfg = trained
    assert not _rows(cfg)["train"]["stale"]
    with h5py.File(_train_split_annotation(cfg), "r+") as f:  # in place: same name, no rename
        f.attrs["llm_description"] = "edited after training"
    rows = _rows(cfg)
    assert rows["encode"]["stale"] and rows["train"]["stale"]
    write_random_vlm_cache(cfg, all_window_ids(cfg), seed=1)  # what re-extracting would commit
    done = dict(pipeline.run(cfg, ["index", "encode", "train"]))
    assert done == {"index": "ran", "encode": "ran", "train": "ran"}
    assert pipeline.read_state(cfg, "train")["result"] == {"jepa_only/seed-0": "trained"}
    assert not _rows(cfg)["train"]["stale"]


def test_a_failed_training_run_is_never_taken_for_done(trained):
    from thinkjepa.evaluate.predict import load_run
    from thinkjepa.train.loop import run_training

    cfg = trained
    run = seed_run_dir(cfg.path(cfg.train.out), "jepa_only", 0)
    load_run(run)  # the finished run loads

    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr_head": 5e-3})})

    def fail(step: int) -> None:
        raise FloatingPointError(f"step {step}: loss is nan")

    with pytest.raises(FloatingPointError), pytest.warns(UserWarning, match="other settings"):
        run_training(other, "jepa_only", seed=0, progress=False, on_step=fail)
    with pytest.raises(UnfinishedRunError, match="not a finished run"):
        load_run(run)
    reasons = _rows(cfg)["train"]["reasons"]
    assert any("jepa_only/seed-0" in r for r in reasons), reasons
    assert pipeline.run(cfg, ["train"]) == [("train", "ran")]
    load_run(run)


def _copy_sources(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(provenance.SOURCE_ROOT, src, ignore=shutil.ignore_patterns("__pycache__", "defaults", "tiny"))
    return src


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_code_and_engine_changes_make_exactly_their_stage_and_its_downstream_stale(trained, tmp_path, monkeypatch):
    cfg = trained
    pipeline.run(cfg, ["eval"])
    assert not any(r["stale"] for r in _rows(cfg).values())
    src = _copy_sources(tmp_path)
    monkeypatch.setattr(provenance, "SOURCE_ROOT", src)
    assert not any(r["stale"] for r in _rows(cfg).values())  # an identical copy changes nothing

    # comments and docstrings are not code
    _edit(src / "train" / "pooling.py", '"""', '"""Reworded. ')
    (src / "train" / "pooling.py").write_text((src / "train" / "pooling.py").read_text() + "\n# a comment\n")
    assert not any(r["stale"] for r in _rows(cfg).values())

    expected = {"extract/layers.py": {"extract", "train", "eval"}, "train/pooling.py": {"train", "eval"},
                "evaluate/errors.py": {"eval"}}
    for rel, stale in expected.items():
        original = (src / rel).read_text()
        (src / rel).write_text(original + "\n_EDITED = 1\n")
        rows = _rows(cfg)
        assert {n for n, r in rows.items() if r["stale"]} == stale, (rel, rows)
        first = sorted(stale, key=pipeline.STAGE_NAMES.index)[0]
        assert f"{rel} changed" in rows[first]["reasons"], rows[first]["reasons"]
        (src / rel).write_text(original)
    assert not any(r["stale"] for r in _rows(cfg).values())

    real = provenance.engine_version("vllm")
    monkeypatch.setitem(provenance.ENGINE_OVERRIDES, "vllm", "99.0.0")
    rows = _rows(cfg)
    assert {n for n, r in rows.items() if r["stale"]} == {"extract", "train", "eval"}
    assert f"vllm {real} -> 99.0.0" in rows["extract"]["reasons"]


def test_keep_records_an_output_kept_on_purpose(trained, tmp_path, monkeypatch):
    cfg = trained
    src = _copy_sources(tmp_path)
    monkeypatch.setattr(provenance, "SOURCE_ROOT", src)
    (src / "train" / "pooling.py").write_text((src / "train" / "pooling.py").read_text() + "\n_EDITED = 1\n")
    assert _rows(cfg)["train"]["stale"]
    assert pipeline.run(cfg, ["train"], keep=["train"]) == [("train", "kept")]
    row = _rows(cfg)["train"]
    assert not row["stale"] and row["kept"] == ["train/pooling.py changed"]
    with pytest.raises(ValueError, match="--keep extract"):
        pipeline.run(cfg, ["extract"], keep=["extract"])


def test_a_copied_workdir_reruns_nothing(tiny_pipeline, tmp_path):
    cfg = private_copy(tiny_pipeline, tmp_path / "first", out="{workdir}/train", max_steps=2, batch_size=2,
                       checkpoint_every=100, seeds=[0])
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"variants": ["jepa_only"]})})
    pipeline.run(cfg, ["index"], force=True)
    pipeline.run(cfg)
    assert not any(r["stale"] for r in _rows(cfg).values())
    # the workdir and its data copied elsewhere together (as `cp -a` does, or a mount at another path)
    copy = tmp_path / "elsewhere"
    for old in (Path(cfg.workdir), Path(cfg.data.root)):
        shutil.copytree(old, copy / old.name)
    d = cfg.model_dump()
    d["workdir"], d["data"]["root"] = str(copy / "work"), str(copy / "data")
    moved = PipelineConfig.model_validate(d)
    rows = _rows(moved)
    assert not any(r["stale"] for r in rows.values()), {n: r["reasons"] for n, r in rows.items()}
    assert all(outcome == "fresh" for _, outcome in pipeline.run(moved))
    from thinkjepa.stage_run import manifest_rows

    paths = [r[k] for r in manifest_rows(moved) for k in ("video_path", "annotation_path")]
    assert paths and all(p.startswith(str(copy / "data")) for p in paths)  # the stages read the copy's episodes
