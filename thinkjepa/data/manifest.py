"""Clips manifest: one Parquet row per usable episode of an EgoDex-layout folder.

Columns (DESIGN.md): clip_id, video_path, annotation_path, task, description, n_frames, fps,
split; then extras (environment, llm_description, width, height, has_confidences,
file_stamp). ``task`` is the task *folder* (the stable key; the HDF5 ``task`` attribute is
free text). ``has_confidences`` is False for an episode whose file lacks some or all
``confidences`` (unknown confidence reads as 1.0; see thinkjepa.data.egodex). Episodes that
fail ``read_episode`` are left out and reported as problems with the reason; one bad episode
never stops the index.

Splits: ``split_groups`` decides what a split group is (task folder, or episode for small
folders: ``data.split_by``) and ``thinkjepa.data.splits`` is the one home of the split rule (a
stable hash of the group key, so no clip changes split when tasks come or go); the manifest
records the rule, the grouping and any group lent to an empty split.

Indexing reads every episode through dask (threads or processes locally, or a
``dask.distributed`` scheduler address for a cluster) and is incremental: rows and problems
of the previous manifest whose files have the same size and mtime are kept without re-reading.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thinkjepa.config import DataConfig, SamplingConfig
from thinkjepa.data.egodex import Episode, EpisodeError, episode_description, read_episode
from thinkjepa.data.splits import SPLIT_RULE, SPLITS, assign_splits, assign_splits_recorded

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
SCHEDULER_TIMEOUT_S = 30
"""How long ``scan_episodes`` tries to reach a dask.distributed scheduler."""
LOCAL_CHUNK_EPISODES = 16
"""At most this many episodes per local dask task. With 4 large tasks per worker, 2 local
processes indexed 2,000 episodes only 1.11x faster than 1 (one worker ran 6 of the 8 tasks);
tasks of at most 16 give 2.11x (benchmarks/bench_index.py)."""
MIN_TASKS_FOR_TASK_SPLIT = 3
"""Below this many task folders ``split_by: auto`` groups the split by episode."""

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
        ("has_confidences", pa.bool_()),
        ("file_stamp", pa.string()),
    ]
)
_META_KEY = b"thinkjepa.manifest"


@dataclass(frozen=True)
class ClipProblem:
    clip_id: str | None
    """None for a dataset-level message (e.g. too few task folders for every split)."""
    reason: str
    severity: str = "error"
    """``error``: the clip is left out; ``warning``: indexed, but worth knowing."""
    stamp: str | None = None
    """Size and mtime of the clip's files when the problem was found (incremental index)."""

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


class NoEpisodesError(ValueError):
    """``root`` holds nothing that looks like an EgoDex episode; the message says what it holds."""


def _natural_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _episode_files(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.suffix in (".mp4", ".hdf5") and not p.name.startswith(".")]


def printable(name: str) -> str:
    """A file name as text that can be stored and printed (a non-UTF-8 byte shows as U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def discover_episodes(root: str | Path) -> tuple[list[tuple[str, Path, Path]], list[ClipProblem]]:
    """``(clip_id, video, annotation)`` for every ``<task>/<n>.hdf5|.mp4`` under ``root``, sorted;
    a file without its partner is a problem, not an exception.

    Raises ``FileNotFoundError`` for a missing root and ``NoEpisodesError`` when ``root`` holds
    no episode file at all (e.g. it is the EgoDex top folder holding ``part1`` ... ``test``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    found: list[tuple[str, Path, Path]] = []
    problems: list[ClipProblem] = []
    task_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                       key=lambda d: _natural_key(d.name))
    for task_dir in task_dirs:
        try:
            stems = {p.stem for p in _episode_files(task_dir)}
        except OSError as e:  # no permission, gone meanwhile: name it, index the rest
            problems.append(ClipProblem(printable(task_dir.name), f"unreadable task folder {printable(str(task_dir))}: "
                                    f"{e.strerror or e}; left out"))
            continue
        for stem in sorted(stems, key=_natural_key):
            clip_id = f"{task_dir.name}/{stem}"
            if not _utf8(clip_id):
                problems.append(ClipProblem(printable(clip_id), f"{printable(str(task_dir / stem))}: the name is not valid "
                                        "UTF-8 (clip ids are stored as text); rename the folder or file to index it"))
                continue
            video, annotation = task_dir / f"{stem}.mp4", task_dir / f"{stem}.hdf5"
            if not video.is_file():
                problems.append(ClipProblem(clip_id, f"missing video (MP4) file {video}"))
            elif not annotation.is_file():
                problems.append(ClipProblem(clip_id, f"missing annotation (HDF5) file {annotation}"))
            else:
                found.append((clip_id, video, annotation))
    if not found and not problems:
        raise NoEpisodesError(_why_no_episodes(root, task_dirs))
    return found, problems


