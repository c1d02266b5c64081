"""Rollout benchmark v3: the generator's promises, checked on the files it writes and on the
latents the real encode stage makes of them."""

import json

import numpy as np
import pytest

from thinkjepa.data.egodex import read_episode
from thinkjepa.data.synth import CUE_COLOURS
from thinkjepa.data.synth_v2 import FIXED_TURN_CLASS, TURN_ANGLES_DEG
from thinkjepa.data.synth_v3 import MODES, synthesize_rollout_v3, v3_sampling, v3_timeline
from thinkjepa.data.video import decode_frames
from thinkjepa.joints import WRIST_INDEX
from thinkjepa.sampling import windows_for_clip

KW = dict(scenes=2, episodes_per_scene=4, seed=7, n_frames=48, size=64)


@pytest.fixture(scope="module")
def modes(tmp_path_factory):
    out = {}
    for mode in MODES:
        root = tmp_path_factory.mktemp(mode)
        out[mode] = (root, synthesize_rollout_v3(root, mode=mode, **KW))  # type: ignore[arg-type]
    return out


def test_timeline_puts_the_event_in_steps_2_to_4_of_every_window():
    s = v3_sampling()
    tl = v3_timeline(48, s)
    wins = windows_for_clip("c", 48, s)
    assert [w.t for w in wins] == tl["ts"] and len(wins) == 3
    for w in wins:
        # every window has 4 rollout steps in the episode, and a past longer than one step's future
        assert w.future[-1] + 3 * s.future_frames < 48
        assert len(w.past) > len(w.future)
        step = (tl["first_changed_frame"] - w.t) // s.future_frames + 1
        assert 2 <= step <= 4 and tl["event_step"][str(w.t)] == step
        # the cue is over before the dense window, and the thinker's frames end before it too
        assert tl["cue_end"] <= w.past[0] and max(w.thinker) < w.past[0]
        assert sum(f < tl["cue_end"] for f in w.thinker) >= 3
    assert sorted(tl["event_step"].values()) == [2, 3, 4]
    with pytest.raises(ValueError, match="event in rollout steps"):
        v3_timeline(48, v3_sampling(windows_per_clip=4))


@pytest.mark.slow
def test_same_arguments_same_bytes(tmp_path):
    a = synthesize_rollout_v3(tmp_path / "a", scenes=1, episodes_per_scene=1, seed=3)
    b = synthesize_rollout_v3(tmp_path / "b", scenes=1, episodes_per_scene=1, seed=3)
    assert a == b
    (cid,) = a["episodes"]
    for ext in ("mp4", "hdf5"):
        assert (tmp_path / "a" / f"{cid}.{ext}").read_bytes() == (tmp_path / "b" / f"{cid}.{ext}").read_bytes()


@pytest.mark.slow
def test_controls_share_draws_and_the_cue_follows_the_mode(modes):
    eps = {m: modes[m][1]["episodes"] for m in MODES}
    assert all(eps[m].keys() == eps["cued"].keys() for m in MODES)
    for scene in modes["cued"][1]["tasks"]:
        assert sorted(e["turn"] for e in eps["cued"].values() if e["scene"] == scene) == [0, 1, 2, 3]
        assert sorted(e["cue"] for e in eps["shuffled"].values() if e["scene"] == scene) == [0, 1, 2, 3]
    for cid, c in eps["cued"].items():
        assert c["cue"] == c["turn"]
        assert eps["absent"][cid]["cue"] is None and eps["fixed_event"][cid]["cue"] is None
        assert eps["fixed_event"][cid]["turn"] == FIXED_TURN_CLASS
        for m in ("shuffled", "absent", "fixed_event"):
            for k in ("heading", "speed", "scene"):
                assert eps[m][cid][k] == c[k]
        for m in ("shuffled", "absent"):
            assert eps[m][cid]["turn"] == c["turn"]
    # the shuffled cue is not the turn everywhere (4 of 8 would be a coincidence of 1 in ~10^4)
    assert sum(eps["shuffled"][c]["cue"] != eps["cued"][c]["turn"] for c in eps["cued"]) >= 2


