"""Clips manifest: columns, the grouped split rule, real and synthetic datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from thinkjepa.config import DataConfig, SamplingConfig
from thinkjepa.data.manifest import COLUMNS, assign_splits, build_manifest, filter_split, read_manifest
from thinkjepa.data.splits import SPLIT_RULE, split_of

DESIGN_COLUMNS = ["clip_id", "video_path", "annotation_path", "task", "description", "n_frames", "fps", "split"]


@pytest.mark.slow
def test_real_fixtures_index_one_task_per_split(egodex_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    table, problems = build_manifest(egodex_root, out, DataConfig(), SamplingConfig())
    assert problems == []
    assert table.column_names[: len(DESIGN_COLUMNS)] == DESIGN_COLUMNS == list(COLUMNS)
    rows = {r["clip_id"]: r for r in read_manifest(out).to_pylist()}
    assert {cid: r["n_frames"] for cid, r in rows.items()} == {
        "charge_uncharge_airpods/45": 29, "lock_unlock_key/9": 22, "sort_beads/9": 20}
    assert sorted(r["split"] for r in rows.values()) == ["test", "train", "val"]
    assert rows["sort_beads/9"]["task"] == "sort_beads" and rows["sort_beads/9"]["fps"] == 30.0
    assert rows["sort_beads/9"]["description"].startswith("from a group of beads")
    # this file has no `description` attr: the selected LLM description stands in
    assert rows["charge_uncharge_airpods/45"]["description"].startswith("Uncharge the AirPods")
    assert Path(rows["lock_unlock_key/9"]["video_path"]).is_file()


@pytest.mark.slow
def test_synthetic_split_is_grouped_seeded_and_deterministic(synth_root: Path, tmp_path: Path, demo_sampling) -> None:
    cfg = DataConfig(split_fractions=(0.5, 0.25, 0.25), split_seed=5)
    t1, p1 = build_manifest(synth_root, tmp_path / "a.parquet", cfg, demo_sampling)
    t2, _ = build_manifest(synth_root, tmp_path / "b.parquet", cfg, demo_sampling)
    assert p1 == [] and t1.num_rows == 16
    assert t1.to_pylist() == t2.to_pylist()
    task_split: dict[str, set[str]] = {}
    for r in t1.to_pylist():
        task_split.setdefault(r["task"], set()).add(r["split"])
    assert all(len(s) == 1 for s in task_split.values())  # no task crosses splits
    assert set().union(*task_split.values()) == {"train", "val", "test"}
    test = read_manifest(tmp_path / "a.parquet", split="test")
    assert test.num_rows == 4 and set(test.column("split").to_pylist()) == {"test"}
    assert filter_split(t1, ["train", "val"]).num_rows == 12
    assert pq.read_schema(tmp_path / "a.parquet").metadata[b"thinkjepa.manifest"]


@pytest.mark.parametrize(
    "n, expected",
    [(1, {"train": 1}), (2, {"train": 1, "test": 1}), (3, {"train": 1, "val": 1, "test": 1}),
     (10, {"train": 8, "val": 1, "test": 1})],
)
def test_assign_splits_sizes(n: int, expected: dict[str, int]) -> None:
    tasks = [f"task{i}" for i in range(n)]
    got = assign_splits(tasks, (0.8, 0.1, 0.1), seed=42)
    assert set(got) == set(tasks)
    counts = {s: list(got.values()).count(s) for s in ("train", "val", "test") if s in got.values()}
    assert counts == expected


def test_split_shares_follow_the_fractions_on_many_groups() -> None:
    got = assign_splits([f"task{i}" for i in range(4000)], (0.8, 0.1, 0.1), seed=42)
    counts = {s: list(got.values()).count(s) for s in ("train", "val", "test")}
    # a hash, not a quota: each share is binomial (sd ~19 for val/test at n=4000), so 5 sd bounds
    assert abs(counts["val"] - 400) < 100 and abs(counts["test"] - 400) < 100


def test_adding_and_removing_tasks_moves_no_other_task() -> None:
    fr, seed = (0.8, 0.1, 0.1), 42
    base = [f"task{i}" for i in range(100)]
    before = assign_splits(base, fr, seed)
    assert {"train", "val", "test"} <= set(before.values())
    grown = assign_splits(base + [f"new{i}" for i in range(30)], fr, seed)
    shrunk = assign_splits([t for t in base if t not in ("task3", "task17", "task58")], fr, seed)
    assert {t: grown[t] for t in base} == before
    assert shrunk == {t: s for t, s in before.items() if t not in ("task3", "task17", "task58")}
    # one at a time, each task removed in turn: no other task ever changes split
    for gone in base:
        assert assign_splits([t for t in base if t != gone], fr, seed) == {t: s for t, s in before.items() if t != gone}


@pytest.mark.slow
def test_tiny_dataset_lends_a_group_and_records_it(tmp_path: Path, synth_root: Path, demo_sampling) -> None:
    from thinkjepa.data.splits import assign_splits_recorded

    out, lent = assign_splits_recorded(["a", "b", "c"], (0.8, 0.1, 0.1), 42)
    assert sorted(out.values()) == ["test", "train", "val"]
    assert lent == {g: s for g, s in out.items() if split_of(g, (0.8, 0.1, 0.1), 42) != s}
    assert lent  # three groups hashed at 80% train: the hash alone leaves a split empty here
    cfg = DataConfig(split_fractions=(0.5, 0.25, 0.25), split_seed=5)
    table, _ = build_manifest(synth_root, tmp_path / "m.parquet", cfg, demo_sampling)
    record = json.loads(pq.read_schema(tmp_path / "m.parquet").metadata[b"thinkjepa.manifest"])["splits"]
    assert record["rule"] == SPLIT_RULE and record["seed"] == 5 and record["group_by"] == "task"
    for row in table.to_pylist():
        hashed = split_of(row["task"], cfg.split_fractions, 5)
        assert row["split"] == record["lent_to_empty_split"].get(row["task"], hashed)


def test_assign_splits_is_seeded_and_order_free() -> None:
    tasks = [f"t{i}" for i in range(12)]
    a = assign_splits(tasks, (0.6, 0.2, 0.2), 1)
    assert a == assign_splits(list(reversed(tasks)) + tasks[:3], (0.6, 0.2, 0.2), 1)
    assert any(assign_splits(tasks, (0.6, 0.2, 0.2), s) != a for s in range(2, 6))
    assert set(assign_splits(tasks, (1.0, 0.0, 0.0), 1).values()) == {"train"}
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(tasks, (0.0, 0.5, 0.5), 1)


def _one_task_folder(synth_root: Path, root: Path) -> Path:
    (root / "only").mkdir(parents=True)
    for f in (synth_root / "reach_pads_pan").iterdir():
        (root / "only" / f.name).symlink_to(f)
    return root


def test_one_task_folder_splits_by_episode_with_one_warning(synth_root: Path, tmp_path: Path) -> None:
    root = _one_task_folder(synth_root, tmp_path / "one")
    table, problems = build_manifest(root, tmp_path / "m.parquet", DataConfig(), SamplingConfig())
    assert sorted(table.column("split").to_pylist()) == ["test", "train", "train", "val"]
    assert len(problems) == 1 and problems[0].severity == "warning" and problems[0].clip_id is None
    assert "grouped by episode" in problems[0].reason and "cross-task generalisation is not tested" in problems[0].reason


def test_split_by_task_keeps_task_grouping_and_warns_of_empty_splits(synth_root: Path, tmp_path: Path) -> None:
    root = _one_task_folder(synth_root, tmp_path / "one")
    table, problems = build_manifest(root, tmp_path / "m.parquet", DataConfig(split_by="task"), SamplingConfig())
    assert set(table.column("split").to_pylist()) == {"train"} and table.num_rows == 4
    assert len(problems) == 1 and "split(s) val, test are empty" in problems[0].reason


@pytest.mark.slow
def test_split_by_episode_on_many_tasks(synth_root: Path, tmp_path: Path, demo_sampling) -> None:
    cfg = DataConfig(split_by="episode", split_fractions=(0.5, 0.25, 0.25))
    table, problems = build_manifest(synth_root, tmp_path / "m.parquet", cfg, demo_sampling)
    assert problems == []  # chosen explicitly: no warning
    splits = table.column("split").to_pylist()
    # each episode is its own group: its split is its clip id's hash bucket
    assert splits == [split_of(c, cfg.split_fractions, cfg.split_seed) for c in table.column("clip_id").to_pylist()]
    assert set(splits) == {"train", "val", "test"}
    task_split: dict[str, set[str]] = {}
    for r in table.to_pylist():
        task_split.setdefault(r["task"], set()).add(r["split"])
    assert any(len(s) > 1 for s in task_split.values())  # episodes of one task in several splits


@pytest.mark.slow
def test_episode_paths_follow_the_data_wherever_the_manifest_is_moved(synth_root: Path, tmp_path: Path,
                                                                      demo_sampling) -> None:
    import shutil

    built = tmp_path / "work" / "manifest.parquet"
    build_manifest(synth_root, built, DataConfig(), demo_sampling)
    # the workdir moved to another depth, the data left where it was (a soak trial, a cluster mount)
    moved = tmp_path / "trials" / "one" / "work" / "manifest.parquet"
    moved.parent.mkdir(parents=True)
    shutil.copy2(built, moved)
    paths = read_manifest(moved).column("annotation_path").to_pylist()
    assert paths and all(Path(p).is_file() and Path(p).is_relative_to(synth_root) for p in paths)
    # the data copied too, and the config saying where it is now
    data = shutil.copytree(synth_root, tmp_path / "elsewhere" / "data")
    paths = read_manifest(moved, data_root=data).column("video_path").to_pylist()
    assert paths and all(Path(p).is_file() and Path(p).is_relative_to(data) for p in paths)


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tj data index"):
        read_manifest(tmp_path / "nope.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"clip_id": ["a/0"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing column"):
        read_manifest(tmp_path / "bad.parquet")
    torn = tmp_path / "torn.parquet"
    torn.write_bytes((tmp_path / "bad.parquet").read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{torn}: unreadable manifest .*rebuild it with `tj run index`"):
        read_manifest(torn)
    with pytest.raises(FileNotFoundError):
        build_manifest(tmp_path / "absent", tmp_path / "m.parquet", DataConfig(), SamplingConfig())


@pytest.mark.parametrize("edit, says", [
    (lambda rows: rows + rows[:1], "listed more than once"),
    (lambda rows: [{**rows[0], "split": "holdout"}] + rows[1:], "with a split other than train/val/test"),
    (lambda rows: [{**rows[0], "n_frames": -5}] + rows[1:], "fewer than 1 frame"),
])
def test_a_hand_edited_manifest_is_refused_naming_the_clip(egodex_root: Path, tmp_path: Path, edit, says) -> None:
    import pyarrow as pa

    table, _ = build_manifest(egodex_root, tmp_path / "m.parquet", DataConfig(), SamplingConfig())
    rows = table.to_pylist()
    pq.write_table(pa.Table.from_pylist(edit(rows), schema=table.schema), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=f"{says}.*{rows[0]['clip_id']}"):
        read_manifest(tmp_path / "bad.parquet")


def test_episode_paths_are_joined_under_the_root_as_os_path_would():
    """``_joined_under`` (one Arrow join for the plain paths) gives ``normpath(join(base, v))``
    for every relative path and keeps absolute ones, odd ones included."""
    import os

    import pyarrow as pa

    from thinkjepa.data.manifest import _joined_under

    vals = ["t/0.mp4", "./x", "a/../b", "/abs/p", "/abs/../q", "a//b", "a/b/", None, "x/.h", "x/..y", "..", ".", ""]
    for base in ("/data/root", "/", "/data/root/", "/d/./e"):
        got = _joined_under(pa.chunked_array([pa.array(vals, pa.string())]), base).to_pylist()
        assert got == [None if v is None else v if os.path.isabs(v) else os.path.normpath(os.path.join(base, v))
                       for v in vals]
