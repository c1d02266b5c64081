"""Clips manifest: one Parquet row per usable episode of an EgoDex-layout folder.

Columns (DESIGN.md): clip_id, video_path, annotation_path, task, description, n_frames, fps,
split; then extras (environment, llm_description, width, height). ``task`` is the task
*folder* (the stable key; the HDF5 ``task`` attribute is free text). The split is grouped by
task folder; ``assign_splits`` is the one home of that rule. Episodes that fail
``read_episode`` are left out and reported as problems with the reason; one bad episode never
stops the index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thinkjepa.config import DataConfig, SamplingConfig
from thinkjepa.data.egodex import Episode, EpisodeError, episode_description, read_episode

SPLITS = ("train", "val", "test")

COLUMNS = ("clip_id", "video_path", "annotation_path", "task", "description", "n_frames", "fps", "split")
SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("video_path", pa.string()),
        ("annotation_path", pa.string()),
        ("task", pa.string()),
        ("description", pa.string()),
        ("n_frames", pa.int64()),
        ("fps", pa.float64()),
        ("split", pa.string()),
        ("environment", pa.string()),
        ("llm_description", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Problem:
    clip_id: str | None
    """None for a dataset-level message (e.g. too few task folders for every split)."""
    reason: str
    severity: str = "error"
    """``error``: the clip is left out; ``warning``: indexed, but worth knowing."""

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _natural_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def discover_episodes(root: str | Path) -> tuple[list[tuple[str, Path, Path]], list[Problem]]:
    """``(clip_id, video, annotation)`` for every ``<task>/<n>.hdf5|.mp4`` under ``root``, sorted;
    a file without its partner is a problem, not an exception."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    found: list[tuple[str, Path, Path]] = []
    problems: list[Problem] = []
    for task_dir in sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: _natural_key(d.name)):
        stems = {p.stem for p in task_dir.iterdir() if p.suffix in (".mp4", ".hdf5") and not p.name.startswith(".")}
        for stem in sorted(stems, key=_natural_key):
            clip_id = f"{task_dir.name}/{stem}"
            video, annotation = task_dir / f"{stem}.mp4", task_dir / f"{stem}.hdf5"
            if not video.is_file():
                problems.append(Problem(clip_id, f"missing video (MP4) file {video}"))
            elif not annotation.is_file():
                problems.append(Problem(clip_id, f"missing annotation (HDF5) file {annotation}"))
            else:
                found.append((clip_id, video, annotation))
    return found, problems


