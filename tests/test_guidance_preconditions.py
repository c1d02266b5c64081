"""Preconditions of the guidance benchmark, checked on the pipeline's real cached inputs.

A comparison of thinkjepa with jepa_only can only mean something if (P1) the dense branch's
inputs carry the motion the forecast needs, and (P2) the thinker guidance, pooled the way the
model pools it, carries the cue on scenes it was not fitted on, and carries nothing about the
turn when the cue is shuffled. Both are measured here on what the real stages wrote: V-JEPA2
latents from the encode stage and thinker states from vLLM extraction (tiny random models),
for guidance benchmark v2 data. Probes are linear (ridge), fitted on some scenes and scored
on held-out scenes (grouped folds), with a fixed regulariser (nothing is tuned on the
held-out folds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from thinkjepa.app import pipeline
from thinkjepa.app.demo import demo_config, demo_defaults, prepare_models, synthesize_demo_data
from thinkjepa.config import load_config
from thinkjepa.data.camera import world_to_camera
from thinkjepa.data.synth_v2 import V2_DEMO_OVERRIDES
from thinkjepa.evaluate.probe import held_out_accuracy, held_out_r2
from thinkjepa.joints import WRIST_INDEX
from thinkjepa.train.dataset import WindowDataset

pytestmark = pytest.mark.slow

SIZE = [*V2_DEMO_OVERRIDES, "demo.scenes=12", "demo.episodes_per_scene=8"]
FOLDS = 4
LAMBDA = 10.0


def _prepare(root: Path, mode: str):
    over = [*SIZE, f"demo.mode={mode}"]
    preview = load_config(None, over, base=demo_defaults(), use_default_file=False)
    q, v = prepare_models(root, preview)
    data = synthesize_demo_data(root / "data", preview)
    cfg = demo_config(root, data, q, v, over)
    pipeline.run(cfg, stages=["index", "extract", "encode"])
    return cfg, json.loads((data / "synth_labels.json").read_text())


@pytest.fixture(scope="module")
def cued(tmp_path_factory):
    return _prepare(tmp_path_factory.mktemp("v2-cued"), "cued")


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    return _prepare(tmp_path_factory.mktemp("v2-shuffled"), "shuffled")


def _datasets(cfg, **kw) -> list[WindowDataset]:
    return [WindowDataset(cfg, s, **kw) for s in ("train", "val", "test")]


def _scene(window_id: str) -> str:
    return window_id.split("/")[0]


def test_p1_past_latents_predict_the_past_window_motion_on_held_out_scenes(cued):
    cfg, _ = cued
    X, Y, groups = [], [], []
    for ds in _datasets(cfg, guidance="none"):
        for i, ref in enumerate(ds.refs):
            sample = ds[i]
            joints, _, pose = ds._episode(ref)
            first, last = ref.window.past[0], ref.window.past[-1]
            cam = np.asarray(pose[last], np.float64)
            wrists = [WRIST_INDEX[h] for h in ("left", "right")]
            disp = (world_to_camera(joints[last][wrists], cam) - world_to_camera(joints[first][wrists], cam)).mean(0)
            X.append(sample["past_latents"].numpy().reshape(-1))
            Y.append(disp)
            groups.append(_scene(ref.key))
    X, Y, groups = np.array(X), np.array(Y), np.array(groups)
    r2 = held_out_r2(X, Y, groups, folds=FOLDS, lam=LAMBDA)
    assert len(X) == 96 and len(set(groups)) == 12
    assert r2.mean() >= 0.5, f"held-out-scene R^2 per camera axis {np.round(r2, 3)}"


def _cue_probe_accuracy(cfg, labels, label: str) -> float:
    X, y, groups = [], [], []
    for ds in _datasets(cfg):
        for i, ref in enumerate(ds.refs):
            g = ds.guidance_inputs(i)  # the pooling the model uses (model.pooling)
            X.append(np.concatenate([v.numpy().reshape(-1) for _, v in sorted(g.items())]))
            y.append(labels["episodes"][ref.window.clip_id][label])
            groups.append(_scene(ref.key))
    return held_out_accuracy(np.array(X), np.array(y), np.array(groups), classes=4, folds=FOLDS, lam=LAMBDA)


def test_p2_the_guidance_carries_the_cue_across_scenes(cued):
    cfg, labels = cued
    acc = _cue_probe_accuracy(cfg, labels, "turn")
    assert acc >= 0.9, f"turn class from pooled guidance on held-out scenes: {acc:.3f} (chance 0.25)"


def test_p2_with_a_shuffled_cue_the_guidance_says_nothing_about_the_turn(shuffled):
    cfg, labels = shuffled
    turn = _cue_probe_accuracy(cfg, labels, "turn")
    shown = _cue_probe_accuracy(cfg, labels, "cue")
    assert turn <= 0.35, f"turn class from guidance of shuffled-cue data: {turn:.3f} (chance 0.25): a leak"
    assert shown >= 0.9, f"the shown (random) cue itself is still readable: {shown:.3f}"


@pytest.fixture(scope="module")
def absent(tmp_path_factory):
    return _prepare(tmp_path_factory.mktemp("v2-absent"), "absent")


def test_p2_without_a_cue_the_guidance_says_nothing_about_the_turn(absent):
    cfg, labels = absent
    turn = _cue_probe_accuracy(cfg, labels, "turn")
    assert turn <= 0.35, f"turn class from guidance of cue-less data: {turn:.3f} (chance 0.25): a leak"