def _why_no_episodes(root: Path, task_dirs: list[Path]) -> str:
    nested = [d for d in task_dirs if any(sub.is_dir() and _episode_files(sub) for sub in d.iterdir())]
    if nested:
        names = ", ".join(d.name for d in nested[:6])
        return (f"{root} holds no <task>/<n>.mp4|.hdf5 episode, but its folder(s) {names} hold task folders: "
                f"it looks like the EgoDex top folder. Index one part, e.g. `tj data index {nested[0]}`")
    if _episode_files(root):
        return (f"{root} holds episode files directly; EgoDex keeps them in task folders "
                f"(<root>/<task>/<n>.mp4|.hdf5): pass the folder above this one, e.g. `tj data index {root.parent}`")
    return (f"{root} holds no <task>/<n>.mp4|.hdf5 episode ({len(task_dirs)} sub-folder(s)); "
            "point `tj data index ROOT` at an EgoDex-layout folder, or make one with `tj data synth DIR`")


def split_groups(clip_ids: Sequence[str], tasks: Sequence[str], data_cfg: DataConfig) -> tuple[list[str], str, list[ClipProblem]]:
    """The split group of each clip (its task folder, or its clip id) under ``data.split_by``,
    the grouping used (``task`` or ``episode``), and the one warning when ``auto`` falls back
    to episodes."""
    n_tasks = len(set(tasks))
    by = data_cfg.split_by
    if by == "auto":
        by = "task" if n_tasks >= MIN_TASKS_FOR_TASK_SPLIT or n_tasks == 0 else "episode"
        if by == "episode":
            warning = ClipProblem(
                None,
                f"only {n_tasks} task folder(s) ({', '.join(sorted(set(tasks)))}): fewer than "
                f"{MIN_TASKS_FOR_TASK_SPLIT}, so the split is grouped by episode, not task folder; val/test "
                "episodes come from tasks seen in training, so cross-task generalisation is not tested "
                "(set data.split_by=task to keep the task grouping)",
                severity="warning",
            )
            return list(clip_ids), by, [warning]
    return (list(tasks) if by == "task" else list(clip_ids)), by, []


def file_stamp(video: Path, annotation: Path) -> str:
    """Sizes and mtimes of an episode's two files: a change means the episode is re-read."""
    v, a = video.stat(), annotation.stat()
    return f"{v.st_size}:{v.st_mtime_ns}:{a.st_size}:{a.st_mtime_ns}"


def _row(ep: Episode, stamp: str) -> dict:
    meta = ep.metadata
    return {
        "clip_id": ep.clip_id,
        "video_path": str(ep.video_path.resolve()),
        "annotation_path": str(ep.annotation_path.resolve()),
        "task": ep.task,
        "description": episode_description(meta),
        "n_frames": int(ep.n_frames),
        "fps": float(ep.fps),
        "split": "",
        "environment": str(meta.get("environment") or ""),
        "llm_description": str(meta.get("llm_description") or ""),
        "width": int(ep.width),
        "height": int(ep.height),
        "has_confidences": ep.has_confidences,
        "file_stamp": stamp,
    }


