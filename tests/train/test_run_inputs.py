"""Training refuses stale or mismatched inputs, saying what changed; --restart / --resume decide."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from stage_fixtures import all_window_ids, private_copy

from thinkjepa.cache_schema import CacheReader, CacheWriter
from thinkjepa.config import PipelineConfig
from thinkjepa.data.manifest import read_manifest
from thinkjepa.train.checkpoint import checkpoint_path, load_checkpoint
from thinkjepa.train.loop import run_training
from thinkjepa.train.run_inputs import StaleInputError

SHORT = {"max_steps": 2, "batch_size": 2, "checkpoint_every": 1, "eval_every": 1}


@pytest.fixture
def own_pipeline(tiny_pipeline: PipelineConfig, tmp_path: Path) -> PipelineConfig:
    """A private copy of the tiny workdir and its episodes (caches, manifest, data), safe to damage."""
    return private_copy(tiny_pipeline, tmp_path, **SHORT)


def _rewrite_jepa_entry(cfg: PipelineConfig, key: str) -> None:
    r = CacheReader(cfg.url(cfg.encoder.cache))
    e = r.get(key)
    e.past = e.past + 0.01
    with CacheWriter(r.url, r.meta, part=r.record(key)["part"]) as w:
        w.commit(e)


@pytest.mark.slow
def test_a_changed_cache_is_refused_with_what_changed(own_pipeline):
    cfg = own_pipeline
    run = run_training(cfg, "thinkjepa", progress=False)
    assert load_checkpoint(checkpoint_path(run))["inputs"]["entries"]
    # a window the run trains on (the first key of the cache may be a test-split window)
    key = all_window_ids(cfg, ("train",))[0]
    assert key in CacheReader(cfg.url(cfg.encoder.cache)).keys()
    assert (run / "inputs.json").is_file()
    # unchanged data: resumes (and --resume agrees)
    run_training(cfg, "thinkjepa", progress=False, resume="resume")

    # a test-split entry is no input of training: rewriting it keeps the run resumable
    _rewrite_jepa_entry(cfg, all_window_ids(cfg, ("test",))[0])
    run_training(cfg, "thinkjepa", progress=False, resume="resume")

    _rewrite_jepa_entry(cfg, key)
    with pytest.raises(StaleInputError, match=rf"the data changed .*JEPA cache entries: 1 rewritten \(first: {key}\)"
                                              r".*--restart"):
        run_training(cfg, "thinkjepa", progress=False)
    with pytest.raises(StaleInputError, match="JEPA cache entries: 1 rewritten"):
        run_training(cfg, "thinkjepa", progress=False, resume="resume")

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        run_training(cfg, "thinkjepa", progress=False, resume="restart")
    assert len(list(run.glob("last.stale-*.pt"))) == 1
    run_training(cfg, "thinkjepa", progress=False, resume="resume")  # the new data is the run's data now


@pytest.mark.slow
def test_caches_of_another_model_and_stale_entries_are_refused(own_pipeline):
    cfg = own_pipeline
    other = cfg.model_copy(update={"thinker": cfg.thinker.model_copy(update={"model": "other/thinker"})})
    with pytest.raises(StaleInputError, match="VLM cache .*: model is 'tiny-thinker', config thinker.model is "
                                              "'other/thinker'"):
        run_training(other, "thinkjepa", progress=False)

    # guidance extracted with another prompt than the config's
    prompt = cfg.model_copy(update={"thinker": cfg.thinker.model_copy(update={"prompt_template": "Describe {task}."})})
    with pytest.raises(StaleInputError, match=r"windows in the VLM cache .* are stale .*rerun `tj-extract run`"):
        run_training(prompt, "thinkjepa", progress=False)

    # an episode the run trains on, edited after encoding: exactly its windows are stale
    ann = Path(sorted(read_manifest(cfg.path(cfg.data.manifest), "train").column("annotation_path").to_pylist())[0])
    with h5py.File(ann, "r+") as f:
        f.attrs["llm_description"] = "edited after encoding"
    clip = f"{ann.parent.name}/{ann.stem}"
    with pytest.raises(StaleInputError, match=rf"windows in the JEPA cache .* are stale .*first: {clip}@"
                                              r".*rerun `tj encode`"):
        run_training(cfg, "thinkjepa", progress=False)
    assert not np.any([p.name.endswith(".pt") for p in Path(cfg.train.out).rglob("*")])
