"""The per-process memo of episode arrays (train.dataset._EpisodeMemo): one read per file
across datasets, a replaced file read anew, read-only arrays, bounded by bytes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from thinkjepa.train.dataset import _EpisodeMemo

pytestmark = pytest.mark.slow  # synthesises two episodes (video + HDF5)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    from thinkjepa.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("memo")
    synthesize_dataset(root, episodes=2, seed=0, n_frames=16, size=32, tasks=1)
    return sorted((str(p.with_suffix(".mp4")), str(p)) for p in root.rglob("*.hdf5"))


def test_one_read_per_file_and_a_replaced_file_is_read_anew(episodes, monkeypatch) -> None:
    from thinkjepa.data import egodex

    reads = []
    real = egodex.read_episode
    monkeypatch.setattr(egodex, "read_episode", lambda *a, **kw: reads.append(a[1]) or real(*a, **kw))
    memo = _EpisodeMemo(max_bytes=2**30)
    video, annotation = episodes[0]
    first = memo.get(video, annotation, "a/0")
    again = memo.get(video, annotation, "a/0")
    assert again is first and reads == [annotation]
    joints, conf, pose = first
    assert joints.ndim == 3 and conf.shape == joints.shape[:2] and pose.shape[1:] == (4, 4)
    with pytest.raises(ValueError):
        joints[0, 0, 0] = 1.0  # shared between datasets: nobody may change it

    st = os.stat(annotation)
    os.utime(annotation, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was replaced
    fresh = memo.get(video, annotation, "a/0")
    assert fresh is not first and reads == [annotation, annotation]
    np.testing.assert_array_equal(fresh[0], joints)


def test_the_memo_keeps_at_most_its_bytes(episodes) -> None:
    one = sum(a.nbytes for a in _EpisodeMemo(2**30).get(*episodes[0], "a/0"))
    memo = _EpisodeMemo(max_bytes=one)  # room for one episode
    memo.get(*episodes[0], "a/0")
    memo.get(*episodes[1], "a/1")
    assert len(memo.entries) == 1 and memo.bytes <= one
    assert next(iter(memo.entries))[0] == episodes[1][1]  # the least recently used went