def _check(item: tuple[str, Path, Path], sampling: SamplingConfig, fps: float | None) -> dict | ClipProblem:
    clip_id, video, annotation = item
    try:
        stamp = file_stamp(video, annotation)
    except OSError as e:
        return ClipProblem(clip_id, f"cannot stat its files: {e}")
    try:
        return _row(read_episode(video, annotation, clip_id=clip_id, sampling=sampling, fps=fps), stamp)
    except EpisodeError as e:
        return ClipProblem(clip_id, e.reason, stamp=stamp)
    except Exception as e:  # noqa: BLE001 - an unforeseen failure is still one clip's problem
        return ClipProblem(clip_id, f"unexpected {type(e).__name__}: {e}", stamp=stamp)


def check_episodes(items: list[tuple[str, Path, Path]], sampling: dict[str, Any],
                   fps: float | None = None) -> list[dict | ClipProblem]:
    """One dask task: validate a chunk of episodes (plain, picklable arguments and results)."""
    cfg = SamplingConfig.model_validate(sampling)
    return [_check(it, cfg, fps) for it in items]


def chunk_size(n_items: int, workers: int, scheduler: str) -> int:
    """Episodes per dask task: locally at least 4 tasks per worker and at most
    ``LOCAL_CHUNK_EPISODES`` each; on a cluster 512 tasks, for its many workers."""
    if scheduler in LOCAL_SCHEDULERS:
        return max(1, min(LOCAL_CHUNK_EPISODES, -(-n_items // (4 * max(1, workers)))))
    return max(1, -(-n_items // 512))


def scan_episodes(
    items: list[tuple[str, Path, Path]],
    sampling_cfg: SamplingConfig,
    workers: int = 1,
    scheduler: str = "threads",
    on_done: Callable[[int], None] | None = None,
    fps: float | None = None,
) -> list[dict | ClipProblem]:
    """Validate ``items`` in parallel with dask: ``scheduler`` is ``threads``, ``processes``,
    ``sync``, or the address of a ``dask.distributed`` scheduler (``tcp://host:8786``) whose
    workers see the same paths. Results come back in the order of ``items``."""
    import dask

    if not items:
        return []
    # more local workers than tasks or cores only costs process starts (100000 would start 100000)
    workers = max(1, min(workers, len(items) or 1, 4 * (os.cpu_count() or 1))) if scheduler in LOCAL_SCHEDULERS \
        else max(1, workers)
    if workers == 1 and scheduler in LOCAL_SCHEDULERS:
        scheduler = "sync"  # one worker: no pool to start, no results to pickle
    size = chunk_size(len(items), workers, scheduler)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    sampling = sampling_cfg.model_dump(mode="json")
    tasks = [dask.delayed(check_episodes, pure=False)(c, sampling, fps) for c in chunks]
    if scheduler in LOCAL_SCHEDULERS:
        from dask.callbacks import Callback

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001 - dask's signature
                if on_done is not None and isinstance(result, list):
                    on_done(len(result))

        with _Progress():
            parts = dask.compute(*tasks, scheduler=scheduler, num_workers=workers)
    else:
        try:
            from distributed import Client, as_completed
        except ImportError as e:  # pragma: no cover - distributed is a dependency
            raise ValueError(f"scheduler {scheduler!r} needs dask.distributed: pip install 'dask[distributed]'") from e
        try:
            client = Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
        except (OSError, TimeoutError) as e:
            raise ValueError(f"cannot reach the dask scheduler at {scheduler!r}: {e}") from e
        with client:
            futures = client.compute(tasks)
            for fut in as_completed(futures):
                if on_done is not None:
                    on_done(len(fut.result()))
            parts = client.gather(futures)
    return [r for part in parts for r in part]


def _previous(path: Path | None, root: Path, sampling_cfg: SamplingConfig,
              fps: float | None) -> dict[str, dict | ClipProblem]:
    """Results of the manifest at ``path`` that an incremental index may keep: only when it was
    built from the same root with the same sampling (which decides what is too short) and the
    same expected frame rate (which decides what is refused)."""
    if path is None or not path.is_file():
        return {}
    try:
        table = pq.read_table(path)
        table = _with_paths(table, _path_base(table, path), relative=False)
        prov = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    except (OSError, ValueError, pa.ArrowException):
        return {}
    if (prov.get("root") != str(root.resolve()) or prov.get("sampling") != sampling_cfg.model_dump(mode="json")
            or (prov.get("data") or {}).get("fps", "absent") != fps or "file_stamp" not in table.column_names):
        return {}
    kept: dict[str, dict | ClipProblem] = {r["clip_id"]: r for r in table.to_pylist() if r.get("file_stamp")}
    for p in prov.get("problems", []):
        if p.get("clip_id") and p.get("stamp"):
            kept[p["clip_id"]] = ClipProblem(**p)
    return kept


def index_episodes(
    root: str | Path,
    data_cfg: DataConfig,
    sampling_cfg: SamplingConfig,
    workers: int = 1,
    progress: bool = False,
    scheduler: str = "threads",
    previous: str | Path | None = None,
) -> tuple[pa.Table, list[ClipProblem]]:
    """Validate every episode under ``root`` and build the manifest table (nothing written).

    ``previous``: a manifest whose results are reused for episodes whose files did not change
    (same size and mtime); only new or changed episodes are read."""
    root = Path(root)
    items, problems = discover_episodes(root)
    old = _previous(Path(previous) if previous else None, root, sampling_cfg, data_cfg.fps)
    results: dict[str, dict | ClipProblem] = {}
    todo = []
    for it in items:
        prev = old.get(it[0])
        try:
            stamp = file_stamp(it[1], it[2])
        except OSError:
            stamp = None
        if prev is not None and stamp is not None and (prev.stamp if isinstance(prev, ClipProblem) else prev["file_stamp"]) == stamp:
            results[it[0]] = prev
        else:
            todo.append(it)

    from rich.progress import Progress

    from thinkjepa.logs import project_console

    with Progress(disable=not progress, transient=True, console=project_console()) as bar:
        job = bar.add_task(f"indexing {len(todo)} new or changed episode(s)", total=len(todo))
        fresh = scan_episodes(todo, sampling_cfg, workers=workers, scheduler=scheduler,
                              on_done=lambda n: bar.advance(job, n), fps=data_cfg.fps)
    results.update({it[0]: r for it, r in zip(todo, fresh, strict=True)})
    rows = [r for r in (results[it[0]] for it in items) if not isinstance(r, ClipProblem)]
    problems += [r for r in results.values() if isinstance(r, ClipProblem)]
    problems.sort(key=lambda p: _natural_key(p.clip_id or ""))
    groups, by, warnings = split_groups([r["clip_id"] for r in rows], [r["task"] for r in rows], data_cfg)
    splits = assign_splits(groups, data_cfg.split_fractions, data_cfg.split_seed)
    for row, group in zip(rows, groups, strict=True):
        row["split"] = splits[group]
    problems += _split_warnings(rows, by, splits, data_cfg, fallback=warnings)
    return pa.Table.from_pylist(rows, schema=SCHEMA), problems


def _split_warnings(rows: list[dict], by: str, splits: dict[str, str], data_cfg: DataConfig,
                    fallback: list[ClipProblem]) -> list[ClipProblem]:
    """At most one dataset-level warning: the episode fallback (if any) and the empty splits."""
    if not rows:
        return [ClipProblem(None, "no usable episodes: the manifest is empty (every episode is listed with its reason)")]
    used = set(splits.values())
    empty = [s for s, share in zip(SPLITS, data_cfg.split_fractions) if share > 0 and s not in used]
    if not empty:
        return fallback
    n = len(splits)
    if by == "task":
        tail = (f"only {n} task folder(s) to split, so split(s) {', '.join(empty)} are empty (3 or more give every "
                "split one; data.split_by=episode splits a small folder by episode)")
    else:
        tail = f"only {n} episode(s) to split, so split(s) {', '.join(empty)} are empty (add episodes: 3 or more give every split one)"
    if fallback:
        return [ClipProblem(None, f"{fallback[0].reason}; {tail}", severity="warning")]
    return [ClipProblem(None, tail, severity="warning")]


def split_record(table: pa.Table, data_cfg: DataConfig) -> dict[str, Any]:
    """How the manifest's splits were made: the rule, the group key, its salt and shares, and
    the groups a tiny dataset lent to an empty split (``thinkjepa.data.splits.fill_empty``)."""
    groups, by, _ = split_groups(table.column("clip_id").to_pylist(), table.column("task").to_pylist(), data_cfg)
    _, lent = assign_splits_recorded(groups, data_cfg.split_fractions, data_cfg.split_seed)
    return {"rule": SPLIT_RULE, "group_by": by, "seed": data_cfg.split_seed,
            "fractions": list(data_cfg.split_fractions), "lent_to_empty_split": lent}


def build_manifest(
    root: str | Path,
    out: str | Path,
    data_cfg: DataConfig,
    sampling_cfg: SamplingConfig,
    workers: int = 1,
    progress: bool = False,
    scheduler: str = "threads",
    incremental: bool = True,
) -> tuple[pa.Table, list[ClipProblem]]:
    """Index ``root`` and write the manifest to ``out`` (Parquet, atomically). Returns the table
    and the problems (left-out episodes with their reason, and dataset-level warnings).
    ``incremental``: re-read only the episodes whose files changed since the manifest at ``out``."""
    out = Path(out)
    table, problems = index_episodes(root, data_cfg, sampling_cfg, workers=workers, progress=progress,
                                     scheduler=scheduler, previous=out if incremental else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    provenance = {
        "root": str(Path(root).resolve()),
        "paths_relative_to": "root",
        "data": data_cfg.model_dump(mode="json"),
        "sampling": sampling_cfg.model_dump(mode="json"),
        "problems": [p.as_dict() for p in problems],
        "splits": split_record(table, data_cfg),
    }
    table = table.replace_schema_metadata({_META_KEY: json.dumps(provenance).encode()})
    from thinkjepa.cache_schema.fsio import atomic_write_bytes

    sink = pa.BufferOutputStream()
    pq.write_table(_with_paths(table, provenance["root"], relative=True), sink)
    atomic_write_bytes(out, sink.getvalue().to_pybytes())
    return table, problems


PATH_COLUMNS = ("video_path", "annotation_path")
"""The episode file columns (stored relative to the data root; absolute when read)."""


def _with_paths(table: pa.Table, base: str, *, relative: bool) -> pa.Table:
    """Episode paths as stored (relative to ``base``) or as read (absolute). Absolute paths
    already stored (manifests older than relative paths) are read as they are."""
    for col in PATH_COLUMNS:
        if col not in table.column_names:
            continue
        column = table.column(col)
        if not relative:
            column = _joined_under(column, base)
        else:
            column = pa.chunked_array([pa.array(
                [v if v is None or os.path.isabs(v) != relative else os.path.relpath(v, base) for v in column.to_pylist()],
                pa.string())])
        table = table.set_column(table.column_names.index(col), col, column)
    return table


# A relative stored path that ``os.path.join(base, v)`` + ``normpath`` would change beyond the
# join: empty, with a ``.`` or ``..`` part, a doubled or trailing slash.
_NOT_PLAIN = r"^$|(^|/)\.\.?(/|$)|//|/$"


def _joined_under(column: pa.ChunkedArray, base: str) -> pa.ChunkedArray:
    """``normpath(join(base, v))`` for relative ``v`` (absolute ones as they are), with one
    string join over the column for the plain paths the index writes: one Python call per
    row cost ~2 s per read at 340k episodes. The rare others go through ``os.path``."""
    import pyarrow.compute as pc

    base = os.path.normpath(base)
    joined = pc.binary_join_element_wise(pa.scalar(base.rstrip("/") or "/"), column, "/")
    if base == "/":  # "/" + "/" + v
        joined = pc.utf8_slice_codeunits(joined, 1)
    absolute = pc.fill_null(pc.starts_with(column, "/"), False)
    joined = pc.if_else(absolute, column, joined)  # absolute ones as they are (older manifests)
    odd = pc.and_(pc.invert(absolute), pc.fill_null(pc.match_substring_regex(column, _NOT_PLAIN), False))
    if not pc.any(odd).as_py():
        return joined
    vals = joined.to_pylist()
    for i in np.flatnonzero(odd.to_numpy(zero_copy_only=False)):
        v = column[int(i)].as_py()
        vals[i] = v if os.path.isabs(v) else os.path.normpath(os.path.join(base, v))
    return pa.chunked_array([pa.array(vals, pa.string())])


def manifest_provenance(schema: pa.Schema) -> dict[str, Any]:
    """What ``build_manifest`` recorded in the manifest's metadata (root, settings, problems,
    what the episode paths are relative to); ``{}`` for a manifest without it."""
    return json.loads((schema.metadata or {}).get(_META_KEY, b"{}"))


def _path_base(table: pa.Table, manifest: Path, data_root: str | Path | None = None) -> str:
    """The folder the stored episode paths are relative to: the data root, so the manifest
    holds wherever the workdir and the data are each put (``data_root``: where the data is
    now, the config's ``data.root``; default the root it was indexed from). Manifests written
    before the root was the base hold paths relative to their own folder."""
    prov = manifest_provenance(table.schema)
    if prov.get("paths_relative_to") != "root":
        return str(Path(manifest).resolve().parent)
    return str(Path(data_root if data_root is not None else prov["root"]).resolve())


def read_manifest(path: str | Path, split: str | Sequence[str] | None = None,
                  data_root: str | Path | None = None) -> pa.Table:
    """Read a manifest written by ``build_manifest``; ``split`` keeps only those split(s).
    Episode paths come back absolute, under ``data_root`` (where the data is now; default
    the root it was indexed from)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found (build it with `tj data index ROOT --out {path}`)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"{path}: unreadable manifest (torn, or not Parquet: {e}); rebuild it with `tj run index` "
                         f"or `tj data index ROOT --out {path}`") from e
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a clips manifest: missing column(s) {', '.join(missing)}")
    _check_rows(path, table)
    table = _with_paths(table, _path_base(table, path, data_root), relative=False)
    return filter_split(table, split) if split is not None else table


def _check_rows(path: Path, table: pa.Table) -> None:
    """A manifest edited or written by hand: each clip once, a known split, a positive length
    (a duplicate would be trained and scored twice, an unknown split never)."""
    import pyarrow.compute as pc

    ids = table.column("clip_id")
    dup = []
    if pc.count_distinct(ids, mode="all").as_py() != len(ids):  # the per-value list only when there is one
        counts = pc.value_counts(ids)
        dup = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
    splits = table.column("split")
    odd = table.filter(pc.invert(pc.is_in(splits, value_set=pa.array(SPLITS)))).column("clip_id").to_pylist()
    short = table.filter(pc.less(table.column("n_frames"), 1)).column("clip_id").to_pylist()
    for what, bad in (("listed more than once", dup), (f"with a split other than {'/'.join(SPLITS)}", odd),
                      ("with fewer than 1 frame", short)):
        if bad:
            raise ValueError(f"{path}: {len(bad)} clip(s) {what} ({', '.join(map(str, bad[:5]))}); rebuild it with "
                             f"`tj data index ROOT --out {path}`")


def filter_split(table: pa.Table, split: str | Sequence[str]) -> pa.Table:
    """Rows of the given split(s) (``train``/``val``/``test``)."""
    wanted = [split] if isinstance(split, str) else list(split)
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; splits are {list(SPLITS)}")
    mask = np.isin(np.asarray(table.column("split").to_pylist(), dtype=object), wanted)
    return table.filter(pa.array(mask, type=pa.bool_()))
