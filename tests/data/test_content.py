"""Episode content fingerprints: an edit makes exactly that episode's windows stale; a touch does not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from thinkjepa.config import load_config
from thinkjepa.data.content import ContentFingerprints, for_workdir
from thinkjepa.data.manifest import build_manifest


def _episodes(root: Path) -> list[tuple[Path, Path]]:
    return sorted((p.with_suffix(".mp4"), p) for p in root.rglob("*.hdf5"))


@pytest.mark.slow
def test_fast_path_touch_and_edit(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    eps = _episodes(root)
    memo = tmp_path / "memo.json"
    fp = ContentFingerprints(memo)
    before = [fp.episode(v, a) for v, a in eps]
    assert len(set(before)) == len(eps) and fp.hashed == 2 * len(eps)
    fp.save()

    again = ContentFingerprints(memo)
    assert [again.episode(v, a) for v, a in eps] == before and again.hashed == 0  # size+mtime: no read

    video, ann = eps[0]
    os.utime(video, ns=(1, 1))  # touched, not changed: hashed again, same digest
    os.utime(ann, ns=(1, 1))
    assert again.episode(video, ann) == before[0] and again.hashed == 2

    with h5py.File(eps[1][1], "r+") as f:
        name = next(k for k in f["transforms"]) if "transforms" in f else next(iter(f))
        ds = f["transforms"][name] if "transforms" in f else f[name]
        a = ds[()]
        a.flat[0] += 0.5
        ds[...] = a
    after = [again.episode(v, a) for v, a in eps]
    assert [i for i, (x, y) in enumerate(zip(before, after)) if x != y] == [1]


@pytest.mark.slow
def test_an_edited_episode_makes_exactly_its_windows_stale(synth_root, tmp_path):
    from thinkjepa.extract.encode import jepa_entry_fingerprint, plan_encode
    from thinkjepa.extract.runner import fingerprint_of, plan_clips

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    cfg = load_config(None, [], base={"workdir": str(tmp_path / "work"), "data": {"root": str(root)},
                                      "sampling": {"mode": "stride", "past_frames": 8, "future_frames": 8,
                                                   "thinker_frames": 8}}, use_default_file=False)
    build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)

    def fingerprints():
        vlm = {it.key: fingerprint_of(cfg, it) for p in plan_clips(cfg) for it in p.items}
        jepa = {it.key: jepa_entry_fingerprint(cfg.encoder, it.window, it.episode) for it in plan_encode(cfg)[0]}
        return vlm, jepa

    vlm0, jepa0 = fingerprints()
    assert (Path(cfg.workdir) / ".thinkjepa" / "content-fingerprints.json").is_file()
    assert for_workdir(cfg.workdir).episode(*_episodes(root)[0]) is not None
    video, ann = _episodes(root)[2]
    clip = next(p.clip_id for p in plan_clips(cfg) if p.items and Path(p.items[0].video_path) == video)
    with h5py.File(ann, "r+") as f:
        ds = f["confidences"][next(iter(f["confidences"]))] if "confidences" in f else None
        if ds is None:
            f.attrs["edited"] = 1
        else:
            a = ds[()]
            a.flat[0] = 0.25 if a.flat[0] != 0.25 else 0.5
            ds[...] = a
    vlm1, jepa1 = fingerprints()
    for before, after in ((vlm0, vlm1), (jepa0, jepa1)):
        stale = sorted(k for k in before if before[k] != after[k])
        assert stale and all(k.startswith(clip + "@") for k in stale)
        assert stale == sorted(k for k in before if k.startswith(clip + "@"))
    assert np.all([k in vlm1 for k in vlm0])


def test_a_copy_keeps_the_digest_and_a_changed_value_does_not(egodex_root, tmp_path):
    """Real EgoDex file: a byte copy elsewhere (a copied dataset) has the same digest; one changed
    joint value, written in place by h5py, gives another."""
    src = egodex_root / "sort_beads" / "9.hdf5"
    copy = tmp_path / "9.hdf5"
    shutil.copyfile(src, copy)
    fp = ContentFingerprints()
    original = fp.file(src)
    assert fp.file(copy) == original and fp.hashed == 2
    with h5py.File(copy, "r+") as f:
        ds = f["transforms"][next(iter(f["transforms"]))]
        a = ds[()]
        a.flat[3] += 1e-3
        ds[...] = a
    assert ContentFingerprints().file(copy) != original
