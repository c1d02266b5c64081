"""Fixtures of the stage tests (encode in tests/extract, train, evaluate): a tiny synthetic
dataset, manifest, tiny V-JEPA2 and both caches, built once per session. A pytest plugin of
tests/conftest.py, so every stage's tests share one build; tests/evaluate/conftest.py reuses
its builders.

The JEPA cache is made by the real encode stage. The VLM cache holds random ``VLMEntry``
values written through ``CacheWriter``: these tests exercise the training side, which only
sees the cache contract (the thinker itself is covered by tests/extract and by the
end-to-end causality test).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from thinkjepa.cache_schema import TOKEN_TEXT, TOKEN_VISION, CacheWriter, StoreMeta, VLMEntry
from thinkjepa.config import PipelineConfig, load_config


def pytest_collection_finish(session: pytest.Session) -> None:
    # a run whose tests use torch trains on one thread, so float results do not depend on the
    # machine's core count; a run that never imports torch (tests/test_config.py) does not pay
    # the 5 s of importing it just for this
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)

VLM_LAYERS = [0, 2, 3]
VLM_HIDDEN = 24

TINY = {
    "data": {"split_seed": 0, "split_fractions": [0.34, 0.33, 0.33]},
    "sampling": {"mode": "stride", "past_frames": 8, "future_frames": 8, "stride": 1, "thinker_frames": 4,
                 "windows_per_clip": 2, "window_hop": 4},
    "thinker": {"model": "tiny-thinker", "layers": VLM_LAYERS, "frame_size": 64, "storage_dtype": "float32"},
    "encoder": {"frame_size": 64, "batch_size": 4, "storage_dtype": "float32"},
    "model": {"pred_depth": 3, "pred_width": 32, "pred_heads": 4, "dropout": 0.1, "drop_path": 0.1,
              "guidance_dim": 16, "film_hidden": 32, "guidance_tokens": 8, "head_hidden": 32, "head_heads": 2},
    "train": {"epochs": 4, "batch_size": 2, "num_workers": 0, "checkpoint_every": 3, "mixed_precision": "no",
              "lr_predictor": 1e-3, "lr_head": 3e-3, "seed": 0},
}


def tiny_config(workdir: Path, root: Path, vjepa: Path, **sections) -> PipelineConfig:
    base = {k: dict(v) for k, v in TINY.items()}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    base["workdir"] = str(workdir)
    base["data"]["root"] = str(root)
    base["encoder"]["model"] = str(vjepa)
    return load_config(None, [], base=base, use_default_file=False)


def write_random_vlm_cache(cfg: PipelineConfig, keys: list[str], seed: int = 0) -> None:
    """A VLM cache with random states of the right layout for ``keys``, each committed with the
    fingerprint extraction would give it (training refuses stale entries)."""
    from thinkjepa.extract.runner import fingerprint_of, plan_clips, vlm_store_extra
    from thinkjepa.provenance import model_key

    fps = {it.key: fingerprint_of(cfg, it) for p in plan_clips(cfg) for it in p.items}

    meta = StoreMeta(kind="vlm", model=model_key(cfg.thinker.model), revision=None, layers=list(cfg.thinker.layers),
                     layer_convention="decoder_output_prenorm", hidden_size=VLM_HIDDEN,
                     storage_dtype="float32", extra=vlm_store_extra(cfg))
    rng = np.random.default_rng(seed)
    L = len(cfg.thinker.layers)
    with CacheWriter(cfg.url(cfg.thinker.cache), meta, part="shard-00000-of-00001") as w:
        for key in keys:
            n_pre, n_gen = int(rng.integers(5, 14)), int(rng.integers(2, 6))
            kind = np.full(n_pre, TOKEN_TEXT, np.uint8)
            kind[1:4] = TOKEN_VISION
            frame = np.where(kind == TOKEN_VISION, 0, -1).astype(np.int32)
            w.commit(VLMEntry(
                key=key,
                prefill=rng.normal(size=(L, n_pre, VLM_HIDDEN)).astype(np.float32),
                generated=rng.normal(size=(L, n_gen, VLM_HIDDEN)).astype(np.float32),
                prefill_ids=rng.integers(0, 100, n_pre).astype(np.int32),
                generated_ids=rng.integers(0, 100, n_gen).astype(np.int32),
                prefill_kind=kind, frame_index=frame, text="random", provenance={}, fingerprint=fps.get(key, "random"),
            ))
    from thinkjepa.provenance import record_stage_inputs

    record_stage_inputs(cfg, "extract")  # as the extraction runner does


def private_copy(cfg: PipelineConfig, tmp_path: Path, out: str | None = None, **train) -> PipelineConfig:
    """A copy of ``cfg``'s workdir and episodes (caches, manifest, data) under ``tmp_path``, safe
    to damage, with ``train`` settings and runs under ``out`` (default ``tmp_path/runs``); the
    manifest is rebuilt for the copied episodes."""
    import shutil

    from thinkjepa.data.manifest import build_manifest

    work, data = tmp_path / "work", tmp_path / "data"
    shutil.copytree(cfg.workdir, work)
    shutil.copytree(cfg.data.root, data)
    d = cfg.model_dump()
    d["workdir"], d["data"]["root"] = str(work), str(data)
    d["train"].update(train, out=out or str(tmp_path / "runs"))
    out = PipelineConfig.model_validate(d)
    build_manifest(out.data.root, out.path(out.data.manifest), out.data, out.sampling)
    return out


def all_window_ids(cfg: PipelineConfig, splits=("train", "val", "test")) -> list[str]:
    from thinkjepa.train.dataset import split_windows

    return [r.key for s in splits for r in split_windows(cfg, s)]


@pytest.fixture(scope="session")
def vlm_shape() -> tuple[list[int], int]:
    """(stored layer ids, hidden size) of the random VLM cache."""
    return VLM_LAYERS, VLM_HIDDEN


@pytest.fixture(scope="session")
def make_tiny_config():
    return tiny_config


@pytest.fixture(scope="session")
def write_vlm_cache():
    return write_random_vlm_cache


@pytest.fixture(scope="session")
def tiny_vjepa2(tmp_path_factory) -> Path:
    from thinkjepa.tiny.vjepa2 import build_tiny_vjepa2

    return build_tiny_vjepa2(tmp_path_factory.mktemp("models") / "tiny-vjepa2", frames_per_clip=8, crop_size=64)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from thinkjepa.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("synth")
    synthesize_dataset(root, episodes=6, seed=0, n_frames=32, size=64, tasks=3)
    return root


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_data, tiny_vjepa2) -> PipelineConfig:
    """Config of a workdir with manifest, JEPA cache (real encode) and random VLM cache."""
    from thinkjepa.data.manifest import build_manifest
    from thinkjepa.extract.encode import run_encode

    cfg = tiny_config(tmp_path_factory.mktemp("work"), tiny_data, tiny_vjepa2)
    build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    summary = run_encode(cfg, progress=False)
    assert summary.ok, summary.failed
    write_random_vlm_cache(cfg, all_window_ids(cfg))
    return cfg