def assign_splits(tasks: Iterable[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Task folder -> ``train``/``val``/``test``: the one split rule.

    Seeded shuffle of the sorted unique task names, then contiguous blocks sized by
    ``fractions`` (train, val, test). Every non-zero share gets at least one task while at
    least one task is left for train, so 3 tasks give one per split, 2 give train + test (val
    empty) and 1 gives train only. Deterministic: same tasks, fractions and seed, same answer.
    """
    names = sorted(set(tasks))
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0 or fr[0] <= 0:
        raise ValueError(f"split fractions must be three non-negative shares (train > 0), got {list(fractions)}")
    fr = fr / fr.sum()
    n = len(names)
    if n == 0:
        return {}
    order = [names[i] for i in np.random.default_rng(seed).permutation(n)]
    counts = {}
    # test before val: with two task folders a held-out test set matters more than a val set
    for split, share in (("test", fr[2]), ("val", fr[1])):
        want = int(round(share * n)) if share > 0 else 0
        if share > 0:
            want = max(1, want)
        counts[split] = max(0, min(want, n - 1 - sum(counts.values())))
    counts["train"] = n - counts["test"] - counts["val"]
    out: dict[str, str] = {}
    pos = 0
    for split in SPLITS:
        for name in order[pos : pos + counts[split]]:
            out[name] = split
        pos += counts[split]
    return out


def _row(ep: Episode, split: str) -> dict:
    meta = ep.metadata
    return {
        "clip_id": ep.clip_id,
        "video_path": str(ep.video_path.resolve()),
        "annotation_path": str(ep.annotation_path.resolve()),
        "task": ep.task,
        "description": episode_description(meta),
        "n_frames": int(ep.n_frames),
        "fps": float(ep.fps),
        "split": split,
        "environment": str(meta.get("environment") or ""),
        "llm_description": str(meta.get("llm_description") or ""),
        "width": int(ep.width),
        "height": int(ep.height),
    }


def _check(item: tuple[str, Path, Path], sampling: SamplingConfig) -> Episode | Problem:
    clip_id, video, annotation = item
    try:
        return read_episode(video, annotation, clip_id=clip_id, sampling=sampling)
    except EpisodeError as e:
        return Problem(clip_id, e.reason)
    except Exception as e:  # noqa: BLE001 - an unforeseen failure is still one clip's problem
        return Problem(clip_id, f"unexpected {type(e).__name__}: {e}")


def index_episodes(
    root: str | Path,
    data_cfg: DataConfig,
    sampling_cfg: SamplingConfig,
    workers: int = 1,
    progress: bool = False,
) -> tuple[pa.Table, list[Problem]]:
    """Validate every episode under ``root`` and build the manifest table (nothing written)."""
    items, problems = discover_episodes(root)
    results: list[Episode | Problem] = []

    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("indexing episodes", total=len(items))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for res in pool.map(lambda it: _check(it, sampling_cfg), items):
                results.append(res)
                bar.advance(job)
    episodes = [r for r in results if isinstance(r, Episode)]
    problems += [r for r in results if isinstance(r, Problem)]
    problems.sort(key=lambda p: _natural_key(p.clip_id or ""))
    splits = assign_splits([ep.task for ep in episodes], data_cfg.split_fractions, data_cfg.split_seed)
    problems += _split_warnings(splits, data_cfg.split_fractions)
    rows = [_row(ep, splits[ep.task]) for ep in episodes]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return table, problems


def _split_warnings(splits: dict[str, str], fractions: Sequence[float]) -> list[Problem]:
    if not splits:
        return [Problem(None, "no usable episodes: the manifest is empty")]
    used = set(splits.values())
    empty = [s for s, share in zip(SPLITS, fractions) if share > 0 and s not in used]
    if not empty:
        return []
    return [
        Problem(
            None,
            f"only {len(splits)} task folder(s) ({', '.join(sorted(splits))}); the split is grouped by task "
            f"folder, so split(s) {', '.join(empty)} are empty (3 or more task folders give every split one)",
            severity="warning",
        )
    ]


def build_manifest(
    root: str | Path,
    out: str | Path,
    data_cfg: DataConfig,
    sampling_cfg: SamplingConfig,
    workers: int = 1,
    progress: bool = False,
) -> tuple[pa.Table, list[Problem]]:
    """Index ``root`` and write the manifest to ``out`` (Parquet, atomically). Returns the table
    and the problems (left-out episodes with their reason, and dataset-level warnings)."""
    table, problems = index_episodes(root, data_cfg, sampling_cfg, workers=workers, progress=progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    provenance = {
        "root": str(Path(root).resolve()),
        "data": data_cfg.model_dump(mode="json"),
        "sampling": sampling_cfg.model_dump(mode="json"),
        "problems": [p.as_dict() for p in problems],
    }
    table = table.replace_schema_metadata({b"thinkjepa.manifest": json.dumps(provenance).encode()})
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return table, problems


def read_manifest(path: str | Path, split: str | Sequence[str] | None = None) -> pa.Table:
    """Read a manifest written by ``build_manifest``; ``split`` keeps only those split(s)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found (build it with `tj data index ROOT --out {path}`)")
    table = pq.read_table(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a clips manifest: missing column(s) {', '.join(missing)}")
    return filter_split(table, split) if split is not None else table


def filter_split(table: pa.Table, split: str | Sequence[str]) -> pa.Table:
    """Rows of the given split(s) (``train``/``val``/``test``)."""
    wanted = [split] if isinstance(split, str) else list(split)
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; splits are {list(SPLITS)}")
    mask = np.isin(np.asarray(table.column("split").to_pylist(), dtype=object), wanted)
    return table.filter(pa.array(mask, type=pa.bool_()))
