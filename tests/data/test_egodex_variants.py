"""EgoDex as users have it: files without ``confidences`` (or with some joints missing),
episodes without ``description`` or ``llm_description``, and folders that are not an
EgoDex root. Built from copies of the real sample episodes."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from thinkjepa.config import DataConfig, SamplingConfig
from thinkjepa.data.egodex import episode_description, read_episode
from thinkjepa.data.manifest import NoEpisodesError, build_manifest, discover_episodes
from thinkjepa.joints import JOINTS

SMALL = SamplingConfig(mode="stride", past_frames=8, future_frames=8, thinker_frames=8)


@pytest.fixture
def copy_root(egodex_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "egodex"
    shutil.copytree(egodex_root, root, ignore=shutil.ignore_patterns("README.md"))
    for p in root.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return root


@pytest.mark.slow
def test_episode_without_confidences_is_kept_with_unknown_confidence(copy_root: Path, tmp_path: Path) -> None:
    a = copy_root / "sort_beads" / "9.hdf5"
    with h5py.File(a, "a") as f:
        del f["confidences"]
    ep = read_episode(a.with_suffix(".mp4"), a, sampling=SMALL)
    assert not ep.has_confidences and not ep.confidence_known.any()
    np.testing.assert_array_equal(ep.confidences, np.ones((ep.n_frames, len(JOINTS)), np.float32))
    table, problems = build_manifest(copy_root, tmp_path / "m.parquet", DataConfig(), SMALL)
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    assert set(rows) == {"sort_beads/9", "lock_unlock_key/9", "charge_uncharge_airpods/45"}
    assert problems == []
    assert rows["sort_beads/9"]["has_confidences"] is False and rows["lock_unlock_key/9"]["has_confidences"] is True


def test_missing_joints_in_confidences_are_unknown_the_rest_read(copy_root: Path, egodex_root: Path) -> None:
    a = copy_root / "lock_unlock_key" / "9.hdf5"
    with h5py.File(a, "a") as f:
        del f["confidences/leftThumbTip"], f["confidences/rightHand"]
    ep = read_episode(a.with_suffix(".mp4"), a)
    full = read_episode(egodex_root / "lock_unlock_key" / "9.mp4", egodex_root / "lock_unlock_key" / "9.hdf5")
    gone = [JOINTS.index("leftThumbTip"), JOINTS.index("rightHand")]
    assert not ep.has_confidences and full.has_confidences
    assert sorted(np.flatnonzero(~ep.confidence_known).tolist()) == sorted(gone)
    np.testing.assert_array_equal(ep.confidences[:, gone], 1.0)
    keep = [j for j in range(len(JOINTS)) if j not in gone]
    np.testing.assert_array_equal(ep.confidences[:, keep], full.confidences[:, keep])


def test_missing_transforms_are_still_refused_naming_them_first(copy_root: Path) -> None:
    a = copy_root / "sort_beads" / "9.hdf5"
    with h5py.File(a, "a") as f:
        del f["confidences"], f["transforms/leftHand"]
    table, problems = build_manifest(copy_root, copy_root / "m.parquet", DataConfig(), SMALL)
    reason = {p.clip_id: p.reason for p in problems}["sort_beads/9"]
    assert reason == "missing key(s) in 9.hdf5: transforms/leftHand"


def test_confidence_of_the_wrong_length_names_the_key(copy_root: Path) -> None:
    a = copy_root / "sort_beads" / "9.hdf5"
    with h5py.File(a, "a") as f:
        data = f["confidences/rightHand"][:5]
        del f["confidences/rightHand"]
        f["confidences/rightHand"] = data
    with pytest.raises(ValueError, match=r"confidences/rightHand has 5"):
        read_episode(a.with_suffix(".mp4"), a)


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({"description": "d", "llm_description": "l1"}, "d"),
        ({"description": "", "llm_description": "l1", "llm_description2": "l2"}, "l1"),
        ({"llm_description": "l1", "llm_description2": "l2", "which_llm_description": "2"}, "l2"),
        ({"llm_description": "None", "llm_description2": "l2"}, "l2"),  # EgoDex writes the string "None"
        ({"description": "None", "description2": "d2"}, "d2"),
        ({"task": "Vertical Pick & Place"}, "Vertical Pick & Place"),
        ({}, ""),
    ],
)
def test_description_fallback_order(attrs: dict, expected: str) -> None:
    assert episode_description(attrs) == expected


@pytest.mark.slow
def test_attributes_missing_in_the_file_fall_back(copy_root: Path, tmp_path: Path) -> None:
    a = copy_root / "sort_beads" / "9.hdf5"
    with h5py.File(a, "a") as f:
        for key in ("description", "task"):
            del f.attrs[key]
    ep = read_episode(a.with_suffix(".mp4"), a)
    assert ep.metadata["task"] == "sort_beads"  # the folder name stands in
    table, _ = build_manifest(copy_root, tmp_path / "m.parquet", DataConfig(), SMALL)
    row = {r["clip_id"]: r for r in table.to_pylist()}["sort_beads/9"]
    assert row["description"].startswith("From a group of beads on a red tablecloth")  # llm_description


def test_egodex_top_folder_is_refused_with_the_next_command(copy_root: Path, tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    copy_root.rename(top / "part2")
    with pytest.raises(NoEpisodesError, match=r"EgoDex top folder.*tj data index .*part2"):
        discover_episodes(top)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(top / "part2" / "sort_beads" / "9.mp4", flat / "9.mp4")
    with pytest.raises(NoEpisodesError, match="episode files directly"):
        discover_episodes(flat)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(NoEpisodesError, match="tj data synth"):
        discover_episodes(tmp_path / "empty")


@pytest.mark.slow
def test_macos_metadata_files_are_ignored(copy_root: Path, tmp_path: Path) -> None:
    (copy_root / "sort_beads" / "._9.hdf5").write_bytes(b"\x00\x05\x16\x07")
    (copy_root / ".Trashes").mkdir()
    (copy_root / ".Trashes" / "1.mp4").write_bytes(b"")
    table, problems = build_manifest(copy_root, tmp_path / "m.parquet", DataConfig(), SMALL)
    assert table.num_rows == 3 and problems == []
