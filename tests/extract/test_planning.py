"""Planning a manifest: prompts kept between runs are the prompts computed afresh, and a changed
annotation file is read again."""

from __future__ import annotations

import json
import time

import h5py
import pytest

from thinkjepa.config import load_config
from thinkjepa.data.manifest import build_manifest
from thinkjepa.data.synth import synthesize_dataset
from thinkjepa.extract.runner import fingerprint_of, plan_clips


def _plan(cfg) -> dict[str, tuple[str, str]]:
    return {it.key: (it.user_text, fingerprint_of(cfg, it)) for p in plan_clips(cfg) for it in p.items}


@pytest.mark.slow
def test_kept_prompts_equal_fresh_ones_and_follow_annotation_edits(tmp_path):
    root = tmp_path / "data"
    synthesize_dataset(root, episodes=3, seed=0, n_frames=24, size=32, tasks=3)
    cfg = load_config(None, [f"workdir={tmp_path / 'work'}", f"data.root={root}", "sampling.mode=stride",
                             "sampling.past_frames=4", "sampling.future_frames=4", "sampling.thinker_frames=4",
                             "sampling.windows_per_clip=2", "sampling.window_hop=4"], use_default_file=False)
    cfg = cfg.model_copy(update={"thinker": cfg.thinker.model_copy(
        update={"prompt_template": "Task: {task}. Scene: {description}. Objects: {objects}."})})
    build_manifest(root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    cache = cfg.path("{workdir}/state/listing/prompts.json")

    fresh = _plan(cfg)
    assert len(fresh) == 6 and cache.exists()
    assert _plan(cfg) == fresh  # from the kept prompts
    cache.unlink()
    assert _plan(cfg) == fresh  # and recomputed: the same texts, so the same fingerprints

    # one episode's description edited in its HDF5 file: only its windows change
    hdf5 = sorted(root.rglob("*.hdf5"))[0]
    clip_id = f"{hdf5.parent.name}/{hdf5.stem}"
    time.sleep(0.01)
    with h5py.File(hdf5, "a") as f:
        f.attrs["description"] = "a brand new description"
        f.attrs["llm_objects"] = ["cup", "spoon"]
    edited = _plan(cfg)
    changed = {k for k in fresh if edited[k] != fresh[k]}
    assert changed == {k for k in fresh if k.startswith(clip_id + "@")} and len(changed) == 2
    text = edited[sorted(changed)[0]][0]
    assert "a brand new description" in text and "cup, spoon" in text

    # a damaged cache file only costs a re-read
    cache.write_text("{ torn")
    assert _plan(cfg) == edited
    assert json.loads(cache.read_text())["version"] == 1


def test_the_fingerprinter_gives_entry_fingerprint_byte_for_byte(tmp_path):
    from thinkjepa.config import ThinkerConfig
    from thinkjepa.extract.fingerprint import Fingerprinter, vlm_entry_fingerprint

    th = ThinkerConfig(model="m", layers=[3, 1], prompt_template='Say "{task}" \\ {description}.', max_new_tokens=5)
    fast = Fingerprinter(th, layer_convention="decoder_output_prenorm")
    for text, frames in [("plain", [0, 1, 2]), ('quotes " and \\ and ünïcode ✓\n', [5]), ("", [])]:
        assert fast(user_text=text, frame_indices=frames) == vlm_entry_fingerprint(
            th, layer_convention="decoder_output_prenorm", user_text=text, frame_indices=frames)
    other = Fingerprinter(th.model_copy(update={"max_new_tokens": 6}), layer_convention="decoder_output_prenorm")
    assert other(user_text="plain", frame_indices=[0, 1, 2]) != fast(user_text="plain", frame_indices=[0, 1, 2])


def test_the_batched_jepa_fingerprints_give_entry_fingerprints_byte_for_byte():
    from thinkjepa.extract.encode import EncodeItem, fingerprints, jepa_entry_fingerprint
    from thinkjepa.sampling import windows_for_clip

    cfg = load_config(None, ["sampling.mode=stride", "sampling.past_frames=4", "sampling.future_frames=4",
                             "sampling.windows_per_clip=3", "sampling.window_hop=2"], use_default_file=False)
    items = [EncodeItem(f"{c}@{w.t}", c, w, "/v.mp4", ep)
             for c, n, ep in (("a/1", 24, ""), ("a/2", 24, "0123abcd"), ("b/1", 40, 'q"\u00e9\\'))
             for w in windows_for_clip(c, n, cfg.sampling)]
    assert len(items) >= 6
    fps = fingerprints(cfg.encoder, items)
    assert [fps[it.key] for it in items] == [jepa_entry_fingerprint(cfg.encoder, it.window, it.episode) for it in items]
