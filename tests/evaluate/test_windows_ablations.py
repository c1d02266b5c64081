"""Rollout frames, baselines, guidance-ablation sources and latent health on hand-made inputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from thinkjepa.evaluate.ablations import GuidanceSwap, same_clip_sources, shuffled_sources
from thinkjepa.evaluate.latent import LatentStep
from thinkjepa.evaluate.windows import baseline_predictions, rollout_frames
from thinkjepa.sampling import Window


def _window(t=10, past=(6, 8), future=(10, 12, 14)) -> Window:
    return Window("task/ep", t, past, future, past)


def test_rollout_frames_continue_at_the_future_spacing():
    assert rollout_frames(_window(), 3) == [(10, 12, 14), (16, 18, 20), (22, 24, 26)]


def test_constant_velocity_is_exact_on_linear_motion_and_last_observed_holds():
    T = 30
    rng = np.random.default_rng(0)
    x0, v = rng.normal(size=(52, 3)), rng.normal(size=(52, 3)) * 0.01
    joints = (x0[None] + np.arange(T)[:, None, None] * v[None]).astype(np.float64)
    ep = SimpleNamespace(joints=joints)
    frames = (10, 12, 14, 16)
    pred = baseline_predictions(ep, _window(), frames)
    np.testing.assert_allclose(pred["constant_velocity"], joints[list(frames)], atol=1e-12)
    np.testing.assert_allclose(pred["last_observed"], np.broadcast_to(joints[8], (4, 52, 3)))
    # only observed frames are read: changing every frame >= t changes neither forecast
    moved = joints.copy()
    moved[10:] += 5.0
    again = baseline_predictions(SimpleNamespace(joints=moved), _window(), frames)
    for k in pred:
        np.testing.assert_array_equal(pred[k], again[k])


def test_shuffled_guidance_never_keeps_its_own():
    for n in (2, 3, 7):
        src = shuffled_sources(n, seed=n)
        assert sorted(src) == list(range(n)) and all(s != i for i, s in enumerate(src))
    with pytest.raises(ValueError):
        shuffled_sources(1)


def test_same_clip_sources_prefer_the_nearest_earlier_window():
    ids = ["a/0@8", "a/0@16", "a/0@24", "b/1@8", "c/2@8", "c/2@20"]
    assert same_clip_sources(ids) == {0: 1, 1: 0, 2: 1, 4: 5, 5: 4}


class _Samples(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"past_latents": torch.full((2,), float(i)), "guid_prefill_mean": torch.full((3, 4), float(i) + 1),
                "guid_prefill_mask": torch.tensor([True, i > 0])}


def test_guidance_swap_touches_only_guidance_keys():
    base = _Samples()
    zero = GuidanceSwap(base, "zeroed")[2]
    assert torch.equal(zero["guid_prefill_mean"], torch.zeros(3, 4)) and torch.equal(zero["past_latents"], torch.full((2,), 2.0))
    assert torch.equal(zero["guid_prefill_mask"], base[2]["guid_prefill_mask"])
    swapped = GuidanceSwap(base, "shuffled", sources=[2, 0, 1])[0]
    assert torch.equal(swapped["guid_prefill_mean"], base[2]["guid_prefill_mean"])
    assert torch.equal(swapped["guid_prefill_mask"], base[2]["guid_prefill_mask"])
    assert torch.equal(swapped["past_latents"], base[0]["past_latents"])
    sub = GuidanceSwap(base, "same_clip", sources=[0], indices=[1])
    assert len(sub) == 1 and torch.equal(sub[0]["guid_prefill_mean"], base[0]["guid_prefill_mean"])


def test_latent_health_flags_collapse_and_explosion():
    rng = np.random.default_rng(0)
    enc = [rng.normal(size=(2, 4, 8)) for _ in range(5)]
    same, big, flat = LatentStep(), LatentStep(), LatentStep()
    for e in enc:
        same.add(e, e)
        big.add(10 * e, e)
        flat.add(np.ones_like(e), e)
    s = same.summary()
    assert s["L1"] == 0 and s["L2"] == 0 and s["cos"] == pytest.approx(0, abs=1e-12)
    assert s["std_ratio"] == pytest.approx(1) and s["norm_ratio"] == pytest.approx(1) and not s["flag"]
    b = big.summary()
    assert b["norm_ratio"] == pytest.approx(10) and b["flag"] and b["cos"] == pytest.approx(0, abs=1e-12)
    f = flat.summary()
    assert f["std_ratio"] == pytest.approx(0) and f["flag"]
    # a step without encoded latents: no distances, health against the reference step's encoded ones
    late = LatentStep()
    for e in enc:
        late.add(3 * e, None)
    lt = late.summary(reference=same)
    assert lt["L1"] is None and lt["health_reference"] == "step 1" and lt["norm_ratio"] == pytest.approx(3) and lt["flag"]
