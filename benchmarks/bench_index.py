"""``tj data index`` throughput: dask workers, and incremental vs full re-index, in one process.

    python benchmarks/bench_index.py [--episodes 2000] [--tasks 20] [--workdir DIR]

Builds ``--episodes`` EgoDex-layout episodes: a few distinct small synthetic ones (24 frames of
32x32, the real reader's layout) copied under ``--tasks`` task folders. The content of a copy
does not matter, but every copy is a separate pair of files the index opens and reads for real
(all HDF5 arrays, and the video's container, frame count, first and last frame). The page cache
is warm for every run (the files were just written), so this measures the index's own work.

Prints (ratios against the 1-worker run measured here; one worker runs in this process):
- episodes/s for 1 and 2 workers (threads), and 2 processes;
- an incremental re-index after adding 1% new episodes vs a full index of the same folder.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from thinkjepa.config import DataConfig, SamplingConfig
from thinkjepa.data.manifest import build_manifest
from thinkjepa.data.synth import synthesize_dataset

SAMPLING = SamplingConfig(mode="stride", past_frames=8, future_frames=8, thinker_frames=8)
N_FRAMES, SIZE, DISTINCT = 24, 32, 4


def make_root(root: Path, episodes: int, tasks: int, start: int = 0) -> list[Path]:
    """``episodes`` episodes ``start..`` spread over ``tasks`` folders (copies of a few real ones)."""
    src = root.parent / "src"
    if not src.exists():
        synthesize_dataset(src, DISTINCT, seed=0, n_frames=N_FRAMES, size=SIZE, tasks=1)
    originals = sorted(src.glob("*/*.hdf5"))
    made = []
    for i in range(start, start + episodes):
        task = root / f"task_{i % tasks:03d}"
        task.mkdir(parents=True, exist_ok=True)
        o = originals[i % len(originals)]
        shutil.copyfile(o, task / f"{i}.hdf5")
        shutil.copyfile(o.with_suffix(".mp4"), task / f"{i}.mp4")
        made.append(task / f"{i}.hdf5")
    return made


def timed(root: Path, out: Path, **kw) -> tuple[float, int]:
    t0 = time.perf_counter()
    table, problems = build_manifest(root, out, DataConfig(), SAMPLING, **kw)
    dt = time.perf_counter() - t0
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise SystemExit(f"benchmark data did not index: {errors[:3]}")
    return dt, table.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-index-"))
    root = work / "egodex"
    t0 = time.perf_counter()
    make_root(root, args.episodes, args.tasks)
    print(f"{args.episodes} episodes ({N_FRAMES} frames of {SIZE}x{SIZE}) in {args.tasks} task folders "
          f"under {root} (made in {time.perf_counter() - t0:.1f} s)")

    runs = [("1 worker", dict(workers=1, scheduler="sync")),
            ("2 workers (threads)", dict(workers=2, scheduler="threads")),
            ("2 workers (processes)", dict(workers=2, scheduler="processes"))]
    base = None
    for label, kw in runs:
        dt, n = timed(root, work / "full.parquet", incremental=False, **kw)
        rate = n / dt
        base = base or rate
        print(f"full index, {label:<22}: {rate:7.1f} episodes/s ({dt:.1f} s)  {rate / base:.2f}x the 1-worker run")

    out = work / "m.parquet"
    timed(root, out, workers=2, incremental=False)  # the manifest the incremental run starts from
    new = max(1, args.episodes // 100)
    make_root(root, new, args.tasks, start=args.episodes)
    dt_inc, n_inc = timed(root, out, workers=2, incremental=True)
    dt_full, n_full = timed(root, work / "full2.parquet", workers=2, incremental=False)
    assert n_inc == n_full == args.episodes + new
    print(f"re-index after adding {new} episodes (1%), 2 workers: incremental {dt_inc:.2f} s vs full {dt_full:.2f} s "
          f"= {dt_full / dt_inc:.1f}x faster")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
