"""Bad inputs that used to pass silently now fail naming the clip and the cause."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from thinkjepa.config import load_config
from thinkjepa.data.egodex import EpisodeError, read_episode
from thinkjepa.data.manifest import build_manifest
from thinkjepa.joints import JOINTS


@pytest.mark.parametrize("value", [np.nan, 1.5, -0.1])
def test_bad_confidences_are_refused_naming_the_clip(synth_root, tmp_path, value):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    ann = sorted(root.rglob("*.hdf5"))[0]
    with h5py.File(ann, "r+") as f:
        name = JOINTS[5]
        a = f[f"confidences/{name}"][()]
        a[3] = value
        f[f"confidences/{name}"][...] = a
    clip = f"{ann.parent.name}/{ann.stem}"
    with pytest.raises(EpisodeError, match=rf"{clip}.*confidences must be finite and in \[0, 1\].*first frames \[3\]"):
        read_episode(ann.with_suffix(".mp4"), ann, check_video=False)


def test_an_unreadable_hdf5_at_prompt_planning_fails_its_windows(synth_root, tmp_path):
    from thinkjepa.extract.runner import plan_clips

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    cfg = load_config(None, [], base={"workdir": str(tmp_path / "work"), "data": {"root": str(root)},
                                      "sampling": {"mode": "stride", "past_frames": 8, "future_frames": 8,
                                                   "thinker_frames": 8}}, use_default_file=False)
    build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    ann = sorted(root.rglob("*.hdf5"))[1]
    ann.write_bytes(ann.read_bytes()[:200])  # cut after indexing
    plans = {p.clip_id: p for p in plan_clips(cfg)}
    bad = plans[f"{ann.parent.name}/{ann.stem}"]
    assert bad.items == [] and bad.failed_keys and all("@" in k for k in bad.failed_keys)
    assert "unreadable HDF5" in bad.problem and ann.name in bad.problem
    assert all(p.items for c, p in plans.items() if c != bad.clip_id)
