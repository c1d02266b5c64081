"""Any folder tree under the data root lists and indexes: a folder link loop, a name that is not
valid UTF-8, a broken link; each is named in a problem line, none is an error."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from typer.testing import CliRunner

from thinkjepa.config import DataConfig, SamplingConfig
from thinkjepa.data.listing import dataset_listing
from thinkjepa.data.manifest import build_manifest, discover_episodes


def _odd_tree(root: Path) -> Path:
    (root / "pour").mkdir(parents=True)
    for name in ("0.mp4", "0.hdf5"):
        (root / "pour" / name).write_bytes(b"x")
    os.symlink(root, root / "pour" / "loop")  # pour/loop/pour/loop/... without a guard
    os.symlink(root / "gone", root / "dangling")
    bad = os.fsencode(root) + b"/caf\xe9"  # Latin-1 bytes: not UTF-8
    os.mkdir(bad)
    for name in (b"/0.mp4", b"/0.hdf5"):
        with open(bad + name, "wb") as f:
            f.write(b"x")
    return root


def test_listing_survives_a_loop_a_non_utf8_name_and_a_broken_link(tmp_path: Path) -> None:
    root = _odd_tree(tmp_path / "data")
    got = dataset_listing(str(root), tmp_path / "cache")
    assert got.files == 4  # pour's pair and the non-UTF-8 folder's pair, each once
    assert any("loop" in p and "link loop" in p for p in got.problems), got.problems
    again = dataset_listing(str(root), tmp_path / "cache")
    assert again.digest == got.digest


def test_index_names_the_non_utf8_folder_and_keeps_going(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    task = next(d for d in sorted(root.iterdir()) if d.is_dir())
    os.rename(task, os.fsencode(root) + b"/caf\xe9")
    os.symlink(root, root / "loop")
    found, problems = discover_episodes(root)
    odd = [p for p in problems if "not valid UTF-8" in p.reason]
    assert found and odd and all("caf\ufffd" in (p.clip_id or "") for p in odd)
    table, problems = build_manifest(root, tmp_path / "m.parquet", DataConfig(), SamplingConfig(mode="stride",
                                     past_frames=8, future_frames=8, thinker_frames=8))
    assert table.num_rows > 0 and any("not valid UTF-8" in p.reason for p in problems)


def test_tj_status_on_a_looping_root_prints_a_problem_line(tmp_path: Path) -> None:
    from thinkjepa.app.cli.main import app

    root = _odd_tree(tmp_path / "data")
    res = CliRunner().invoke(app, ["status", "--set", f"workdir={tmp_path / 'w'}", "--set", f"data.root={root}"])
    assert res.exit_code == 0, res.output
    assert "problem: index:" in res.output and "Too many levels" not in res.output
