"""Pooling of prefill token states into guidance vectors, on hand-made token layouts."""

import numpy as np
import pytest

from thinkjepa.cache_schema import TOKEN_TEXT, TOKEN_VISION
from thinkjepa.train.pooling import frame_groups, n_slots, pool_prefill


def layout():
    # text, 2 tokens of frame group @0, text, 2 tokens of frame group @6, text
    kind = np.array([TOKEN_TEXT, TOKEN_VISION, TOKEN_VISION, TOKEN_TEXT, TOKEN_VISION, TOKEN_VISION, TOKEN_TEXT], np.uint8)
    frame = np.array([-1, 0, 0, -1, 6, 6, -1], np.int32)
    tokens = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)
    return tokens, kind, frame


def test_each_pooling_averages_exactly_its_tokens():
    tokens, kind, frame = layout()
    np.testing.assert_allclose(pool_prefill(tokens, kind, frame, "all")[:, 0], tokens.mean(1))
    np.testing.assert_allclose(pool_prefill(tokens, kind, frame, "vision")[:, 0], tokens[:, [1, 2, 4, 5]].mean(1))
    groups = pool_prefill(tokens, kind, frame, "frame_groups")
    assert groups.shape == (2, 2, 3)
    np.testing.assert_allclose(groups[:, 0], tokens[:, [1, 2]].mean(1))
    np.testing.assert_allclose(groups[:, 1], tokens[:, [4, 5]].mean(1))
    only_late = pool_prefill(tokens, kind, frame, "frame_groups", keep=[1])
    np.testing.assert_allclose(only_late[:, 0], groups[:, 1])
    assert list(frame_groups(kind, frame)) == [0, 6]
    assert n_slots("frame_groups", 2) == 2 and n_slots("frame_groups", 2, [1]) == 1 and n_slots("vision", 2) == 1


def test_pooling_refuses_what_it_cannot_do():
    tokens, kind, frame = layout()
    with pytest.raises(ValueError, match="no vision tokens"):
        pool_prefill(tokens, np.zeros_like(kind), frame, "vision", what="task/0@8")
    with pytest.raises(ValueError, match=r"task/0@8: frame groups \[5\]"):
        pool_prefill(tokens, kind, frame, "frame_groups", keep=[5], what="task/0@8")
    with pytest.raises(ValueError, match="unknown pooling"):
        n_slots("max", 2)
