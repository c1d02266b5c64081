"""benchmarks/probe_guidance.py: the probe table reads each feature set against each target on
held-out scenes (constructed rows: the guidance names the cue, the latents carry the motion)."""

import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "probe_guidance.py"


def _bench():
    spec = importlib.util.spec_from_file_location("probe_guidance", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_probe_table_separates_what_each_feature_set_carries():
    rng = np.random.default_rng(0)
    scenes = np.repeat([f"scene_{s:02d}" for s in range(12)], 8)
    cue = np.tile(np.arange(4), 24)
    past = rng.standard_normal((96, 3))
    rows = {
        "guidance": np.concatenate([np.eye(4)[cue], rng.standard_normal((96, 20))], axis=1),
        "latents": np.concatenate([past, 0.01 * rng.standard_normal((96, 20))], axis=1),
        "cue": cue, "past": past, "future": 2 * past, "scene": scenes,
    }
    table = _bench().probe(rows)
    assert table["windows"] == 96 and table["scenes"] == 12
    assert table["guidance"]["cue_accuracy"] == 1.0 and table["latents"]["cue_accuracy"] < 0.6
    assert min(table["latents"]["past_displacement_r2"]) > 0.9
    assert max(table["guidance"]["past_displacement_r2"]) < 0.5
    assert table["guidance"]["dims"] == 24
