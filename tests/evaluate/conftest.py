"""Fixtures of the eval tests: a tiny workdir whose windows allow a 3-step rollout, with two
seeds of thinkjepa, jepa_only and the capacity-matched jepa_matched trained for a few steps.

The tiny dataset, V-JEPA2 and config builders are the stage fixtures' own (tests/stage_fixtures.py,
one definition shared by every stage's tests); only the sampling differs: three windows per clip,
8 frames apart, so the earliest window has three future blocks of frames in its episode and
the encoder's latents of rollout step 2 exist (they are a later window's future).
"""

from __future__ import annotations

import pytest
import stage_fixtures as _train
import torch

SAMPLING = {"windows_per_clip": 3, "window_hop": 8}
SEEDS = [0, 1]


@pytest.fixture(scope="session")
def eval_workdir(tmp_path_factory, tiny_data, tiny_vjepa2):
    """Config of a workdir with manifest, both caches and trained seeds of two variants."""
    from thinkjepa.data.manifest import build_manifest
    from thinkjepa.extract.encode import run_encode
    from thinkjepa.train.loop import train_seeds

    torch.set_num_threads(1)
    cfg = _train.tiny_config(
        tmp_path_factory.mktemp("evalwork"), tiny_data, tiny_vjepa2, sampling=SAMPLING,
        train={"max_steps": 4, "seeds": SEEDS, "checkpoint_every": 100},
        model={"dropout": 0.0, "drop_path": 0.0},
        eval={"variants": ["thinkjepa", "jepa_only", "jepa_matched"], "rollout_steps": 4, "bootstrap": 200,
              "overlay_windows": 2},
    )
    build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    assert run_encode(cfg, progress=False).ok
    _train.write_random_vlm_cache(cfg, _train.all_window_ids(cfg))
    for v in cfg.eval.variants:
        train_seeds(cfg, v, progress=False)
    return cfg


@pytest.fixture(scope="session")
def all_window_ids():
    return _train.all_window_ids
