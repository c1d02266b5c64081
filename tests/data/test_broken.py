"""A corpus of broken episodes (built here from good synthetic ones): each gets its specific
reason, from the reader and from the index, and the good ones still index."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from thinkjepa.config import DataConfig, SamplingConfig
from thinkjepa.data.egodex import EpisodeError, read_episode
from thinkjepa.data.manifest import build_manifest
from thinkjepa.data.synth import synthesize_dataset

# clip name -> a regex the reason must match
EXPECTED = {
    "broken/truncated_hdf5": r"unreadable HDF5 truncated_hdf5\.hdf5 \(truncated or corrupt",
    "broken/corrupt_mp4": r"unreadable video corrupt_mp4\.mp4",
    "broken/truncated_mp4": r"(unreadable|corrupt) video truncated_mp4\.mp4",
    "broken/corrupt_frames": r"corrupt video corrupt_frames\.mp4",
    "broken/missing_keys": r"missing key\(s\) in missing_keys\.hdf5: transforms/leftThumbTip, transforms/rightHand",
    "broken/nan_pose": r"NaN/Inf in joint transforms \(joints rightIndexFingerTip\) at 2 frame\(s\), first \[5, 9\]",
    "broken/nan_camera": r"NaN/Inf in camera poses at 1 frame\(s\), first \[3\]",
    "broken/frame_mismatch": r"frame count mismatch: video has 24 frames, HDF5 has 20",
    "broken/uneven_rows": r"per-frame arrays disagree on the frame count in uneven_rows\.hdf5: "
    r"transforms/camera has 24 rows, transforms/leftHand has 23",
    "broken/too_short": r"too short: 12 frames, need at least 16",
    "broken/no_video": r"missing video \(MP4\) file",
}


def _copy(src: Path, dst_dir: Path, name: str) -> tuple[Path, Path]:
    dst_dir.mkdir(parents=True, exist_ok=True)
    v, a = dst_dir / f"{name}.mp4", dst_dir / f"{name}.hdf5"
    shutil.copy(src.with_suffix(".mp4"), v)
    shutil.copy(src.with_suffix(".hdf5"), a)
    return v, a


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src_root = tmp_path_factory.mktemp("corpus_src")
    synthesize_dataset(src_root / "ok", 3, seed=11, n_frames=24, size=64, tasks=3)
    synthesize_dataset(src_root / "short", 1, seed=12, n_frames=12, size=64, tasks=1)
    root = tmp_path_factory.mktemp("corpus")
    good = sorted((src_root / "ok").glob("*/*.hdf5"))
    for h in good:  # three good task folders
        shutil.copytree(h.parent, root / h.parent.name, dirs_exist_ok=True)
    src = good[0].with_suffix("")
    broken = root / "broken"

    _, a = _copy(src, broken, "truncated_hdf5")
    a.write_bytes(a.read_bytes()[: a.stat().st_size // 2])

    v, _ = _copy(src, broken, "corrupt_mp4")
    v.write_bytes(np.random.default_rng(0).integers(0, 256, v.stat().st_size, dtype=np.uint8).tobytes())

    v, _ = _copy(src, broken, "truncated_mp4")
    v.write_bytes(v.read_bytes()[: v.stat().st_size // 3])

    # container intact, but the tail of the frame data zeroed: only decoding reveals it
    v, _ = _copy(src, broken, "corrupt_frames")
    data = bytearray(v.read_bytes())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    assert 0 < mdat < moov, "x264 via PyAV writes moov after mdat"
    cut = mdat + 8 + (moov - mdat) * 6 // 10
    data[cut : moov - 8] = bytes(moov - 8 - cut)
    v.write_bytes(bytes(data))

    _, a = _copy(src, broken, "missing_keys")
    with h5py.File(a, "a") as f:
        del f["transforms/leftThumbTip"], f["transforms/rightHand"]

    _, a = _copy(src, broken, "nan_pose")
    with h5py.File(a, "a") as f:
        d = f["transforms/rightIndexFingerTip"]
        d[5, 0, 3] = np.nan
        d[9, 1, 1] = np.inf

    _, a = _copy(src, broken, "nan_camera")
    with h5py.File(a, "a") as f:
        f["transforms/camera"][3, 2, 3] = np.nan

    _, a = _copy(src, broken, "frame_mismatch")
    with h5py.File(a, "a") as f:
        for group in ("transforms", "confidences"):
            for name in list(f[group]):
                data = f[f"{group}/{name}"][:20]
                del f[f"{group}/{name}"]
                f[f"{group}/{name}"] = data

    _, a = _copy(src, broken, "uneven_rows")
    with h5py.File(a, "a") as f:
        data = f["transforms/leftHand"][:23]
        del f["transforms/leftHand"]
        f["transforms/leftHand"] = data

    _copy(next((src_root / "short").glob("*/*.hdf5")).with_suffix(""), broken, "too_short")

    _copy(src, broken, "no_video")
    (broken / "no_video.mp4").unlink()
    return root


@pytest.mark.slow
def test_reader_names_the_clip_and_the_cause(corpus: Path, demo_sampling: SamplingConfig) -> None:
    for clip_id, pattern in EXPECTED.items():
        with pytest.raises(EpisodeError, match=pattern) as info:
            read_episode(corpus / f"{clip_id}.mp4", corpus / f"{clip_id}.hdf5", sampling=demo_sampling)
        assert info.value.clip_id == clip_id and str(info.value).startswith(clip_id + ": ")


def test_index_lists_each_bad_episode_and_keeps_the_good(corpus: Path, demo_sampling: SamplingConfig, tmp_path: Path) -> None:
    table, problems = build_manifest(corpus, tmp_path / "m.parquet", DataConfig(), demo_sampling)
    errors = {p.clip_id: p.reason for p in problems if p.severity == "error"}
    assert set(errors) == set(EXPECTED)
    for clip_id, pattern in EXPECTED.items():
        assert re.search(pattern, errors[clip_id]), (clip_id, errors[clip_id])
    # the three good episodes (one per task folder) are indexed, one task folder per split
    assert sorted(table.column("split").to_pylist()) == ["test", "train", "val"]
    assert all(not c.startswith("broken/") for c in table.column("clip_id").to_pylist())
    assert table.num_rows == 3
