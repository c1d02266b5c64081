"""thinkjepa.sampling: causality for any configuration, both modes, too-short episodes."""

from __future__ import annotations

import numpy as np
import pytest

from thinkjepa.config import SamplingConfig
from thinkjepa.sampling import TooShortError, Window, min_frames, split_window_id, windows_for_clip


def _random_configs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        mode = rng.choice(["stride", "split_half"])
        cfg = SamplingConfig(
            mode=mode,
            past_frames=int(rng.integers(1, 12)),
            future_frames=int(rng.integers(1, 12)),
            stride=int(rng.integers(1, 4)),
            thinker_frames=int(rng.integers(1, 16)),
            thinker_span=None if rng.random() < 0.5 else int(rng.integers(1, 80)),
            windows_per_clip=int(rng.integers(1, 5)),
            window_hop=None if rng.random() < 0.5 else int(rng.integers(1, 20)),
        )
        yield cfg, int(min_frames(cfg) + rng.integers(0, 60))


def test_no_input_frame_is_at_or_after_t_for_any_config() -> None:
    for cfg, n in _random_configs(400):
        windows = windows_for_clip("task/0", n, cfg)
        assert 1 <= len(windows) <= cfg.windows_per_clip
        assert [w.t for w in windows] == sorted({w.t for w in windows})
        for w in windows:
            assert max(w.past) < w.t and max(w.thinker) < w.t and w.pose_frame < w.t
            assert min(w.future) >= w.t and max(w.future) < n and min(w.past) >= 0
            assert list(w.past) == sorted(w.past) and list(w.future) == sorted(w.future)
            assert len(w.past) == cfg.past_frames and len(w.future) == cfg.future_frames
            assert len(w.thinker) == cfg.thinker_frames
            if cfg.mode == "stride" and cfg.thinker_span is not None:
                assert min(w.thinker) >= w.t - cfg.thinker_span
            assert split_window_id(w.window_id) == ("task/0", w.t)


def test_stride_mode_dense_window_ends_just_before_t() -> None:
    cfg = SamplingConfig(mode="stride", past_frames=8, future_frames=8, thinker_frames=8)
    (w,) = windows_for_clip("a/1", 64, cfg)
    assert w.t == 56 and w.past == tuple(range(48, 56)) and w.future == tuple(range(56, 64))
    assert w.thinker[0] == 0 and w.thinker[-1] == 55 and w.pose_frame == 55
    cfg2 = cfg.model_copy(update={"windows_per_clip": 3, "stride": 2})
    ts = [w.t for w in windows_for_clip("a/1", 64, cfg2)]
    assert ts == [17, 33, 49]  # hop = stride * future_frames, counted back from the last t


def test_thinker_stop_dense_keeps_the_branches_on_disjoint_frames() -> None:
    cfg = SamplingConfig(mode="stride", past_frames=8, future_frames=8, thinker_frames=8, thinker_stop="dense")
    (w,) = windows_for_clip("a/1", 48, cfg)
    assert w.t == 40 and w.past[0] == 32
    assert w.thinker[0] == 0 and w.thinker[-1] == 31 and len(set(w.thinker)) == 8
    assert not set(w.thinker) & set(w.past)
    with pytest.raises(TooShortError, match="before the dense window"):
        windows_for_clip("a/1", 48, cfg.model_copy(update={"thinker_span": 8}))


def test_split_half_mode_matches_the_reference_rule() -> None:
    cfg = SamplingConfig(mode="split_half", past_frames=4, future_frames=4, thinker_frames=4)
    (w,) = windows_for_clip("a/1", 20, cfg)
    assert w.t == 10 and w.past == (0, 3, 6, 9) and w.future == (10, 13, 16, 19) and w.thinker == w.past
    (w,) = windows_for_clip("a/1", 20, cfg.model_copy(update={"thinker_frames": 2}))
    assert w.thinker == (0, 9)


def test_too_short_episodes() -> None:
    for cfg, _ in _random_configs(50, seed=1):
        need = min_frames(cfg)
        assert windows_for_clip("t/0", need, cfg)
        with pytest.raises(TooShortError, match=r"t/0: .* need at least"):
            windows_for_clip("t/0", need - 1, cfg)


def test_window_refuses_a_leak() -> None:
    with pytest.raises(ValueError, match="causality"):
        Window("a/1", 5, (3, 4, 5), (5, 6), (0, 2))
    with pytest.raises(ValueError, match="causality"):
        Window("a/1", 5, (3, 4), (5, 6), (0, 5))
    with pytest.raises(ValueError, match="target frame"):
        Window("a/1", 5, (3, 4), (4, 6), (0, 2))