@pytest.mark.slow
def test_cue_card_is_seen_before_the_dense_window_only(modes):
    root, labels = modes["cued"]
    tl = labels["timeline"]
    for cid, e in labels["episodes"].items():
        px = decode_frames(root / f"{cid}.mp4", [0, tl["cue_end"] - 1, tl["cue_end"]], 64).astype(float)
        colour = np.asarray(CUE_COLOURS[e["cue"]], float)
        # a corner pixel (no hand there) shows the class colour during the cue, the scene after it
        assert np.abs(px[0, 0, 0] - colour).max() < 12 and np.abs(px[1, 0, 0] - colour).max() < 12, cid
        assert np.abs(px[2, 0, 0] - colour).max() > 40, cid


@pytest.mark.slow
def test_hands_move_straight_then_turn_by_the_class_angle_after_step_1(modes):
    root, labels = modes["cued"]
    tl = labels["timeline"]
    k = tl["first_changed_frame"]
    for cid, e in labels["episodes"].items():
        ep = read_episode(root / f"{cid}.mp4", root / f"{cid}.hdf5", clip_id=cid)
        xz = ep.joints[:, WRIST_INDEX["right"]][:, [0, 2]]
        assert np.linalg.norm(xz[tl["motion_start"]] - xz[0]) < 0.03  # at rest before the dense window
        before, after = xz[k - 1] - xz[k - 6], xz[k + 5] - xz[k - 1]
        turn = np.degrees(np.arctan2(after[1], after[0]) - np.arctan2(before[1], before[0]))
        assert -((turn + 180) % 360 - 180) == pytest.approx(TURN_ANGLES_DEG[e["turn"]], abs=15), cid


@pytest.mark.slow
def test_dense_frames_are_identical_across_modes_pixels_and_latents(modes, tmp_path, make_tiny_config, tiny_vjepa2):
    """Every dense window's past frames decode to the same pixels and encode (the real encode
    stage, tiny V-JEPA2) to the same latents in every mode; so do the step-1 target frames (the
    event comes later; ``fixed_event`` turns another way after it). The videos are lossless, so the cue
    cannot leak into a later frame through the codec."""
    from thinkjepa.cache_schema import CacheReader
    from thinkjepa.data.manifest import build_manifest
    from thinkjepa.extract.encode import run_encode

    tl = modes["cued"][1]["timeline"]
    sampling = v3_sampling().model_dump()
    latents = {}
    for mode in MODES:
        root, labels = modes[mode]
        cfg = make_tiny_config(tmp_path / mode, root, tiny_vjepa2, sampling=sampling)
        build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
        assert run_encode(cfg, progress=False).ok
        reader = CacheReader(cfg.url(cfg.encoder.cache))
        latents[mode] = {k: reader.read_jepa(k) for k in reader.keys()}
    keys = latents["cued"].keys()
    assert len(keys) == len(modes["cued"][1]["episodes"]) * len(tl["ts"])
    dense = list(range(tl["dense_start"], tl["first_changed_frame"]))
    for cid in modes["cued"][1]["episodes"]:
        ref = decode_frames(modes["cued"][0] / f"{cid}.mp4", dense, 64)
        for mode in MODES[1:]:
            assert np.array_equal(decode_frames(modes[mode][0] / f"{cid}.mp4", dense, 64), ref), (mode, cid)
    for mode in MODES[1:]:
        assert latents[mode].keys() == keys
        for k in keys:
            # past and step-1 future: the event is never in step 1, so fixed_event matches too
            assert np.array_equal(latents[mode][k][0], latents["cued"][k][0]), (mode, k)
            assert np.array_equal(latents[mode][k][1], latents["cued"][k][1]), (mode, k)
    # the check has teeth: the cue frames themselves differ between cued and absent
    cid = next(iter(modes["cued"][1]["episodes"]))
    assert not np.array_equal(decode_frames(modes["cued"][0] / f"{cid}.mp4", [0], 64),
                              decode_frames(modes["absent"][0] / f"{cid}.mp4", [0], 64))


@pytest.mark.slow
def test_labels_round_trip(tmp_path):
    labels = synthesize_rollout_v3(tmp_path, scenes=1, episodes_per_scene=1, n_frames=48, size=32)
    assert json.loads((tmp_path / "synth_labels.json").read_text()) == labels
    assert labels["generator"] == "rollout_v3"
